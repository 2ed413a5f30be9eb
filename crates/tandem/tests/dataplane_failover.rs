//! Failover as the data plane sees it: 100 requests/s from the meshed client
//! pod to an apex split 1/0; the split flips to 0/1, then the first backend
//! is scaled to 0. No request fails, and within 1 s of the flip every
//! request reaches the second backend.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use tandem_harness::{
    Env,
    dataplane::{self, Load, LoadSpec, count_by},
    eventually,
};

const CLUSTER: &str = "east";

#[tokio::test]
async fn flipping_the_split_moves_every_request_within_a_second_and_none_fails() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    dataplane::control_plane(&env, CLUSTER);
    let ns = env.namespace("dp-failover", &[CLUSTER]);
    let dataplane::RoutedSplit {
        apex,
        client: netns,
    } = dataplane::routed_split(&env, &ns, CLUSTER, [1, 2], [1, 0]);
    // 1/0: only b1 answers (the apex alone would reach both).
    eventually(
        "b1 alone answering through the apex",
        Duration::from_secs(60),
        || async {
            let counts = count_by(
                &Load::start(
                    &netns,
                    LoadSpec {
                        target: apex,
                        path: "/".into(),
                        rate: 50,
                        count: 20,
                    },
                )
                .finish(),
                &["b1", "b2"],
            );
            if counts.get("b1") == Some(&20) {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        },
    )
    .await;

    // At most 90 s of load (a busy machine slows the scale-down a lot); it is
    // stopped a second after b1 is gone.
    let load = Load::start(
        &netns,
        LoadSpec {
            target: apex,
            path: "/".into(),
            rate: 100,
            count: 9000,
        },
    );
    // A second of 1/0 traffic first.
    eventually(
        "100 answers before the flip",
        Duration::from_secs(10),
        || {
            let n = load.samples().len();
            async move { (n >= 100).then_some(()).ok_or(format!("{n} answers")) }
        },
    )
    .await;
    let flip = Instant::now();
    ns.kubectl(
        CLUSTER,
        &[
            "patch",
            "trafficsplits.split.smi-spec.io",
            "apex",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/backends/0/weight","value":0},
                {"op":"replace","path":"/spec/backends/1/weight","value":1}]"#,
        ],
    );
    // Once b2 has had a second of the traffic to itself, b1 goes away.
    eventually(
        "a second of requests all answered by b2",
        Duration::from_secs(15),
        || {
            let samples = load.samples();
            async move {
                let tail: Vec<_> = samples
                    .iter()
                    .rev()
                    .take_while(|s| s.backend().is_some_and(|b| b.starts_with("b2-")))
                    .collect();
                let before = samples.iter().rev().nth(tail.len());
                (tail.len() >= 100).then_some(()).ok_or(format!(
                    "{} answers from b2 in a row, after {:?}",
                    tail.len(),
                    before.map(|s| (&s.outcome, s.sent.saturating_duration_since(flip)))
                ))
            }
        },
    )
    .await;
    let scaled = Instant::now();
    ns.kubectl(CLUSTER, &["scale", "deploy/b1", "--replicas=0"]);
    ns.kubectl(
        CLUSTER,
        &[
            "wait",
            "--for=delete",
            "pod",
            "-l",
            "app=b1",
            "--timeout=60s",
        ],
    );
    // A second more of traffic with b1 gone.
    let gone = Instant::now();
    eventually(
        "a second of requests after b1 is gone",
        Duration::from_secs(10),
        || {
            let after = load.samples().iter().filter(|s| s.sent > gone).count();
            async move {
                (after >= 100)
                    .then_some(())
                    .ok_or(format!("{after} answers"))
            }
        },
    )
    .await;
    let samples = load.stop();
    // Diagnostics: SYNs b2's pods dropped on a full accept queue (busybox
    // httpd listens with a backlog of 9).
    let pods = ns.kubectl(
        CLUSTER,
        &[
            "get",
            "pods",
            "-l",
            "app=b2",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    let drops: Vec<String> = pods
        .split_whitespace()
        .map(|pod| {
            let d = dataplane::pod_netns(&env, &ns, CLUSTER, pod).listen_drops();
            format!("{pod}: (ListenOverflows, ListenDrops) {d:?}")
        })
        .collect();

    let counts = count_by(&samples, &["b1", "b2"]);
    // Failures with their send time from the flip, and from the scale-down.
    let failed: Vec<_> = samples
        .iter()
        .filter(|s| s.failed())
        .take(5)
        .map(|s| {
            let at = |t: Instant| {
                s.sent.checked_duration_since(t).map_or_else(
                    || format!("-{:?}", t.duration_since(s.sent)),
                    |d| format!("+{d:?}"),
                )
            };
            format!(
                "{} after the flip, {} after the scale-down: {:?}",
                at(flip),
                at(scaled),
                s.outcome
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "no request may fail ({counts:?}); the first failures: {failed:#?}; {drops:?}"
    );
    // The acceptance check of the issue ("within 1 s of the flip all
    // requests reach the second backend"), measured from the load
    // generator's own send times: the last request b1 served was sent less
    // than 1 s after the flip began. Not a speed benchmark: a deadline.
    let last_b1 = samples
        .iter()
        .filter(|s| s.backend().is_some_and(|b| b.starts_with("b1-")))
        .map(|s| s.sent)
        .max()
        .expect("b1 served requests before the flip");
    let switch = last_b1.saturating_duration_since(flip);
    eprintln!(
        "{} requests at 100/s: {counts:?}; the last request to b1 was sent {switch:?} after the flip; {drops:?}",
        samples.len()
    );
    assert!(
        switch < Duration::from_secs(1),
        "b1 still served a request sent {switch:?} after the flip"
    );
    assert!(
        samples
            .iter()
            .filter(|s| s.sent > flip + Duration::from_secs(1))
            .all(|s| s.backend().is_some_and(|b| b.starts_with("b2-"))),
        "every request sent from 1 s after the flip reaches b2: {counts:?}"
    );
}

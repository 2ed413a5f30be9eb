//! Failback damping against real kube-apiservers: traffic stays on the
//! fallback until the primary has been ready for the delay (fixtures:
//! `tandem_harness::failover`).

use std::{path::Path, time::Duration};

use serde_json::Value;
use tandem_harness::{
    Env, eventually,
    failover::{
        annotation, backend, controller, event_reasons, scale, split, unix_seconds, wait_event,
        wait_state, wait_weights,
    },
};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

fn env() -> Env {
    tandem_harness::failover::env(tandem_bin())
}

/// Case 6: the failback delay holds traffic on the fallback until it has passed.
///
/// Judged from the cluster's own clocks, not from when this test looks: the
/// controller stamps the failback's `last-transition-time` when it decides
/// it, and the primary's pod records when it became Ready. Both are whole
/// seconds (rounded down), and the first can only follow the second by the
/// delay or more, so their difference is at least the delay however loaded
/// the machine is; without damping it would be 0 or 1.
#[tokio::test]
async fn the_failback_delay_is_honoured() {
    const DELAY: i64 = 6;
    let env = env();
    let ns = env.namespace("damping", &["east"]);
    ns.apply("east", &backend("p", "p", 1));
    ns.apply("east", &backend("f", "f", 1));
    let label = ns.name.clone();
    ns.apply(
        "east",
        &split(
            "s",
            &label,
            &["p", "f"],
            &[("failover.tandem.io/failback-delay", &format!("{DELAY}s"))],
        ),
    );
    // Both backends ready before the controller starts: one that starts
    // first fails over at once and back after the delay, events the count
    // below would take for flapping.
    for svc in ["p", "f"] {
        eventually(
            &format!("a ready endpoint of {svc}"),
            Duration::from_secs(60),
            || {
                let ready = ns.ready_addresses("east", svc);
                async move {
                    (!ready.is_empty())
                        .then_some(())
                        .ok_or(format!("ready endpoints {ready:?}"))
                }
            },
        )
        .await;
    }
    let _c = controller(&env, "east", &label, &[]);
    wait_state(&ns, "s", "primary").await;
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;
    scale(&ns, "east", "p", 0);
    wait_weights(&ns, "east", "s", &[("p", 0), ("f", 1)]).await;
    wait_event(&ns, "east", "s", "FailoverToFallback", 1).await;

    scale(&ns, "east", "p", 1);
    let back = std::time::Instant::now();
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;
    assert!(
        back.elapsed() >= Duration::from_secs(DELAY as u64),
        "failback came after the delay"
    );
    wait_event(&ns, "east", "s", "FailbackToPrimary", 1).await;

    let pods: Value =
        serde_json::from_str(&ns.kubectl("east", &["get", "pods", "-l", "app=p", "-o", "json"]))
            .unwrap();
    let ready = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .flat_map(|p| {
            p["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c["type"] == "Ready" && c["status"] == "True")
        .filter_map(|c| c["lastTransitionTime"].as_str().map(unix_seconds))
        .max()
        .expect("the primary's pod is Ready");
    let failback = unix_seconds(
        &annotation(
            &ns,
            "east",
            "ts",
            "s",
            "failover.tandem.io/last-transition-time",
        )
        .expect("the failback's transition time"),
    );
    assert!(
        failback - ready >= DELAY,
        "traffic went back {}s after the primary became ready, inside the {DELAY}s delay",
        failback - ready
    );
    // Held, then moved back once: no flapping inside the window.
    let reasons = event_reasons(&ns, "east", "s");
    assert_eq!(
        reasons.iter().filter(|r| *r == "FailbackToPrimary").count(),
        1,
        "{reasons:?}"
    );
}

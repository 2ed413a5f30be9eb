//! A mirror's readiness against real kube-apiservers: it follows the remote
//! Service's endpoints and the gateway's probe both ways, and the Link's
//! status tells what runs.

use std::{path::Path, time::Duration};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use tandem_api::multicluster::Link;
use tandem_harness::{Env, eventually, mirror::*};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Readiness follows west's endpoints and the gateway's probe, and the
/// Link's status shows the mirror and the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_remote_and_the_gateway() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let m = Mirrored::start(&env, "ready", "127.20.19.11").await;
    let (n, link, east, west) = (m.n(), m.link.as_str(), &m.east, &m.west);

    let pair = &m.pair;
    // The west Service loses its ready endpoints: the mirror follows fast.
    scale(west, n, "emoji", 0).await;
    let west_slices: Api<EndpointSlice> = Api::namespaced(west.clone(), n);
    eventually("west's emoji has no ready endpoint", SETTLE, || async {
        let list = west_slices
            .list(&kube::api::ListParams::default().labels("kubernetes.io/service-name=emoji"))
            .await
            .map_err(|e| e.to_string())?;
        let ready = list
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .filter(|e| {
                let c = e.conditions.as_ref();
                c.and_then(|c| c.ready).unwrap_or(true)
                    && !c.and_then(|c| c.terminating).unwrap_or(false)
            })
            .count();
        (ready == 0).then_some(()).ok_or(format!("{ready} ready"))
    })
    .await;
    // A deadline, not a speed bound: bench/mirror.sh measures how fast.
    wait_ready(
        east,
        n,
        "emoji-west",
        false,
        SETTLE,
        "the mirror turns not-ready after west",
    )
    .await;
    let (addrs, _, _) = mirror_endpoints(east, n, "emoji-west").await.unwrap();
    assert_eq!(addrs, ["127.20.19.11"], "the endpoints stay, not-ready");

    scale(west, n, "emoji", 1).await;
    wait_ready(
        east,
        n,
        "emoji-west",
        true,
        SETTLE,
        "the mirror is ready again",
    )
    .await;

    // The gateway fails its probe: not-ready after the threshold; then back.
    pair.probe.answer(500);
    wait_ready(
        east,
        n,
        "emoji-west",
        false,
        Duration::from_secs(10),
        "a dead gateway turns the mirror not-ready",
    )
    .await;
    wait_condition(
        east,
        n,
        link,
        "Ready",
        "True",
        "Mirroring",
        Duration::from_secs(10),
    )
    .await;
    pair.probe.answer(200);
    wait_ready(
        east,
        n,
        "emoji-west",
        true,
        Duration::from_secs(10),
        "a live gateway again",
    )
    .await;

    // The Link's status tells what runs.
    let links: Api<Link> = Api::namespaced(east.clone(), n);
    eventually(
        "the Link's status shows the mirror and the gateway",
        Duration::from_secs(15),
        || async {
            let l = links.get(link).await.map_err(|e| e.to_string())?;
            let s = l.status.ok_or("no status")?;
            let g = s.gateway.clone().ok_or("no gateway status")?;
            let reachable = s
                .conditions
                .iter()
                .any(|c| c.type_ == "RemoteReachable" && c.status == "True");
            // Counts, and the failures only: none here.
            let mirrored = s.failed_services == 0
                && s.pending_services == 0
                && s.failures.is_empty()
                && s.more_failures == 0;
            if s.mirrored_services == 1
                && g.alive == Some(true)
                && g.addresses == ["127.20.19.11"]
                && g.probes.len() == 1
                && g.probes[0].alive == Some(true)
                && g.latency_ms_p50.is_some()
                && reachable
                && mirrored
                && s.last_heartbeat_time.is_some()
                && l.metadata
                    .finalizers
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f == "multicluster.tandem.io/mirrors")
            {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;

    m.mirror.shutdown().await;
}

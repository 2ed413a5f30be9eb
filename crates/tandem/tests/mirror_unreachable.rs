//! A linked cluster that cannot be reached, against real kube-apiservers
//! (the two-cluster Link fixture of `tandem_harness::mirror`): nothing is
//! deleted because the remote is gone.

use std::{path::Path, time::Duration};

use k8s_openapi::api::core::v1::Service;
use kube::{Api, api::DeleteParams};
use tandem_api::multicluster::Link;
use tandem_harness::{PrivateTestbed, mirror::*};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// West's API server stops: the mirrors stay exactly as they were, the Link
/// says the remote is unreachable, and all recovers when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_leaves_the_mirrors_alone() {
    init_logs();
    // Base port 20440: apart from the shared testbed (27440) and the other
    // tests' own (22440, 22540, 23440, 24440, 28440-31440).
    let tb = PrivateTestbed::start(tandem_bin(), &["east", "west"], 20440);
    let env = &tb.env;
    let ns = env.namespace("mirror-outage", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    let link = "outage-west";
    let _pair = link_pair(env, &east, &west, n, link, "127.20.19.4").await;
    let mirror = Mirror::start(env, n, link).await;
    export(&west, n, "emoji", n, 1).await;
    wait_ready(&east, n, "emoji-west", true, SETTLE, "the mirror is ready").await;
    wait_condition(
        &east,
        n,
        link,
        "RemoteReachable",
        "True",
        "Reachable",
        SETTLE,
    )
    .await;

    env.testbed_process("stop", "kube-apiserver", "west");
    let m = wait_condition(
        &east,
        n,
        link,
        "RemoteReachable",
        "False",
        "Unreachable",
        SETTLE,
    )
    .await;
    assert!(m.contains("cluster west"), "{m}");
    wait_condition(
        &east,
        n,
        link,
        "Ready",
        "False",
        "RemoteUnreachable",
        SETTLE,
    )
    .await;

    // For a while: the mirror and its ready endpoints stay.
    let services: Api<Service> = Api::namespaced(east.clone(), n);
    for _ in 0..10 {
        assert!(
            services.get_opt("emoji-west").await.unwrap().is_some(),
            "the mirror stays during the outage"
        );
        let (addrs, ready, _) = mirror_endpoints(&east, n, "emoji-west").await.unwrap();
        assert_eq!(
            (addrs, ready),
            (vec!["127.20.19.4".to_string()], vec![true]),
            "the endpoints stay as they were"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    env.testbed_process("start", "kube-apiserver", "west");
    wait_condition(
        &east,
        n,
        link,
        "RemoteReachable",
        "True",
        "Reachable",
        Duration::from_secs(90),
    )
    .await;
    wait_condition(
        &east,
        n,
        link,
        "Ready",
        "True",
        "Mirroring",
        Duration::from_secs(90),
    )
    .await;
    assert!(
        services.get_opt("emoji-west").await.unwrap().is_some(),
        "the mirror is still there"
    );

    // And the mirror works again: west's readiness goes through.
    scale(&west, n, "emoji", 0).await;
    wait_ready(
        &east,
        n,
        "emoji-west",
        false,
        SETTLE,
        "readiness flows again after the outage",
    )
    .await;

    let links: Api<Link> = Api::namespaced(east.clone(), n);
    links.delete(link, &DeleteParams::default()).await.unwrap();
    wait_gone(&links, link, "the Link is deleted").await;
    mirror.shutdown().await;
}

//! Links that cannot work, next to one that does, and a linked cluster that
//! cannot be reached (the two-cluster Link fixture of
//! `tandem_harness::mirror`).

use std::{path::Path, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use tandem_api::multicluster::Link;
use tandem_harness::{Env, PrivateTestbed, TestNamespace, eventually, mirror::*};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Bad input gets a condition on its Link and never stops the rest: a
/// broken kubeconfig, an invalid token, a malformed spec, an unresolvable
/// gateway, a Service whose namespace is missing here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_links_get_conditions_while_a_good_one_keeps_working() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("mirror-bad", &["east", "west"]);
    let n = ns.name.as_str();
    // A namespace only west has, at first.
    let west_only: TestNamespace = env.namespace("mirror-only-west", &["west"]);
    let w = west_only.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    install_crd(&east).await;
    let (kubeconfig, _binding) = remote_kubeconfig(&env, &west, n).await;
    let probe = ProbeServer::start("127.20.19.2").await;
    let port = probe.addr.port();

    let good = "good-west";
    let bad = [
        (
            "broken-kubeconfig",
            "apiVersion: v1\nkind: Config\nclusters: [{{{".to_string(),
            json!({}),
        ),
        (
            "invalid-token",
            kubeconfig_for(&env, "west", "not-a-token"),
            json!({}),
        ),
        (
            "bad-spec",
            kubeconfig.clone(),
            json!({"probeSpec": {"period": "soon", "port": port}}),
        ),
        (
            "no-gateway",
            kubeconfig.clone(),
            json!({"gatewayAddress": "gw.tandem.invalid", "selector": {"matchLabels": {RUN_LABEL: "none"}}}),
        ),
    ];
    create_link(
        &east,
        n,
        good,
        &kubeconfig,
        "127.20.19.2",
        port,
        n,
        json!({}),
    )
    .await;
    let mut releases = vec![release_link(&env, n, good)];
    let mut mirrors = vec![Mirror::start(&env, n, good).await];
    for (name, kc, extra) in &bad {
        create_link(&east, n, name, kc, "127.20.19.3", port, n, extra.clone()).await;
        releases.push(release_link(&env, n, name));
        mirrors.push(Mirror::start(&env, n, name).await);
    }
    let _east_ns = Cleanup {
        env: env.clone(),
        cluster: "east",
        args: [
            "delete",
            "namespace",
            w,
            "--ignore-not-found",
            "--wait=false",
        ]
        .map(String::from)
        .to_vec(),
    };

    export(&west, n, "web", n, 1).await;
    export(&west, w, "web", n, 1).await;

    // A mirror that may create namespaces, for a Service of its own.
    let created: TestNamespace = env.namespace("mirror-create", &["west"]);
    let c = created.name.as_str();
    let _created_east = Cleanup {
        env: env.clone(),
        cluster: "east",
        args: [
            "delete",
            "namespace",
            c,
            "--ignore-not-found",
            "--wait=false",
        ]
        .map(String::from)
        .to_vec(),
    };
    let creates_run = format!("{n}-create");
    create_link(
        &east,
        n,
        "creates",
        &kubeconfig,
        "127.20.19.2",
        port,
        &creates_run,
        json!({}),
    )
    .await;
    releases.push(release_link(&env, n, "creates"));
    mirrors.push(Mirror::start_with(&env, n, "creates", true).await);
    export(&west, c, "api", &creates_run, 1).await;
    wait_ready(
        &east,
        c,
        "api-west",
        true,
        SETTLE,
        "the mirror creates its namespace",
    )
    .await;

    let m = wait_condition(
        &east,
        n,
        "broken-kubeconfig",
        "Ready",
        "False",
        "InvalidCredentials",
        SETTLE,
    )
    .await;
    assert!(m.contains("broken kubeconfig"), "{m}");
    wait_condition(
        &east,
        n,
        "broken-kubeconfig",
        "RemoteReachable",
        "False",
        "InvalidCredentials",
        SETTLE,
    )
    .await;
    let m = wait_condition(
        &east,
        n,
        "invalid-token",
        "RemoteReachable",
        "False",
        "Unauthorized",
        SETTLE,
    )
    .await;
    assert!(m.contains("cluster west"), "{m}");
    wait_condition(
        &east,
        n,
        "invalid-token",
        "Ready",
        "False",
        "RemoteUnreachable",
        SETTLE,
    )
    .await;
    let m = wait_condition(
        &east,
        n,
        "bad-spec",
        "Ready",
        "False",
        "InvalidLink",
        SETTLE,
    )
    .await;
    assert!(m.contains("probeSpec.period \"soon\""), "{m}");
    let m = wait_condition(
        &east,
        n,
        "no-gateway",
        "GatewayResolved",
        "False",
        "Unresolvable",
        SETTLE,
    )
    .await;
    assert!(m.contains("gw.tandem.invalid"), "{m}");
    wait_condition(
        &east,
        n,
        "no-gateway",
        "Ready",
        "False",
        "GatewayUnresolved",
        SETTLE,
    )
    .await;

    // The good Link mirrors what it can, and says what it cannot.
    wait_ready(
        &east,
        n,
        "web-west",
        true,
        SETTLE,
        "the good Link's mirror is ready",
    )
    .await;
    wait_condition(&east, n, good, "Ready", "True", "Mirroring", SETTLE).await;
    let links: Api<Link> = Api::namespaced(east.clone(), n);
    eventually("the missing namespace is reported", SETTLE, || async {
        let l = links.get(good).await.map_err(|e| e.to_string())?;
        let s = l.status.unwrap_or_default();
        let failures: Vec<(&str, &str)> = s
            .failures
            .iter()
            .map(|f| (f.remote_ref.namespace.as_str(), f.reason.as_str()))
            .collect();
        match (s.mirrored_services, s.failed_services, failures.as_slice()) {
            (1, 1, [(ns, "MissingNamespace")]) if *ns == w => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // The namespace appears: the mirror follows.
    let namespaces: Api<Namespace> = Api::all(east.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": w}})).unwrap(),
        )
        .await
        .unwrap();
    wait_ready(
        &east,
        w,
        "web-west",
        true,
        SETTLE,
        "the mirror lands in the new namespace",
    )
    .await;
    eventually("both are mirrored", SETTLE, || async {
        let l = links.get(good).await.map_err(|e| e.to_string())?;
        let counts = l
            .status
            .as_ref()
            .map(|s| (s.mirrored_services, s.failed_services, s.failures.len()));
        (counts == Some((2, 0, 0)))
            .then_some(())
            .ok_or(format!("{counts:?}"))
    })
    .await;

    // Every Link can be deleted, broken or not.
    for name in [
        good,
        "broken-kubeconfig",
        "invalid-token",
        "bad-spec",
        "no-gateway",
    ] {
        links.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in [
        good,
        "broken-kubeconfig",
        "invalid-token",
        "bad-spec",
        "no-gateway",
    ] {
        wait_gone(&links, name, &format!("Link {name} is deleted")).await;
    }
    let services: Api<Service> = Api::namespaced(east.clone(), w);
    assert!(services.get_opt("web-west").await.unwrap().is_none());
    for m in mirrors {
        m.shutdown().await;
    }
    drop(releases);
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

    let stop = tandem_harness::run(
        env.tandem()
            .args([
                "testbed",
                "stop",
                "kube-apiserver",
                "--cluster",
                "west",
                "--dir",
            ])
            .arg(&env.dir),
    );
    assert!(
        stop.status.success(),
        "stopping west's apiserver: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
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

    let start = tandem_harness::run(
        env.tandem()
            .args([
                "testbed",
                "start",
                "kube-apiserver",
                "--cluster",
                "west",
                "--dir",
            ])
            .arg(&env.dir),
    );
    assert!(
        start.status.success(),
        "starting west's apiserver: {}",
        String::from_utf8_lossy(&start.stderr)
    );
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

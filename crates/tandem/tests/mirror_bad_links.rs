//! Links that cannot work, next to one that does, against real
//! kube-apiservers (the two-cluster Link fixture of
//! `tandem_harness::mirror`).

use std::path::Path;

use k8s_openapi::api::core::v1::Service;
use kube::{Api, api::DeleteParams};
use serde_json::json;
use tandem_api::multicluster::Link;
use tandem_harness::{Env, eventually, mirror::*};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Bad input gets a condition on its Link and never stops the rest: a
/// broken kubeconfig, an invalid token, a malformed spec, an unresolvable
/// gateway. The good Link mirrors on, and every Link can be deleted, broken
/// or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_links_get_conditions_while_a_good_one_keeps_working() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("mirror-bad", &["east", "west"]);
    let n = ns.name.as_str();
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
    export(&west, n, "web", n, 1).await;

    // Each bad Link's conditions, false, with the reason and what the
    // message must name ("" for nothing in particular).
    for (name, type_, reason, names) in [
        (
            "broken-kubeconfig",
            "Ready",
            "InvalidCredentials",
            "broken kubeconfig",
        ),
        (
            "broken-kubeconfig",
            "RemoteReachable",
            "InvalidCredentials",
            "",
        ),
        (
            "invalid-token",
            "RemoteReachable",
            "Unauthorized",
            "cluster west",
        ),
        ("invalid-token", "Ready", "RemoteUnreachable", ""),
        (
            "bad-spec",
            "Ready",
            "InvalidLink",
            "probeSpec.period \"soon\"",
        ),
        (
            "no-gateway",
            "GatewayResolved",
            "Unresolvable",
            "gw.tandem.invalid",
        ),
        ("no-gateway", "Ready", "GatewayUnresolved", ""),
    ] {
        let m = wait_condition(&east, n, name, type_, "False", reason, SETTLE).await;
        assert!(m.contains(names), "{name} {type_}: {m}");
    }

    // The good Link mirrors on.
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
    eventually("the good Link counts its mirror", SETTLE, || async {
        let l = links.get(good).await.map_err(|e| e.to_string())?;
        let counts = l
            .status
            .as_ref()
            .map(|s| (s.mirrored_services, s.failed_services, s.failures.len()));
        (counts == Some((1, 0, 0)))
            .then_some(())
            .ok_or(format!("{counts:?}"))
    })
    .await;

    // Every Link can be deleted, broken or not.
    let all = [
        good,
        "broken-kubeconfig",
        "invalid-token",
        "bad-spec",
        "no-gateway",
    ];
    for name in all {
        links.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in all {
        wait_gone(&links, name, &format!("Link {name} is deleted")).await;
    }
    let services: Api<Service> = Api::namespaced(east.clone(), n);
    assert!(services.get_opt("web-west").await.unwrap().is_none());
    for m in mirrors {
        m.shutdown().await;
    }
    drop(releases);
}

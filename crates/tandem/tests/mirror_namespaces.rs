//! A mirror's namespace, against real kube-apiservers (the two-cluster Link
//! fixture of `tandem_harness::mirror`): missing here, it is reported and
//! then followed; or the mirror creates it when it may.

use std::path::Path;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, api::PostParams};
use serde_json::json;
use tandem_api::multicluster::Link;
use tandem_harness::{Env, TestNamespace, eventually, mirror::*};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Deletes east's copy of a namespace that only west had at first.
fn east_copy(env: &Env, ns: &str) -> Cleanup {
    Cleanup {
        env: env.clone(),
        cluster: "east",
        args: [
            "delete",
            "namespace",
            ns,
            "--ignore-not-found",
            "--wait=false",
        ]
        .map(String::from)
        .to_vec(),
    }
}

/// A Service exported from a namespace that east does not have: the Link's
/// status names it as a failure while the rest is mirrored, and once the
/// namespace exists the mirror lands in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_namespace_is_reported_then_followed() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let m = Mirrored::start(&env, "ns", "127.20.19.13").await;
    let (n, east, west) = (m.n(), &m.east, &m.west);
    let west_only: TestNamespace = env.namespace("mirror-only-west", &["west"]);
    let w = west_only.name.as_str();
    let _east_copy = east_copy(&env, w);
    export(west, w, "web", n, 1).await;

    let links: Api<Link> = Api::namespaced(east.clone(), n);
    eventually("the missing namespace is reported", SETTLE, || async {
        let l = links.get(&m.link).await.map_err(|e| e.to_string())?;
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
        east,
        w,
        "web-west",
        true,
        SETTLE,
        "the mirror lands in the new namespace",
    )
    .await;
    eventually("both are mirrored", SETTLE, || async {
        let l = links.get(&m.link).await.map_err(|e| e.to_string())?;
        let counts = l
            .status
            .as_ref()
            .map(|s| (s.mirrored_services, s.failed_services, s.failures.len()));
        (counts == Some((2, 0, 0)))
            .then_some(())
            .ok_or(format!("{counts:?}"))
    })
    .await;
    m.mirror.shutdown().await;
}

/// A mirror run with `--create-namespaces` creates a missing namespace for
/// its mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_may_create_its_namespace() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("mirror-creates", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    let link = "creates-west";
    let _pair = link_pair(&env, &east, &west, n, link, "127.20.19.14").await;
    let mirror = Mirror::start_with(&env, n, link, true).await;
    let created: TestNamespace = env.namespace("mirror-create", &["west"]);
    let c = created.name.as_str();
    let _east_copy = east_copy(&env, c);
    export(&west, c, "api", n, 1).await;
    wait_ready(
        &east,
        c,
        "api-west",
        true,
        SETTLE,
        "the mirror creates its namespace",
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(east.clone());
    assert!(namespaces.get_opt(c).await.unwrap().is_some());
    mirror.shutdown().await;
}

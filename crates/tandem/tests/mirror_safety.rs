//! What a mirror must never do, on private testbeds (ports 12540-12749):
//! turn ready before the gateway's probe tells, or touch a user's Service of
//! a mirror's name.

use std::{path::Path, time::Duration};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use tandem_api::multicluster::Link;
use tandem_harness::{PrivateTestbed, eventually, mirror::*};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

// === safety: tests on private testbeds (ports 12540-12749) ===

/// The mirror slice's ready flags every `every`, for `how_long`: every
/// distinct value seen (an absent slice is `None`).
async fn sample_ready(
    east: &Client,
    ns: &str,
    mirror: &str,
    how_long: Duration,
) -> Vec<Option<Vec<bool>>> {
    let start = std::time::Instant::now();
    let mut seen: Vec<Option<Vec<bool>>> = vec![];
    while start.elapsed() < how_long {
        let now = match mirror_endpoints(east, ns, mirror).await {
            Ok((_, ready, _)) => Some(ready),
            Err(_) => None,
        };
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    seen
}

/// Waits until west's Service has a ready endpoint.
async fn wait_remote_ready(west: &Client, ns: &str, svc: &str) {
    let slices: Api<EndpointSlice> = Api::namespaced(west.clone(), ns);
    eventually(
        &format!("west's {svc} has a ready endpoint"),
        SETTLE,
        || async {
            let list = slices
                .list(
                    &kube::api::ListParams::default()
                        .labels(&format!("kubernetes.io/service-name={svc}")),
                )
                .await
                .map_err(|e| e.to_string())?;
            let ready = list
                .items
                .iter()
                .flat_map(|s| &s.endpoints)
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .count();
            (ready > 0).then_some(()).ok_or("none ready".to_string())
        },
    )
    .await;
}

/// A mirror that starts (or restarts) while the gateway fails its probe
/// never writes ready endpoints, though the remote Service is ready: the
/// gateway is unknown until its probes tell, and nothing is written while
/// it is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_starting_with_a_dead_gateway_never_turns_ready() {
    init_logs();
    let tb = PrivateTestbed::start(tandem_bin(), &["east", "west"], 12540);
    let env = &tb.env;
    let ns = env.namespace("mirror-dead-gw", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    install_crd(&east).await;
    let (kubeconfig, _binding) = remote_kubeconfig(env, &west, n).await;
    let probe = ProbeServer::start("127.20.19.5").await;
    probe.answer(500);
    let link = "dead-west";
    create_link(
        &east,
        n,
        link,
        &kubeconfig,
        "127.20.19.5",
        probe.addr.port(),
        n,
        json!({}),
    )
    .await;
    let _release = release_link(env, n, link);
    export(&west, n, "emoji", n, 1).await;
    wait_remote_ready(&west, n, "emoji").await;

    // The first start: the slice appears not-ready once the gateway is
    // known dead (2 failures of 500ms probes), and never ready before.
    let mirror = Mirror::start(env, n, link).await;
    let services: Api<Service> = Api::namespaced(east.clone(), n);
    appears(&services, "emoji-west").await;
    let seen = sample_ready(&east, n, "emoji-west", Duration::from_secs(5)).await;
    assert!(
        !seen.iter().flatten().flatten().any(|r| *r),
        "the mirror's endpoints were ready with a dead gateway: {seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&Some(vec![false])),
        "written not-ready once the gateway is known dead: {seen:?}"
    );

    // A restart with the gateway still dead: still never ready.
    mirror.shutdown().await;
    let mirror = Mirror::start(env, n, link).await;
    let seen = sample_ready(&east, n, "emoji-west", Duration::from_secs(5)).await;
    assert_eq!(
        seen,
        [Some(vec![false])],
        "a restarted mirror turned its endpoints ready with a dead gateway"
    );
    wait_condition(&east, n, link, "Ready", "True", "Mirroring", SETTLE).await;
    let links: Api<Link> = Api::namespaced(east.clone(), n);
    let gateway = links
        .get(link)
        .await
        .unwrap()
        .status
        .unwrap()
        .gateway
        .unwrap();
    assert_eq!(gateway.alive, Some(false), "{gateway:?}");
    assert!(
        gateway.probes[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("500")),
        "each address's probe result is in the status: {gateway:?}"
    );

    // The gateway comes back: ready at once.
    probe.answer(200);
    wait_ready(&east, n, "emoji-west", true, SETTLE, "a live gateway again").await;
    links.delete(link, &DeleteParams::default()).await.unwrap();
    wait_gone(&links, link, "the Link is deleted").await;
    mirror.shutdown().await;
}

/// A user's own Service that happens to be named like a mirror
/// (`foo-west`), made before `foo` is exported from west, is left exactly as
/// it is, also by the Link's finalizer; the Link's status and an Event say
/// why. The other mirrors go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_service_named_like_a_mirror_is_left_alone() {
    init_logs();
    let tb = PrivateTestbed::start(tandem_bin(), &["east", "west"], 12640);
    let env = &tb.env;
    let ns = env.namespace("mirror-collision", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    install_crd(&east).await;
    let (kubeconfig, _binding) = remote_kubeconfig(env, &west, n).await;
    let probe = ProbeServer::start("127.20.19.6").await;

    // The user's Service, first.
    let services: Api<Service> = Api::namespaced(east.clone(), n);
    let mine: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "foo-west", "namespace": n, "labels": {"app": "mine"}, "annotations": {"owner": "me"}},
        "spec": {"selector": {"app": "mine"}, "ports": [{"name": "mine", "port": 9999}]},
    }))
    .unwrap();
    let mine = services
        .create(&PostParams::default(), &mine)
        .await
        .expect("the user's Service");

    let link = "collide-west";
    create_link(
        &east,
        n,
        link,
        &kubeconfig,
        "127.20.19.6",
        probe.addr.port(),
        n,
        json!({}),
    )
    .await;
    let _release = release_link(env, n, link);
    let mirror = Mirror::start(env, n, link).await;
    export(&west, n, "foo", n, 1).await;
    export(&west, n, "bar", n, 1).await;

    // The other mirror works; foo's is refused, and the status says why.
    wait_ready(&east, n, "bar-west", true, SETTLE, "bar is mirrored").await;
    let links: Api<Link> = Api::namespaced(east.clone(), n);
    let message = eventually("the Link's status names the taken name", SETTLE, || async {
        let l = links.get(link).await.map_err(|e| e.to_string())?;
        let foo = l
            .status
            .as_ref()
            .and_then(|s| s.failures.iter().find(|f| f.remote_ref.name == "foo"))
            .ok_or("no failure for foo yet")?;
        if foo.reason == "NameTaken" {
            Ok(foo.message.clone())
        } else {
            Err(format!("{}: {}", foo.reason, foo.message))
        }
    })
    .await;
    assert!(
        message.contains(&format!(
            "a Service {n}/foo-west exists and is not a mirror of this Link"
        )),
        "{message}"
    );
    // And an Event on the Link.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(east.clone(), n);
    let note = eventually("an Event on the Link says why", SETTLE, || async {
        let list = events
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("MirrorNameTaken")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(link)
            })
            .and_then(|e| e.note)
            .ok_or("no MirrorNameTaken Event".to_string())
    })
    .await;
    assert!(note.contains("foo-west"), "{note}");

    // Untouched: same object, same version, no mirror label, no slice.
    let check_untouched = |what: &'static str| {
        let services = services.clone();
        let mine = mine.clone();
        async move {
            let now = services
                .get("foo-west")
                .await
                .expect("the user's Service is there");
            assert_eq!(now.metadata.uid, mine.metadata.uid, "{what}: replaced");
            assert_eq!(
                now.metadata.resource_version, mine.metadata.resource_version,
                "{what}: the user's Service was written: {:?}",
                now.metadata
            );
        }
    };
    check_untouched("while mirroring").await;
    let slices: Api<EndpointSlice> = Api::namespaced(east.clone(), n);
    assert!(slices.get_opt("foo-west-gateway").await.unwrap().is_none());

    // The Link goes: its mirrors with it, the user's Service stays.
    links.delete(link, &DeleteParams::default()).await.unwrap();
    wait_gone(&links, link, "the Link is deleted").await;
    assert!(services.get_opt("bar-west").await.unwrap().is_none());
    check_untouched("after the Link's finalizer").await;
    mirror.shutdown().await;
}

//! A remote Service exported and mirrored, against real kube-apiservers
//! (the two-cluster Link fixture of `tandem_harness::mirror`): what the
//! mirror holds, remote changes, unexport, and the Link's deletion.

use std::path::Path;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use tandem_api::multicluster::Link;
use tandem_harness::{Env, eventually, mirror::*};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// An exported Service's mirror: its ports, labels and annotations, its
/// endpoints at the gateway; remote changes reach it (a field the remote
/// drops goes too); once no longer exported, it goes with its slice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_service_is_mirrored_and_follows_its_remote() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let m = Mirrored::start(&env, "export", "127.20.19.1").await;
    let (n, east, west, services) = (m.n(), &m.east, &m.west, &m.services);

    // The mirror appears with the ports, labels and annotations.
    let svc = appears(services, "emoji-west").await;
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("mirror.linkerd.io/mirrored-service")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        labels
            .get("mirror.linkerd.io/cluster-name")
            .map(String::as_str),
        Some("west")
    );
    assert_eq!(labels.get("app").map(String::as_str), Some("emoji"));
    assert!(
        !labels.contains_key("mirror.linkerd.io/exported"),
        "mirror.linkerd.io/* is not copied"
    );
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("mirror.linkerd.io/remote-svc-fq-name"),
        Some(&format!("emoji.{n}.svc.cluster.local"))
    );
    assert_eq!(
        annotations.get("example.com/note").map(String::as_str),
        Some("from west")
    );
    let spec = svc.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(spec.selector.is_none());
    let ports: Vec<(Option<String>, i32)> = spec
        .ports
        .unwrap()
        .iter()
        .map(|p| (p.name.clone(), p.port))
        .collect();
    assert_eq!(ports, [(Some("grpc".to_string()), 8080)]);

    // Endpoints at the gateway IP, every port mapped to the gateway port.
    let (addrs, _, ports) = mirror_endpoints(east, n, "emoji-west").await.unwrap();
    assert_eq!(addrs, ["127.20.19.1"]);
    assert_eq!(ports, [("grpc".to_string(), 4143)]);

    // Remote changes propagate: a label and a port.
    let west_services: Api<Service> = Api::namespaced(west.clone(), n);
    west_services
        .patch(
            "emoji",
            &apply_params(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {
                    "name": "emoji", "namespace": n,
                    "labels": {"mirror.linkerd.io/exported": "true", RUN_LABEL: n, "app": "emoji", "tier": "backend"},
                },
                "spec": {
                    "selector": {"app": "emoji"},
                    "ports": [{"name": "grpc", "port": 8080, "targetPort": 8080}, {"name": "http", "port": 8081, "targetPort": 8081}],
                },
            })),
        )
        .await
        .unwrap();
    eventually("the mirror gets the new label and port", SETTLE, || async {
        let svc = services
            .get("emoji-west")
            .await
            .map_err(|e| e.to_string())?;
        let tier = svc.metadata.labels.unwrap_or_default().get("tier").cloned();
        let note = svc
            .metadata
            .annotations
            .unwrap_or_default()
            .get("example.com/note")
            .cloned();
        let ports = svc.spec.unwrap().ports.unwrap_or_default().len();
        let (_, _, slice_ports) = mirror_endpoints(east, n, "emoji-west").await?;
        if tier.as_deref() == Some("backend")
            && note.is_none()
            && ports == 2
            && slice_ports == [("grpc".to_string(), 4143), ("http".to_string(), 4143)]
        {
            Ok(())
        } else {
            Err(format!(
                "tier {tier:?}, note {note:?}, {ports} ports, slice ports {slice_ports:?}"
            ))
        }
    })
    .await;

    // No longer exported: the mirror goes.
    west_services
        .patch(
            "emoji",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"mirror.linkerd.io/exported": null}}})),
        )
        .await
        .unwrap();
    wait_gone(
        services,
        "emoji-west",
        "the unexported Service's mirror is deleted",
    )
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(east.clone(), n);
    wait_gone(&slices, "emoji-west-gateway", "its slice too").await;

    m.mirror.shutdown().await;
}

/// A deleted Link goes once its finalizer has deleted its mirrors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_link_takes_its_mirrors_with_it() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let m = Mirrored::start(&env, "gone", "127.20.19.10").await;
    let (n, link, east, west, services) = (m.n(), m.link.as_str(), &m.east, &m.west, &m.services);

    let links: Api<Link> = Api::namespaced(east.clone(), n);
    let slices: Api<EndpointSlice> = Api::namespaced(east.clone(), n);
    // Two mirrors, then the Link goes: its mirrors go with it.
    export(west, n, "web", n, 1).await;
    wait_ready(east, n, "web-west", true, SETTLE, "web is mirrored").await;
    links.delete(link, &DeleteParams::default()).await.unwrap();
    wait_gone(
        &links,
        link,
        "the deleted Link goes, once its mirrors are gone",
    )
    .await;
    for mirror in ["emoji-west", "web-west"] {
        assert!(
            services.get_opt(mirror).await.unwrap().is_none(),
            "{mirror} is deleted with the Link"
        );
        assert!(
            slices
                .get_opt(&format!("{mirror}-gateway"))
                .await
                .unwrap()
                .is_none()
        );
    }
    m.mirror.shutdown().await;
}

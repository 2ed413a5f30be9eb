//! A mirror's life against real kube-apiservers (the two-cluster Link fixture
//! of `tandem_harness::mirror`): export, readiness both ways, the gateway's
//! probe, remote changes, unexport, the Link's deletion; and a mirror slice
//! deleted while the local watch was down.

use std::{path::Path, time::Duration};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use tandem_api::multicluster::Link;
use tandem_harness::{Env, PrivateTestbed, eventually, mirror::*};
use tandem_multicluster::{MirrorSettings, run_mirror};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::watch,
};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// The whole life of a mirror: export, readiness both ways, the gateway's
/// probe, remote changes, unexport, and the Link's deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_follows_its_remote_service_and_gateway() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("mirror-life", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    let link = "life-west";
    let pair = link_pair(&env, &east, &west, n, link, "127.20.19.1").await;
    let mirror = Mirror::start(&env, n, link).await;

    export(&west, n, "emoji", n, 1).await;

    // The mirror appears with the ports, labels and annotations.
    let services: Api<Service> = Api::namespaced(east.clone(), n);
    let svc = eventually("emoji-west appears in east", SETTLE, || async {
        services
            .get_opt("emoji-west")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not yet".to_string())
    })
    .await;
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

    // Ready endpoints at the gateway IP, every port mapped to the gateway port.
    wait_ready(
        &east,
        n,
        "emoji-west",
        true,
        SETTLE,
        "the mirror's endpoints become ready",
    )
    .await;
    let (addrs, _, ports) = mirror_endpoints(&east, n, "emoji-west").await.unwrap();
    assert_eq!(addrs, ["127.20.19.1"]);
    assert_eq!(ports, [("grpc".to_string(), 4143)]);

    // The west Service loses its ready endpoints: the mirror follows fast.
    scale(&west, n, "emoji", 0).await;
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
        &east,
        n,
        "emoji-west",
        false,
        SETTLE,
        "the mirror turns not-ready after west",
    )
    .await;
    let (addrs, _, _) = mirror_endpoints(&east, n, "emoji-west").await.unwrap();
    assert_eq!(addrs, ["127.20.19.1"], "the endpoints stay, not-ready");

    scale(&west, n, "emoji", 1).await;
    wait_ready(
        &east,
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
        &east,
        n,
        "emoji-west",
        false,
        Duration::from_secs(10),
        "a dead gateway turns the mirror not-ready",
    )
    .await;
    wait_condition(
        &east,
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
        &east,
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
                && g.addresses == ["127.20.19.1"]
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

    // Someone edits or deletes what the mirror wrote: it is written again.
    let slices: Api<EndpointSlice> = Api::namespaced(east.clone(), n);
    slices
        .delete("emoji-west-gateway", &DeleteParams::default())
        .await
        .unwrap();
    services
        .patch(
            "emoji-west",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": null}}})),
        )
        .await
        .unwrap();
    wait_ready(
        &east,
        n,
        "emoji-west",
        true,
        Duration::from_secs(10),
        "a deleted mirror slice comes back",
    )
    .await;
    eventually(
        "an edited mirror is repaired",
        Duration::from_secs(10),
        || async {
            let svc = services
                .get("emoji-west")
                .await
                .map_err(|e| e.to_string())?;
            let app = svc.metadata.labels.unwrap_or_default().get("app").cloned();
            (app.as_deref() == Some("emoji"))
                .then_some(())
                .ok_or(format!("app={app:?}"))
        },
    )
    .await;

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
        let (_, _, slice_ports) = mirror_endpoints(&east, n, "emoji-west").await?;
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
        &services,
        "emoji-west",
        "the unexported Service's mirror is deleted",
    )
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(east.clone(), n);
    wait_gone(&slices, "emoji-west-gateway", "its slice too").await;

    // Exported again, then the Link goes: its mirrors go with it.
    west_services
        .patch(
            "emoji",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"mirror.linkerd.io/exported": "true"}}})),
        )
        .await
        .unwrap();
    export(&west, n, "web", n, 1).await;
    wait_ready(
        &east,
        n,
        "emoji-west",
        true,
        SETTLE,
        "emoji is mirrored again",
    )
    .await;
    wait_ready(&east, n, "web-west", true, SETTLE, "web is mirrored").await;
    links.delete(link, &DeleteParams::default()).await.unwrap();
    wait_gone(
        &links,
        link,
        "the deleted Link goes, once its mirrors are gone",
    )
    .await;
    for m in ["emoji-west", "web-west"] {
        assert!(
            services.get_opt(m).await.unwrap().is_none(),
            "{m} is deleted with the Link"
        );
        assert!(
            slices
                .get_opt(&format!("{m}-gateway"))
                .await
                .unwrap()
                .is_none()
        );
    }
    mirror.shutdown().await;
}

/// A request to etcd's JSON gateway: `POST /v3/<path>` with `body`.
async fn etcd(port: u16, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connecting to etcd on {port}: {e}"));
    conn.write_all(
        format!(
            "POST /v3/{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    let (head, rest) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "etcd {path}: {out}");
    // The gateway may answer chunked: take the JSON object.
    let start = rest.find('{').expect("a JSON body");
    let end = rest.rfind('}').expect("a JSON body");
    serde_json::from_str(&rest[start..=end]).unwrap_or_else(|e| panic!("etcd {path}: {e}: {rest}"))
}

/// A mirror slice deleted while the mirror's local watches were down comes
/// back: the re-list shows it gone (there is no Delete event for it), and
/// the mirror writes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_slice_deleted_while_the_local_watch_was_down_comes_back() {
    use base64::Engine;
    init_logs();
    const BASE: u16 = 12740;
    let tb = PrivateTestbed::start(tandem_bin(), &["east", "west"], BASE);
    let env = &tb.env;
    let ns = env.namespace("mirror-repair", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    let link = "repair-west";
    let _pair = link_pair(env, &east, &west, n, link, "127.20.19.7").await;
    // No periodic resync during the test: only the re-list may repair.
    let east_client = mirror_client(env, "east").await;
    let (stop, stopped) = watch::channel(false);
    let settings = MirrorSettings {
        link_namespace: n.to_string(),
        link_name: link.to_string(),
        status_interval: Duration::from_millis(500),
        resync_period: Duration::from_secs(3600),
        ..MirrorSettings::default()
    };
    let mirror = Mirror {
        stop,
        task: Some(tokio::spawn(run_mirror(east_client, settings, stopped))),
    };
    export(&west, n, "emoji", n, 1).await;
    wait_ready(&east, n, "emoji-west", true, SETTLE, "the mirror is ready").await;

    // East's API server stops; the slice is deleted behind its back (in
    // etcd), then it starts again, with the mirror's watches far behind.
    let testbed = |verb: &str| {
        let out = tandem_harness::run(
            env.tandem()
                .args([
                    "testbed",
                    verb,
                    "kube-apiserver",
                    "--cluster",
                    "east",
                    "--dir",
                ])
                .arg(&env.dir),
        );
        assert!(
            out.status.success(),
            "{verb} east's apiserver: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    testbed("stop");
    let b64 = base64::engine::general_purpose::STANDARD;
    let etcd_port = BASE + 1;
    let keys = etcd(
        etcd_port,
        "kv/range",
        &json!({"key": b64.encode("/registry/"), "range_end": b64.encode("/registry0"), "keys_only": true}),
    )
    .await;
    let suffix = format!("/{n}/emoji-west-gateway");
    let key = keys["kvs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| kv["key"].as_str())
        .filter_map(|k| String::from_utf8(b64.decode(k).ok()?).ok())
        .find(|k| k.contains("endpointslices") && k.ends_with(&suffix))
        .unwrap_or_else(|| panic!("the mirror slice in etcd: {keys}"));
    let deleted = etcd(
        etcd_port,
        "kv/deleterange",
        &json!({"key": b64.encode(&key)}),
    )
    .await;
    assert_eq!(deleted["deleted"], "1", "{deleted}");
    testbed("start");

    let slices: Api<EndpointSlice> = Api::namespaced(east.clone(), n);
    eventually("east's API server answers", SETTLE, || async {
        slices
            .list(&Default::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    wait_ready(
        &east,
        n,
        "emoji-west",
        true,
        Duration::from_secs(90),
        "the deleted mirror slice comes back after the re-list",
    )
    .await;

    let links: Api<Link> = Api::namespaced(east.clone(), n);
    links.delete(link, &DeleteParams::default()).await.unwrap();
    wait_gone(&links, link, "the Link is deleted").await;
    mirror.shutdown().await;
}

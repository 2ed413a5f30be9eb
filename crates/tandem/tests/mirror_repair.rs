//! A mirror repaired, against real kube-apiservers: edited or deleted by
//! hand while the mirror watches, and deleted while its watch was down.

use std::{path::Path, time::Duration};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use tandem_api::multicluster::Link;
use tandem_harness::{Env, PrivateTestbed, eventually, mirror::*};
use tandem_multicluster::MirrorSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Someone edits or deletes what the mirror wrote: it is written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_or_deleted_mirror_is_written_again() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let m = Mirrored::start(&env, "edit", "127.20.19.12").await;
    let (n, east, services) = (m.n(), &m.east, &m.services);

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
        east,
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

    m.mirror.shutdown().await;
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
    let mirror = Mirror::start_settings(
        env,
        MirrorSettings {
            resync_period: Duration::from_secs(3600),
            ..Mirror::settings(n, link)
        },
    )
    .await;
    export(&west, n, "emoji", n, 1).await;
    wait_ready(&east, n, "emoji-west", true, SETTLE, "the mirror is ready").await;

    // East's API server stops; the slice is deleted behind its back (in
    // etcd), then it starts again, with the mirror's watches far behind.
    env.testbed_process("stop", "kube-apiserver", "east");
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
    env.testbed_process("start", "kube-apiserver", "east");

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

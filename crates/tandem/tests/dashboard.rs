//! `tandem viz dashboard` against the shared testbed's real kube-apiservers,
//! seen by headless Chromium: the page renders a TrafficSplit's weights;
//! when the failover controller flips it (its primary scaled to 0), the open
//! page shows the new weights within 5 s without a reload; a split that
//! cannot be read is an error row beside it; a Link shows the gateway as the
//! service mirror wrote it (alive, latency); `/api/state` parses.

use std::{path::Path, process::Command, time::Duration};

use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tandem_api::multicluster::Link;
use tandem_dashboard::model::{State, StatsView};
use tandem_harness::{
    Process,
    browser::Browser,
    failover::{backend, controller, scale, split, wait_weights},
    free_port, http_get,
};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// How long the page may take to show a flip the API server already shows:
/// the bound (the dashboard reads every 1s, the page asks every 1s).
const SHOWN_WITHIN: Duration = Duration::from_secs(5);
/// The first render: clients, discovery and the first lists.
const FIRST_RENDER: Duration = Duration::from_secs(30);

/// A JS expression: the weight cell of a backend reads `want`.
fn weight_is(ns: &str, split: &str, backend: &str, want: u32) -> String {
    format!(
        "document.querySelector('[data-weight=\"east/{ns}/{split}/{backend}\"]')?.textContent === '{want}'"
    )
}

#[tokio::test]
async fn the_page_shows_a_split_and_its_flip_without_a_reload() {
    let env = tandem_harness::failover::env(tandem_bin());
    let ns = env.namespace("dash", &["east"]);
    let label = ns.name.clone();
    ns.apply("east", &backend("emoji", "emoji-svc", 1));
    ns.apply("east", &backend("emoji-west", "emoji-svc-west", 1));
    ns.apply(
        "east",
        &split(
            "emoji-svc",
            &label,
            &["emoji-svc", "emoji-svc-west"],
            &[("failover.linkerd.io/primary-service", "emoji-svc")],
        ),
    );
    // A split the controller cannot read: an error row, never a broken page.
    ns.apply(
        "east",
        "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: broken}\nspec:\n  service: apex\n  backends:\n  - {service: a, weight: lots}\n",
    );
    // A Link whose status is what the service mirror writes (no mirror
    // runs here: the status is the input, as the page reads it).
    let east = env.client("east").await;
    tandem_harness::mirror::install_crd(&east).await;
    let links: Api<Link> = Api::namespaced(east.clone(), &ns.name);
    let link: Link = serde_json::from_value(json!({
        "apiVersion": "multicluster.tandem.io/v1alpha1",
        "kind": "Link",
        "metadata": {"name": "west"},
        "spec": {
            "targetClusterName": "west",
            "clusterCredentialsSecret": "cluster-credentials-west",
            "gatewayAddress": "198.18.0.10",
        },
    }))
    .unwrap();
    links.create(&PostParams::default(), &link).await.unwrap();
    let status = json!({"status": {
        "mirroredServices": 2,
        "gateway": {
            "alive": true,
            "addresses": ["198.18.0.10"],
            "probes": [{"address": "198.18.0.10:4191", "alive": true}],
            "latencyMsP50": 2, "latencyMsP95": 4, "latencyMsP99": 9,
        },
    }});
    links
        .patch_status("west", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let _controller = controller(&env, "east", &label, &[]);
    wait_weights(
        &ns,
        "east",
        "emoji-svc",
        &[("emoji-svc", 1), ("emoji-svc-west", 0)],
    )
    .await;

    let port = free_port();
    let mut cmd = Command::new(tandem_bin());
    cmd.env("KUBECONFIG", &env.kubeconfig).args([
        "viz",
        "dashboard",
        "--context",
        "east",
        "--context",
        "west",
        "--refresh",
        "1s",
        "--addr",
        &format!("127.0.0.1:{port}"),
    ]);
    let mut dashboard = Process::spawn("dashboard", cmd, port);
    dashboard.wait_http_ok("/api/state", Duration::from_secs(60));

    let browser = Browser::launch().unwrap_or_else(|e| panic!("{e}"));
    let mut page = browser.page().await.unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://127.0.0.1:{port}/");
    page.goto(&url).await.unwrap_or_else(|e| panic!("{e}"));

    let n = &ns.name;
    let primary = format!(
        "{} && {}",
        weight_is(n, "emoji-svc", "emoji-svc", 1),
        weight_is(n, "emoji-svc", "emoji-svc-west", 0)
    );
    page.wait_until("the split's weights", &primary, FIRST_RENDER)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", dashboard.log_text()));
    // Both clusters are there, and west (no split of this test) renders too.
    let contexts = page
        .texts("section.cluster > h2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(contexts.len(), 2, "{contexts:?}");
    assert!(contexts[0].starts_with("east") && contexts[1].starts_with("west"));
    let broken = page
        .text(&format!("tr.error-row[data-split=\"east/{n}/broken\"]"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no error row for the broken split"));
    assert!(broken.contains("spec.backends[0]"), "{broken}");
    let gateway = page
        .text(&format!("tr[data-link=\"east/{n}/west\"]"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a row for the Link");
    for want in ["198.18.0.10:4143", "alive", "2ms / 4ms / 9ms"] {
        assert!(gateway.contains(want), "{want} in {gateway}");
    }
    let stats = page
        .text("section.cluster[data-context=\"east\"] .stats-state")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stats
            .as_deref()
            .unwrap_or_default()
            .contains("viz is not installed"),
        "{stats:?}"
    );

    // The flip, seen by the open page: a marker on the window shows that it
    // was not reloaded.
    page.eval("window.tandemTestMarker = 42")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let renders_before = page
        .eval("Number(document.body.dataset.renders)")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    scale(&ns, "east", "emoji", 0);
    wait_weights(
        &ns,
        "east",
        "emoji-svc",
        &[("emoji-svc", 0), ("emoji-svc-west", 1)],
    )
    .await;
    let flipped = format!(
        "{} && {} && document.querySelector('[data-state=\"east/{n}/emoji-svc\"]')?.textContent === 'failover'",
        weight_is(n, "emoji-svc", "emoji-svc", 0),
        weight_is(n, "emoji-svc", "emoji-svc-west", 1)
    );
    page.wait_until("the flipped weights", &flipped, SHOWN_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", dashboard.log_text()));
    assert_eq!(
        page.eval("window.tandemTestMarker").await.unwrap(),
        serde_json::json!(42),
        "the page was reloaded"
    );
    let renders_after = page
        .eval("Number(document.body.dataset.renders)")
        .await
        .unwrap();
    assert!(
        renders_after.as_u64() > renders_before.as_u64(),
        "{renders_before} -> {renders_after}"
    );
    // The controller's Event about the flip reaches the page too.
    page.wait_until(
        "the FailoverToFallback event",
        &format!(
            "document.querySelector('[data-split=\"east/{n}/emoji-svc\"]')?.textContent.includes('FailoverToFallback')"
        ),
        SHOWN_WITHIN,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The same, as JSON for scripts.
    let (status, body) = http_get(port, "/api/state").expect("the dashboard answers");
    assert_eq!(status, 200, "{body}");
    let state: State = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let names: Vec<&str> = state.clusters.iter().map(|c| c.context.as_str()).collect();
    assert_eq!(names, ["east", "west"]);
    let east = &state.clusters[0];
    let s = east
        .splits
        .rows
        .iter()
        .find(|s| s.namespace == *n && s.name == "emoji-svc")
        .unwrap_or_else(|| panic!("no split in {body}"));
    assert_eq!(s.state, "failover");
    assert_eq!(s.primary.as_deref(), Some("emoji-svc"));
    let weights: Vec<(&str, u32)> = s
        .backends
        .iter()
        .map(|b| (b.service.as_str(), b.weight))
        .collect();
    assert_eq!(weights, [("emoji-svc", 0), ("emoji-svc-west", 1)]);
    assert!(
        matches!(east.stats, StatsView::NotInstalled { .. }),
        "{:?}",
        east.stats
    );
}

/// Bad flags are refused before anything starts: a non-loopback address
/// (the page has no login) and a zero refresh period.
#[test]
fn bad_flags_are_refused_with_a_reason() {
    let env = tandem_harness::failover::env(tandem_bin());
    for (args, want) in [
        (
            &["--context", "east", "--addr", "0.0.0.0:0"][..],
            "serves on loopback only",
        ),
        (
            &["--context", "east", "--refresh", "0s"][..],
            "longer than zero",
        ),
        (&["--context", "nowhere"][..], "nowhere"),
    ] {
        let out = Command::new(tandem_bin())
            .env("KUBECONFIG", &env.kubeconfig)
            .args(["viz", "dashboard"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

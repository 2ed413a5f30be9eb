//! `tandem viz install` and `tandem viz stat` on real nodes: Prometheus
//! (built from its Go module) scrapes the injected proxies with Linkerd's
//! labels, and `viz stat` shows a known load (10 rps from a meshed client
//! to an injected backend) within ±20%, all successful, for `deploy` and
//! for `svc` (named by the destination service), as a table and as JSON.

use std::{path::Path, process::Output, time::Duration};

use serde_json::Value;
use tandem_harness::{
    Env, TestNamespace, app,
    dataplane::{self, Load, LoadSpec, ROUTING_IDENTITY},
    eventually, run,
};

const CLUSTER: &str = "east";
const RATE: u32 = 10;

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Prometheus' answer to an instant query, through the API server, as
/// kubectl fetches it: the test's own view, independent of `viz stat`.
fn prometheus(env: &Env, query: &str) -> Vec<Value> {
    let path = format!(
        "/api/v1/namespaces/tandem-viz/services/prometheus:9090/proxy/api/v1/query?query={}",
        query
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            })
            .collect::<String>()
    );
    let out = run(env.kubectl(CLUSTER).args(["get", "--raw", &path]));
    if !out.status.success() {
        return vec![];
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn stat_json(env: &Env, ns: &TestNamespace, kind: &str) -> Result<Vec<Value>, String> {
    app::viz_stat_json(env, CLUSTER, &["-n", &ns.name, kind])
}

/// The 30 s window of the queries and two 10 s scrapes.
const FULL_WINDOW: Duration = Duration::from_secs(50);

/// `viz stat -n NS KIND -t 30s -o json`'s row `web`, once it answers (a
/// new Prometheus may take a scrape), checked against what the load sent:
/// ±20%, 100% success.
async fn stat_row(env: &Env, ns: &TestNamespace, kind: &str, load: &Load) -> Value {
    let rows = eventually(
        &format!("viz stat {kind} answering with a web row"),
        Duration::from_secs(30),
        || async {
            let rows = stat_json(env, ns, kind)?;
            match rows.iter().any(|r| r["name"] == "web" && r["rps"].is_f64()) {
                true => Ok(rows),
                false => Err(format!("{rows:?}")),
            }
        },
    )
    .await;
    let sent = sent_rate(load);
    eprintln!("viz stat {kind}: {rows:?}; the load sent {sent:.2} rps over the last 30 s");
    assert!(
        sent >= f64::from(RATE) * 0.5,
        "the load sent only {sent:.2} rps of {RATE}: the machine is too busy for this test"
    );
    check_row(&rows, "web", sent).unwrap_or_else(|e| panic!("{e}"))
}

/// What the load sent per second over the last 30 s (the window of the
/// queries). On a busy machine it falls short of RATE: that is the rate
/// `viz stat` must report.
fn sent_rate(load: &Load) -> f64 {
    let window = Duration::from_secs(30);
    let age = load.started.elapsed().min(window).as_secs_f64().max(1.0);
    let sent = load
        .samples()
        .iter()
        .filter(|s| s.sent.elapsed() <= window)
        .count();
    sent as f64 / age
}

/// The row `name` with traffic at `want` rps ±20% and 100% success.
fn check_row(rows: &[Value], name: &str, want: f64) -> Result<Value, String> {
    let row = rows
        .iter()
        .find(|r| r["name"] == name)
        .ok_or_else(|| format!("no row {name} in {rows:?}"))?;
    let rps = row["rps"]
        .as_f64()
        .ok_or_else(|| format!("{name} has no rps yet: {row}"))?;
    if (rps - want).abs() > want * 0.2 {
        return Err(format!(
            "{name}: {rps:.2} rps, the load sent {want:.2}: {row}"
        ));
    }
    if row["success"].as_f64() != Some(1.0) {
        return Err(format!("{name}: success is not 100%: {row}"));
    }
    Ok(row.clone())
}

#[tokio::test]
async fn viz_stat_shows_a_known_load() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    dataplane::control_plane(&env, CLUSTER);

    // The default image is the one the testbed builds and loads.
    let want_image = tandem_testbed::image::images::prometheus_reference(
        &tandem_testbed::toolchain::prometheus_version(),
    );
    assert_eq!(tandem_viz::install::DEFAULT_PROMETHEUS_IMAGE, want_image);

    // The seed's flag is taken; an unknown key only warns.
    let out = run(env.tandem().args([
        "viz",
        "install",
        "--set",
        "grafana.url=grafana.example:3000",
        "--set",
        "nope.key=1",
    ]));
    let manifest = ok(&out, "tandem viz install");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("nope.key"),
        "{stderr}"
    );
    assert!(
        manifest.contains("grafana.example:3000"),
        "the Grafana URL is recorded"
    );
    env.apply(CLUSTER, &manifest);
    app::wait_prometheus(&env, CLUSTER);

    let ns = env.namespace("viz", &[CLUSTER]);
    // Nothing meshed here yet: linkerd's words, on stderr.
    let out = run(env.tandem().args([
        "--context",
        CLUSTER,
        "viz",
        "stat",
        "-n",
        &ns.name,
        "deploy",
    ]));
    ok(&out, "viz stat of an empty namespace");
    assert!(String::from_utf8_lossy(&out.stderr).contains("No traffic found."));

    let backend = dataplane::inject_backend(
        &env,
        CLUSTER,
        &dataplane::backend("web", 1, true),
        ROUTING_IDENTITY,
    );
    ns.apply(CLUSTER, &backend);
    ns.apply(
        CLUSTER,
        &dataplane::inject(
            &env,
            CLUSTER,
            &dataplane::client_pod("client"),
            ROUTING_IDENTITY,
        ),
    );
    // The workshop's shape: a split of the apex over itself and a backend
    // that gets nothing (weight 0: the proxy never resolves it).
    ns.apply(
        CLUSTER,
        &dataplane::traffic_split("web", &[("web", 1), ("web-west", 0)]),
    );
    dataplane::wait_rollout(&ns, CLUSTER, "web");
    dataplane::wait_pod_ready(&ns, CLUSTER, "client");

    let target = dataplane::service_addr(&ns, CLUSTER, "web");
    let netns = dataplane::pod_netns(&env, &ns, CLUSTER, "client");
    // 90 s at 10 rps: the 30 s window is full of it well before the end.
    let load = Load::start(
        &netns,
        LoadSpec {
            target,
            path: "/".into(),
            rate: RATE,
            count: RATE * 90,
        },
    );

    // The scrape keeps the proxies, with Linkerd's labels.
    let series = eventually(
        "Prometheus scraping both proxies of the namespace",
        Duration::from_secs(60),
        || async {
            let q = format!(r#"request_total{{namespace="{}"}}"#, ns.name);
            let r = prometheus(&env, &q);
            let inbound = r.iter().find(|s| {
                s["metric"]["direction"] == "inbound" && s["metric"]["deployment"] == "web"
            });
            let outbound = r
                .iter()
                .find(|s| s["metric"]["direction"] == "outbound" && s["metric"]["pod"] == "client");
            match (inbound, outbound) {
                (Some(i), Some(o)) => Ok((i.clone(), o.clone())),
                _ => Err(format!("{r:?}")),
            }
        },
    )
    .await;
    let labels = &series.0["metric"];
    assert!(
        labels["pod"]
            .as_str()
            .unwrap_or_default()
            .starts_with("web-"),
        "{labels}"
    );
    assert_eq!(labels["job"], "linkerd-proxy", "{labels}");
    assert_eq!(labels["control_plane_ns"], "tandem", "{labels}");
    assert_eq!(labels["app"], "web", "pod labels are copied: {labels}");
    assert_eq!(series.1["metric"]["dst_service"], "web", "{}", series.1);

    // `increase()` over a series younger than its window undercounts (no
    // extrapolation before the first sample): the figures are Linkerd's
    // once the load has filled the 30 s window plus two scrapes.
    tokio::time::sleep_until((load.started + FULL_WINDOW).into()).await;
    let deploy = stat_row(&env, &ns, "deploy", &load).await;
    assert_eq!(deploy["meshed"], "1/1", "{deploy}");
    assert_eq!(deploy["kind"], "deployment");
    assert!(deploy["latency_ms_p99"].as_u64().is_some(), "{deploy}");
    let svc = stat_row(&env, &ns, "svc", &load).await;
    assert_eq!(svc["kind"], "service");
    assert!(svc.get("meshed").is_none(), "{svc}");
    // ts: the apex's traffic by the backend it reached (LEAF), the idle one
    // as `-`; each row named by the split, with its apex and the weights.
    let splits = stat_json(&env, &ns, "ts").unwrap_or_else(|e| panic!("{e}"));
    let leaves: Vec<Value> = splits
        .iter()
        .map(|r| {
            assert_eq!(
                (&r["kind"], &r["name"], &r["apex"]),
                (&"trafficsplit".into(), &"web".into(), &"web".into()),
                "{r}"
            );
            assert!(r.get("meshed").is_none(), "{r}");
            let mut leaf = r.clone();
            leaf["name"] = r["leaf"].clone();
            leaf
        })
        .collect();
    let busy = check_row(&leaves, "web", sent_rate(&load)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(busy["weight"], "1", "{busy}");
    let idle = leaves.iter().find(|r| r["name"] == "web-west");
    assert!(
        idle.is_some_and(|r| r["rps"].is_null() && r["weight"] == "0"),
        "{splits:?}"
    );

    // The table, as people read it.
    let table = app::StatTable::get(&env, CLUSTER, &["-n", &ns.name, "deploy"])
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", table.text);
    assert_eq!(
        table.header(),
        [
            "NAME",
            "MESHED",
            "SUCCESS",
            "RPS",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99",
            "TCP_CONN"
        ]
    );
    let web = table
        .row("web")
        .filter(|cells| cells[0] == "web")
        .unwrap_or_else(|| panic!("no web row:\n{}", table.text));
    assert_eq!(&web[1..3], ["1/1", "100.00%"], "{}", table.text);
    assert!(
        web[3].ends_with("rps") && web[4].ends_with("ms"),
        "{}",
        table.text
    );

    let samples = load.stop();
    let failed = samples.iter().filter(|s| s.failed()).count();
    assert_eq!(
        failed,
        0,
        "the load itself failed {failed} of {} requests",
        samples.len()
    );
}

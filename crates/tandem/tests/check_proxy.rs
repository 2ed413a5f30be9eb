//! `tandem check --proxy -n NS`, as `linkerd check --proxy`, against real
//! proxies on a real node: a meshed namespace passes the data plane's
//! checks; a pod injected with other trust anchors (its proxy can never be
//! certified), a setting written as a label and an export written as an
//! annotation are each reported, by name; a namespace that does not exist
//! fails at once.

use std::path::Path;

use serde_json::Value;
use tandem_harness::check::{category, find};
use tandem_harness::{Env, dataplane, dataplane::ROUTING_IDENTITY, run, run_ok};

const CLUSTER: &str = "east";

/// `tandem check --proxy ARGS -o json` in `CLUSTER`: its exit status and
/// report.
fn check(env: &Env, args: &[&str]) -> (bool, Value) {
    let out = run(env
        .tandem()
        .args(["--context", CLUSTER, "check", "--proxy", "-o", "json"])
        .args(args));
    (out.status.success(), tandem_harness::check::report(&out))
}

#[test]
fn check_proxy_passes_a_meshed_namespace_and_names_each_problem() {
    let tandem = Path::new(env!("CARGO_BIN_EXE_tandem"));
    let env = Env::real(tandem);
    dataplane::control_plane(&env, CLUSTER);

    // A meshed pod, and nothing wrong.
    let good = env.namespace("dp-check-ok", &[CLUSTER]);
    let client = dataplane::client_pod("client");
    good.apply(
        CLUSTER,
        &dataplane::inject(&env, CLUSTER, &client, ROUTING_IDENTITY),
    );
    dataplane::wait_pod_ready(&good, CLUSTER, "client");
    let (_, report) = check(&env, &["-n", &good.name, "--wait", "0s"]);
    let data_plane = category(&report, "tandem-data-plane");
    let results: Vec<(&str, &str)> = data_plane.iter().map(|c| c.outcome()).collect();
    assert_eq!(
        results,
        [
            ("data plane namespace exists", "success"),
            ("data plane proxies are ready", "success"),
            ("data plane and cli versions match", "success"),
            ("data plane pod labels are configured correctly", "success"),
            (
                "data plane service labels are configured correctly",
                "success"
            ),
            (
                "data plane service annotations are configured correctly",
                "success"
            ),
        ],
        "{report:#}"
    );
    let identity = category(&report, "tandem-identity-data-plane");
    let anchors = find(&identity, "data plane proxies certificate match CA");
    assert_eq!(
        (anchors.result.as_str(), anchors.error.as_str()),
        ("success", "")
    );

    // Three problems in another namespace.
    let bad = env.namespace("dp-check-bad", &[CLUSTER]);
    // 1. A pod injected with another root: its proxy keeps those anchors,
    //    so it can never trust the identity service, and is never ready.
    let other = tempfile::tempdir().unwrap();
    tandem_harness::workshop_certificates(tandem, other.path(), &[]);
    let stale = other.path().join("stale.yaml");
    std::fs::write(&stale, dataplane::client_pod("stale")).unwrap();
    let injected = run_ok(
        env.tandem()
            .args(["inject", "--context", CLUSTER, "--trust-anchors-file"])
            .arg(other.path().join("root.crt"))
            .arg(&stale),
    );
    bad.apply(CLUSTER, &injected);
    // 2. Injection's setting as a label, on a meshed pod.
    let labelled = dataplane::client_pod("labelled").replace(
        "  name: labelled\n",
        "  name: labelled\n  labels:\n    linkerd.io/inject: enabled\n",
    );
    bad.apply(
        CLUSTER,
        &dataplane::inject(&env, CLUSTER, &labelled, ROUTING_IDENTITY),
    );
    // 3. The export as an annotation: no service mirror would see it.
    bad.kubectl(
        CLUSTER,
        &[
            "create",
            "service",
            "clusterip",
            "emoji-svc",
            "--tcp=80:8080",
        ],
    );
    bad.kubectl(
        CLUSTER,
        &[
            "annotate",
            "svc",
            "emoji-svc",
            "mirror.linkerd.io/exported=true",
        ],
    );
    dataplane::wait_pod_ready(&bad, CLUSTER, "labelled");

    let (ok, report) = check(&env, &["-n", &bad.name, "--wait", "0s"]);
    assert!(!ok, "a proxy that is not ready fails the check: {report:#}");
    let data_plane = category(&report, "tandem-data-plane");
    let c = find(&data_plane, "data plane proxies are ready");
    let (outcome, error) = (c.result.as_str(), c.error.as_str());
    assert_eq!(outcome, "error", "{error}");
    assert!(
        error.starts_with("1 of 2 proxies are not ready:")
            && error.contains(&format!("* {}/stale: ", bad.name)),
        "{error}"
    );
    let c = find(
        &data_plane,
        "data plane pod labels are configured correctly",
    );
    let (outcome, error) = (c.result.as_str(), c.error.as_str());
    assert_eq!(outcome, "warning");
    assert!(
        error.contains(&format!("* {}/labelled\n    linkerd.io/inject", bad.name)),
        "{error}"
    );
    let c = find(
        &data_plane,
        "data plane service annotations are configured correctly",
    );
    let (outcome, error) = (c.result.as_str(), c.error.as_str());
    assert_eq!(outcome, "warning");
    assert!(
        error.contains(&format!(
            "* {}/emoji-svc\n    mirror.linkerd.io/exported",
            bad.name
        )),
        "{error}"
    );
    let identity = category(&report, "tandem-identity-data-plane");
    let c = find(&identity, "data plane proxies certificate match CA");
    let (outcome, error) = (c.result.as_str(), c.error.as_str());
    assert_eq!(outcome, "warning");
    assert!(
        error.contains(&format!("* {}/stale", bad.name)) && !error.contains("labelled"),
        "only the pod with other anchors: {error}"
    );

    // The same as people read it.
    let out = run(env.tandem().args([
        "--context",
        CLUSTER,
        "check",
        "--proxy",
        "-n",
        &bad.name,
        "--wait",
        "0s",
    ]));
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("tandem-data-plane\n-----------------\n")
            && out.contains("× data plane proxies are ready\n")
            && out.contains("‼ data plane proxies certificate match CA\n"),
        "{out}"
    );

    // A namespace that is not there.
    let (ok, report) = check(&env, &["-n", "no-such-namespace", "--wait", "0s"]);
    assert!(!ok);
    let data_plane = category(&report, "tandem-data-plane");
    let results: Vec<(&str, &str, &str)> = data_plane
        .iter()
        .map(|c| (c.description.as_str(), c.result.as_str(), c.error.as_str()))
        .collect();
    assert_eq!(
        results,
        [(
            "data plane namespace exists",
            "error",
            "The \"no-such-namespace\" namespace does not exist"
        )]
    );
}

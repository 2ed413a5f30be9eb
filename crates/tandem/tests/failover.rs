//! The failover controller against real kube-apiservers: `tandem failover
//! run` as a process, the cluster driven with kubectl as users drive it.
//!
//! Each test runs its own controller with its own label selector (or, for
//! the workshop's manifest, the workshop's label value), so tests running at
//! once never act on each other's splits.

use std::{path::Path, time::Duration};

use serde_json::Value;
use tandem_harness::{Env, PrivateTestbed, Process, TestNamespace, eventually};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// The shared testbed, with the TrafficSplit CRD installed the way users
/// install it (`tandem smi install | kubectl apply -f -`), once per run.
fn env() -> Env {
    static CRD: std::sync::Once = std::sync::Once::new();
    let env = Env::shared(tandem_bin());
    CRD.call_once(|| {
        let crd = tandem_harness::run_ok(
            std::process::Command::new(tandem_bin()).args(["smi", "install"]),
        );
        for ctx in ["east", "west"] {
            apply_stdin(&env, ctx, &crd);
            tandem_harness::run_ok(env.kubectl(ctx).args([
                "wait",
                "--for=condition=Established",
                "crd/trafficsplits.split.smi-spec.io",
            ]));
        }
    });
    env
}

fn apply_stdin(env: &Env, ctx: &str, manifest: &str) {
    use std::io::Write;
    let mut child = env
        .kubectl(ctx)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "kubectl apply in {ctx}");
}

/// Deadline for a flip to show: an expected outcome, not a speed measure.
const FLIP: Duration = Duration::from_secs(15);

/// A Deployment and a Service of that name (Service `svc`, pods labelled `app=svc`).
fn backend(deploy: &str, svc: &str, replicas: u32) -> String {
    format!(
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {deploy}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {svc}}}}}
  template:
    metadata: {{labels: {{app: {svc}}}}}
    spec: {{containers: [{{name: app, image: emoji:v1, ports: [{{containerPort: 8080}}]}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {svc}}}
spec:
  selector: {{app: {svc}}}
  ports: [{{name: grpc, port: 8080}}]
"#
    )
}

/// The workshop's TrafficSplit, exactly as the seed writes it (but for the
/// API version, which case 10 varies).
fn workshop_split(version: &str) -> String {
    format!(
        r#"apiVersion: split.smi-spec.io/{version}
kind: TrafficSplit
metadata:
  name: emoji-svc
  namespace: emojivoto
  labels:
      failover.linkerd.io/controlled-by: linkerd-failover
  annotations:
      failover.linkerd.io/primary-service: emoji-svc
spec:
  service: emoji-svc
  backends:
  - service: emoji-svc
    weight: 1
  - service: emoji-svc-west
    weight: 0
"#
    )
}

/// A controller for the splits labelled `failover.linkerd.io/controlled-by=VALUE`.
fn controller(env: &Env, ctx: &str, value: &str, extra: &[&str]) -> Process {
    let selector = format!("failover.linkerd.io/controlled-by={value}");
    let mut args = vec!["--context", ctx, "failover", "run", "--selector", &selector];
    if !extra.contains(&"--lease-namespace") {
        args.push("--no-leader-election");
    }
    args.extend(extra);
    let mut p = Process::start(env, &format!("controller {value}"), &args);
    p.wait_ready(Duration::from_secs(60));
    p
}

/// A split's (service, weight) pairs, as `kubectl get ts -o json` shows them.
fn weights(ns: &TestNamespace, ctx: &str, name: &str) -> Vec<(String, i64)> {
    weight_values(ns, ctx, name)
        .into_iter()
        .map(|(s, w)| {
            let w = w
                .as_i64()
                .unwrap_or_else(|| panic!("{name}: weight {w} of {s} is not an integer"));
            (s, w)
        })
        .collect()
}

/// A split's (service, weight) pairs with the weights as written: a
/// v1alpha1 split may hold quantities (`"500m"`).
fn weight_values(ns: &TestNamespace, ctx: &str, name: &str) -> Vec<(String, Value)> {
    let out = ns.kubectl(
        ctx,
        &[
            "get",
            "trafficsplits.v1alpha2.split.smi-spec.io",
            name,
            "-o",
            "json",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["spec"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["service"].as_str().unwrap().to_string(),
                b["weight"].clone(),
            )
        })
        .collect()
}

fn annotation(ns: &TestNamespace, ctx: &str, kind: &str, name: &str, key: &str) -> Option<String> {
    let out = ns.kubectl(ctx, &["get", kind, name, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["metadata"]["annotations"][key].as_str().map(String::from)
}

/// The reasons of the events about an object, oldest first.
fn event_reasons(ns: &TestNamespace, ctx: &str, name: &str) -> Vec<String> {
    let out = ns.kubectl(
        ctx,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "json",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut items: Vec<&Value> = v["items"].as_array().unwrap().iter().collect();
    items.sort_by_key(|e| {
        e["eventTime"]
            .as_str()
            .or(e["lastTimestamp"].as_str())
            .unwrap_or("")
            .to_string()
    });
    items
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn wait_weights(ns: &TestNamespace, ctx: &str, name: &str, want: &[(&str, i64)]) {
    let want: Vec<(String, Value)> = want
        .iter()
        .map(|(s, w)| (s.to_string(), Value::from(*w)))
        .collect();
    eventually(&format!("{name} weights {want:?}"), FLIP, || {
        let got = weight_values(ns, ctx, name);
        let want = want.clone();
        async move {
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        }
    })
    .await;
}

async fn wait_event(ns: &TestNamespace, ctx: &str, name: &str, reason: &str, count: usize) {
    eventually(
        &format!("{count} {reason} event(s) on {name}"),
        FLIP,
        || {
            let reasons = event_reasons(ns, ctx, name);
            let n = reasons.iter().filter(|r| *r == reason).count();
            async move {
                if n >= count {
                    Ok(())
                } else {
                    Err(format!("{reasons:?}"))
                }
            }
        },
    )
    .await;
}

/// Waits for a TrafficSplit's `failover.tandem.io/state` annotation.
async fn wait_state(ns: &TestNamespace, name: &str, want: &str) {
    eventually(&format!("{name} in state {want}"), FLIP, || {
        let s = annotation(ns, "east", "ts", name, "failover.tandem.io/state");
        async move {
            if s.as_deref() == Some(want) {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        }
    })
    .await;
}

fn scale(ns: &TestNamespace, ctx: &str, deploy: &str, replicas: u32) {
    ns.kubectl(
        ctx,
        &[
            "scale",
            &format!("deployment/{deploy}"),
            &format!("--replicas={replicas}"),
        ],
    );
}

/// Cases 1 and 10: the workshop's manifest, unchanged, under v1alpha2 and
/// then v1alpha1; each transition with its Event.
#[tokio::test]
async fn the_workshop_manifest_fails_over_and_back_under_both_versions() {
    let env = env();
    let ns = env.fixed_namespace("emojivoto", &["east"]);
    ns.apply("east", &backend("emoji", "emoji-svc", 1));
    ns.apply("east", &backend("emoji-west", "emoji-svc-west", 1));
    let _c = controller(&env, "east", "linkerd-failover", &[]);

    for (round, version) in ["v1alpha2", "v1alpha1"].into_iter().enumerate() {
        ns.apply("east", &workshop_split(version));
        wait_weights(
            &ns,
            "east",
            "emoji-svc",
            &[("emoji-svc", 1), ("emoji-svc-west", 0)],
        )
        .await;

        scale(&ns, "east", "emoji", 0);
        wait_weights(
            &ns,
            "east",
            "emoji-svc",
            &[("emoji-svc", 0), ("emoji-svc-west", 1)],
        )
        .await;
        assert_eq!(
            annotation(&ns, "east", "ts", "emoji-svc", "failover.tandem.io/state").as_deref(),
            Some("failover")
        );
        assert!(
            annotation(
                &ns,
                "east",
                "ts",
                "emoji-svc",
                "failover.tandem.io/last-transition-time"
            )
            .is_some()
        );
        wait_event(&ns, "east", "emoji-svc", "FailoverToFallback", round + 1).await;

        // What the workshop shows: `kubectl get ts -o yaml`.
        let yaml = ns.kubectl("east", &["get", "ts", "emoji-svc", "-o", "yaml"]);
        assert!(
            yaml.contains("service: emoji-svc-west\n    weight: 1"),
            "{yaml}"
        );

        scale(&ns, "east", "emoji", 1);
        wait_weights(
            &ns,
            "east",
            "emoji-svc",
            &[("emoji-svc", 1), ("emoji-svc-west", 0)],
        )
        .await;
        assert_eq!(
            annotation(&ns, "east", "ts", "emoji-svc", "failover.tandem.io/state").as_deref(),
            Some("primary")
        );
        wait_event(&ns, "east", "emoji-svc", "FailbackToPrimary", round + 1).await;
        ns.kubectl("east", &["delete", "ts", "emoji-svc"]);
    }
}

fn split(name: &str, label: &str, backends: &[&str], annotations: &[(&str, &str)]) -> String {
    let backends: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("  - service: {b}\n    weight: {}\n", i32::from(i == 0)))
        .collect();
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    format!(
        "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata:\n  name: {name}\n  labels:\n    failover.linkerd.io/controlled-by: {label}\n  annotations:\n{annotations}    tandem.io/test: \"yes\"\nspec:\n  service: apex\n  backends:\n{backends}"
    )
}

/// Case 2: a priority chain of three; the first ready one in order wins.
#[tokio::test]
async fn a_priority_chain_sends_traffic_to_the_first_ready_backend() {
    let env = env();
    let ns = env.namespace("priority", &["east"]);
    for svc in ["a", "b", "c"] {
        ns.apply("east", &backend(svc, svc, 1));
    }
    let label = ns.name.clone();
    ns.apply(
        "east",
        &split(
            "chain",
            &label,
            &["a", "b", "c"],
            &[("failover.tandem.io/priority", "c,b")],
        ),
    );
    let _c = controller(&env, "east", &label, &[]);
    wait_weights(&ns, "east", "chain", &[("a", 1), ("b", 0), ("c", 0)]).await;

    scale(&ns, "east", "a", 0);
    wait_weights(&ns, "east", "chain", &[("a", 0), ("b", 0), ("c", 1)]).await;
    scale(&ns, "east", "c", 0);
    wait_weights(&ns, "east", "chain", &[("a", 0), ("b", 1), ("c", 0)]).await;
    scale(&ns, "east", "c", 1);
    wait_weights(&ns, "east", "chain", &[("a", 0), ("b", 0), ("c", 1)]).await;
    scale(&ns, "east", "a", 1);
    wait_weights(&ns, "east", "chain", &[("a", 1), ("b", 0), ("c", 0)]).await;
}

/// Case 3: everything down: weights stay, state and Event say so.
#[tokio::test]
async fn with_no_ready_backend_the_weights_stay_and_the_state_says_so() {
    let env = env();
    let ns = env.namespace("alldown", &["east"]);
    ns.apply("east", &backend("p", "p", 1));
    ns.apply("east", &backend("f", "f", 1));
    let label = ns.name.clone();
    ns.apply("east", &split("s", &label, &["p", "f"], &[]));
    let _c = controller(&env, "east", &label, &[]);
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;

    scale(&ns, "east", "p", 0);
    wait_weights(&ns, "east", "s", &[("p", 0), ("f", 1)]).await;
    scale(&ns, "east", "f", 0);
    wait_state(&ns, "s", "no-ready-backends").await;
    wait_event(&ns, "east", "s", "NoReadyBackends", 1).await;
    assert_eq!(
        weights(&ns, "east", "s"),
        [("p".to_string(), 0), ("f".to_string(), 1)],
        "never all zeros: the last weights stay"
    );
    // The first backend to come back takes the traffic.
    scale(&ns, "east", "p", 1);
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;
}

/// Case 4: a backend in another namespace, named by FQDN (linkerd2#10533).
#[tokio::test]
async fn a_backend_in_another_namespace_is_seen_by_its_fqdn() {
    let env = env();
    let ns = env.namespace("fqdn", &["east"]);
    let other = env.namespace("fqdn-other", &["east"]);
    ns.apply("east", &backend("local", "local", 1));
    other.apply("east", &backend("remote", "remote", 1));
    let label = ns.name.clone();
    let fqdn = format!("remote.{}.svc.cluster.local", other.name);
    ns.apply("east", &split("s", &label, &["local", &fqdn], &[]));
    let _c = controller(&env, "east", &label, &[]);
    wait_weights(&ns, "east", "s", &[("local", 1), (&fqdn, 0)]).await;

    scale(&ns, "east", "local", 0);
    wait_weights(&ns, "east", "s", &[("local", 0), (&fqdn, 1)]).await;
    // Readiness really comes from the other namespace: take it away too.
    scale(&other, "east", "remote", 0);
    // Readiness really came from the other namespace.
    wait_state(&ns, "s", "no-ready-backends").await;
}

/// Case 5: invalid splits get an Event; the others keep working.
#[tokio::test]
async fn an_invalid_split_gets_an_event_and_the_others_keep_working() {
    let env = env();
    let ns = env.namespace("invalid", &["east"]);
    ns.apply("east", &backend("p", "p", 1));
    ns.apply("east", &backend("f", "f", 1));
    let label = ns.name.clone();
    ns.apply(
        "east",
        &split(
            "unknown-primary",
            &label,
            &["p", "f"],
            &[("failover.linkerd.io/primary-service", "nope")],
        ),
    );
    ns.apply(
        "east",
        &format!(
            "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata:\n  name: no-backends\n  labels: {{failover.linkerd.io/controlled-by: {label}}}\nspec:\n  service: apex\n  backends: []\n"
        ),
    );
    ns.apply("east", &split("good", &label, &["p", "f"], &[]));
    let _c = controller(&env, "east", &label, &[]);

    wait_event(&ns, "east", "unknown-primary", "InvalidSplit", 1).await;
    wait_event(&ns, "east", "no-backends", "InvalidSplit", 1).await;
    scale(&ns, "east", "p", 0);
    wait_weights(&ns, "east", "good", &[("p", 0), ("f", 1)]).await;
    // The invalid one was left exactly as written.
    assert_eq!(
        weights(&ns, "east", "unknown-primary"),
        [("p".to_string(), 1), ("f".to_string(), 0)]
    );
    assert_eq!(
        annotation(
            &ns,
            "east",
            "ts",
            "unknown-primary",
            "failover.tandem.io/state"
        ),
        None
    );
}

/// Case 6: the failback delay holds traffic on the fallback until it has passed.
///
/// Judged from the cluster's own clocks, not from when this test looks: the
/// controller stamps the failback's `last-transition-time` when it decides
/// it, and the primary's pod records when it became Ready. Both are whole
/// seconds (rounded down), and the first can only follow the second by the
/// delay or more, so their difference is at least the delay however loaded
/// the machine is; without damping it would be 0 or 1.
#[tokio::test]
async fn the_failback_delay_is_honoured() {
    const DELAY: i64 = 6;
    let env = env();
    let ns = env.namespace("damping", &["east"]);
    ns.apply("east", &backend("p", "p", 1));
    ns.apply("east", &backend("f", "f", 1));
    let label = ns.name.clone();
    ns.apply(
        "east",
        &split(
            "s",
            &label,
            &["p", "f"],
            &[("failover.tandem.io/failback-delay", &format!("{DELAY}s"))],
        ),
    );
    let _c = controller(&env, "east", &label, &[]);
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;
    scale(&ns, "east", "p", 0);
    wait_weights(&ns, "east", "s", &[("p", 0), ("f", 1)]).await;
    wait_event(&ns, "east", "s", "FailoverToFallback", 1).await;

    scale(&ns, "east", "p", 1);
    let back = std::time::Instant::now();
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;
    assert!(
        back.elapsed() >= Duration::from_secs(DELAY as u64),
        "failback came after the delay"
    );
    wait_event(&ns, "east", "s", "FailbackToPrimary", 1).await;

    let pods: Value =
        serde_json::from_str(&ns.kubectl("east", &["get", "pods", "-l", "app=p", "-o", "json"]))
            .unwrap();
    let ready = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .flat_map(|p| {
            p["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c["type"] == "Ready" && c["status"] == "True")
        .filter_map(|c| c["lastTransitionTime"].as_str().map(unix_seconds))
        .max()
        .expect("the primary's pod is Ready");
    let failback = unix_seconds(
        &annotation(
            &ns,
            "east",
            "ts",
            "s",
            "failover.tandem.io/last-transition-time",
        )
        .expect("the failback's transition time"),
    );
    assert!(
        failback - ready >= DELAY,
        "traffic went back {}s after the primary became ready, inside the {DELAY}s delay",
        failback - ready
    );
    // Held, then moved back once: no flapping inside the window.
    let reasons = event_reasons(&ns, "east", "s");
    assert_eq!(
        reasons.iter().filter(|r| *r == "FailbackToPrimary").count(),
        1,
        "{reasons:?}"
    );
}

/// An RFC 3339 time, in whole seconds since the epoch.
fn unix_seconds(t: &str) -> i64 {
    t.trim()
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{t:?} is not an RFC 3339 time: {e}"))
        .as_second()
}

/// Case 7: the HTTPRoute version of case 1 (linkerd2#11472).
#[tokio::test]
async fn an_http_route_fails_over_and_back() {
    let env = env();
    let ns = env.namespace("route", &["east"]);
    ns.apply("east", &backend("emoji", "emoji-svc", 1));
    ns.apply("east", &backend("emoji-west", "emoji-svc-west", 1));
    let label = ns.name.clone();
    ns.apply(
        "east",
        &format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: emoji-route
  labels: {{failover.linkerd.io/controlled-by: {label}}}
  annotations: {{failover.linkerd.io/primary-service: emoji-svc}}
spec:
  parentRefs:
  - {{group: "", kind: Service, name: emoji-svc, port: 8080}}
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs:
    - {{name: emoji-svc, port: 8080, weight: 1}}
    - {{name: emoji-svc-west, port: 8080, weight: 0}}
"#
        ),
    );
    let _c = controller(&env, "east", &label, &[]);
    async fn wait_route(ns: &TestNamespace, want: &str) {
        eventually(&format!("HTTPRoute weights {want}"), FLIP, || {
            let got = ns.kubectl(
                "east",
                &[
                    "get",
                    "httproute",
                    "emoji-route",
                    "-o",
                    "jsonpath={.spec.rules[0].backendRefs[*].weight}",
                ],
            );
            let want = want.to_string();
            async move { if got == want { Ok(()) } else { Err(got) } }
        })
        .await
    }
    let wait = |want: &'static str| wait_route(&ns, want);
    wait("1 0").await;
    scale(&ns, "east", "emoji", 0);
    wait("0 1").await;
    assert_eq!(
        annotation(
            &ns,
            "east",
            "httproute",
            "emoji-route",
            "failover.tandem.io/state"
        )
        .as_deref(),
        Some("failover")
    );
    wait_event(&ns, "east", "emoji-route", "FailoverToFallback", 1).await;
    // The rest of the rule is untouched.
    let path = ns.kubectl(
        "east",
        &[
            "get",
            "httproute",
            "emoji-route",
            "-o",
            "jsonpath={.spec.rules[0].matches[0].path.value}",
        ],
    );
    assert_eq!(path, "/");
    scale(&ns, "east", "emoji", 1);
    wait("1 0").await;
}

/// Case 8: two replicas: only the leader writes; when it dies, the other
/// takes over and handles the next flip.
#[tokio::test]
async fn two_replicas_elect_one_writer_and_survive_its_death() {
    let env = env();
    let ns = env.namespace("replicas", &["east"]);
    ns.apply("east", &backend("p", "p", 1));
    ns.apply("east", &backend("f", "f", 1));
    let label = ns.name.clone();
    ns.apply("east", &split("s", &label, &["p", "f"], &[]));
    let lease = [
        "--lease-namespace",
        &ns.name,
        "--lease-duration",
        "3s",
        "--renew-period",
        "500ms",
    ];
    let mut a = controller(
        &env,
        "east",
        &label,
        &[&lease[..], &["--identity", "replica-a"]].concat(),
    );
    let mut b = controller(
        &env,
        "east",
        &label,
        &[&lease[..], &["--identity", "replica-b"]].concat(),
    );
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;

    let holder = eventually("a lease holder", FLIP, || {
        let h = ns.kubectl(
            "east",
            &[
                "get",
                "lease",
                "tandem-failover",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        );
        async move {
            if h.is_empty() {
                Err("none".to_string())
            } else {
                Ok(h)
            }
        }
    })
    .await;
    let (leader, follower, follower_id) = if holder == "replica-a" {
        (&mut a, &mut b, "replica-b")
    } else {
        (&mut b, &mut a, "replica-a")
    };
    assert_eq!(leader.metric("tandem_failover_leader "), Some(1.0));
    assert_eq!(follower.metric("tandem_failover_leader "), Some(0.0));

    scale(&ns, "east", "p", 0);
    wait_weights(&ns, "east", "s", &[("p", 0), ("f", 1)]).await;
    let transitions = "tandem_failover_transitions_total{";
    assert!(
        leader.metric(transitions).is_some(),
        "the leader wrote the flip"
    );
    assert_eq!(
        follower.metric(transitions),
        None,
        "the follower wrote nothing"
    );

    leader.kill();
    let new_holder = eventually(
        "the follower takes the lease",
        Duration::from_secs(20),
        || {
            let h = ns.kubectl(
                "east",
                &[
                    "get",
                    "lease",
                    "tandem-failover",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ],
            );
            let old = holder.clone();
            async move {
                if !h.is_empty() && h != old {
                    Ok(h)
                } else {
                    Err(h)
                }
            }
        },
    )
    .await;
    assert_eq!(new_holder, follower_id);
    scale(&ns, "east", "p", 1);
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;
    assert!(
        follower.metric(transitions).is_some(),
        "the new leader wrote the failback"
    );
}

/// Case 9: an apiserver restart; the next flip is still handled. On a
/// private testbed, since it stops an apiserver.
#[tokio::test]
async fn the_next_flip_after_an_apiserver_restart_is_handled() {
    let tb = PrivateTestbed::start(tandem_bin(), &["east"], 23440);
    let env = tb.env.clone();
    let ns = env.namespace("restart", &["east"]);
    let crd =
        tandem_harness::run_ok(std::process::Command::new(tandem_bin()).args(["smi", "install"]));
    ns.apply("east", &crd);
    ns.kubectl(
        "east",
        &[
            "wait",
            "--for=condition=Established",
            "crd/trafficsplits.split.smi-spec.io",
        ],
    );
    ns.apply("east", &backend("p", "p", 1));
    ns.apply("east", &backend("f", "f", 1));
    ns.apply("east", &split("s", "restart", &["p", "f"], &[]));
    let _c = controller(&env, "east", "restart", &[]);
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;

    let tb_cmd = |verb: &str| {
        tandem_harness::run_ok(
            std::process::Command::new(tandem_bin())
                .args([
                    "testbed",
                    verb,
                    "kube-apiserver",
                    "--cluster",
                    "east",
                    "--dir",
                ])
                .arg(&env.dir),
        )
    };
    tb_cmd("stop");
    tokio::time::sleep(Duration::from_secs(3)).await;
    tb_cmd("start");
    scale(&ns, "east", "p", 0);
    eventually(
        "the flip after the restart",
        Duration::from_secs(60),
        || {
            let got = weights(&ns, "east", "s");
            async move {
                if got == [("p".to_string(), 0), ("f".to_string(), 1)] {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            }
        },
    )
    .await;
}

/// A v1alpha1 split written with quantity weights (`500m`) is read through
/// whichever version the controller watches, and fails over and back. The
/// controller's log, a file here, is plain text: no colour escapes.
#[tokio::test]
async fn a_v1alpha1_split_with_quantity_weights_fails_over() {
    let env = env();
    let ns = env.namespace("quantity", &["east"]);
    ns.apply("east", &backend("p", "p", 1));
    ns.apply("east", &backend("f", "f", 1));
    let label = ns.name.clone();
    ns.apply(
        "east",
        &format!(
            r#"apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata:
  name: s
  labels: {{failover.linkerd.io/controlled-by: {label}}}
spec:
  service: apex
  backends:
  - {{service: p, weight: 500m}}
  - {{service: f, weight: 500m}}
"#
        ),
    );
    let c = controller(&env, "east", &label, &[]);
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;
    scale(&ns, "east", "p", 0);
    wait_weights(&ns, "east", "s", &[("p", 0), ("f", 1)]).await;
    wait_state(&ns, "s", "failover").await;
    wait_event(&ns, "east", "s", "FailoverToFallback", 1).await;
    scale(&ns, "east", "p", 1);
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;
    let reasons = event_reasons(&ns, "east", "s");
    assert!(!reasons.iter().any(|r| r == "InvalidSplit"), "{reasons:?}");

    let log = c.log_text();
    assert!(log.contains("wrote"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour escapes in a log file:\n{log}"
    );
}

/// `failover run` from a workstation with no failover namespace: it stops
/// at once and says what to do, rather than retrying the Lease forever.
#[tokio::test]
async fn a_missing_lease_namespace_stops_the_controller_with_a_hint() {
    let env = env();
    let missing = format!(
        "tandem-failover-missing-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            % 0xffffff
    );
    let mut cmd = tokio::process::Command::from(env.tandem());
    cmd.args(["--context", "east", "failover", "run", "--lease-namespace"])
        .arg(&missing)
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{}", tandem_harness::free_port()))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // A deadline for an expected outcome: the first Lease write fails at once.
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("`failover run` stops instead of retrying the Lease")
        .expect("tandem runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for hint in [
        missing.as_str(),
        "tandem failover install",
        "--lease-namespace",
        "--no-leader-election",
    ] {
        assert!(stderr.contains(hint), "no {hint:?} in:\n{stderr}");
    }
}

//! Fixtures of the failover controller's integration tests
//! (`crates/tandem/tests/failover_*.rs`): the shared testbed with the
//! TrafficSplit CRD, backends, splits, a controller per test, and waits on
//! what kubectl shows.

use std::{path::Path, sync::Once, time::Duration};

use serde_json::Value;

use crate::{Env, Process, TestNamespace, eventually};

/// The shared testbed, with the TrafficSplit CRD installed the way users
/// install it (`tandem smi install | kubectl apply -f -`), once per run.
pub fn env(tandem: &Path) -> Env {
    static CRD: Once = Once::new();
    let env = Env::shared(tandem);
    CRD.call_once(|| {
        let crd = crate::run_ok(std::process::Command::new(tandem).args(["smi", "install"]));
        for ctx in ["east", "west"] {
            env.apply(ctx, &crd);
            crate::run_ok(env.kubectl(ctx).args([
                "wait",
                "--for=condition=Established",
                "crd/trafficsplits.split.smi-spec.io",
            ]));
        }
    });
    env
}

/// Deadline for a flip to show: an expected outcome, not a speed measure.
pub const FLIP: Duration = Duration::from_secs(15);

/// A Deployment and a Service of that name (Service `svc`, pods labelled `app=svc`).
pub fn backend(deploy: &str, svc: &str, replicas: u32) -> String {
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
pub fn workshop_split(version: &str) -> String {
    tandem_api::smi::workshop_split(version, "emojivoto")
}

/// A controller for the splits labelled `failover.linkerd.io/controlled-by=VALUE`.
pub fn controller(env: &Env, ctx: &str, value: &str, extra: &[&str]) -> Process {
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
pub fn weights(ns: &TestNamespace, ctx: &str, name: &str) -> Vec<(String, i64)> {
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
pub fn weight_values(ns: &TestNamespace, ctx: &str, name: &str) -> Vec<(String, Value)> {
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

/// An annotation of an object, if it has it.
pub fn annotation(
    ns: &TestNamespace,
    ctx: &str,
    kind: &str,
    name: &str,
    key: &str,
) -> Option<String> {
    let out = ns.kubectl(ctx, &["get", kind, name, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["metadata"]["annotations"][key].as_str().map(String::from)
}

/// The reasons of the events about an object, oldest first.
pub fn event_reasons(ns: &TestNamespace, ctx: &str, name: &str) -> Vec<String> {
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

/// Waits until a split's weights are `want` (as integers).
pub async fn wait_weights(ns: &TestNamespace, ctx: &str, name: &str, want: &[(&str, i64)]) {
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

/// Waits until at least `count` Events with `reason` are about `name`.
pub async fn wait_event(ns: &TestNamespace, ctx: &str, name: &str, reason: &str, count: usize) {
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
pub async fn wait_state(ns: &TestNamespace, name: &str, want: &str) {
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

/// `kubectl scale deployment/DEPLOY --replicas=N`.
pub fn scale(ns: &TestNamespace, ctx: &str, deploy: &str, replicas: u32) {
    ns.kubectl(
        ctx,
        &[
            "scale",
            &format!("deployment/{deploy}"),
            &format!("--replicas={replicas}"),
        ],
    );
}

/// A v1alpha2 TrafficSplit labelled for the controller `label`; the first
/// backend has weight 1, the others 0.
pub fn split(name: &str, label: &str, backends: &[&str], annotations: &[(&str, &str)]) -> String {
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

/// An RFC 3339 time, in whole seconds since the epoch.
pub fn unix_seconds(t: &str) -> i64 {
    t.trim()
        .parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{t:?} is not an RFC 3339 time: {e}"))
        .as_second()
}

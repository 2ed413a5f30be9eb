//! The failover controller on SMI TrafficSplits against real
//! kube-apiservers: the workshop's manifest under both versions, a priority
//! chain, a backend in another namespace, quantity weights. `tandem failover
//! run` runs as a process, the cluster is driven with kubectl as users drive
//! it; each test has its own controller and label selector (fixtures:
//! `tandem_harness::failover`).

use std::path::Path;

use tandem_harness::{
    Env,
    failover::{
        annotation, backend, controller, event_reasons, scale, split, wait_event, wait_state,
        wait_weights, workshop_split,
    },
};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

fn env() -> Env {
    tandem_harness::failover::env(tandem_bin())
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

//! What the failover controller reports: the state annotation and Events
//! when no backend is ready, and an Event for each invalid split while the
//! others keep working (fixtures: `tandem_harness::failover`).

use std::path::Path;

use tandem_harness::{
    Env,
    failover::{
        annotation, backend, controller, scale, split, wait_event, wait_state, wait_weights,
        weights,
    },
};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

fn env() -> Env {
    tandem_harness::failover::env(tandem_bin())
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

//! `tandem install --ha` on a real API server (a private testbed of one
//! fake node, which the test drains): identity and destination run three
//! replicas each, the disruption controller counts them under their
//! PodDisruptionBudgets, `kubectl drain` takes one replica at a time, and
//! `tandem check` reports the budgets and that the replicas share the
//! cluster's one node. `multicluster install --ha` gives the gateway the
//! same.

use std::{path::Path, time::Duration};

use k8s_openapi::api::{
    core::v1::{Node, Pod},
    policy::v1::PodDisruptionBudget,
};
use kube::{Api, api::ListParams};
use tandem_harness::{PrivateTestbed, check, cli::Cli, eventually, run, workshop_certificates};
use tandem_install::{
    core::{DESTINATION, IDENTITY},
    multicluster as mc,
};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

const HA: &str = "tandem-ha-checks";

/// The categories of `tandem check` for the control plane in `ns`, and
/// whether it passed.
fn check_report(cli: &Cli, ns: &str) -> (bool, serde_json::Value) {
    let out = cli.tandem(&[
        "--context",
        "east",
        "check",
        "--control-plane-namespace",
        ns,
        "--wait",
        "0s",
        "-o",
        "json",
    ]);
    (out.status.success(), check::report(&out))
}

fn has_category(report: &serde_json::Value, name: &str) -> bool {
    report["categories"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["categoryName"] == name))
}

#[tokio::test]
async fn ha_replicas_are_budgeted_and_a_drain_takes_one_at_a_time() {
    let tb = PrivateTestbed::start(tandem_bin(), &["east"], 13440);
    let env = &tb.env;
    let ns = env.namespace("ha", &["east"]);
    let dir = tempfile::tempdir().unwrap();
    workshop_certificates(tandem_bin(), dir.path(), &["east"]);
    let cli = Cli::new(tandem_bin(), dir.path(), &env.kubeconfig);

    // One replica each (no install yet): no HA category.
    let (_, report) = check_report(&cli, &ns.name);
    assert!(!has_category(&report, HA), "{report:#}");

    cli.pipe(&["install", "--crds"], &["--context", "east", "apply"]);
    cli.pipe(
        &[
            "install",
            "--ha",
            "--namespace",
            &ns.name,
            "--identity-trust-anchors-file",
            "root.crt",
            "--identity-issuer-certificate-file",
            "east-issuer.crt",
            "--identity-issuer-key-file",
            "east-issuer.key",
        ],
        &["--context", "east", "apply"],
    );
    // The failover controller, 2 replicas by default: under a budget too.
    cli.pipe(&["failover", "install"], &["--context", "east", "apply"]);
    let client = env.client("east").await;
    let failover: Api<PodDisruptionBudget> =
        Api::namespaced(client.clone(), tandem_install::failover::DEFAULT_NAMESPACE);
    eventually(
        "the failover controller's PodDisruptionBudget counts 2 healthy pods",
        Duration::from_secs(120),
        || budget_allows(&failover, tandem_install::failover::NAME, 2, 1),
    )
    .await;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);

    // The disruption controller finds each Deployment's three pods under
    // its budget, and allows one disruption.
    for name in [IDENTITY, DESTINATION] {
        eventually(
            &format!("PodDisruptionBudget {name} counts 3 healthy pods"),
            Duration::from_secs(120),
            || budget_allows(&budgets, name, 3, 1),
        )
        .await;
    }

    // A drain of the node, as an operator types it (for identity's pods
    // only): the budget lets one go and refuses the others while the
    // cordoned node cannot take a replacement.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find_map(|n| n.metadata.name)
        .expect("the testbed has a node");
    let identity_pods = || async {
        pods.list(&ListParams::default().labels("app.kubernetes.io/component=identity"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name)
            .collect::<Vec<_>>()
    };
    let before = identity_pods().await;
    assert_eq!(before.len(), 3, "{before:?}");
    let drain = run(env.kubectl("east").args([
        "drain",
        &node,
        "--pod-selector",
        "app.kubernetes.io/component=identity",
        "--timeout",
        "12s",
    ]));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&drain.stdout),
        String::from_utf8_lossy(&drain.stderr)
    );
    assert!(!drain.status.success(), "the drain must time out: {said}");
    assert!(
        said.contains("would violate the pod's disruption budget"),
        "{said}"
    );
    let after = identity_pods().await;
    let kept: Vec<&String> = before.iter().filter(|p| after.contains(p)).collect();
    assert_eq!(kept.len(), 2, "one of {before:?} went; now {after:?}");
    // The replacement waits for a node; once there is one, the next may go.
    let pending = after.iter().find(|p| !before.contains(p)).cloned();
    assert!(pending.is_some(), "a replacement was made: {after:?}");
    cli.kubectl(&["--context", "east", "uncordon", &node], None);
    eventually(
        "the budget allows a disruption again after the replacement",
        Duration::from_secs(120),
        || budget_allows(&budgets, IDENTITY, 3, 1),
    )
    .await;

    // check: the budgets are in place; the replicas share the one node.
    // A warning fails no check.
    let (ok, report) = check_report(&cli, &ns.name);
    assert!(ok, "{report:#}");
    let ha = check::category(&report, HA);
    assert_eq!(
        ha.iter().map(|c| c.outcome()).collect::<Vec<_>>(),
        [
            ("control plane PodDisruptionBudgets are in place", "success"),
            (
                "control plane replicas run on more than one node",
                "warning"
            ),
        ],
        "{report:#}"
    );
    for name in [IDENTITY, DESTINATION] {
        assert!(
            ha[1]
                .error
                .contains(&format!("replicas of {}/{name} are all on node", ns.name)),
            "{:?}",
            ha[1]
        );
    }

    let failover_checks = check::category(&report, "tandem-failover");
    assert_eq!(
        check::find(
            &failover_checks,
            "the failover controller's replicas are under a PodDisruptionBudget"
        )
        .result,
        "success",
        "{failover_checks:#?}"
    );

    // Without their budgets, identity and the failover controller may lose
    // every replica to one drain: check fails and says so.
    for (namespace, name) in [
        (ns.name.as_str(), IDENTITY),
        (
            tandem_install::failover::DEFAULT_NAMESPACE,
            tandem_install::failover::NAME,
        ),
    ] {
        cli.kubectl(
            &["--context", "east", "-n", namespace, "delete", "pdb", name],
            None,
        );
    }
    let (ok, report) = check_report(&cli, &ns.name);
    assert!(!ok, "{report:#}");
    let budgets_check = &check::category(&report, HA)[0];
    assert_eq!(budgets_check.result, "error", "{budgets_check:?}");
    assert!(
        budgets_check.error.contains(&format!(
            "{}/{IDENTITY} has 3 replicas and no PodDisruptionBudget",
            ns.name
        )),
        "{budgets_check:?}"
    );
    let failover_checks = check::category(&report, "tandem-failover");
    let failover_budget = check::find(
        &failover_checks,
        "the failover controller's replicas are under a PodDisruptionBudget",
    );
    assert_eq!(failover_budget.result, "error", "{failover_budget:?}");
    assert!(
        failover_budget
            .error
            .contains("tandem-failover/tandem-failover has 2 replicas and no PodDisruptionBudget"),
        "{failover_budget:?}"
    );
    assert!(
        failover_budget.hint.contains("tandem failover install"),
        "{failover_budget:?}"
    );

    // The gateway of `multicluster install --ha`: three replicas under one
    // budget, as the control plane's.
    cli.pipe(
        &[
            "multicluster",
            "install",
            "--ha",
            "--control-plane-namespace",
            &ns.name,
        ],
        &["--context", "east", "apply"],
    );
    let gateway: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), mc::DEFAULT_NAMESPACE);
    eventually(
        "the gateway's PodDisruptionBudget counts 3 healthy pods",
        Duration::from_secs(120),
        || budget_allows(&gateway, mc::GATEWAY, 3, 1),
    )
    .await;

    let (_, report) = check_report(&cli, &ns.name);
    let multicluster = check::category(&report, "tandem-multicluster");
    assert_eq!(
        check::find(
            &multicluster,
            "the gateway's replicas are under a PodDisruptionBudget"
        )
        .result,
        "success",
        "{multicluster:#?}"
    );

    // The cluster-scoped objects go with the namespace.
    cli.pipe(
        &["uninstall", "--namespace", &ns.name],
        &["--context", "east", "delete", "--wait=false"],
    );
}

/// `Ok` once the budget `name` counts `healthy` pods, all expected, and
/// allows `allowed` disruptions.
async fn budget_allows(
    budgets: &Api<PodDisruptionBudget>,
    name: &str,
    healthy: i32,
    allowed: i32,
) -> Result<(), String> {
    let status = budgets
        .get(name)
        .await
        .map_err(|e| e.to_string())?
        .status
        .ok_or("no status yet")?;
    let seen = (
        status.expected_pods,
        status.current_healthy,
        status.disruptions_allowed,
    );
    if seen == (healthy, healthy, allowed) {
        Ok(())
    } else {
        Err(format!(
            "expected, healthy, allowed: {seen:?}; want ({healthy}, {healthy}, {allowed})"
        ))
    }
}

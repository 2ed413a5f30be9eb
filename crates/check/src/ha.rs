//! `tandem-ha-checks`, as Linkerd's `linkerd-ha-checks`: shown when identity
//! or destination runs more than one replica (`tandem install --ha`). Each
//! replicated Deployment needs its PodDisruptionBudget, and its replicas
//! should not all share one node. The failover and multicluster
//! extensions' categories check their controller's and gateway's budgets
//! the same way ([`budget_check`]).

use std::collections::BTreeSet;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod, policy::v1::PodDisruptionBudget};
use kube::{Api, api::ListParams};

use crate::{Category, CheckResult, Context};

const NAME: &str = "tandem-ha-checks";
const BUDGETS: &str = "control plane PodDisruptionBudgets are in place";
const SPREAD: &str = "control plane replicas run on more than one node";

/// A control plane Deployment of more than one replica, as gathered.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Replicated {
    name: String,
    wanted: i32,
    budget: Budget,
    /// The nodes of its running pods, one entry per pod; `None` when not
    /// asked for (the budget alone is checked).
    nodes: Option<Result<Vec<String>, String>>,
}

/// Its PodDisruptionBudget, of the same name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Budget {
    /// The pods the budget's selector matched, by the disruption
    /// controller's count (`status.expectedPods`).
    Present {
        expected_pods: i32,
    },
    Missing,
    Unreadable(String),
}

/// The category, or `None` when no control plane Deployment asks for more
/// than one replica.
pub async fn category(ctx: &Context) -> Option<Category> {
    let ns = ctx.options.namespace.as_str();
    let names = [
        tandem_install::core::IDENTITY,
        tandem_install::core::DESTINATION,
    ];
    let replicated = gather(ctx, ns, &names, true).await;
    if replicated.is_empty() {
        return None;
    }
    Some(Category {
        name: NAME.into(),
        checks: judge(ns, &replicated),
    })
}

/// The budget check of one extension's Deployment `name` in `ns`, described
/// as `what`, or `None` when it runs one replica (or is missing or
/// unreadable: its availability check says so).
pub(crate) async fn budget_check(
    ctx: &Context,
    ns: &str,
    name: &str,
    what: &str,
    install: &str,
) -> Option<CheckResult> {
    let replicated = gather(ctx, ns, &[name], false).await;
    if replicated.is_empty() {
        return None;
    }
    Some(judge_budgets(ns, &replicated, what, install))
}

/// The Deployments `names` in `ns` that want more than one replica, with
/// their budgets and, with `read_nodes`, their running pods' nodes.
async fn gather(ctx: &Context, ns: &str, names: &[&str], read_nodes: bool) -> Vec<Replicated> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut out = vec![];
    for &name in names {
        // A Deployment that is missing or unreadable is the existence
        // category's to report.
        let Ok(Some(d)) = deployments.get_opt(name).await else {
            continue;
        };
        let Some(spec) = d.spec else { continue };
        let wanted = spec.replicas.unwrap_or(1);
        if wanted <= 1 {
            continue;
        }
        let budget = match budgets.get_opt(name).await {
            Ok(Some(b)) => Budget::Present {
                expected_pods: b.status.map_or(0, |s| s.expected_pods),
            },
            Ok(None) => Budget::Missing,
            Err(e) => Budget::Unreadable(e.to_string()),
        };
        let nodes = if read_nodes {
            let selector = spec
                .selector
                .match_labels
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            Some(
                pods.list(&ListParams::default().labels(&selector))
                    .await
                    .map(|list| {
                        list.items
                            .into_iter()
                            .filter(|p| {
                                p.status.as_ref().and_then(|s| s.phase.as_deref())
                                    == Some("Running")
                            })
                            .filter_map(|p| p.spec.and_then(|s| s.node_name))
                            .collect()
                    })
                    .map_err(|e| e.to_string()),
            )
        } else {
            None
        };
        out.push(Replicated {
            name: name.into(),
            wanted,
            budget,
            nodes,
        });
    }
    out
}

fn judge(ns: &str, replicated: &[Replicated]) -> Vec<CheckResult> {
    vec![
        judge_budgets(
            ns,
            replicated,
            BUDGETS,
            "`tandem install --ha ... | kubectl apply -f -`",
        ),
        judge_spread(ns, replicated),
    ]
}

/// A missing budget lets a drain stop every replica at once. A budget that
/// counts other than the wanted replicas may still be counting (a rollout,
/// a fresh install), or selects other pods.
/// `install` is the command whose output has the budgets.
fn judge_budgets(ns: &str, replicated: &[Replicated], what: &str, install: &str) -> CheckResult {
    let mut missing = vec![];
    let mut other = vec![];
    for r in replicated {
        match &r.budget {
            Budget::Present { expected_pods } if *expected_pods == r.wanted => {}
            Budget::Present { expected_pods } => other.push(format!(
                "PodDisruptionBudget {ns}/{} counts {expected_pods} pods; the Deployment wants {}",
                r.name, r.wanted
            )),
            Budget::Missing => missing.push(format!(
                "{ns}/{} has {} replicas and no PodDisruptionBudget: a drain may stop them all at once",
                r.name, r.wanted
            )),
            Budget::Unreadable(e) => other.push(format!("PodDisruptionBudget {ns}/{}: {e}", r.name)),
        }
    }
    if !missing.is_empty() {
        missing.extend(other);
        return CheckResult::fail(
            what,
            missing.join("\n"),
            format!("render it again with the same replicas and apply it: {install}"),
        );
    }
    if !other.is_empty() {
        return CheckResult::fail(
            what,
            other.join("\n"),
            format!(
                "the disruption controller may still be counting; otherwise the budget selects other pods than its Deployment (`kubectl -n {ns} describe pdb`)"
            ),
        )
        .retryable();
    }
    CheckResult::ok(what)
}

/// Replicas prefer different nodes; when the cluster offers only one, they
/// run there anyway, and losing that node stops them all.
fn judge_spread(ns: &str, replicated: &[Replicated]) -> CheckResult {
    let mut problems = vec![];
    let mut crowded = vec![];
    for r in replicated {
        match &r.nodes {
            None => {}
            Some(Ok(nodes)) => {
                let distinct: BTreeSet<&String> = nodes.iter().collect();
                if nodes.len() > 1
                    && let [node] = distinct.into_iter().collect::<Vec<_>>()[..]
                {
                    crowded.push(format!("deploy/{}", r.name));
                    problems.push(format!(
                        "the {} running replicas of {ns}/{} are all on node {node}: losing it stops them all",
                        nodes.len(),
                        r.name
                    ));
                }
            }
            Some(Err(e)) => problems.push(format!("the pods of {ns}/{}: {e}", r.name)),
        }
    }
    if problems.is_empty() {
        CheckResult::ok(SPREAD)
    } else {
        CheckResult::warn(
            SPREAD,
            problems.join("\n"),
            format!(
                "replicas prefer different nodes and zones when they are scheduled: add schedulable nodes, then `kubectl -n {ns} rollout restart {}` spreads them",
                crowded.join(" ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;

    fn replicated(name: &str, budget: Budget, nodes: &[&str]) -> Replicated {
        Replicated {
            name: name.into(),
            wanted: 3,
            budget,
            nodes: Some(Ok(nodes.iter().map(|n| n.to_string()).collect())),
        }
    }

    const COUNTED: Budget = Budget::Present { expected_pods: 3 };

    #[test]
    fn budgets_that_count_the_replicas_and_replicas_on_several_nodes_pass() {
        let all = [
            replicated("tandem-identity", COUNTED, &["a", "b", "c"]),
            replicated("tandem-destination", COUNTED, &["a", "a", "b"]),
        ];
        let checks = judge("tandem", &all);
        assert!(
            checks.iter().all(|c| c.outcome == Outcome::Success),
            "{checks:#?}"
        );
    }

    #[test]
    fn a_missing_budget_fails_and_is_not_worth_waiting_for() {
        let all = [
            replicated("tandem-identity", Budget::Missing, &["a", "b"]),
            replicated(
                "tandem-destination",
                Budget::Present { expected_pods: 2 },
                &["a", "b"],
            ),
        ];
        let c = judge_budgets("tandem", &all, BUDGETS, "`tandem install --ha ...`");
        assert_eq!(c.outcome, Outcome::Error);
        assert!(!c.retryable);
        let error = c.error.unwrap();
        assert!(
            error.contains("tandem/tandem-identity has 3 replicas and no PodDisruptionBudget"),
            "{error}"
        );
        // The other problem is said too.
        assert!(
            error.contains("tandem/tandem-destination counts 2 pods; the Deployment wants 3"),
            "{error}"
        );
        assert!(c.hint.unwrap().contains("tandem install --ha"));
    }

    #[test]
    fn a_budget_still_counting_or_unreadable_is_worth_waiting_for() {
        for budget in [
            Budget::Present { expected_pods: 0 },
            Budget::Unreadable("timed out".into()),
        ] {
            let c = judge_budgets(
                "tandem",
                &[replicated("tandem-identity", budget, &[])],
                BUDGETS,
                "install",
            );
            assert_eq!(c.outcome, Outcome::Error);
            assert!(c.retryable, "{c:?}");
        }
    }

    #[test]
    fn replicas_that_share_one_node_warn_and_name_it() {
        let c = judge_spread(
            "tandem",
            &[
                replicated("tandem-identity", COUNTED, &["n1", "n1", "n1"]),
                replicated("tandem-destination", COUNTED, &["n1", "n2", "n2"]),
            ],
        );
        assert_eq!(c.outcome, Outcome::Warning);
        let error = c.error.unwrap();
        assert_eq!(
            error,
            "the 3 running replicas of tandem/tandem-identity are all on node n1: losing it stops them all"
        );
        assert!(
            c.hint.unwrap().ends_with(
                "`kubectl -n tandem rollout restart deploy/tandem-identity` spreads them"
            )
        );
    }

    #[test]
    fn one_running_replica_is_the_existence_checks_concern_and_unread_pods_warn() {
        let c = judge_spread("tandem", &[replicated("tandem-identity", COUNTED, &["n1"])]);
        assert_eq!(c.outcome, Outcome::Success);
        let mut r = replicated("tandem-identity", COUNTED, &[]);
        r.nodes = Some(Err("forbidden".into()));
        let c = judge_spread("tandem", &[r]);
        assert_eq!(c.outcome, Outcome::Warning);
        assert!(c.error.unwrap().contains("forbidden"));
    }
}

//! `tandem check`'s `tandem-cni` category (Linkerd's `linkerd-cni-plugin`):
//! when the control plane was installed with `--linkerd-cni-enabled`,
//! injected pods have no init container, and only the tandem-cni plugin
//! redirects their traffic; a node without it would run them unmeshed.
//! Gathered once (async), judged by [`judge`] (pure).

use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::ConfigMap};
use kube::Api;
use tandem_install::{
    cni,
    core::{CNI_ENABLED_KEY, CONFIG_CONFIGMAP},
};

use crate::{Category, CheckResult, Context};

/// What the cluster says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Gathered {
    /// tandem-config's `cniEnabled`, or why it could not be read.
    pub(crate) enabled: Result<bool, String>,
    pub(crate) daemonset: DaemonSetState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DaemonSetState {
    Missing,
    /// Nodes it should run on, and nodes where its pod is ready (its
    /// readiness probe is `tandem cni-install --check`: installed).
    Nodes {
        desired: i32,
        ready: i32,
    },
    Unreadable(String),
}

pub(crate) async fn gather(ctx: &Context) -> Gathered {
    let ns = ctx.options.namespace.as_str();
    let configs: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let enabled = match configs.get_opt(CONFIG_CONFIGMAP).await {
        Ok(cm) => Ok(cm
            .and_then(|c| c.data)
            .and_then(|mut d| d.remove(CNI_ENABLED_KEY))
            .is_some_and(|v| v == "true")),
        Err(e) => Err(format!("ConfigMap {ns}/{CONFIG_CONFIGMAP}: {e}")),
    };
    let sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), cni::NAMESPACE);
    let daemonset = match sets.get_opt(cni::NAME).await {
        Ok(None) => DaemonSetState::Missing,
        Ok(Some(d)) => {
            let status = d.status.unwrap_or_default();
            DaemonSetState::Nodes {
                desired: status.desired_number_scheduled,
                ready: status.number_ready,
            }
        }
        Err(e) => DaemonSetState::Unreadable(e.to_string()),
    };
    Gathered { enabled, daemonset }
}

const EXISTS: &str = "the tandem-cni DaemonSet exists";
const READY: &str = "the tandem-cni plugin is installed on every node";

/// `None` when there is nothing to check: no CNI mode and no plugin.
pub(crate) fn judge(g: &Gathered) -> Option<Category> {
    let install = "install it: `tandem install-cni | kubectl apply -f -` (with --dest-cni-net-dir and --dest-cni-bin-dir if the nodes keep their CNI config elsewhere)";
    let mut checks = vec![];
    let enabled = match &g.enabled {
        Ok(enabled) => *enabled,
        Err(e) => {
            checks.push(CheckResult::fail(
                "the control plane's config can be read",
                e.clone(),
                "see `kubectl -n NS get configmap tandem-config`",
            ));
            false
        }
    };
    match &g.daemonset {
        DaemonSetState::Missing if enabled => checks.push(CheckResult::fail(
            EXISTS,
            format!(
                "the control plane was installed with --linkerd-cni-enabled, and {}/{} was not found: injected pods have no init container, so they would run with no redirect to their proxy",
                cni::NAMESPACE,
                cni::NAME
            ),
            install,
        )),
        DaemonSetState::Missing => {}
        DaemonSetState::Unreadable(e) => checks.push(
            CheckResult::fail(EXISTS, e.clone(), "could not read DaemonSets").retryable(),
        ),
        DaemonSetState::Nodes { desired, ready } => {
            checks.push(CheckResult::ok(EXISTS));
            checks.push(if desired > &0 && ready >= desired {
                CheckResult::ok(READY)
            } else {
                CheckResult::fail(
                    READY,
                    format!("ready on {ready} of {desired} nodes"),
                    format!(
                        "see `kubectl -n {} get pods -o wide` and their logs",
                        cni::NAMESPACE
                    ),
                )
                .retryable()
            });
        }
    }
    (!checks.is_empty()).then(|| Category {
        name: "tandem-cni".into(),
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;

    #[test]
    fn the_plugin_is_required_in_cni_mode_and_checked_when_present() {
        let nodes = |desired, ready| DaemonSetState::Nodes { desired, ready };
        // (enabled, daemonset) → the outcomes in order, and text the failure says.
        type Case = (
            Result<bool, String>,
            DaemonSetState,
            Vec<Outcome>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (Ok(false), DaemonSetState::Missing, vec![], ""),
            (
                Ok(true),
                DaemonSetState::Missing,
                vec![Outcome::Error],
                "would run with no redirect",
            ),
            (
                Ok(true),
                nodes(2, 2),
                vec![Outcome::Success, Outcome::Success],
                "",
            ),
            (
                Ok(false),
                nodes(1, 1),
                vec![Outcome::Success, Outcome::Success],
                "",
            ),
            (
                Ok(true),
                nodes(3, 1),
                vec![Outcome::Success, Outcome::Error],
                "ready on 1 of 3 nodes",
            ),
            (
                Ok(true),
                nodes(0, 0),
                vec![Outcome::Success, Outcome::Error],
                "ready on 0 of 0 nodes",
            ),
            (
                Ok(true),
                DaemonSetState::Unreadable("forbidden".into()),
                vec![Outcome::Error],
                "forbidden",
            ),
            (
                Err("ConfigMap tandem/tandem-config: forbidden".into()),
                DaemonSetState::Missing,
                vec![Outcome::Error],
                "tandem-config: forbidden",
            ),
        ];
        for (enabled, daemonset, outcomes, says) in cases {
            let g = Gathered { enabled, daemonset };
            let category = judge(&g);
            let got: Vec<Outcome> = category
                .iter()
                .flat_map(|c| &c.checks)
                .map(|c| c.outcome)
                .collect();
            assert_eq!(got, outcomes, "{g:?}");
            if let Some(c) = category {
                assert_eq!(c.name, "tandem-cni");
                let failed: String = c.checks.iter().filter_map(|c| c.error.clone()).collect();
                assert!(failed.contains(says), "{failed:?} should say {says:?}");
            }
        }
    }
}

//! Extension checks. An extension is installed when a namespace carries
//! `tandem.io/extension=<name>`; its categories then run against that
//! namespace. To add an extension's checks, implement [`Extension`] and list
//! it in [`EXTENSIONS`].

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, api::ListParams};

use crate::{Category, CategoryFuture, CheckResult, Context, core};

pub trait Extension: Sync {
    /// The value of the `tandem.io/extension` label on its namespace.
    fn name(&self) -> &'static str;
    /// Its categories, run when it is installed in `namespace`.
    fn categories<'a>(&'a self, ctx: &'a Context, namespace: &'a str) -> CategoryFuture<'a>;
}

/// Every extension `check` knows.
pub static EXTENSIONS: &[&dyn Extension] = &[&Failover, &Multicluster, &Viz];

/// The namespace an extension is installed in, if any, or why that could
/// not be told.
pub(crate) async fn installed_namespace(
    ctx: &Context,
    extension: &str,
) -> Result<Option<String>, String> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let selector = format!("{}={extension}", tandem_install::EXTENSION_LABEL);
    let list = namespaces
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.items.into_iter().find_map(|n| n.metadata.name))
}

/// What an extension's namespace lookup means for its checks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Installed {
    /// Installed in this namespace: its categories run against it.
    In(String),
    /// Not installed: it adds nothing.
    No,
    /// The lookup failed: this failing category stands in for its checks.
    Unknown(Category),
}

/// Judges an extension's lookup, as [`installed_namespace`] gathered it
/// (pure). A failed lookup is never taken as "not installed".
pub(crate) fn judge_lookup(extension: &str, lookup: Result<Option<String>, String>) -> Installed {
    match lookup {
        Ok(Some(namespace)) => Installed::In(namespace),
        Ok(None) => Installed::No,
        Err(error) => Installed::Unknown(lookup_failed(extension, error)),
    }
}

/// When the lookup fails, the extension's category says so, rather than
/// the extension's checks silently not running.
fn lookup_failed(extension: &str, error: String) -> Category {
    Category {
        name: format!("tandem-{extension}"),
        checks: vec![CheckResult::fail(
            format!("can tell whether the {extension} extension is installed"),
            error,
            format!(
                "the user must be able to list namespaces (`kubectl auth can-i list namespaces`); the {extension} extension's checks did not run"
            ),
        )],
    }
}

// === Failover ===

struct Failover;

impl Extension for Failover {
    fn name(&self) -> &'static str {
        "failover"
    }

    fn categories<'a>(&'a self, ctx: &'a Context, namespace: &'a str) -> CategoryFuture<'a> {
        Box::pin(async move {
            let mut checks = vec![CheckResult::ok(format!(
                "failover extension namespace '{namespace}' exists"
            ))];
            checks.push(
                core::crds_established(
                    ctx,
                    "the TrafficSplit CRD is installed",
                    &[tandem_api::smi::CRD_NAME.to_string()],
                    "install it: `tandem smi install | kubectl apply -f -`",
                )
                .await,
            );
            checks.push(
                core::deployments_available(
                    ctx,
                    "the failover controller is running",
                    namespace,
                    &[tandem_install::failover::NAME],
                    "scale it up, or see `kubectl -n NS get deploy,pods` and the pods' events",
                )
                .await,
            );
            checks.extend(
                crate::ha::budget_check(
                    ctx,
                    namespace,
                    tandem_install::failover::NAME,
                    "the failover controller's replicas are under a PodDisruptionBudget",
                    "`tandem failover install | kubectl apply -f -`",
                )
                .await,
            );
            vec![Category {
                name: "tandem-failover".into(),
                checks,
            }]
        })
    }
}

// === Multicluster ===

struct Multicluster;

impl Extension for Multicluster {
    fn name(&self) -> &'static str {
        "multicluster"
    }

    fn categories<'a>(&'a self, ctx: &'a Context, namespace: &'a str) -> CategoryFuture<'a> {
        Box::pin(async move {
            let mut category = crate::multicluster::category(ctx).await;
            category.checks.extend(
                crate::ha::budget_check(
                    ctx,
                    namespace,
                    tandem_install::multicluster::GATEWAY,
                    "the gateway's replicas are under a PodDisruptionBudget",
                    "`tandem multicluster install --ha | kubectl apply -f -`",
                )
                .await,
            );
            vec![category]
        })
    }
}

// === Viz ===

struct Viz;

impl Extension for Viz {
    fn name(&self) -> &'static str {
        "viz"
    }

    fn categories<'a>(&'a self, ctx: &'a Context, namespace: &'a str) -> CategoryFuture<'a> {
        Box::pin(crate::viz::categories(ctx, namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;

    #[test]
    fn a_failed_lookup_fails_each_extension_with_its_error() {
        let error = "namespaces is forbidden: User \"dev\" cannot list resource \"namespaces\"";
        let mut names = vec![];
        for ext in EXTENSIONS {
            let Installed::Unknown(category) = judge_lookup(ext.name(), Err(error.into())) else {
                panic!("{}: a failed lookup hid the extension", ext.name());
            };
            assert_eq!(category.checks.len(), 1, "{category:?}");
            let check = &category.checks[0];
            assert_eq!(check.outcome, Outcome::Error, "{category:?}");
            assert_eq!(check.error.as_deref(), Some(error), "{category:?}");
            assert!(
                check
                    .hint
                    .as_deref()
                    .is_some_and(|h| h.contains("did not run")),
                "{category:?}"
            );
            names.push(category.name);
        }
        // The categories the extensions' own checks would have filled.
        assert_eq!(
            names,
            ["tandem-failover", "tandem-multicluster", "tandem-viz"]
        );
    }

    #[test]
    fn a_lookup_that_answers_runs_or_skips_the_extension() {
        assert_eq!(
            judge_lookup("failover", Ok(Some("tandem-failover".into()))),
            Installed::In("tandem-failover".into())
        );
        assert_eq!(judge_lookup("failover", Ok(None)), Installed::No);
    }
}

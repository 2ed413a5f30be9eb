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
pub static EXTENSIONS: &[&dyn Extension] = &[&Failover, &Multicluster];

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

/// When the lookup fails, the extension's category says so, rather than
/// the extension's checks silently not running.
pub(crate) fn lookup_failed(extension: &str, error: String) -> Category {
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

    fn categories<'a>(&'a self, ctx: &'a Context, _namespace: &'a str) -> CategoryFuture<'a> {
        Box::pin(async move { vec![crate::multicluster::category(ctx).await] })
    }
}

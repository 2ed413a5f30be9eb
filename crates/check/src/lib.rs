//! `tandem check`: health checks grouped by category, printed as `linkerd
//! check` prints them.
//!
//! A category is a name and an async function that returns its checks'
//! results. The core categories always run (`--pre` swaps the installed-state
//! categories for the pre-install ones). Extensions add categories through
//! [`Extension`]: each names the label value its namespace carries
//! (`tandem.io/extension=<name>`), and its categories run only when such a
//! namespace exists, so an extension that is not installed adds nothing.
//! `--proxy` ([`Options::proxy`]) adds the data plane's categories, and a
//! control plane of more than one replica adds `tandem-ha-checks`.

#![forbid(unsafe_code)]

mod anchors;
mod cni;
mod core;
mod data_plane;
mod extensions;
mod ha;
mod identity;
mod multicluster;
mod render;
mod viz;

use futures::future::BoxFuture;
use kube::Client;
use serde::Serialize;

use self::extensions::Installed;

pub use self::{
    extensions::{EXTENSIONS, Extension},
    render::{render_json, render_table},
};

/// One check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Warning,
    Error,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub description: String,
    #[serde(rename = "result")]
    pub outcome: Outcome,
    /// What went wrong, for warnings and errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// A failure that time may fix (pods still starting): `check --wait` retries these.
    #[serde(skip)]
    pub retryable: bool,
}

impl CheckResult {
    pub fn ok(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            outcome: Outcome::Success,
            error: None,
            hint: None,
            retryable: false,
        }
    }

    pub fn warn(
        description: impl Into<String>,
        error: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::problem(
            Outcome::Warning,
            description.into(),
            error.into(),
            hint.into(),
        )
    }

    pub fn fail(
        description: impl Into<String>,
        error: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::problem(
            Outcome::Error,
            description.into(),
            error.into(),
            hint.into(),
        )
    }

    fn problem(outcome: Outcome, description: String, error: String, hint: String) -> Self {
        Self {
            description,
            outcome,
            error: Some(error),
            hint: Some(hint),
            retryable: false,
        }
    }

    /// Marks a failure as one that waiting may fix.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
}

/// A category's results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Category {
    #[serde(rename = "categoryName")]
    pub name: String,
    pub checks: Vec<CheckResult>,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub success: bool,
    pub categories: Vec<Category>,
}

impl Report {
    /// True when it failed only on checks that waiting may fix.
    pub fn only_retryable_failures(&self) -> bool {
        !self.success
            && self
                .categories
                .iter()
                .flat_map(|c| &c.checks)
                .filter(|c| c.outcome == Outcome::Error)
                .all(|c| c.retryable)
    }

    fn new(categories: Vec<Category>) -> Self {
        let success = categories
            .iter()
            .flat_map(|c| &c.checks)
            .all(|c| c.outcome != Outcome::Error);
        Self {
            success,
            categories,
        }
    }
}

/// What `check` is asked to look at.
#[derive(Clone, Debug)]
pub struct Options {
    /// Before install: the namespace must not exist, the user must be able to create things.
    pub pre: bool,
    /// The core control plane's namespace.
    pub namespace: String,
    /// `--proxy`: also check the data plane, the proxies of this namespace
    /// (`Some(None)`: of every namespace).
    pub proxy: Option<Option<String>>,
}

/// What a category gets to work with.
pub struct Context {
    pub client: Client,
    pub options: Options,
    /// With `--proxy`: the data plane, gathered once for every category
    /// that looks at it.
    pub(crate) data_plane: Option<data_plane::Gathered>,
}

/// Runs the checks. `client` is `Err` when no client could be made from the
/// kubeconfig; that is reported as the first failed check, not as an error.
pub async fn run(client: Result<Client, String>, options: Options) -> Report {
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            return Report::new(vec![Category {
                name: "kubernetes-api".into(),
                checks: vec![CheckResult::fail(
                    "can initialize the client",
                    e,
                    "check the kubeconfig and --context (kubectl config get-contexts)",
                )],
            }]);
        }
    };
    let mut ctx = Context {
        client,
        options,
        data_plane: None,
    };
    let mut categories = vec![];

    let api = core::kubernetes_api(&ctx).await;
    let reachable = api.checks.iter().all(|c| c.outcome != Outcome::Error);
    categories.push(api);
    if !reachable {
        // Nothing else can be checked without the API.
        return Report::new(categories);
    }
    categories.push(core::kubernetes_version(&ctx).await);
    if ctx.options.pre {
        categories.push(core::pre_install(&ctx).await);
        return Report::new(categories);
    }
    categories.push(core::existence(&ctx).await);
    categories.push(core::identity(&ctx).await);
    categories.extend(ha::category(&ctx).await);
    categories.extend(cni::judge(&cni::gather(&ctx).await));
    if let Some(namespace) = &ctx.options.proxy {
        let gathered = data_plane::gather(&ctx, namespace.as_deref()).await;
        categories.extend(data_plane::judge(&gathered, env!("CARGO_PKG_VERSION")));
        ctx.data_plane = Some(gathered);
    }
    for ext in EXTENSIONS {
        let lookup = extensions::installed_namespace(&ctx, ext.name()).await;
        match extensions::judge_lookup(ext.name(), lookup) {
            Installed::In(ns) => categories.extend(ext.categories(&ctx, &ns).await),
            Installed::No => {}
            Installed::Unknown(failed) => categories.push(failed),
        }
    }
    Report::new(categories)
}

/// `tandem multicluster check`: the API, then only the multicluster checks.
pub async fn run_multicluster(client: Result<Client, String>, options: Options) -> Report {
    let client = match client {
        Ok(c) => c,
        Err(e) => return run(Err(e), options).await,
    };
    let ctx = Context {
        client,
        options,
        data_plane: None,
    };
    let api = core::kubernetes_api(&ctx).await;
    let reachable = api.checks.iter().all(|c| c.outcome != Outcome::Error);
    let mut categories = vec![api];
    if reachable {
        categories.push(multicluster::category(&ctx).await);
    }
    Report::new(categories)
}

/// A future of a category, for extension tables.
pub type CategoryFuture<'a> = BoxFuture<'a, Vec<Category>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_do_not_fail_the_report() {
        let r = Report::new(vec![Category {
            name: "x".into(),
            checks: vec![
                CheckResult::ok("a"),
                CheckResult::warn("b", "soon", "renew"),
            ],
        }]);
        assert!(r.success);
        let r = Report::new(vec![Category {
            name: "x".into(),
            checks: vec![CheckResult::fail("c", "broken", "fix it")],
        }]);
        assert!(!r.success);
    }
}

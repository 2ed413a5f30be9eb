//! The core categories.

use std::time::{Duration, SystemTime};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        },
        core::v1::Namespace,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, api::PostParams};

use crate::{Category, CheckResult, Context};

/// The oldest Kubernetes tandem supports.
pub const MIN_KUBERNETES: (u32, u32) = (1, 29);

/// Clock skew beyond this fails: certificates would look not yet valid or expired.
const MAX_SKEW: Duration = Duration::from_secs(300);
/// Clock skew beyond this warns.
const WARN_SKEW: Duration = Duration::from_secs(30);

fn category(name: &str, checks: Vec<CheckResult>) -> Category {
    Category {
        name: name.into(),
        checks,
    }
}

pub async fn kubernetes_api(ctx: &Context) -> Category {
    let mut checks = vec![CheckResult::ok("can initialize the client")];
    match ctx.client.apiserver_version().await {
        Ok(_) => checks.push(CheckResult::ok("can query the Kubernetes API")),
        Err(e) => checks.push(CheckResult::fail(
            "can query the Kubernetes API",
            e.to_string(),
            "is the cluster running and the context right? try `kubectl cluster-info`",
        )),
    }
    category("kubernetes-api", checks)
}

pub async fn kubernetes_version(ctx: &Context) -> Category {
    let check = match ctx.client.apiserver_version().await {
        Ok(info) => match parse_version(&info.major, &info.minor) {
            Some(v) if v >= MIN_KUBERNETES => {
                CheckResult::ok("is running the minimum Kubernetes API version")
            }
            Some(v) => CheckResult::fail(
                "is running the minimum Kubernetes API version",
                format!(
                    "Kubernetes is {}.{}, older than {}.{}",
                    v.0, v.1, MIN_KUBERNETES.0, MIN_KUBERNETES.1
                ),
                "upgrade the cluster",
            ),
            None => CheckResult::fail(
                "is running the minimum Kubernetes API version",
                format!("unreadable version {}.{}", info.major, info.minor),
                "the API server reports an unexpected version",
            ),
        },
        Err(e) => CheckResult::fail(
            "is running the minimum Kubernetes API version",
            e.to_string(),
            "the API server did not answer /version",
        ),
    };
    category("kubernetes-version", vec![check])
}

/// "1", "34+" → (1, 34).
fn parse_version(major: &str, minor: &str) -> Option<(u32, u32)> {
    let digits = |s: &str| s.trim_end_matches('+').parse().ok();
    Some((digits(major)?, digits(minor)?))
}

pub async fn pre_install(ctx: &Context) -> Category {
    let ns = ctx.options.namespace.as_str();
    let mut checks = vec![];
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    checks.push(match namespaces.get_opt(ns).await {
        Ok(None) => CheckResult::ok(format!("control plane namespace '{ns}' does not already exist")),
        Ok(Some(_)) => CheckResult::fail(
            format!("control plane namespace '{ns}' does not already exist"),
            format!("namespace '{ns}' exists"),
            "tandem may already be installed: run `tandem check` instead, or `tandem uninstall | kubectl delete -f -`",
        ),
        Err(e) => CheckResult::fail(
            format!("control plane namespace '{ns}' does not already exist"),
            e.to_string(),
            "could not read namespaces",
        ),
    });
    for (what, group, resource, namespaced) in [
        (
            "can create non-namespaced resources",
            "",
            "namespaces",
            false,
        ),
        (
            "can create ClusterRoles",
            "rbac.authorization.k8s.io",
            "clusterroles",
            false,
        ),
        (
            "can create ClusterRoleBindings",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            false,
        ),
        (
            "can create CustomResourceDefinitions",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            false,
        ),
        ("can create ServiceAccounts", "", "serviceaccounts", true),
        ("can create Services", "", "services", true),
        ("can create Deployments", "apps", "deployments", true),
        ("can create ConfigMaps", "", "configmaps", true),
        ("can create Secrets", "", "secrets", true),
    ] {
        let namespace = namespaced.then_some(ns);
        checks.push(match can_create(ctx, group, resource, namespace).await {
            Ok(true) => CheckResult::ok(what),
            Ok(false) => CheckResult::fail(
                what,
                format!("the current user may not create {resource}"),
                "install as a cluster administrator",
            ),
            Err(e) => CheckResult::fail(what, e, "SelfSubjectAccessReview failed"),
        });
    }
    checks.push(clock_skew(ctx).await);
    category("pre-install", checks)
}

async fn can_create(
    ctx: &Context,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<bool, String> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(ctx.client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                verb: Some("create".into()),
                namespace: namespace.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = reviews
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out.status.is_some_and(|s| s.allowed))
}

/// Compares the API server's `Date` header with this machine's clock.
async fn clock_skew(ctx: &Context) -> CheckResult {
    const WHAT: &str = "no clock skew detected";
    let req = match http::Request::get("/version").body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return CheckResult::fail(WHAT, e.to_string(), "internal error"),
    };
    let before = SystemTime::now();
    let resp = match ctx.client.send(req.map(kube::client::Body::from)).await {
        Ok(r) => r,
        Err(e) => return CheckResult::fail(WHAT, e.to_string(), "the API server did not answer"),
    };
    let Some(date) = resp
        .headers()
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
    else {
        return CheckResult::warn(
            WHAT,
            "the API server sent no Date header",
            "cannot compare clocks",
        );
    };
    // The header has whole seconds: allow the request's own duration plus one.
    let local = before;
    let skew = date
        .duration_since(local)
        .or_else(|_| local.duration_since(date))
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(1));
    if skew > MAX_SKEW {
        CheckResult::fail(
            WHAT,
            format!(
                "the API server's clock is {}s away from this machine's",
                skew.as_secs()
            ),
            "synchronise the clocks (NTP): certificates are checked against them",
        )
    } else if skew > WARN_SKEW {
        CheckResult::warn(
            WHAT,
            format!("the clocks differ by {}s", skew.as_secs()),
            "synchronise the clocks (NTP)",
        )
    } else {
        CheckResult::ok(WHAT)
    }
}

pub async fn existence(ctx: &Context) -> Category {
    let ns = ctx.options.namespace.as_str();
    let mut checks = vec![];
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    checks.push(match namespaces.get_opt(ns).await {
        Ok(Some(_)) => CheckResult::ok(format!("'{ns}' namespace exists")),
        Ok(None) => CheckResult::fail(
            format!("'{ns}' namespace exists"),
            format!("namespace '{ns}' was not found"),
            "install tandem: `tandem install | kubectl apply -f -`",
        ),
        Err(e) => CheckResult::fail(
            format!("'{ns}' namespace exists"),
            e.to_string(),
            "could not read namespaces",
        ),
    });
    let names: Vec<String> = tandem_api::core_crds()
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    checks.push(
        crds_established(
            ctx,
            "CRDs are installed",
            &names,
            "install them: `tandem install --crds | kubectl apply -f -`",
        )
        .await,
    );
    checks.push(
        deployments_available(
            ctx,
            "control plane Deployments are available",
            ns,
            &[tandem_install::core::IDENTITY],
            "see `kubectl -n NS get deploy,pods` and the pods' events",
        )
        .await,
    );
    category("tandem-existence", checks)
}

/// One check over several CRDs: each must exist and be Established.
pub(crate) async fn crds_established(
    ctx: &Context,
    what: &str,
    names: &[String],
    hint: &str,
) -> CheckResult {
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let mut problems = vec![];
    for name in names {
        match crds.get_opt(name).await {
            Ok(Some(crd)) => {
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if !established {
                    problems.push(format!("CRD {name} is not established"));
                }
            }
            Ok(None) => problems.push(format!("CRD {name} is missing")),
            Err(e) => problems.push(format!("CRD {name}: {e}")),
        }
    }
    if problems.is_empty() {
        CheckResult::ok(what)
    } else {
        CheckResult::fail(what, problems.join("\n"), hint)
    }
}

/// One check over several Deployments: each must have every replica available.
pub(crate) async fn deployments_available(
    ctx: &Context,
    what: &str,
    namespace: &str,
    names: &[&str],
    hint: &str,
) -> CheckResult {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let mut problems = vec![];
    for name in names {
        match deployments.get_opt(name).await {
            Ok(Some(d)) => {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let available = d
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0);
                if want == 0 {
                    problems.push((format!("{namespace}/{name} is scaled to 0 replicas"), false));
                } else if available < want {
                    problems.push((
                        format!("{namespace}/{name}: {available}/{want} replicas available"),
                        true,
                    ));
                }
            }
            Ok(None) => problems.push((format!("Deployment {namespace}/{name} is missing"), false)),
            Err(e) => problems.push((format!("Deployment {namespace}/{name}: {e}"), true)),
        }
    }
    if problems.is_empty() {
        return CheckResult::ok(what);
    }
    // Replicas still starting may become available; nothing else will by itself.
    let retryable = problems.iter().all(|(_, r)| *r);
    let text: Vec<String> = problems.into_iter().map(|(p, _)| p).collect();
    let result = CheckResult::fail(what, text.join("\n"), hint.replace("NS", namespace));
    if retryable {
        result.retryable()
    } else {
        result
    }
}

pub async fn identity(ctx: &Context) -> Category {
    category("tandem-identity", crate::identity::checks(ctx).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_with_a_plus() {
        assert_eq!(parse_version("1", "34+"), Some((1, 34)));
        assert_eq!(parse_version("1", "29"), Some((1, 29)));
        assert_eq!(parse_version("one", "2"), None);
        assert!(parse_version("1", "28").unwrap() < MIN_KUBERNETES);
    }
}

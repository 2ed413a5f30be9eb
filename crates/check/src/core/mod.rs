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
    let version = ctx
        .client
        .apiserver_version()
        .await
        .map(|info| (info.major, info.minor))
        .map_err(|e| e.to_string());
    category("kubernetes-version", vec![judge_version(version)])
}

/// The server's /version, as `(major, minor)`, or why it could not be read.
fn judge_version(version: Result<(String, String), String>) -> CheckResult {
    const WHAT: &str = "is running the minimum Kubernetes API version";
    let (major, minor) = match version {
        Ok(v) => v,
        Err(e) => return CheckResult::fail(WHAT, e, "the API server did not answer /version"),
    };
    match parse_version(&major, &minor) {
        Some(v) if v >= MIN_KUBERNETES => CheckResult::ok(WHAT),
        Some(v) => CheckResult::fail(
            WHAT,
            format!(
                "Kubernetes is {}.{}, older than {}.{}",
                v.0, v.1, MIN_KUBERNETES.0, MIN_KUBERNETES.1
            ),
            "upgrade the cluster",
        ),
        None => CheckResult::fail(
            WHAT,
            format!("unreadable version {major}.{minor}"),
            "the API server reports an unexpected version",
        ),
    }
}

/// "1", "34+" → (1, 34).
fn parse_version(major: &str, minor: &str) -> Option<(u32, u32)> {
    let digits = |s: &str| s.trim_end_matches('+').parse().ok();
    Some((digits(major)?, digits(minor)?))
}

/// What install creates: (check, API group, resource, namespaced).
const CREATED_BY_INSTALL: &[(&str, &str, &str, bool)] = &[
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
];

/// What the pre-install checks look at, gathered from the cluster.
#[derive(Clone, Debug)]
struct PreInstallFacts {
    /// Whether the control plane's namespace exists.
    namespace_exists: Result<bool, String>,
    /// Per entry of [`CREATED_BY_INSTALL`], whether the user may create it.
    may_create: Vec<Result<bool, String>>,
    skew: SkewFacts,
}

pub async fn pre_install(ctx: &Context) -> Category {
    let ns = ctx.options.namespace.as_str();
    let mut may_create = vec![];
    for (_, group, resource, namespaced) in CREATED_BY_INSTALL {
        may_create.push(can_create(ctx, group, resource, namespaced.then_some(ns)).await);
    }
    let facts = PreInstallFacts {
        namespace_exists: namespace_exists(ctx, ns).await,
        may_create,
        skew: gather_skew(ctx).await,
    };
    category(
        "pre-install",
        judge_pre_install(ns, &facts, SystemTime::now()),
    )
}

fn judge_pre_install(ns: &str, facts: &PreInstallFacts, now: SystemTime) -> Vec<CheckResult> {
    let what = format!("control plane namespace '{ns}' does not already exist");
    let mut checks = vec![match &facts.namespace_exists {
        Ok(false) => CheckResult::ok(what),
        Ok(true) => CheckResult::fail(
            what,
            format!("namespace '{ns}' exists"),
            "tandem may already be installed: run `tandem check` instead, or `tandem uninstall | kubectl delete -f -`",
        ),
        Err(e) => CheckResult::fail(what, e.clone(), "could not read namespaces"),
    }];
    for ((what, _, resource, _), allowed) in CREATED_BY_INSTALL.iter().zip(&facts.may_create) {
        checks.push(match allowed {
            Ok(true) => CheckResult::ok(*what),
            Ok(false) => CheckResult::fail(
                *what,
                format!("the current user may not create {resource}"),
                "install as a cluster administrator",
            ),
            Err(e) => CheckResult::fail(*what, e.clone(), "SelfSubjectAccessReview failed"),
        });
    }
    checks.push(judge_skew(&facts.skew, now));
    checks
}

async fn namespace_exists(ctx: &Context, ns: &str) -> Result<bool, String> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    namespaces
        .get_opt(ns)
        .await
        .map(|n| n.is_some())
        .map_err(|e| e.to_string())
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

/// The API server's clock, as its `Date` header tells it.
#[derive(Clone, Debug)]
enum SkewFacts {
    /// The server's date, and when this machine sent the request.
    Date {
        server: SystemTime,
        sent: SystemTime,
    },
    NoDateHeader,
    Unreachable(String),
}

async fn gather_skew(ctx: &Context) -> SkewFacts {
    let req = match http::Request::get("/version").body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return SkewFacts::Unreachable(e.to_string()),
    };
    let sent = SystemTime::now();
    match ctx.client.send(req.map(kube::client::Body::from)).await {
        Ok(resp) => resp
            .headers()
            .get(http::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .map(|server| SkewFacts::Date { server, sent })
            .unwrap_or(SkewFacts::NoDateHeader),
        Err(e) => SkewFacts::Unreachable(e.to_string()),
    }
}

/// Compares the API server's clock with this machine's. `now` is when the
/// judgement is made; a request's own duration never counts as skew.
fn judge_skew(facts: &SkewFacts, now: SystemTime) -> CheckResult {
    const WHAT: &str = "no clock skew detected";
    let (server, sent) = match facts {
        SkewFacts::Date { server, sent } => (*server, *sent),
        SkewFacts::NoDateHeader => {
            return CheckResult::warn(
                WHAT,
                "the API server sent no Date header",
                "cannot compare clocks",
            );
        }
        SkewFacts::Unreachable(e) => {
            return CheckResult::fail(WHAT, e.clone(), "the API server did not answer");
        }
    };
    // The server's date falls between sending and now; the header has whole
    // seconds, so allow one more.
    let skew = if server < sent {
        sent.duration_since(server).unwrap_or_default()
    } else {
        server.duration_since(now.max(sent)).unwrap_or_default()
    }
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
    let exists = namespace_exists(ctx, ns).await;
    let what = format!("'{ns}' namespace exists");
    let mut checks = vec![match exists {
        Ok(true) => CheckResult::ok(what),
        Ok(false) => CheckResult::fail(
            what,
            format!("namespace '{ns}' was not found"),
            "install tandem: `tandem install | kubectl apply -f -`",
        ),
        Err(e) => CheckResult::fail(what, e, "could not read namespaces"),
    }];
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
            &[
                tandem_install::core::IDENTITY,
                tandem_install::core::DESTINATION,
            ],
            "see `kubectl -n NS get deploy,pods` and the pods' events",
        )
        .await,
    );
    category("tandem-existence", checks)
}

/// A CRD as the checks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CrdState {
    Established,
    NotEstablished,
    Missing,
    Unreadable(String),
}

/// One check over several CRDs: each must exist and be Established.
pub(crate) async fn crds_established(
    ctx: &Context,
    what: &str,
    names: &[String],
    hint: &str,
) -> CheckResult {
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let mut states = vec![];
    for name in names {
        let state = match crds.get_opt(name).await {
            Ok(Some(crd)) => {
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    CrdState::Established
                } else {
                    CrdState::NotEstablished
                }
            }
            Ok(None) => CrdState::Missing,
            Err(e) => CrdState::Unreadable(e.to_string()),
        };
        states.push((name.clone(), state));
    }
    judge_crds(what, &states, hint)
}

fn judge_crds(what: &str, crds: &[(String, CrdState)], hint: &str) -> CheckResult {
    let problems: Vec<String> = crds
        .iter()
        .filter_map(|(name, state)| match state {
            CrdState::Established => None,
            CrdState::NotEstablished => Some(format!("CRD {name} is not established")),
            CrdState::Missing => Some(format!("CRD {name} is missing")),
            CrdState::Unreadable(e) => Some(format!("CRD {name}: {e}")),
        })
        .collect();
    if problems.is_empty() {
        CheckResult::ok(what)
    } else {
        CheckResult::fail(what, problems.join("\n"), hint)
    }
}

/// A Deployment as the checks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DeploymentState {
    Replicas { wanted: i32, available: i32 },
    Missing,
    Unreadable(String),
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
    let mut states = vec![];
    for name in names {
        let state = match deployments.get_opt(name).await {
            Ok(Some(d)) => DeploymentState::Replicas {
                wanted: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                available: d
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0),
            },
            Ok(None) => DeploymentState::Missing,
            Err(e) => DeploymentState::Unreadable(e.to_string()),
        };
        states.push((name.to_string(), state));
    }
    judge_deployments(what, namespace, &states, hint)
}

/// Replicas still starting may become available, and so may an API error;
/// a Deployment scaled to 0 or missing will not by itself.
fn judge_deployments(
    what: &str,
    namespace: &str,
    deployments: &[(String, DeploymentState)],
    hint: &str,
) -> CheckResult {
    let problems: Vec<(String, bool)> = deployments
        .iter()
        .filter_map(|(name, state)| match state {
            DeploymentState::Replicas { wanted: 0, .. } => {
                Some((format!("{namespace}/{name} is scaled to 0 replicas"), false))
            }
            DeploymentState::Replicas { wanted, available } if available < wanted => Some((
                format!("{namespace}/{name}: {available}/{wanted} replicas available"),
                true,
            )),
            DeploymentState::Replicas { .. } => None,
            DeploymentState::Missing => {
                Some((format!("Deployment {namespace}/{name} is missing"), false))
            }
            DeploymentState::Unreadable(e) => {
                Some((format!("Deployment {namespace}/{name}: {e}"), true))
            }
        })
        .collect();
    if problems.is_empty() {
        return CheckResult::ok(what);
    }
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
mod tests;

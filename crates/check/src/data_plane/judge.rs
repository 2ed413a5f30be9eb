//! The data plane's verdicts, from [`Gathered`] facts alone.

use std::collections::BTreeSet;

use super::{Gathered, ProxyPod, ServiceMeta};
use crate::{Category, CheckResult};

pub(crate) const IDENTITY_CATEGORY: &str = "tandem-identity-data-plane";
pub(crate) const CATEGORY: &str = "tandem-data-plane";

pub(crate) const NAMESPACE_EXISTS: &str = "data plane namespace exists";
pub(crate) const READY: &str = "data plane proxies are ready";
pub(crate) const VERSIONS: &str = "data plane and cli versions match";
pub(crate) const POD_LABELS: &str = "data plane pod labels are configured correctly";
pub(crate) const SERVICE_LABELS: &str = "data plane service labels are configured correctly";
pub(crate) const SERVICE_ANNOTATIONS: &str =
    "data plane service annotations are configured correctly";
pub(crate) const CERTIFICATES: &str = "data plane proxies certificate match CA";

/// Names listed in one message; the rest are counted.
const LISTED: usize = 10;
/// Label keys that only work as annotations (injection's settings).
const ANNOTATION_ONLY: &[&str] = &["linkerd.io/inject"];
const ANNOTATION_ONLY_PREFIXES: &[&str] = &["config.linkerd.io/", "config.alpha.linkerd.io/"];
/// Annotation keys that only work as labels: the service mirror selects
/// exported Services by label.
const LABEL_ONLY: &[&str] = &[tandem_api::multicluster::EXPORT_LABEL];

/// `tandem-identity-data-plane`, then `tandem-data-plane`; only the latter
/// when there is nothing to look at (no such namespace, no pod list).
pub(crate) fn judge(g: &Gathered, cli_version: &str) -> Vec<Category> {
    let mut checks = vec![];
    if let Some((ns, exists)) = &g.namespace {
        let verdict = match exists {
            Ok(true) => CheckResult::ok(NAMESPACE_EXISTS),
            Ok(false) => CheckResult::fail(
                NAMESPACE_EXISTS,
                format!("The \"{ns}\" namespace does not exist"),
                "check its name (`kubectl get namespaces`), or leave -n out to check every namespace",
            ),
            Err(e) => CheckResult::fail(NAMESPACE_EXISTS, e.clone(), "could namespaces be read?")
                .retryable(),
        };
        let exists = verdict.outcome == crate::Outcome::Success;
        checks.push(verdict);
        if !exists {
            return vec![category(CATEGORY, checks)];
        }
    }
    let pods = match &g.pods {
        Ok(pods) => pods,
        Err(e) => {
            checks.push(
                CheckResult::fail(
                    READY,
                    e.clone(),
                    "could pods be listed? try `kubectl get pods`",
                )
                .retryable(),
            );
            return vec![category(CATEGORY, checks)];
        }
    };
    let scope = match &g.namespace {
        Some((ns, _)) => format!("in namespace {ns}"),
        None => "in any namespace".to_string(),
    };
    checks.push(ready(pods, &scope));
    if !pods.is_empty() {
        checks.push(versions(pods, cli_version));
        checks.push(pod_labels(pods));
    }
    checks.extend(services(&g.services));
    vec![
        category(IDENTITY_CATEGORY, vec![certificates(pods, &g.anchors)]),
        category(CATEGORY, checks),
    ]
}

fn category(name: &str, checks: Vec<CheckResult>) -> Category {
    Category {
        name: name.into(),
        checks,
    }
}

/// `* item` lines, the first [`LISTED`] of them, and a count of the rest.
pub(crate) fn listed(items: &[String]) -> String {
    let mut lines: Vec<String> = items
        .iter()
        .take(LISTED)
        .map(|i| format!("* {i}"))
        .collect();
    if items.len() > LISTED {
        lines.push(format!("... and {} more", items.len() - LISTED));
    }
    lines.join("\n")
}

fn ready(pods: &[ProxyPod], scope: &str) -> CheckResult {
    if pods.is_empty() {
        return CheckResult::fail(
            READY,
            format!(
                "No \"{}\" containers found {scope}",
                tandem_inject::PROXY_CONTAINER
            ),
            "inject the workloads: `kubectl get deploy -n NS -o yaml | tandem inject - | kubectl apply -f -`",
        );
    }
    let not_ready: Vec<String> = pods
        .iter()
        .filter_map(|p| p.not_ready.as_ref().map(|why| format!("{}: {why}", p.name)))
        .collect();
    if not_ready.is_empty() {
        return CheckResult::ok(READY);
    }
    CheckResult::fail(
        READY,
        format!(
            "{} of {} proxies are not ready:\n{}",
            not_ready.len(),
            pods.len(),
            listed(&not_ready)
        ),
        format!(
            "see `kubectl -n NS describe pod POD` and `kubectl -n NS logs POD -c {}`",
            tandem_inject::PROXY_CONTAINER
        ),
    )
    .retryable()
}

fn versions(pods: &[ProxyPod], cli: &str) -> CheckResult {
    let other: Vec<String> = pods
        .iter()
        .filter_map(|p| match p.version.as_deref() {
            Some(v) if v == cli => None,
            Some(v) => Some(format!("{}: running version {v}", p.name)),
            None => Some(format!(
                "{}: no linkerd.io/proxy-version annotation",
                p.name
            )),
        })
        .collect();
    if other.is_empty() {
        return CheckResult::ok(VERSIONS);
    }
    CheckResult::warn(
        VERSIONS,
        format!(
            "{} of {} proxies are not at the CLI's version {cli}:\n{}",
            other.len(),
            pods.len(),
            listed(&other)
        ),
        "re-inject their workloads with this CLI (`tandem inject`) and apply them",
    )
}

fn annotation_only(key: &str) -> bool {
    ANNOTATION_ONLY.contains(&key) || ANNOTATION_ONLY_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// `* ns/name` then its keys, indented, for each object with any.
fn misplaced<'a>(objects: impl Iterator<Item = (&'a str, Vec<&'a str>)>) -> Vec<String> {
    objects
        .filter(|(_, keys)| !keys.is_empty())
        .map(|(name, keys)| format!("{name}\n    {}", keys.join("\n    ")))
        .collect()
}

fn pod_labels(pods: &[ProxyPod]) -> CheckResult {
    let wrong = misplaced(pods.iter().map(|p| {
        let keys = p
            .labels
            .iter()
            .map(String::as_str)
            .filter(|k| annotation_only(k));
        (p.name.as_str(), keys.collect())
    }));
    if wrong.is_empty() {
        return CheckResult::ok(POD_LABELS);
    }
    CheckResult::warn(
        POD_LABELS,
        format!(
            "Some labels on data plane pods should be annotations:\n{}",
            listed(&wrong)
        ),
        "injection reads `linkerd.io/inject` and `config.linkerd.io/*` from annotations only: move them to the pod template's annotations",
    )
}

fn services(services: &Result<Vec<ServiceMeta>, String>) -> Vec<CheckResult> {
    let services = match services {
        Ok(s) => s,
        Err(e) => {
            return vec![
                CheckResult::fail(SERVICE_LABELS, e.clone(), "could services be listed?")
                    .retryable(),
            ];
        }
    };
    let labels = misplaced(services.iter().map(|s| {
        let keys = s
            .labels
            .iter()
            .map(String::as_str)
            .filter(|k| annotation_only(k));
        (s.name.as_str(), keys.collect())
    }));
    let annotations = misplaced(services.iter().map(|s| {
        let keys = s
            .annotations
            .iter()
            .map(String::as_str)
            .filter(|k| LABEL_ONLY.contains(k));
        (s.name.as_str(), keys.collect())
    }));
    vec![
        if labels.is_empty() {
            CheckResult::ok(SERVICE_LABELS)
        } else {
            CheckResult::warn(
                SERVICE_LABELS,
                format!(
                    "Some labels on data plane services should be annotations:\n{}",
                    listed(&labels)
                ),
                "`config.linkerd.io/*` settings take effect as annotations only",
            )
        },
        if annotations.is_empty() {
            CheckResult::ok(SERVICE_ANNOTATIONS)
        } else {
            CheckResult::warn(
                SERVICE_ANNOTATIONS,
                format!(
                    "Some annotations on data plane services should be labels:\n{}",
                    listed(&annotations)
                ),
                "the service mirror selects exported Services by label: `kubectl label svc NAME mirror.linkerd.io/exported=true`",
            )
        },
    ]
}

fn certificates(pods: &[ProxyPod], anchors: &Result<BTreeSet<String>, String>) -> CheckResult {
    let current = match anchors {
        Ok(a) => a,
        Err(e) => {
            return CheckResult::fail(
                CERTIFICATES,
                format!("the control plane's trust anchors: {e}"),
                "see the tandem-identity category of `tandem check`",
            );
        }
    };
    let stale: Vec<String> = pods
        .iter()
        .filter(|p| p.anchors.as_ref().is_some_and(|a| a != current))
        .map(|p| p.name.clone())
        .collect();
    if stale.is_empty() {
        return CheckResult::ok(CERTIFICATES);
    }
    CheckResult::warn(
        CERTIFICATES,
        format!(
            "Some pods do not have the current trust bundle and must be restarted:\n{}",
            listed(&stale)
        ),
        "re-inject their workloads (`tandem inject` writes the current anchors) and apply them, or `kubectl rollout restart` those a webhook injects",
    )
}

//! `tandem check --proxy [-n NS]`: the data plane, as `linkerd check
//! --proxy` checks it, in two categories:
//!
//! - `tandem-identity-data-plane` (Linkerd's `linkerd-identity-data-plane`):
//!   every proxy carries the trust anchors the control plane holds now. A
//!   pod injected before the anchors were rotated keeps the old ones until
//!   it is re-injected and restarted.
//! - `tandem-data-plane` (Linkerd's `linkerd-data-plane`): the namespace
//!   exists (with `-n`), proxies are found and ready, they run the CLI's
//!   version, and what must be an annotation or a label is one. Those last
//!   checks catch the workshop's easiest slip: `mirror.linkerd.io/exported`
//!   written as an annotation, which no service mirror ever sees.
//!
//! Gathered once (async), judged by [`judge`] (pure).

mod judge;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Namespace, Pod, Service};
use kube::{Api, api::ListParams};

pub(crate) use self::judge::{judge, listed};
use crate::{Context, anchors};

/// The proxy's container name: tandem's, and Linkerd's (pods injected by
/// Linkerd are a data plane too).
const PROXY_CONTAINERS: &[&str] = &[tandem_inject::PROXY_CONTAINER, "linkerd-proxy"];
/// The proxy's trust anchors variable.
const ANCHORS_ENV: &str = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS";
/// The annotation injection writes with the proxy's version.
const VERSION_ANNOTATION: &str = "linkerd.io/proxy-version";

/// What the cluster says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Gathered {
    /// With `-n`: the namespace, and whether it exists.
    pub(crate) namespace: Option<(String, Result<bool, String>)>,
    /// The pods with a proxy that should be running.
    pub(crate) pods: Result<Vec<ProxyPod>, String>,
    pub(crate) services: Result<Vec<ServiceMeta>, String>,
    /// The control plane's trust anchors.
    pub(crate) anchors: Result<BTreeSet<String>, String>,
}

/// One pod with a proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProxyPod {
    /// `namespace/name`.
    pub(crate) name: String,
    /// `None` when ready, else what its proxy is doing.
    pub(crate) not_ready: Option<String>,
    pub(crate) version: Option<String>,
    /// The anchors in the proxy's environment, when written there inline.
    pub(crate) anchors: Option<BTreeSet<String>>,
    pub(crate) labels: Vec<String>,
}

/// A Service's label and annotation keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceMeta {
    /// `namespace/name`.
    pub(crate) name: String,
    pub(crate) labels: Vec<String>,
    pub(crate) annotations: Vec<String>,
}

pub(crate) async fn gather(ctx: &Context, namespace: Option<&str>) -> Gathered {
    let client = &ctx.client;
    let namespace = match namespace {
        Some(ns) => {
            let exists = Api::<Namespace>::all(client.clone())
                .get_opt(ns)
                .await
                .map(|n| n.is_some())
                .map_err(|e| format!("namespace {ns}: {e}"));
            Some((ns.to_string(), exists))
        }
        None => None,
    };
    let (pods, services): (Api<Pod>, Api<Service>) = match &namespace {
        Some((ns, _)) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let all = ListParams::default();
    let pods = pods
        .list(&all)
        .await
        .map(|l| l.items.iter().filter_map(proxy_pod).collect())
        .map_err(|e| format!("listing pods: {e}"));
    let services = services
        .list_metadata(&all)
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|s| ServiceMeta {
                    name: qualified(&s.metadata),
                    labels: s.metadata.labels.unwrap_or_default().into_keys().collect(),
                    annotations: s
                        .metadata
                        .annotations
                        .unwrap_or_default()
                        .into_keys()
                        .collect(),
                })
                .collect()
        })
        .map_err(|e| format!("listing services: {e}"));
    let anchors = anchors::read_set(client, &ctx.options.namespace).await;
    Gathered {
        namespace,
        pods,
        services,
        anchors,
    }
}

fn qualified(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The facts of a pod with a proxy (a container, or a native sidecar
/// among the init containers). `None` for a pod without one, and for one
/// that is not meant to run any more: terminating, or finished (a Job's).
pub(crate) fn proxy_pod(pod: &Pod) -> Option<ProxyPod> {
    let spec = pod.spec.as_ref()?;
    let is_proxy = |c: &&Container| PROXY_CONTAINERS.contains(&c.name.as_str());
    let proxy = spec
        .containers
        .iter()
        .find(is_proxy)
        .or_else(|| spec.init_containers.iter().flatten().find(is_proxy))?;
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_else(|| "Pending".into());
    if pod.metadata.deletion_timestamp.is_some() || phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let statuses = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten());
    let not_ready = match statuses.into_iter().find(|s| s.name == proxy.name) {
        Some(s) if s.ready => None,
        Some(s) => Some(not_ready(s)),
        None => Some(format!("pod {phase}, the proxy not started")),
    };
    let anchors = proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == ANCHORS_ENV)
        .and_then(|e| e.value.as_deref())
        .map(anchors::certificates);
    Some(ProxyPod {
        name: qualified(&pod.metadata),
        not_ready,
        version: pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(VERSION_ANNOTATION).cloned()),
        anchors,
        labels: pod
            .metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect(),
    })
}

/// What a proxy that is not ready is doing, from its container's status.
fn not_ready(s: &ContainerStatus) -> String {
    let state = s.state.clone().unwrap_or_default();
    if let Some(w) = state.waiting {
        let reason = w.reason.unwrap_or_else(|| "waiting".into());
        return match w.message {
            Some(m) if !m.is_empty() => format!("{reason}: {m}"),
            _ => reason,
        };
    }
    if let Some(t) = state.terminated {
        return format!(
            "terminated ({}, exit code {})",
            t.reason.unwrap_or_else(|| "no reason".into()),
            t.exit_code
        );
    }
    let restarts = match s.restart_count {
        0 => String::new(),
        n => format!(", {n} restart(s)"),
    };
    format!("running, not ready{restarts}")
}

//! What the page shows, and the pure functions that make it from API
//! objects. No client here: `gather` reads, these decide what to show.
//!
//! - A TrafficSplit shows its apex service, its backends with their live
//!   weights, and the failover controller's view of it: the state and
//!   last-transition-time annotations it writes, the primary-service
//!   annotation it reads, and its latest Events about the split. (The
//!   controller writes no `status` on splits: annotations and Events are all
//!   it says.)
//! - A Link shows what the service mirror writes to its status: the remote
//!   gateway's liveness (overall and per address), probe latency
//!   percentiles, mirror counts, conditions and heartbeat.
//! - An object that cannot be read is a row with `error` set; it never hides
//!   the others.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Event;
use kube::api::DynamicObject;
use serde::{Deserialize, Serialize};
use tandem_api::multicluster::Link;
use tandem_core::failover::{CONTROLLED_BY_LABEL, PRIMARY_SERVICE_ANNOTATION};
use tandem_failover::resource::{self, Resource};

/// How many Events a split shows, newest first.
pub const MAX_EVENTS: usize = 5;

/// Everything the page shows: `/api/state`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// How often the page asks again, in milliseconds.
    pub refresh_ms: u64,
    pub clusters: Vec<ClusterView>,
}

/// One cluster (a kubeconfig context).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub context: String,
    /// When this view was gathered (RFC 3339); `None` until the first time.
    pub updated_at: Option<String>,
    pub splits: Section<SplitView>,
    pub gateways: Section<GatewayView>,
    pub stats: StatsView,
}

/// Rows of one kind, or why they could not be listed at all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section<T> {
    pub error: Option<String>,
    pub rows: Vec<T>,
}

impl<T> Default for Section<T> {
    fn default() -> Self {
        Self {
            error: None,
            rows: vec![],
        }
    }
}

impl<T> Section<T> {
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            rows: vec![],
        }
    }
}

/// A TrafficSplit with its weights and failover state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitView {
    pub namespace: String,
    pub name: String,
    /// The API version it was read through.
    pub api_version: String,
    /// `spec.service`, the apex clients address.
    pub service: Option<String>,
    /// Whether the failover controller's label is on it, and its value.
    pub controlled_by: Option<String>,
    pub primary: Option<String>,
    /// The controller's state annotation: `primary`, `failover`,
    /// `no-ready-backends`; `unknown` before it wrote one, `invalid` when
    /// the split cannot be read.
    pub state: String,
    pub last_transition_time: Option<String>,
    pub backends: Vec<BackendView>,
    /// Newest first, at most [`MAX_EVENTS`].
    pub events: Vec<EventView>,
    /// Why the split cannot be read, if it cannot.
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub service: String,
    /// As the controller reads it: a whole number, or thousandths for a
    /// fractional quantity.
    pub weight: u32,
    pub active: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub time: Option<String>,
    pub count: i32,
}

/// A Link, and the service mirror's view of the remote gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayView {
    pub namespace: String,
    pub link: String,
    pub target_cluster: String,
    pub address: String,
    pub port: u16,
    /// `None` until the probes tell.
    pub alive: Option<bool>,
    pub probes: Vec<ProbeView>,
    pub latency_ms_p50: Option<u64>,
    pub latency_ms_p95: Option<u64>,
    pub latency_ms_p99: Option<u64>,
    pub mirrored_services: u32,
    pub failed_services: u32,
    pub conditions: Vec<ConditionView>,
    pub last_heartbeat_time: Option<String>,
    /// Why the Link cannot be read, if it cannot.
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeView {
    pub address: String,
    pub alive: Option<bool>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// Services with their traffic, when Prometheus answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum StatsView {
    /// Not asked yet.
    #[default]
    Pending,
    /// No Prometheus to ask: what to install.
    NotInstalled {
        message: String,
    },
    /// Prometheus is there but the query failed.
    Error {
        message: String,
    },
    Ok {
        rows: Vec<ServiceStat>,
    },
}

/// One service's traffic over the query window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStat {
    pub namespace: String,
    pub service: String,
    pub rps: f64,
    /// From 0 to 1; `None` without requests.
    pub success_rate: Option<f64>,
}

// === splits ===

/// A TrafficSplit read through `res` (either SMI version), with `events`
/// (any order; the newest [`MAX_EVENTS`] are kept).
pub fn split_view(res: &Resource, object: DynamicObject, mut events: Vec<EventView>) -> SplitView {
    let api_version = res.api.api_version.clone();
    let service = object.data["spec"]["service"].as_str().map(String::from);
    let controlled_by = object
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONTROLLED_BY_LABEL))
        .cloned();
    let primary = object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PRIMARY_SERVICE_ANNOTATION))
        .cloned();
    let entry = resource::read(res, object);
    let backends = entry
        .groups
        .iter()
        .flat_map(|g| &g.backends)
        .map(|b| BackendView {
            service: b.service.clone(),
            weight: b.weight,
            active: b.weight > 0,
        })
        .collect();
    let state = match (&entry.state, &entry.unreadable) {
        (_, Some(_)) => "invalid".to_string(),
        (Some(s), None) => s.clone(),
        (None, None) => "unknown".to_string(),
    };
    events.sort_by(|a, b| b.time.cmp(&a.time));
    events.truncate(MAX_EVENTS);
    SplitView {
        namespace: entry.key.namespace.to_string(),
        name: entry.key.name.to_string(),
        api_version,
        service,
        controlled_by,
        primary,
        state,
        last_transition_time: entry.last_transition_time,
        backends,
        events,
        error: entry.unreadable,
    }
}

/// Events grouped by the (namespace, name) of the object they are about.
pub fn events_by_object(events: Vec<Event>) -> BTreeMap<(String, String), Vec<EventView>> {
    let mut out: BTreeMap<(String, String), Vec<EventView>> = BTreeMap::new();
    for e in events {
        let o = &e.involved_object;
        let key = (
            o.namespace.clone().unwrap_or_default(),
            o.name.clone().unwrap_or_default(),
        );
        // Events from events.k8s.io carry eventTime; core ones lastTimestamp.
        let time = e
            .last_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
            .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.to_string()));
        let count = e
            .series
            .as_ref()
            .and_then(|s| s.count)
            .or(e.count)
            .unwrap_or(1);
        out.entry(key).or_default().push(EventView {
            type_: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
            time,
            count,
        });
    }
    out
}

// === gateways ===

/// A Link object, read on its own so that a malformed one is an error row.
pub fn gateway_view(object: DynamicObject) -> GatewayView {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let link = object.metadata.name.clone().unwrap_or_default();
    let parsed: Result<Link, _> = serde_json::to_value(&object).and_then(serde_json::from_value);
    let l = match parsed {
        Ok(l) => l,
        Err(e) => {
            return GatewayView {
                namespace,
                link,
                error: Some(format!("cannot read this Link: {e}")),
                ..Default::default()
            };
        }
    };
    let status = l.status.unwrap_or_default();
    let gw = status.gateway.unwrap_or_default();
    GatewayView {
        namespace,
        link,
        target_cluster: l.spec.target_cluster_name,
        address: l.spec.gateway_address,
        port: l.spec.gateway_port,
        alive: gw.alive,
        probes: gw
            .probes
            .into_iter()
            .map(|p| ProbeView {
                address: p.address,
                alive: p.alive,
                last_error: p.last_error,
            })
            .collect(),
        latency_ms_p50: gw.latency_ms_p50,
        latency_ms_p95: gw.latency_ms_p95,
        latency_ms_p99: gw.latency_ms_p99,
        mirrored_services: status.mirrored_services,
        failed_services: status.failed_services,
        conditions: status
            .conditions
            .into_iter()
            .map(|c| ConditionView {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
            })
            .collect(),
        last_heartbeat_time: status.last_heartbeat_time,
        error: None,
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;

//! The Link's status, decided from what the mirror knows: pure, with the
//! time passed in. Writing it is the runtime's job.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use serde_json::Value;
use std::collections::BTreeMap;

use tandem_api::multicluster::{
    GatewayAddressStatus, GatewayStatus, LinkStatus, MirrorFailure, RemoteRef,
};

use crate::{gateway::GatewayState, index::Key};

pub const READY: &str = "Ready";
pub const REMOTE_REACHABLE: &str = "RemoteReachable";
pub const GATEWAY_RESOLVED: &str = "GatewayResolved";
pub const MIRRORED: &str = "Mirrored";

/// What the remote API server did last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    /// Not known yet (no answer, no error).
    Unknown,
    Reachable,
    /// `reason` is `Unauthorized` or `Unreachable`.
    Unreachable {
        reason: String,
        message: String,
    },
}

/// How the mirror of one remote Service stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Not written yet.
    #[default]
    Pending,
    Mirrored,
    Invalid(String),
    MissingNamespace(String),
    /// A Service of the mirror's name exists and is not this Link's: it is
    /// left alone.
    NameTaken(String),
    Error(String),
}

impl Outcome {
    /// The failure's reason and message; `None` unless it failed.
    fn failure(&self) -> Option<(&'static str, &str)> {
        match self {
            Outcome::Pending | Outcome::Mirrored => None,
            Outcome::Invalid(m) => Some(("InvalidService", m)),
            Outcome::MissingNamespace(m) => Some(("MissingNamespace", m)),
            Outcome::NameTaken(m) => Some(("NameTaken", m)),
            Outcome::Error(m) => Some(("Error", m)),
        }
    }
}

/// The remote Services' outcomes, summarised: counts, and the first
/// failures by key (bounded, so that the status stays small).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub mirrored: u32,
    pub pending: u32,
    pub failed: u32,
    /// The first failures, sorted by key (see
    /// [`tandem_api::multicluster::MAX_LISTED_FAILURES`]).
    pub failures: Vec<MirrorFailure>,
}

impl Summary {
    pub fn total(&self) -> u32 {
        self.mirrored + self.pending + self.failed
    }
}

/// Summarises the outcome of each remote Service (in any order) in one pass;
/// only the first `limit` failures by key are kept.
pub fn summarize<'a>(
    services: impl IntoIterator<Item = (&'a Key, &'a Outcome)>,
    limit: usize,
) -> Summary {
    let mut summary = Summary::default();
    let mut first: BTreeMap<&Key, (&'static str, &str)> = BTreeMap::new();
    for (key, outcome) in services {
        match outcome.failure() {
            None if *outcome == Outcome::Mirrored => summary.mirrored += 1,
            None => summary.pending += 1,
            Some(failure) => {
                summary.failed += 1;
                if first.len() < limit || first.last_key_value().is_some_and(|(k, _)| key < *k) {
                    first.insert(key, failure);
                    if first.len() > limit {
                        first.pop_last();
                    }
                }
            }
        }
    }
    summary.failures = first
        .into_iter()
        .map(|(key, (reason, message))| MirrorFailure {
            remote_ref: RemoteRef {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            },
            reason: reason.into(),
            message: tandem_util::truncate(message, 256),
        })
        .collect();
    summary
}

/// Everything the status is decided from.
#[derive(Clone, Debug)]
pub struct Health<'a> {
    pub cluster: &'a str,
    /// The spec's problems, if any.
    pub spec: Result<(), &'a str>,
    /// `None` until the credentials were read once.
    pub credentials: Option<Result<(), &'a str>>,
    pub remote: &'a Remote,
    /// The remote Services and slices were listed once.
    pub synced: bool,
    pub gateway: Option<&'a GatewayState>,
    pub generation: Option<i64>,
}

/// The Link's status (without the heartbeat, which the writer stamps).
/// `previous` keeps the transition times of conditions that did not change.
pub fn link_status(
    h: &Health<'_>,
    services: &Summary,
    previous: Option<&LinkStatus>,
    now: Timestamp,
) -> LinkStatus {
    let prev = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let mk = |type_: &str, status: &str, reason: &str, message: String| {
        condition(type_, status, reason, message, h.generation, prev, now)
    };
    let cluster = h.cluster;

    let reachable = match (&h.spec, &h.credentials, h.remote) {
        (Err(_), _, _) => mk(
            REMOTE_REACHABLE,
            "Unknown",
            "InvalidLink",
            "the Link's spec is invalid".into(),
        ),
        (_, Some(Err(e)), _) => mk(
            REMOTE_REACHABLE,
            "False",
            "InvalidCredentials",
            e.to_string(),
        ),
        (_, _, Remote::Unreachable { reason, message }) => {
            mk(REMOTE_REACHABLE, "False", reason, message.clone())
        }
        (_, _, Remote::Reachable) => mk(
            REMOTE_REACHABLE,
            "True",
            "Reachable",
            format!("the API server of cluster {cluster} answers"),
        ),
        _ => mk(
            REMOTE_REACHABLE,
            "Unknown",
            "Connecting",
            format!("connecting to the API server of cluster {cluster}"),
        ),
    };

    let gateway_ips = h
        .gateway
        .filter(|g| g.resolved)
        .map(|g| g.ips.clone())
        .unwrap_or_default();
    let ready = match (&h.spec, &h.credentials, h.remote) {
        (Err(e), _, _) => mk(READY, "False", "InvalidLink", e.to_string()),
        (_, Some(Err(e)), _) => mk(READY, "False", "InvalidCredentials", e.to_string()),
        (_, _, Remote::Unreachable { message, .. }) => mk(
            READY,
            "False",
            "RemoteUnreachable",
            format!("{message}; the mirrors are left as they were"),
        ),
        _ if !h.synced => mk(
            READY,
            "False",
            "Syncing",
            format!("waiting for the first list of cluster {cluster}'s services"),
        ),
        _ if gateway_ips.is_empty() => mk(
            READY,
            "False",
            "GatewayUnresolved",
            match h.gateway {
                Some(g) if g.resolved => format!(
                    "the gateway has no IPv4 address: {}",
                    g.unresolved.join("; ")
                ),
                _ => "resolving the gateway's addresses".into(),
            },
        ),
        _ => mk(
            READY,
            "True",
            "Mirroring",
            format!(
                "mirroring {} of {} services from cluster {cluster}",
                services.mirrored,
                services.total()
            ),
        ),
    };

    let mut conditions = vec![ready, reachable];
    if let (Ok(()), Some(g)) = (&h.spec, h.gateway.filter(|g| g.resolved)) {
        conditions.push(if g.unresolved.is_empty() {
            mk(
                GATEWAY_RESOLVED,
                "True",
                "Resolved",
                format!(
                    "the gateway is at {}",
                    g.ips
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        } else {
            mk(
                GATEWAY_RESOLVED,
                "False",
                "Unresolvable",
                g.unresolved.join("; "),
            )
        });
    }

    LinkStatus {
        conditions,
        mirrored_services: services.mirrored,
        failed_services: services.failed,
        pending_services: services.pending,
        failures: services.failures.clone(),
        more_failures: services
            .failed
            .saturating_sub(services.failures.len() as u32),
        gateway: h.gateway.filter(|g| g.resolved).map(|g| GatewayStatus {
            alive: g.liveness.known(),
            addresses: g.ips.iter().map(|i| i.to_string()).collect(),
            probes: g
                .addresses
                .iter()
                .map(|a| GatewayAddressStatus {
                    address: a.ip.to_string(),
                    alive: a.liveness.known(),
                    last_error: a
                        .last_error
                        .as_deref()
                        .map(|e| tandem_util::truncate(e, 256)),
                })
                .collect(),
            latency_ms_p50: g.latency_ms[0],
            latency_ms_p95: g.latency_ms[1],
            latency_ms_p99: g.latency_ms[2],
        }),
        last_heartbeat_time: None,
    }
}

/// A condition; its transition time is kept from `previous` when its status
/// did not change.
fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: tandem_util::truncate(&message, 1024),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The merge patch that sets `status` to exactly this: fields it leaves out
/// are removed (a plain serialization would skip empty lists, and a merge
/// patch would keep the old ones).
pub fn status_patch(status: &LinkStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        // `mirrorServices` is what older versions wrote: cleared.
        for key in [
            "conditions",
            "failures",
            "mirrorServices",
            "gateway",
            "lastHeartbeatTime",
        ] {
            m.entry(key).or_insert(Value::Null);
        }
    }
    serde_json::json!({ "status": v })
}

pub use tandem_util::time::rfc3339;

#[cfg(test)]
mod tests;

//! Joining the answers of a request's queries into one row per resource,
//! and which pods are meshed: pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerState, Pod};

use crate::{
    prom::Sample,
    query::{Kind, Queries},
};

/// A resource's identity in the output.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

/// Meshed and total pods of a resource (`MESHED n/m`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meshed {
    pub meshed: u32,
    pub total: u32,
}

/// The traffic figures of one resource over the window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    pub success: f64,
    pub failure: f64,
    /// p50, p95, p99 in ms; `None` when Prometheus has none (NaN).
    pub latency_ms: [Option<f64>; 3],
    pub tcp_connections: Option<f64>,
    pub read_bytes_per_sec: Option<f64>,
    pub write_bytes_per_sec: Option<f64>,
}

impl Traffic {
    pub fn total(&self) -> f64 {
        self.success + self.failure
    }

    /// success / (success + failure), if there were requests.
    pub fn success_rate(&self) -> Option<f64> {
        (self.total() > 0.0).then(|| self.success / self.total())
    }
}

/// One row of `viz stat`.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub kind: Kind,
    pub key: Key,
    /// `None` where MESHED does not apply (`svc`, `ts`).
    pub meshed: Option<Meshed>,
    /// `None` when no proxy reported traffic for it.
    pub traffic: Option<Traffic>,
    /// `po`: the pod's STATUS, as kubectl shows it (`Running`,
    /// `Terminating`, `CrashLoopBackOff`...).
    pub status: Option<String>,
    /// `ts`: the split this row is a leaf of; `key.name` is the leaf.
    pub split: Option<SplitLeaf>,
}

/// What a `ts` row adds: the split (NAME), its apex service (APEX) and the
/// leaf's weight (WEIGHT) as the split writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitLeaf {
    pub split: String,
    pub apex: String,
    /// `-` for a service the apex's traffic reached that is no backend.
    pub weight: String,
}

/// What each query of [`Queries`] answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answers {
    pub requests: Vec<Sample>,
    pub latency: [Vec<Sample>; 3],
    pub tcp_connections: Vec<Sample>,
    pub tcp_read: Vec<Sample>,
    pub tcp_write: Vec<Sample>,
}

/// The traffic of each resource the answers name, keyed by the queries'
/// row labels. Samples without a name label are dropped (traffic to no
/// known resource).
pub fn traffic(q: &Queries, a: &Answers) -> BTreeMap<Key, Traffic> {
    let (ns_label, name_label) = q.row_labels;
    let key = |s: &Sample| -> Option<Key> {
        let name = s.label(name_label);
        (!name.is_empty()).then(|| Key {
            namespace: s.label(ns_label).to_string(),
            name: name.to_string(),
        })
    };
    let mut out: BTreeMap<Key, Traffic> = BTreeMap::new();
    for s in &a.requests {
        let Some(k) = key(s) else { continue };
        if !s.value.is_finite() {
            continue;
        }
        let t = out.entry(k).or_default();
        match s.label("classification") {
            "success" => t.success += s.value,
            "failure" => t.failure += s.value,
            _ => {}
        }
    }
    // The other figures only describe resources that had requests, except
    // connections, which a TCP-only resource has alone.
    for (i, samples) in a.latency.iter().enumerate() {
        for s in samples {
            if let Some(k) = key(s)
                && let Some(t) = out.get_mut(&k)
                && s.value.is_finite()
            {
                t.latency_ms[i] = Some(s.value);
            }
        }
    }
    for s in &a.tcp_connections {
        if let Some(k) = key(s)
            && s.value.is_finite()
        {
            out.entry(k).or_default().tcp_connections = Some(s.value);
        }
    }
    for (samples, field) in [(&a.tcp_read, 0), (&a.tcp_write, 1)] {
        for s in samples {
            if let Some(k) = key(s)
                && let Some(t) = out.get_mut(&k)
                && s.value.is_finite()
            {
                if field == 0 {
                    t.read_bytes_per_sec = Some(s.value);
                } else {
                    t.write_bytes_per_sec = Some(s.value);
                }
            }
        }
    }
    out
}

/// A pod as [`meshed_counts`] needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Has the proxy container.
    pub meshed: bool,
    /// Running or pending (not Succeeded or Failed).
    pub live: bool,
}

/// A resource listed from the API with the pod selector it owns
/// (deployments; none for namespaces and pods, which are their own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub key: Key,
    pub selector: BTreeMap<String, String>,
}

/// MESHED of each resource: its live pods with a proxy, of all its live
/// pods. For `deploy` the pods its selector matches; for `po` the pod
/// itself; for `ns` every pod of the namespace.
pub fn meshed_counts(kind: Kind, owners: &[Owner], pods: &[PodInfo]) -> BTreeMap<Key, Meshed> {
    let mut out = BTreeMap::new();
    let live = pods.iter().filter(|p| p.live);
    match kind {
        Kind::Deployment => {
            for o in owners {
                let m: &mut Meshed = out.entry(o.key.clone()).or_default();
                for p in live.clone().filter(|p| {
                    p.namespace == o.key.namespace
                        && !o.selector.is_empty()
                        && o.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                }) {
                    m.total += 1;
                    m.meshed += u32::from(p.meshed);
                }
            }
        }
        Kind::Pod => {
            for p in live {
                let key = Key {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                };
                out.insert(
                    key,
                    Meshed {
                        meshed: u32::from(p.meshed),
                        total: 1,
                    },
                );
            }
        }
        Kind::Namespace => {
            for p in live {
                let key = Key {
                    namespace: p.namespace.clone(),
                    name: p.namespace.clone(),
                };
                let m: &mut Meshed = out.entry(key).or_default();
                m.total += 1;
                m.meshed += u32::from(p.meshed);
            }
        }
        Kind::Service | Kind::TrafficSplit => {}
    }
    out
}

/// The rows: every resource listed from the API (`listed`) and every
/// resource with traffic, sorted by namespace and name. For kinds with
/// MESHED, resources with no meshed pod are left out (as Linkerd does
/// without `--unmeshed`) unless they had traffic or `unmeshed` keeps them.
pub fn rows(
    kind: Kind,
    listed: &[Key],
    meshed: &BTreeMap<Key, Meshed>,
    mut traffic: BTreeMap<Key, Traffic>,
    unmeshed: bool,
) -> Vec<Row> {
    let has_meshed = !matches!(kind, Kind::Service | Kind::TrafficSplit);
    let mut keys: Vec<Key> = listed.to_vec();
    keys.extend(traffic.keys().cloned());
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let t = traffic.remove(&key);
            let m = has_meshed.then(|| meshed.get(&key).copied().unwrap_or_default());
            if let Some(m) = m
                && m.meshed == 0
                && t.is_none()
                && !unmeshed
            {
                return None;
            }
            Some(Row {
                kind,
                key,
                meshed: m,
                traffic: t,
                status: None,
                split: None,
            })
        })
        .collect()
}

/// A pod's STATUS, as kubectl and Linkerd show it: `Terminating` once it is
/// being deleted; else the first unfinished init container's state
/// (`Init:CrashLoopBackOff`, `Init:0/1`); else the reason a container is
/// waiting or terminated (`CrashLoopBackOff`, `Completed`, `ExitCode:1`);
/// else the pod's reason or phase (`Running`, `Pending`).
pub fn pod_status(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let status = pod.status.clone().unwrap_or_default();
    let inits = status.init_container_statuses.unwrap_or_default();
    for (i, c) in inits.iter().enumerate() {
        let state = c.state.clone().unwrap_or_default();
        match (&state.terminated, &state.waiting) {
            (Some(t), _) if t.exit_code == 0 => continue,
            (Some(_), _) => return format!("Init:{}", state_reason(&state).unwrap_or_default()),
            (None, Some(w)) => {
                if let Some(r) = w.reason.as_deref().filter(|r| *r != "PodInitializing") {
                    return format!("Init:{r}");
                }
            }
            _ => {}
        }
        return format!("Init:{i}/{}", inits.len());
    }
    let containers = status.container_statuses.unwrap_or_default();
    containers
        .iter()
        .rev()
        .find_map(|c| c.state.as_ref().and_then(state_reason))
        .or(status.reason)
        .or(status.phase)
        .unwrap_or_else(|| "Unknown".into())
}

/// Why a container is not running: its waiting or terminated reason, or
/// its exit (`Signal:9`, `ExitCode:1`). `None` when it runs.
fn state_reason(state: &ContainerState) -> Option<String> {
    if let Some(w) = &state.waiting {
        return w.reason.clone();
    }
    let t = state.terminated.as_ref()?;
    Some(match (&t.reason, t.signal) {
        (Some(r), _) if !r.is_empty() => r.clone(),
        (_, Some(sig)) if sig != 0 => format!("Signal:{sig}"),
        _ => format!("ExitCode:{}", t.exit_code),
    })
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;

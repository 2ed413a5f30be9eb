//! Failover decisions for one split (a TrafficSplit or an HTTPRoute).
//!
//! [`decide`] is the whole rule book, as one pure function: the controller reads a split
//! and the readiness of its backends, calls it, and writes the weights it returns when
//! [`Decision::changed`] is set. Time comes in as a monotonic `now`, and the little the
//! rules must remember between calls goes in and out as [`Memory`].
//!
//! # Rules
//!
//! 1. **Primary.** The backend named by [`PRIMARY_SERVICE_ANNOTATION`], or else the first
//!    backend. Names are compared after resolution, so `emoji-svc` and
//!    `emoji-svc.emojivoto.svc.cluster.local` are the same service in namespace
//!    `emojivoto`. A split with no backends, two backends naming the same service, or a
//!    primary that is not a backend is [`Invalid`].
//! 2. **Readiness** is asked of the caller for each resolved [`ServiceRef`]. Names resolve
//!    as Kubernetes DNS does (see [`resolve_backend`]).
//! 3. **Primary ready:** the primary gets 1 and every other backend 0 (state
//!    [`State::Primary`]), unless failback damping holds (rule 6).
//! 4. **Primary not ready** (state [`State::Failover`]):
//!    - with [`PRIORITY_ANNOTATION`] (`a,b,c`), the first ready backend in that order gets
//!      1 and the rest 0; backends not listed come after the listed ones, in spec order;
//!    - without it, every ready fallback gets 1 and the rest 0, as linkerd-failover does.
//! 5. **No backend ready:** the weights stay exactly as they are, never all zeros (state
//!    [`State::NoReadyBackends`]). Sending traffic nowhere can't help, and the last
//!    weights are the best guess for whatever comes back first.
//! 6. **Failback damping** with [`FAILBACK_DELAY_ANNOTATION`] (a Go-style duration,
//!    default `0s`): when the primary is ready again but the current weights send
//!    traffic to fallbacks only, traffic stays on the ready fallbacks (chosen as in rule
//!    4) until the primary has been ready for the delay, and the caller is asked to come
//!    back when it ends. If no fallback is ready the primary takes over at once: damping
//!    never strands traffic. A primary that already carries traffic has nothing to damp.
//! 7. **Output** weights are 0 or 1 (except under rule 5, which keeps them as they are),
//!    and [`Decision::changed`] compares them with the current weights. Writing is the
//!    caller's job.
//!
//! The split is checked in full on every call, in this order: backends present, backend
//! names, duplicates, primary, priority, failback delay. So a bad priority is reported
//! while all is well, not discovered in the middle of an outage.

mod name;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, fmt, time::Duration};

/// Names the preferred backend (linkerd-failover's annotation). Default: the first one.
pub const PRIMARY_SERVICE_ANNOTATION: &str = "failover.linkerd.io/primary-service";
/// Comma-separated failover order among the backends (tandem's extension).
pub const PRIORITY_ANNOTATION: &str = "failover.tandem.io/priority";
/// How long the primary must stay ready before traffic returns to it. Default: `0s`.
pub const FAILBACK_DELAY_ANNOTATION: &str = "failover.tandem.io/failback-delay";
/// Written by the controller: the split's [`State`], as [`State::as_str`].
pub const STATE_ANNOTATION: &str = "failover.tandem.io/state";
/// Written by the controller: when [`STATE_ANNOTATION`] last changed (RFC 3339).
pub const LAST_TRANSITION_TIME_ANNOTATION: &str = "failover.tandem.io/last-transition-time";
/// The annotations [`decide`] reads: a reader of splits may keep only these
/// in [`Split::annotations`] (the controller's own state annotations are no
/// input to the rules).
pub const DECISION_ANNOTATIONS: [&str; 3] = [
    PRIMARY_SERVICE_ANNOTATION,
    PRIORITY_ANNOTATION,
    FAILBACK_DELAY_ANNOTATION,
];
/// Marks the splits the failover controller may rewrite (linkerd-failover's label).
pub const CONTROLLED_BY_LABEL: &str = "failover.linkerd.io/controlled-by";

/// A Service, by namespace and name. Displays as `ns/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

/// A TrafficSplit or an HTTPRoute, as read from the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub namespace: String,
    pub name: String,
    /// In spec order.
    pub backends: Vec<BackendSpec>,
    /// Those of [`DECISION_ANNOTATIONS`] the split has (others are ignored).
    pub annotations: BTreeMap<String, String>,
}

/// One backend of a split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    /// The service name as written in the spec (bare, `name.ns`, or a FQDN).
    pub service: String,
    /// The current weight.
    pub weight: u32,
}

/// What [`decide`] must remember between calls for one split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// The `now` at which the primary was first seen ready in its current ready streak.
    pub primary_ready_since: Option<Duration>,
}

/// Where a split's traffic goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The primary carries the traffic.
    Primary,
    /// Fallbacks carry the traffic.
    Failover,
    /// Nothing is ready; the weights are left as they were.
    NoReadyBackends,
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// One per backend, in spec order; equal to the current weights when nothing changes.
    pub weights: Vec<u32>,
    pub state: State,
    /// The backends with a weight above 0 after the decision, in spec order.
    pub active: Vec<ServiceRef>,
    /// Whether `weights` differ from the current weights, that is, whether to write.
    pub changed: bool,
    /// Set while failback damping holds traffic on fallbacks: decide again after this.
    pub requeue_after: Option<Duration>,
    /// The memory to pass to the next call for this split.
    pub memory: Memory,
}

/// Why a split can't be acted on. Each message is fit for a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the split has no backends")]
    NoBackends,

    /// The annotation's value, trimmed.
    #[error(
        "primary service {0:?} (annotation failover.linkerd.io/primary-service) is not one of the backends"
    )]
    UnknownPrimary(String),

    /// The service, as `ns/name`.
    #[error("two backends name the same service {0}")]
    DuplicateBackend(String),

    #[error("backend {name:?} is not a valid service name: {reason}")]
    BadBackendName { name: String, reason: String },

    #[error("annotation failover.tandem.io/priority {value:?} is invalid: {reason}")]
    BadPriority { value: String, reason: String },

    #[error("annotation failover.tandem.io/failback-delay {value:?} is invalid: {reason}")]
    BadFailbackDelay {
        value: String,
        reason: crate::duration::Reason,
    },
}

// === impl ServiceRef ===

impl ServiceRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

// === impl State ===

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Primary => "primary",
            State::Failover => "failover",
            State::NoReadyBackends => "no-ready-backends",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === decide ===

/// Decides the weights of `split`'s backends; see the [module docs](self) for the rules.
///
/// `ready` is asked once for each backend. `now` is a monotonic time (any fixed origin)
/// and must be comparable with the times in `memory`.
pub fn decide(
    split: &Split,
    cluster_domain: &str,
    ready: &dyn Fn(&ServiceRef) -> bool,
    memory: &Memory,
    now: Duration,
) -> Result<Decision, Invalid> {
    let backends = resolve_all(split, cluster_domain)?;
    let primary = primary_index(split, cluster_domain, &backends)?;
    let priority = priority_order(split, cluster_domain, &backends)?;
    let delay = failback_delay(split)?;

    let current: Vec<u32> = split.backends.iter().map(|b| b.weight).collect();
    let is_ready: Vec<bool> = backends.iter().map(ready).collect();
    let fallbacks = fallback_weights(&is_ready, primary, priority.as_deref());

    if !is_ready[primary] {
        let memory = Memory::default();
        return Ok(match fallbacks {
            Some(weights) => finish(&backends, &current, weights, State::Failover, None, memory),
            None => {
                let weights = current.clone();
                finish(
                    &backends,
                    &current,
                    weights,
                    State::NoReadyBackends,
                    None,
                    memory,
                )
            }
        });
    }

    let since = memory.primary_ready_since.unwrap_or(now);
    let memory = Memory {
        primary_ready_since: Some(since),
    };
    // A caller whose clock went backwards gets the full delay rather than a panic.
    let elapsed = now.saturating_sub(since);
    let on_fallbacks_only = current[primary] == 0
        && current
            .iter()
            .enumerate()
            .any(|(i, &w)| i != primary && w > 0);

    match fallbacks {
        Some(weights) if on_fallbacks_only && elapsed < delay => {
            let requeue = Some(delay - elapsed);
            Ok(finish(
                &backends,
                &current,
                weights,
                State::Failover,
                requeue,
                memory,
            ))
        }
        _ => {
            let weights = (0..backends.len())
                .map(|i| u32::from(i == primary))
                .collect();
            Ok(finish(
                &backends,
                &current,
                weights,
                State::Primary,
                None,
                memory,
            ))
        }
    }
}

/// Resolves a backend name as written in a split in `split_namespace`, the way
/// Kubernetes DNS does: `name` is in the split's namespace; `name.ns`, `name.ns.svc` and
/// `name.ns.svc.<cluster_domain>` (with an optional trailing dot) are in `ns`.
///
/// Anything else is [`Invalid::BadBackendName`]: an empty name, characters other than
/// lowercase letters, digits, `-` and `.`, a label over 63 characters, a service name
/// not starting with a letter, another domain, or extra labels.
pub fn resolve_backend(
    name: &str,
    split_namespace: &str,
    cluster_domain: &str,
) -> Result<ServiceRef, Invalid> {
    name::parse(name, split_namespace, cluster_domain).map_err(|reason| Invalid::BadBackendName {
        name: name.to_string(),
        reason,
    })
}

/// The services `split` sends traffic to, in spec order without repeats, for an index
/// from services to splits. Names that don't resolve are skipped: [`decide`] reports them.
pub fn backend_refs(split: &Split, cluster_domain: &str) -> Vec<ServiceRef> {
    let mut refs: Vec<ServiceRef> = Vec::with_capacity(split.backends.len());
    for backend in &split.backends {
        if let Ok(svc) = resolve_backend(&backend.service, &split.namespace, cluster_domain)
            && !refs.contains(&svc)
        {
            refs.push(svc);
        }
    }
    refs
}

/// Infers the state from the current weights, so that a restarted controller doesn't
/// see a transition that never happened:
///
/// - the primary above 0 and every other backend at 0: [`State::Primary`];
/// - the primary at 0 and some fallback above 0: [`State::Failover`];
/// - all at 0, a mix, or a split that isn't valid: `None`.
pub fn current_state(split: &Split, cluster_domain: &str) -> Option<State> {
    let backends = resolve_all(split, cluster_domain).ok()?;
    let primary = primary_index(split, cluster_domain, &backends).ok()?;
    let others_on = split
        .backends
        .iter()
        .enumerate()
        .any(|(i, b)| i != primary && b.weight > 0);
    match (split.backends[primary].weight > 0, others_on) {
        (true, false) => Some(State::Primary),
        (false, true) => Some(State::Failover),
        _ => None,
    }
}

// === helpers ===

/// Resolves every backend; refuses an empty split, bad names and duplicates.
fn resolve_all(split: &Split, cluster_domain: &str) -> Result<Vec<ServiceRef>, Invalid> {
    if split.backends.is_empty() {
        return Err(Invalid::NoBackends);
    }
    let mut backends = Vec::with_capacity(split.backends.len());
    for backend in &split.backends {
        backends.push(resolve_backend(
            &backend.service,
            &split.namespace,
            cluster_domain,
        )?);
    }
    for (i, svc) in backends.iter().enumerate() {
        if backends[..i].contains(svc) {
            return Err(Invalid::DuplicateBackend(svc.to_string()));
        }
    }
    Ok(backends)
}

/// The index of the primary among the (non-empty) resolved backends.
fn primary_index(
    split: &Split,
    cluster_domain: &str,
    backends: &[ServiceRef],
) -> Result<usize, Invalid> {
    let Some(value) = split.annotations.get(PRIMARY_SERVICE_ANNOTATION) else {
        return Ok(0);
    };
    let value = value.trim();
    // A malformed name can't name a backend either; one error says both.
    name::parse(value, &split.namespace, cluster_domain)
        .ok()
        .and_then(|svc| backends.iter().position(|b| *b == svc))
        .ok_or_else(|| Invalid::UnknownPrimary(value.to_string()))
}

/// The failover order from the priority annotation, as backend indices: the listed ones
/// first, then the others in spec order. `None` without the annotation.
fn priority_order(
    split: &Split,
    cluster_domain: &str,
    backends: &[ServiceRef],
) -> Result<Option<Vec<usize>>, Invalid> {
    let Some(value) = split.annotations.get(PRIORITY_ANNOTATION) else {
        return Ok(None);
    };
    let bad = |reason: String| Invalid::BadPriority {
        value: value.clone(),
        reason,
    };

    let mut order: Vec<usize> = Vec::with_capacity(backends.len());
    for entry in value.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(bad("it has an empty entry".to_string()));
        }
        let svc = name::parse(entry, &split.namespace, cluster_domain)
            .map_err(|reason| bad(format!("{entry:?} is not a valid service name: {reason}")))?;
        let Some(i) = backends.iter().position(|b| *b == svc) else {
            return Err(bad(format!("{entry:?} is not one of the backends")));
        };
        // Most likely a typo for another backend, so say so rather than ignore it.
        if order.contains(&i) {
            return Err(bad(format!("{entry:?} is listed twice")));
        }
        order.push(i);
    }
    let unlisted: Vec<usize> = (0..backends.len()).filter(|i| !order.contains(i)).collect();
    order.extend(unlisted);
    Ok(Some(order))
}

/// The failback delay from its annotation; zero without it.
fn failback_delay(split: &Split) -> Result<Duration, Invalid> {
    match split.annotations.get(FAILBACK_DELAY_ANNOTATION) {
        None => Ok(Duration::ZERO),
        Some(value) => match value.trim().parse::<crate::duration::Duration>() {
            Ok(d) => Ok(d.into()),
            Err(e) => Err(Invalid::BadFailbackDelay {
                value: value.clone(),
                reason: e.reason().clone(),
            }),
        },
    }
}

/// Weights that send traffic to ready fallbacks only (rule 4), or `None` when no
/// fallback is ready.
fn fallback_weights(
    is_ready: &[bool],
    primary: usize,
    priority: Option<&[usize]>,
) -> Option<Vec<u32>> {
    let usable = |i: usize| i != primary && is_ready.get(i).copied().unwrap_or(false);
    let mut weights = vec![0; is_ready.len()];
    match priority {
        Some(order) => {
            let first = order.iter().copied().find(|&i| usable(i))?;
            weights[first] = 1;
        }
        None => {
            for (i, w) in weights.iter_mut().enumerate() {
                *w = u32::from(usable(i));
            }
        }
    }
    weights.contains(&1).then_some(weights)
}

fn finish(
    backends: &[ServiceRef],
    current: &[u32],
    weights: Vec<u32>,
    state: State,
    requeue_after: Option<Duration>,
    memory: Memory,
) -> Decision {
    let active = backends
        .iter()
        .zip(&weights)
        .filter(|(_, w)| **w > 0)
        .map(|(svc, _)| svc.clone())
        .collect();
    Decision {
        changed: weights != current,
        weights,
        state,
        active,
        requeue_after,
        memory,
    }
}

//! The pure part of the election: what to do with a fetched Lease, and which
//! object to write. No I/O and no clock reads; time comes in as an argument.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference},
    jiff::Timestamp,
};

use crate::LeaseParams;

#[cfg(test)]
mod tests;

/// Upper bound of the random delay added to a follower's polls, as a fraction
/// of the wait, so that standbys do not all hit the apiserver at once.
pub const MAX_JITTER: f64 = 0.2;

/// What a candidate should do after reading the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds a live lease: take it (create the Lease if it is missing).
    Acquire,
    /// The lease names this candidate: renew it.
    Renew,
    /// Another candidate holds a live lease: read it again after `retry_in`.
    Wait {
        /// The current holder.
        holder: String,
        /// When to look again: the renew period, or sooner if the lease expires sooner.
        retry_in: Duration,
    },
}

/// Decides what `params.identity` should do, given the Lease as read (`None`
/// when it does not exist) and the local wall-clock time `now`.
///
/// Expiry is `renewTime + leaseDurationSeconds` as written by the holder,
/// compared with the local clock. A missing or non-positive duration falls back
/// to `params.lease_duration`. A holder that wrote neither `renewTime` nor
/// `acquireTime` can never be judged live, so its lease counts as expired.
pub fn decide(lease: Option<&Lease>, now: Timestamp, params: &LeaseParams) -> Decision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return Decision::Acquire;
    };
    let holder = match spec.holder_identity.as_deref() {
        None | Some("") => return Decision::Acquire,
        Some(h) if h == params.identity => return Decision::Renew,
        Some(h) => h,
    };
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Decision::Acquire;
    };
    let duration = i128::try_from(lease_duration(spec, params).as_nanos()).unwrap_or(i128::MAX);
    let left = renewed
        .0
        .as_nanosecond()
        .saturating_add(duration)
        .saturating_sub(now.as_nanosecond());
    if left <= 0 {
        return Decision::Acquire;
    }
    let left = Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX));
    Decision::Wait {
        holder: holder.to_string(),
        retry_in: left.min(params.renew_period),
    }
}

/// The duration the holder declared, else ours.
fn lease_duration(spec: &LeaseSpec, params: &LeaseParams) -> Duration {
    match spec.lease_duration_seconds {
        Some(s) if s > 0 => Duration::from_secs(s.unsigned_abs().into()),
        _ => params.lease_duration,
    }
}

/// The Lease to write to take or renew the lease at `now`, from the one read
/// (`None`: it is to be created). Like Kubernetes' leader election, a change
/// of holder sets `acquireTime` and adds one to `leaseTransitions`; a renewal
/// keeps both. The read object's `resourceVersion` is kept, so that a replace
/// fails with 409 Conflict if anyone wrote in between.
pub(crate) fn claim(current: Option<&Lease>, now: Timestamp, params: &LeaseParams) -> Lease {
    let (metadata, old) = match current {
        Some(l) => (l.metadata.clone(), l.spec.clone().unwrap_or_default()),
        None => (
            ObjectMeta {
                name: Some(params.name.clone()),
                namespace: Some(params.namespace.clone()),
                owner_references: params.owner.as_ref().map(|o| {
                    vec![OwnerReference {
                        api_version: o.api_version.clone(),
                        kind: o.kind.clone(),
                        name: o.name.clone(),
                        uid: o.uid.clone(),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            LeaseSpec::default(),
        ),
    };
    let taking_over = old.holder_identity.as_deref() != Some(params.identity.as_str());
    let now = MicroTime(now);
    let transitions = match (current, taking_over) {
        (None, _) => 0,
        (Some(_), true) => old.lease_transitions.unwrap_or(0).saturating_add(1),
        (Some(_), false) => old.lease_transitions.unwrap_or(0),
    };
    let acquire_time = match old.acquire_time {
        Some(t) if !taking_over => t,
        _ => now.clone(),
    };
    Lease {
        metadata,
        spec: Some(LeaseSpec {
            holder_identity: Some(params.identity.clone()),
            lease_duration_seconds: Some(duration_seconds(params.lease_duration)),
            renew_time: Some(now),
            acquire_time: Some(acquire_time),
            lease_transitions: Some(transitions),
            ..old
        }),
    }
}

/// The Lease that gives the lease up: no holder and no times, so that any
/// candidate may take it at once. `leaseTransitions` is kept.
pub(crate) fn release(current: &Lease) -> Lease {
    let mut lease = current.clone();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = None;
    spec.renew_time = None;
    spec.acquire_time = None;
    lease
}

/// Whole seconds for `leaseDurationSeconds`, rounded up: others then wait at
/// least as long as we assume they do.
pub(crate) fn duration_seconds(d: Duration) -> i32 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

/// `d` plus up to [`MAX_JITTER`] of it; `unit` is a random number in [0, 1].
pub fn jittered(d: Duration, unit: f64) -> Duration {
    d + d.mul_f64(MAX_JITTER * unit.clamp(0.0, 1.0))
}

//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Candidates share one Lease. The one named in `holderIdentity` leads, and
//! renews `renewTime` every [`LeaseParams::renew_period`]; the others poll and
//! take the lease once `renewTime + leaseDurationSeconds` has passed, or at once
//! when it has no holder. Every write is a replace with the read object's
//! `resourceVersion`, so two candidates can never both win.
//!
//! A leader that cannot renew steps down (publishes
//! [`Leadership::Follower`]) two thirds into the lease, well before anyone
//! else may take it, so no two processes believe they lead at the same time
//! (given clocks that agree to within a third of the lease duration).
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), tandem_lease::Error> {
//! use tandem_lease::{Elector, LeaseParams};
//!
//! let elector = Elector::new(client, LeaseParams::new("tandem", "tandem-failover", "pod-a"));
//! let mut leadership = elector.leadership();
//! tokio::spawn(async move {
//!     while leadership.changed().await.is_ok() {
//!         let leading = leadership.borrow().is_leader();
//!         // Start or stop writing here.
//!         let _ = leading;
//!     }
//! });
//! elector.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

#![forbid(unsafe_code)]

use std::{future::Future, time::Duration};

use tokio::{sync::watch, time::Instant};

mod decide;
mod machine;
mod store;

pub use decide::{Decision, MAX_JITTER, decide, jittered};

/// Where the lease is and how it is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseParams {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity, unique among candidates (a pod name).
    pub identity: String,
    /// How long a lease lasts after its last renewal. Written to the Lease in
    /// whole seconds, rounded up.
    pub lease_duration: Duration,
    /// How often the leader renews, and followers poll. Must be shorter than
    /// two thirds of `lease_duration`, the leader's renew deadline.
    pub renew_period: Duration,
    /// The field manager of every write; empty lets the apiserver choose.
    pub field_manager: String,
    /// An owner for the Lease when it is created, so that the garbage
    /// collector deletes it with that object (a Lease created after its
    /// owner is gone is collected too).
    pub owner: Option<Owner>,
}

/// The object that owns the Lease (its `ownerReferences` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl LeaseParams {
    /// Parameters with Kubernetes' usual timing: a 15s lease renewed every 2s.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(2),
            field_manager: "tandem-lease".to_string(),
            owner: None,
        }
    }

    /// How long after its last successful renewal a leader may still lead.
    pub fn renew_deadline(&self) -> Duration {
        // Divide first: no overflow, whatever the duration.
        self.lease_duration / 3 * 2
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |why: String| Err(Error::InvalidParams(why));
        for (field, value) in [
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("identity", &self.identity),
        ] {
            if value.is_empty() {
                return invalid(format!("{field} is empty"));
            }
        }
        // leaseDurationSeconds is an int32.
        let max = Duration::from_secs(i32::MAX.unsigned_abs().into());
        if self.lease_duration < Duration::from_secs(1) || self.lease_duration > max {
            return invalid(format!(
                "lease_duration {:?} is under one second or over i32::MAX seconds",
                self.lease_duration
            ));
        }
        if self.renew_period.is_zero() || self.renew_period >= self.renew_deadline() {
            return invalid(format!(
                "renew_period {:?} must be above zero and below two thirds of lease_duration ({:?})",
                self.renew_period,
                self.renew_deadline()
            ));
        }
        Ok(())
    }

    /// `namespace/name`, for errors.
    fn lease_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// This candidate's leadership as it knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Another candidate leads, or nobody does (`holder: None`): do not write.
    Follower {
        /// The holder last seen, if any.
        holder: Option<String>,
    },
    /// This candidate leads and may write.
    Leader {
        /// When this term began (just before the winning write).
        since: Instant,
    },
}

impl Leadership {
    /// Whether this candidate leads.
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader { .. })
    }
}

/// Errors of the elector. Only [`Error::InvalidParams`],
/// [`Error::NamespaceNotFound`], [`Error::Forbidden`] and a failed release
/// end [`Elector::run`]; the rest are logged and retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The parameters cannot work.
    #[error("invalid lease parameters: {0}")]
    InvalidParams(String),
    /// The Lease's namespace does not exist, so the Lease cannot be created.
    /// Retrying cannot help: the caller should say which namespace to use.
    #[error("the namespace {namespace} of Lease {lease} does not exist")]
    NamespaceNotFound {
        /// The namespace asked for.
        namespace: String,
        /// `namespace/name`.
        lease: String,
    },
    /// This candidate may not read or write the Lease (403): its role
    /// lacks the rights, as after an upgrade that applied a new image but
    /// not the new role. Retrying would only repeat the warning.
    #[error("{op} of Lease {lease} is forbidden: {message}")]
    Forbidden {
        /// The call: get, create or replace.
        op: &'static str,
        /// `namespace/name`.
        lease: String,
        /// What the API server said.
        message: String,
    },
    /// An API call did not answer in time.
    #[error("{op} of Lease {lease} timed out after {after:?}")]
    Timeout {
        /// The call: get, create or replace.
        op: &'static str,
        /// `namespace/name`.
        lease: String,
        /// The time allowed.
        after: Duration,
    },
    /// Someone else wrote the Lease first (409 Conflict or AlreadyExists).
    #[error("{op} of Lease {lease} lost to another writer (409 Conflict)")]
    Conflict {
        /// The call: create or replace.
        op: &'static str,
        /// `namespace/name`.
        lease: String,
    },
    /// Any other failure of an API call.
    #[error("{op} of Lease {lease} failed")]
    Api {
        /// The call: get, create or replace.
        op: &'static str,
        /// `namespace/name`.
        lease: String,
        /// What kube-rs reported.
        #[source]
        source: kube::Error,
    },
}

/// A candidate for the lease. Create it, take [`Elector::leadership`]
/// receivers, then [`Elector::run`] it.
pub struct Elector {
    machine: machine::Machine<store::KubeStore>,
}

impl Elector {
    /// A candidate for the Lease in `params`; nothing is read or written until
    /// [`Elector::run`].
    pub fn new(client: kube::Client, params: LeaseParams) -> Self {
        let store = store::KubeStore::new(client, &params);
        Self {
            machine: machine::Machine::new(store, params, machine::system_clock()),
        }
    }

    /// Runs the election until `shutdown` resolves. On shutdown it publishes
    /// [`Leadership::Follower`] first, then, if the Lease names this candidate,
    /// releases it (no holder, no renewTime) so that a standby takes over at
    /// once. API errors are logged and retried; this returns an error only
    /// for invalid parameters, a Lease namespace that does not exist, or a
    /// failed release.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.machine.run(shutdown).await
    }

    /// Leadership as seen now; every change is pushed on the channel.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.machine.subscribe()
    }
}

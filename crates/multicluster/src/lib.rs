//! The service mirror of tandem's multicluster: one process per Link, which
//! mirrors the linked cluster's exported Services into this cluster, with
//! endpoints at the linked cluster's gateway.
//!
//! - [`mirror`] decides what a mirror looks like (pure).
//! - [`index`] holds what the watches saw (synchronous, no client).
//! - [`probe`] and [`gateway`] resolve and probe the gateway.
//! - [`status`] decides the Link's status (pure): counts and the first
//!   failures, so that it stays small.
//! - [`status_writer`] writes it from its own task, with the heartbeat.
//! - [`record`] keeps, per remote Service, what was written, how its mirror
//!   stands and its failures in a row; and what a re-list shows gone.
//! - [`state`] is the sync state: watch updates in, keys that need work
//!   out, each key's writes decided as a [`writer::Job`].
//! - [`writer`] runs a job with bounded calls (many at once, one per key).
//! - [`session`] is the linked cluster's client, watches and health.
//! - [`finalizer`] deletes a deleted Link's mirrors before it goes.
//! - [`remote`] builds the linked cluster's client from the credentials
//!   Secret, accepting only an https server, CA data and a token.
//! - [`own`] gives the mirror's own objects to its Link, so that they go
//!   after the Link's finalizer ran.
//! - [`call`] bounds each API call and keeps its HTTP code.
//! - [`runtime`] wires watches, the writer, the finalizer and metrics:
//!   [`run_mirror`] is what `tandem multicluster mirror` runs.
//!
//! Choices worth knowing:
//!
//! - A mirror belongs to the Link whose `multicluster.tandem.io/link` label
//!   (`<namespace>.<name>`) it carries, besides `mirror.linkerd.io/cluster-name`.
//!   Only those are updated or deleted: a new mirror is created (never
//!   applied), so that a Service of the same name that is not this Link's (a
//!   user's, another Link's) makes it fail and is left alone and reported;
//!   a known one is written and deleted with its uid as a precondition.
//! - A re-list of the local mirrors repairs what went meanwhile, and every
//!   mirror is written again each `resync_period`.
//! - Nothing is deleted while the linked cluster cannot be read: a remote
//!   Service's absence counts only after a full list in the current session.
//! - The gateway is alive while any of its IPs passes the probe, dead when
//!   all fail it, and unknown until the probes tell: while it is unknown no
//!   readiness is written. Hostnames are looked up again every
//!   `dns_refresh`, and a failed lookup keeps the last answer.
//! - An empty or invalid selector matches nothing (as in linkerd); a headless
//!   remote Service is mirrored as a ClusterIP one.
//! - A mirror's EndpointSlice is `<mirror>-gateway`; until the gateway has an
//!   address, the slice is not written (what exists stays).

#![forbid(unsafe_code)]

pub mod call;
pub mod finalizer;
pub mod gateway;
pub mod index;
pub mod metrics;
pub mod mirror;
pub mod own;
pub mod ownership;
pub mod probe;
pub mod record;
pub mod remote;
pub mod runtime;
pub mod session;
pub mod state;
pub mod status;
pub mod status_writer;
pub mod writer;

pub use mirror::{LinkConfig, excluded, link_selector, mirror_name, mirror_service, mirror_slice};
pub use own::OwnObjects;
pub use runtime::{FIELD_MANAGER, MirrorSettings, run_mirror};

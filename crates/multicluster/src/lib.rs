//! The service mirror of tandem's multicluster: one process per Link, which
//! mirrors the linked cluster's exported Services into this cluster, with
//! endpoints at the linked cluster's gateway.
//!
//! - [`mirror`] decides what a mirror looks like (pure).
//! - [`index`] holds what the watches saw (synchronous, no client).
//! - [`probe`] and [`gateway`] resolve and probe the gateway.
//! - [`status`] decides the Link's status (pure).
//! - [`remote`] builds the linked cluster's client from the credentials Secret.
//! - [`runtime`] wires watches, the writer, the finalizer and metrics:
//!   [`run_mirror`] is what `tandem multicluster mirror` runs.
//!
//! Choices worth knowing:
//!
//! - A mirror belongs to the Link whose `multicluster.tandem.io/link` label
//!   (`<namespace>.<name>`) it carries, besides `mirror.linkerd.io/cluster-name`.
//!   Only those are updated or deleted; a Service of the same name that is not
//!   this Link's (a user's, another Link's) is left alone and reported.
//! - Nothing is deleted while the linked cluster cannot be read: a remote
//!   Service's absence counts only after a full list in the current session.
//! - The gateway is alive while any of its IPs passes the probe; it starts
//!   alive. Hostnames are looked up again every `dns_refresh`, and a failed
//!   lookup keeps the last answer.
//! - An empty or invalid selector matches nothing (as in linkerd); a headless
//!   remote Service is mirrored as a ClusterIP one.
//! - A mirror's EndpointSlice is `<mirror>-gateway`; until the gateway has an
//!   address, the slice is not written (what exists stays).

#![forbid(unsafe_code)]

pub mod gateway;
pub mod index;
pub mod metrics;
pub mod mirror;
pub mod probe;
pub mod remote;
pub mod runtime;
pub mod status;

pub use mirror::{LinkConfig, excluded, link_selector, mirror_name, mirror_service, mirror_slice};
pub use runtime::{FIELD_MANAGER, MirrorSettings, run_mirror};

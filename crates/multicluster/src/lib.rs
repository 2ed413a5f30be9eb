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

//! The failover controller.
//!
//! - [`resource`] reads TrafficSplits and HTTPRoutes into the pure
//!   [`tandem_core::failover`] model and builds the patches that write back.
//! - [`index`] holds what the watches saw: splits, Service readiness from
//!   EndpointSlices, and which splits use which Service.
//! - [`controller`] wires discovery, watches, the queue, the single
//!   [`writer`], leader election and the admin server.
//! - [`writer`] decides each queued split and writes what changed, with
//!   every API call bounded ([`call`]) and its [`progress`] behind `/live`.

#![forbid(unsafe_code)]

pub mod call;
pub mod controller;
pub mod discovery;
pub mod index;
pub mod metrics;
pub use tandem_runtime::progress;
pub mod resource;
mod writer;

pub use controller::{FIELD_MANAGER, Settings, run};

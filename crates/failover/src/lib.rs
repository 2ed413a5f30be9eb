//! The failover controller.
//!
//! - [`resource`] reads TrafficSplits and HTTPRoutes into the pure
//!   [`tandem_core::failover`] model and builds the patches that write back.
//! - [`index`] holds what the watches saw: splits, Service readiness from
//!   EndpointSlices, and which splits use which Service.
//! - [`controller`] wires watches, the queue, the single writer, leader
//!   election, events and metrics.

#![forbid(unsafe_code)]

pub mod controller;
pub mod index;
pub mod metrics;
pub mod resource;

pub use controller::{FIELD_MANAGER, Settings, run};

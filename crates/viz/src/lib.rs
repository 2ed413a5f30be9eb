//! tandem's viz extension, the workshop's `linkerd viz`:
//!
//! - [`install`]: the manifests of `viz install` (Prometheus scraping every
//!   proxy's admin port with Linkerd's relabeling);
//! - [`query`]: the PromQL of `viz stat`, as Linkerd's metrics-api builds it;
//! - [`prom`]: Prometheus' answers, and asking it through the API server;
//! - [`stats`]: answers and listed resources joined into rows;
//! - [`render`]: Linkerd's table and JSON;
//! - [`stat`] and [`service_stats`]: the whole of one `viz stat`, for the
//!   CLI and the dashboard.
//!
//! Everything but [`prom::query`] and [`gather`] is pure.

#![forbid(unsafe_code)]

mod error;
mod gather;
pub mod install;
pub mod prom;
pub mod query;
pub mod render;
pub mod stats;

pub use self::{
    error::Error,
    gather::{service_stats, stat},
};

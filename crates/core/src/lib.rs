//! Pure domain logic of tandem.
//!
//! Nothing here talks to Kubernetes, the network or the clock: callers pass in the
//! objects they watched and the time they read, and get back a decision to write.

#![forbid(unsafe_code)]

pub mod duration;
pub mod failover;

pub use duration::Duration;

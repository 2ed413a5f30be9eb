//! The integration-test harness.
//!
//! - [`Env::shared`] starts the test testbed once per test run, through the
//!   real `tandem testbed up`, or reuses the one that is running.
//! - [`Env::namespace`] gives each test its own namespace in the clusters it
//!   names; on failure its objects are dumped, and it is always deleted.
//! - If the testbed cannot start, the test fails and says why: nothing is
//!   skipped.
//! - [`failover`] holds the fixtures of the failover controller's tests.
//! - [`browser`] drives headless Chromium for the tests of pages.
//! - [`churn`] closes pooled connections under their clients, and counts
//!   how each request ended.
//! - [`app`] installs the emojivoto-compatible app on real nodes and reads
//!   vote-bot's counters; [`demo`] runs `tandem demo` and checks what every
//!   mode of it must hold.
//! - [`Process`] runs a `tandem` under test; [`launch`] and [`http`] are the
//!   one process launcher and the one HTTP client that the tests and the
//!   benchmarks share.

#![forbid(unsafe_code)]

pub mod app;
pub mod browser;
pub mod certificate;
pub mod check;
pub mod churn;
pub mod cli;
pub mod dataplane;
pub mod demo;
mod env;
pub mod failover;
pub mod http;
mod kubectl;
pub mod launch;
pub mod mirror;
mod namespace;
mod private;
mod process;

use std::time::{Duration, Instant};

pub use self::{
    env::{CLUSTERS, Env, REAL_TEST_BASE_PORT, TEST_BASE_PORT, real_test_dir, test_dir},
    http::{free_port, http_get, http_get_addr},
    kubectl::{run, run_ok, workshop_certificates},
    namespace::TestNamespace,
    private::PrivateTestbed,
    process::Process,
};

/// Polls `check` until it returns `Some`, or fails after `timeout` with the
/// last state seen. This is a deadline for an expected outcome, not a measure
/// of speed (benchmarks measure speed).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(state) => last = state,
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: not reached within {}s; last seen: {last}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

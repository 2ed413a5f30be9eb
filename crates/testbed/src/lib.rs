//! The testbed: real Kubernetes control planes (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) and a fake-node agent (kwok),
//! started as local processes on loopback, one set per named cluster.
//!
//! The binaries are built from Go modules (see [`toolchain`]); nothing is
//! downloaded prebuilt and no container runtime is needed.

#![forbid(unsafe_code)]

pub mod agent;
pub mod component;
mod config;
mod error;
pub mod image;
pub mod kubeconfig;
mod layout;
pub mod node;
pub mod pki;
pub mod process;
mod testbed;
pub mod toolchain;

pub use self::{
    config::{
        ClusterLayout, Component, Config, DEFAULT_BASE_PORT, DEFAULT_CLUSTERS, MAX_CLUSTERS,
        MAX_REAL_CLUSTERS, NET_SLOTS, Nodes, PORTS_PER_CLUSTER, validate_cluster_names,
    },
    error::Error,
    testbed::{
        ClusterStatus, ComponentStatus, State, Status, Testbed, UpOutcome, default_dir, groups,
        leftover_processes,
    },
    toolchain::Toolchain,
};

/// A binary of tandem's package that sits beside the running one (cargo
/// builds `tandem`, `tandem-testbed`, `tandem-demo` and `emojivoto` into one
/// directory).
pub fn dev_binary(name: &str) -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| name.into())
}

/// Where long steps report what they are doing.
pub trait Progress: Send + Sync {
    /// A step has started or finished; one line for a person to read.
    fn step(&self, message: &str);
}

/// Progress written to stderr, one line a step, with the time since start.
pub struct StderrProgress {
    start: std::time::Instant,
}

impl Default for StderrProgress {
    fn default() -> Self {
        Self {
            start: std::time::Instant::now(),
        }
    }
}

impl Progress for StderrProgress {
    fn step(&self, message: &str) {
        eprintln!("[{:>5.1}s] {message}", self.start.elapsed().as_secs_f64());
    }
}

/// Progress that is dropped, for callers that report nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str) {}
}

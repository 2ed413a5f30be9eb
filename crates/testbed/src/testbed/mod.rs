//! Starting, checking and stopping a testbed.

mod down;
mod health;
mod state;
mod up;

use std::{
    fs,
    path::{Path, PathBuf},
};

use kube::Client;

pub use self::{
    down::leftover_processes,
    state::{ClusterStatus, ComponentStatus, State, Status, UpOutcome, default_dir},
};
use self::{
    health::{admin_config, cluster_err, start_healthy, stop_grace},
    state::read_state,
};
use crate::{
    ClusterLayout, Component, Config, Error, Nodes, Toolchain,
    process::{self, ProcessId},
    toolchain,
};

/// A testbed directory.
#[derive(Clone, Debug)]
pub struct Testbed {
    pub config: Config,
    pub state: State,
}

impl Testbed {
    /// Opens the testbed recorded in `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let state = read_state(dir)?.ok_or_else(|| Error::NotFound {
            dir: dir.to_path_buf(),
        })?;
        let config = state.config(dir)?;
        Ok(Self { config, state })
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.config.kubeconfig_path()
    }

    pub(super) fn toolchain(&self) -> Toolchain {
        Toolchain {
            bin_dir: self.state.bin_dir.clone(),
            kube_version: self.state.kube_version.clone(),
        }
    }

    /// Each component's pid, as its pid file says, with whether it runs.
    pub(super) fn processes(&self) -> Vec<(ClusterLayout, Component, Option<ProcessId>)> {
        let mut out = vec![];
        for l in self.config.layouts() {
            for c in Component::started(self.config.nodes) {
                let id = process::read_pid_file(&l.pid_path(c));
                out.push((l.clone(), c, id));
            }
        }
        out
    }

    /// A client for one cluster, as a user would make it from the kubeconfig.
    pub async fn client(&self, cluster: &str) -> Result<Client, Error> {
        self.config.layout(cluster)?;
        let config = admin_config(&self.kubeconfig_path(), cluster).await?;
        Client::try_from(config).map_err(|e| cluster_err(cluster, e))
    }

    // === single components ===

    /// Stops one component (for tests of restarts and outages).
    pub fn stop_component(&self, cluster: &str, c: Component) -> Result<(), Error> {
        let l = self.config.layout(cluster)?;
        if let Some(id) = process::read_pid_file(&l.pid_path(c)) {
            id.stop(stop_grace(c))?;
        }
        let _ = fs::remove_file(l.pid_path(c));
        Ok(())
    }

    /// Starts one component again and waits until it is healthy.
    pub async fn start_component(&self, cluster: &str, c: Component) -> Result<(), Error> {
        let l = self.config.layout(cluster)?;
        if process::read_pid_file(&l.pid_path(c)).is_some_and(|id| id.is_alive()) {
            return Ok(());
        }
        let base = admin_config(&self.kubeconfig_path(), cluster).await?;
        start_healthy(&l, &self.toolchain(), c, &base)
            .await
            .map(drop)
    }

    // === images ===

    /// Imports an image archive into the containerd of each named cluster's
    /// node (every cluster when none is named); returns the references the
    /// archive held.
    pub fn load(&self, archive: &Path, clusters: &[String]) -> Result<Vec<String>, Error> {
        if self.config.nodes != Nodes::Real {
            return Err(Error::InvalidConfig(format!(
                "the testbed in {} has fake nodes, which run no containers: there is nothing to load an image into",
                self.config.dir.display()
            )));
        }
        let layouts: Vec<ClusterLayout> = if clusters.is_empty() {
            self.config.layouts()
        } else {
            clusters
                .iter()
                .map(|c| self.config.layout(c))
                .collect::<Result<_, _>>()?
        };
        let tc = self.toolchain();
        let ctr = tc.artifact(toolchain::CTR);
        let mut loaded = vec![];
        for l in &layouts {
            let before = crate::image::ctr::list(&ctr, &l.containerd_socket())?;
            crate::image::ctr::import(&ctr, &l.containerd_socket(), archive)?;
            let after = crate::image::ctr::list(&ctr, &l.containerd_socket())?;
            loaded = after.into_iter().filter(|r| !before.contains(r)).collect();
        }
        if loaded.is_empty() {
            // Re-loading an image already there changes nothing, and says so.
            let id = crate::image::read_image_id(archive)?;
            loaded.push(id.reference);
        }
        Ok(loaded)
    }
}

/// What a testbed with these nodes needs built.
pub fn groups(nodes: Nodes) -> &'static [toolchain::Group] {
    match nodes {
        Nodes::Real => &toolchain::Group::ALL,
        Nodes::Fake => &[toolchain::Group::ControlPlane],
    }
}

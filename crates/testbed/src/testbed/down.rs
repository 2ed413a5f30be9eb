//! `down`: stopping every process of a testbed, in reverse start order,
//! and finding the ones no pid file names.

use std::{fs, path::Path, time::Duration};

use super::{
    Testbed,
    health::stop_grace,
    state::{lock_dir, read_state},
};
use crate::{
    Component, Error, Nodes, Progress, node,
    process::{self, ProcessId},
};

impl Testbed {
    /// Stops every process of the testbed in `dir`; with `purge`, removes the
    /// directory too. Returns the processes that were stopped.
    pub fn down(dir: &Path, purge: bool, progress: &dyn Progress) -> Result<Vec<String>, Error> {
        let _lock = lock_dir(dir)?;
        let stopped = match read_state(dir) {
            Ok(Some(state)) => {
                let config = state.config(dir)?;
                Testbed { config, state }.stop_all(progress)?
            }
            Ok(None) => vec![],
            Err(e) if purge => {
                progress.step(&format!("ignoring unreadable state: {e}"));
                vec![]
            }
            Err(e) => return Err(e),
        };
        // Anything of ours still running, though no pid file names it (a
        // crashed `up`, a deleted pid file), is found by its command line.
        let mut strays = vec![];
        for pid in stray_processes(dir) {
            let id = ProcessId { pid, start_time: 0 };
            id.stop(Duration::from_secs(10))?;
            strays.push(format!("stray process {pid}"));
        }
        if !strays.is_empty() {
            progress.step(&format!("stopped {}", strays.join(", ")));
        }
        if purge {
            drop(_lock);
            // Never through a mount: the kubelet's root and pod volumes are.
            node::mounts::remove_dir_safely(dir)?;
        }
        Ok(stopped.into_iter().chain(strays).collect())
    }

    /// Stops everything in reverse start order. With real nodes, the nodes
    /// go first and are torn down (their pods killed) before the control
    /// planes stop: a pod still watching its apiserver would hold the
    /// apiserver's graceful shutdown for its whole grace period.
    pub(super) fn stop_all(&self, progress: &dyn Progress) -> Result<Vec<String>, Error> {
        let mut stopped = self.stop_where(progress, |c| c.is_node() || c == Component::Kwok)?;
        if self.config.nodes == Nodes::Real {
            node::teardown(&self.config, progress)?;
        }
        stopped.extend(self.stop_where(progress, |_| true)?);
        Ok(stopped)
    }

    /// Stops the components that `which` picks, in reverse start order,
    /// every cluster.
    fn stop_where(
        &self,
        progress: &dyn Progress,
        which: impl Fn(Component) -> bool,
    ) -> Result<Vec<String>, Error> {
        let mut stopped = vec![];
        for l in self.config.layouts() {
            for c in Component::started(l.nodes)
                .into_iter()
                .rev()
                .filter(|c| which(*c))
            {
                let pid_path = l.pid_path(c);
                if let Some(id) = process::read_pid_file(&pid_path) {
                    if id.is_alive() {
                        id.stop(stop_grace(c))?;
                        progress.step(&format!("{}: stopped {c} (pid {})", l.name, id.pid));
                        stopped.push(format!("{}/{c}", l.name));
                    }
                    let _ = fs::remove_file(&pid_path);
                }
            }
        }
        Ok(stopped)
    }
}

/// Processes of testbed binaries with an argument that names `dir` or a
/// path under it: never those of DIR2 or of /x/DIR.
fn stray_processes(dir: &Path) -> Vec<u32> {
    process::processes_mentioning(&dir.display().to_string())
        .into_iter()
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
                .is_some_and(|name| {
                    let name = name.trim_end_matches(" (deleted)");
                    Component::ALL.iter().any(|c| c.binary() == name)
                })
        })
        .collect()
}

/// Every process of the testbed in `dir` that is still running; empty after
/// a clean `down`.
pub fn leftover_processes(dir: &Path) -> Vec<u32> {
    stray_processes(dir)
}

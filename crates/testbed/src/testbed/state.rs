//! What a testbed directory records (`testbed.json`), its lock, and the
//! status report.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{Component, Config, Error, Nodes};

pub(super) const STATE_FILE: &str = "testbed.json";
/// 2: real nodes, and every address in 198.18.0.0/15.
pub(super) const STATE_VERSION: u32 = 2;

/// `TANDEM_TESTBED_DIR`, else `$XDG_STATE_HOME/tandem/testbed`, else
/// `~/.local/state/tandem/testbed`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TANDEM_TESTBED_DIR") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".local")
                .join("state")
        });
    base.join("tandem").join("testbed")
}

/// What `DIR/testbed.json` records: enough to find and stop everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub kube_version: String,
    pub bin_dir: PathBuf,
    pub base_port: u16,
    pub clusters: Vec<String>,
    pub nodes: Nodes,
    /// The network slot (real nodes): bridge `tandem<slot>`.
    pub slot: u8,
}

impl State {
    pub(super) fn config(&self, dir: &Path) -> Result<Config, Error> {
        Config::new(
            dir.to_path_buf(),
            self.base_port,
            self.clusters.clone(),
            self.nodes,
        )?
        .with_slot(self.slot)
    }
}

/// What `up` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpOutcome {
    Started,
    AlreadyRunning,
}

/// Health of one component.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentStatus {
    pub component: Component,
    pub pid: Option<u32>,
    pub running: bool,
    pub healthy: bool,
    pub endpoint: String,
    pub rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    pub context: String,
    pub server: String,
    pub nodes: Nodes,
    pub node_ip: String,
    pub pod_cidr: String,
    pub service_cidr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb_pool: Option<String>,
    pub components: Vec<ComponentStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub kube_version: String,
    pub clusters: Vec<ClusterStatus>,
}

impl Status {
    pub fn healthy(&self) -> bool {
        self.clusters
            .iter()
            .all(|c| c.components.iter().all(|s| s.healthy))
    }

    pub fn rss_bytes(&self) -> u64 {
        self.clusters
            .iter()
            .flat_map(|c| &c.components)
            .filter_map(|s| s.rss_bytes)
            .sum()
    }
}

/// Holds `DIR/.lock` while a command changes the testbed.
pub(super) struct DirLock(#[allow(dead_code)] fs::File);

pub(super) fn lock_dir(dir: &Path) -> Result<DirLock, Error> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(".lock");
    let file = fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock(file)),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Busy {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

pub(super) fn read_state(dir: &Path) -> Result<Option<State>, Error> {
    let path = dir.join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let stale = |why: String| Error::StaleState {
        dir: dir.to_path_buf(),
        detail: format!(
            "{STATE_FILE} {why}; remove the directory or run `tandem testbed down --purge --dir {}`",
            dir.display()
        ),
    };
    let version: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| stale(format!("is unreadable ({e})")))?;
    if version["version"] != STATE_VERSION {
        return Err(stale(format!(
            "is from another version of the testbed (state version {}, this one reads {STATE_VERSION})",
            version["version"]
        )));
    }
    serde_json::from_value(version)
        .map(Some)
        .map_err(|e| stale(format!("is unreadable ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), None);
        let state = State {
            version: STATE_VERSION,
            kube_version: "v1.37.2".into(),
            bin_dir: "/bin".into(),
            base_port: 26440,
            clusters: vec!["east".into()],
            nodes: Nodes::Real,
            slot: 3,
        };
        fs::write(
            dir.path().join(STATE_FILE),
            serde_json::to_string(&state).unwrap(),
        )
        .unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), Some(state));
        fs::write(dir.path().join(STATE_FILE), "{garbage").unwrap();
        let err = read_state(dir.path()).unwrap_err().to_string();
        assert!(err.contains("down --purge"), "{err}");
    }

    #[test]
    fn a_second_command_on_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_dir(dir.path()).unwrap();
        assert!(matches!(lock_dir(dir.path()), Err(Error::Busy { .. })));
    }
}

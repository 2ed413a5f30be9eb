//! One kubelet starts at a time on this machine.
//!
//! The kubelet's device plugin registry listens on a fixed host path,
//! [`DEVICE_PLUGIN_SOCKET`], whatever its `--root-dir`. At start, a kubelet
//! empties that directory and then listens there. Two kubelets that start
//! at once (east and west are started in parallel) can interleave those
//! steps, and the loser exits with `Failed to start ContainerManager ...
//! bind: address already in use`. A CI run saw exactly that: both kubelets
//! started in the same millisecond, east's exited 0.8 s later, and its node
//! went NotReady.
//!
//! So a machine-wide lock is held from a kubelet's spawn until its registry
//! listens, and that kubelet only counts as healthy once it does.

use std::{
    fs,
    os::unix::{fs::FileTypeExt, net::UnixStream},
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::Error;

/// Where every kubelet's device plugin registry listens (the kubelet's
/// `pluginapi.KubeletSocket`, not configurable).
pub const DEVICE_PLUGIN_SOCKET: &str = "/var/lib/kubelet/device-plugins/kubelet.sock";

/// Held while one kubelet starts; released when dropped.
pub struct StartLock {
    _file: fs::File,
}

fn lock_path() -> PathBuf {
    PathBuf::from("/run/tandem/kubelet-start.lock")
}

/// Waits for the machine-wide kubelet start lock (a kubelet of another
/// testbed may be starting too).
pub async fn lock() -> Result<StartLock, Error> {
    let path = lock_path();
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let file = fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| StartLock { _file: file }))
        .await
        .map_err(|e| Error::io(&path, std::io::Error::other(e)))?
        .map_err(|e| Error::io(&path, e))
}

/// `Ok` when a device plugin registry made at or after `since` accepts
/// connections at `socket`: the kubelet started then is past the step that
/// two kubelets must not take at once.
pub fn registry_listening(socket: &Path, since: SystemTime) -> Result<(), String> {
    let meta = fs::symlink_metadata(socket)
        .map_err(|e| format!("its device plugin registry {}: {e}", socket.display()))?;
    if !meta.file_type().is_socket() {
        return Err(format!("{} is not a socket", socket.display()));
    }
    // A socket file's modification time is when it was bound.
    let made = meta
        .modified()
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    if made < since {
        return Err(format!(
            "its device plugin registry does not listen yet ({} is older than this kubelet)",
            socket.display()
        ));
    }
    UnixStream::connect(socket)
        .map(drop)
        .map_err(|e| format!("its device plugin registry {}: {e}", socket.display()))
}

/// Removes the registry socket that the testbed's kubelets left (when the
/// last testbed goes down), unless something listens on it: a kubelet of
/// the host's own would.
pub fn remove_stale_socket() {
    let socket = Path::new(DEVICE_PLUGIN_SOCKET);
    let is_socket = fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && UnixStream::connect(socket).is_err() {
        let _ = fs::remove_file(socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{os::unix::net::UnixListener, time::Duration};

    #[test]
    fn only_a_registry_bound_after_the_start_that_listens_counts() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let before = SystemTime::now() - Duration::from_secs(5);

        let err = registry_listening(&socket, before).unwrap_err();
        assert!(err.contains("kubelet.sock"), "{err}");

        let listener = UnixListener::bind(&socket).unwrap();
        registry_listening(&socket, before).unwrap();

        // A socket older than the kubelet is the last kubelet's.
        let later = SystemTime::now() + Duration::from_secs(5);
        let err = registry_listening(&socket, later).unwrap_err();
        assert!(err.contains("older than this kubelet"), "{err}");

        // A socket file nobody listens on any more.
        drop(listener);
        let err = registry_listening(&socket, before).unwrap_err();
        assert!(err.contains("refused"), "{err}");
    }

    #[test]
    fn a_plain_file_is_not_a_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.sock");
        fs::write(&path, "").unwrap();
        let err = registry_listening(&path, SystemTime::UNIX_EPOCH).unwrap_err();
        assert!(err.contains("is not a socket"), "{err}");
    }
}

//! A testbed of one test's own.

use std::{path::Path, process::Command};

use crate::{Env, run};

/// A testbed of one test's own, for tests that change cluster-wide state
/// (CRDs) or stop components. Stopped and removed when dropped.
pub struct PrivateTestbed {
    pub env: Env,
    _dir: tempfile::TempDir,
}

impl PrivateTestbed {
    /// Starts `clusters` on ports from `base_port` (keep it below 32768 and
    /// apart from other tests'). Panics with the reason if it cannot start.
    pub fn start(tandem: &Path, clusters: &[&str], base_port: u16) -> Self {
        // The binaries are built once, by the shared testbed's first start.
        Env::shared(tandem);
        let dir = tempfile::Builder::new()
            .prefix("tandem-private-testbed-")
            .tempdir()
            .expect("a temporary directory");
        let out = run(Command::new(tandem)
            .args([
                "testbed",
                "up",
                "--nodes",
                "fake",
                "--clusters",
                &clusters.join(","),
            ])
            .arg("--base-port")
            .arg(base_port.to_string())
            .arg("--dir")
            .arg(dir.path()));
        assert!(
            out.status.success(),
            "a private testbed ({}) could not start:\n{}",
            clusters.join(","),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            env: Env {
                kubeconfig: dir.path().join("kubeconfig"),
                dir: dir.path().to_path_buf(),
                tandem: tandem.to_path_buf(),
            },
            _dir: dir,
        }
    }
}

impl Drop for PrivateTestbed {
    fn drop(&mut self) {
        let out = run(Command::new(&self.env.tandem)
            .args(["testbed", "down", "--purge", "--dir"])
            .arg(&self.env.dir));
        if !out.status.success() {
            eprintln!(
                "stopping the private testbed in {} failed:\n{}",
                self.env.dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

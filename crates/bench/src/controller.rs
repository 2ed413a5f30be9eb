//! The processes under test: `tandem failover run` (or any other `tandem`
//! command with an admin port) as a child process, started with the
//! harness's launcher, and GETs of its admin port with the harness's HTTP
//! client.

use std::{ffi::OsString, net::SocketAddr, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
pub use tandem_harness::http::free_addr as free_port;
use tandem_harness::{http, launch::Launched};

/// A running `tandem` process with an admin port. Dropping it kills the
/// process (SIGKILL, by its pid), so that an error anywhere in the benchmark
/// leaves no process behind.
pub struct Controller {
    launched: Launched,
    pub admin: SocketAddr,
}

impl Controller {
    /// `tandem failover run` on a free admin port, logging at info.
    pub fn start(tandem: &Path, kubeconfig: &Path, context: &str, log: &Path) -> Result<Self> {
        let admin = free_port().context("finding a free port for the admin server")?;
        let args: Vec<OsString> = [
            "--context",
            context,
            "--log",
            "info",
            "failover",
            "run",
            "--no-leader-election",
            "--admin-addr",
            &admin.to_string(),
            "--resync-period",
            "10m",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        let mut all = vec![OsString::from("--kubeconfig"), kubeconfig.into()];
        all.extend(args);
        Self::spawn("the controller", tandem, &all, admin, log)
    }

    /// `tandem ARGS`, whose admin server listens on `admin`, with its output
    /// in `log`.
    pub fn spawn(
        what: &str,
        tandem: &Path,
        args: &[OsString],
        admin: SocketAddr,
        log: &Path,
    ) -> Result<Self> {
        let mut cmd = Command::new(tandem);
        cmd.args(args);
        let launched = Launched::start(what, cmd, log)?;
        Ok(Self { launched, admin })
    }

    pub fn pid(&self) -> u32 {
        self.launched.pid()
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        Ok(self.launched.check_running()?)
    }

    /// Waits until /ready answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        Ok(self
            .launched
            .wait_http_ok(self.admin, "/ready", timeout)
            .await?)
    }

    pub async fn metrics(&self) -> Result<String> {
        match http::get(self.admin, "/metrics").await? {
            http::Response { status: 200, body } => Ok(body),
            http::Response { status, .. } => bail!("GET /metrics answered {status}"),
        }
    }

    /// The text of /proc/PID/status.
    pub fn proc_status(&self) -> Result<String> {
        let path = format!("/proc/{}/status", self.pid());
        std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
    }

    /// SIGTERM by pid, then SIGKILL if it has not exited within 5 s.
    pub async fn stop(mut self) -> Result<()> {
        self.launched.stop(Duration::from_secs(5)).await;
        Ok(())
    }
}

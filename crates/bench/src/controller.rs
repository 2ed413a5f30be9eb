//! The processes under test: `tandem failover run` (or any other `tandem`
//! command with an admin port) as a child process, and plain HTTP/1.0 GETs
//! of its admin port.

use std::{
    ffi::OsString,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
    time::Instant,
};

/// A running `tandem` process with an admin port. Dropping it kills the
/// process (SIGKILL, by its pid), so that an error anywhere in the benchmark
/// leaves no process behind.
pub struct Controller {
    child: Child,
    pid: u32,
    pub admin: SocketAddr,
    log: PathBuf,
    /// What it is, for messages: "the controller", "the service mirror".
    what: String,
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

    /// `tandem ARGS`, whose admin server listens on `admin`, with stderr
    /// to `log`.
    pub fn spawn(
        what: &str,
        tandem: &Path,
        args: &[OsString],
        admin: SocketAddr,
        log: &Path,
    ) -> Result<Self> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("creating the log of {what}, {}", log.display()))?;
        let child = Command::new(tandem)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {what}: {} {args:?}", tandem.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("{what} exited at once"))?;
        Ok(Self {
            child,
            pid,
            admin,
            log: log.to_path_buf(),
            what: what.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); see its log {}",
                self.what,
                self.log.display()
            ),
            Err(e) => Err(e).with_context(|| format!("checking the process of {}", self.what)),
        }
    }

    /// Waits until /ready answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if let Ok((200, _)) = get(self.admin, "/ready").await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready within {timeout:?} (GET http://{}/ready); see its log {}",
                    self.what,
                    self.admin,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn metrics(&self) -> Result<String> {
        match get(self.admin, "/metrics").await? {
            (200, body) => Ok(body),
            (status, _) => bail!("GET /metrics answered {status}"),
        }
    }

    /// `(VmRSS, VmHWM)` in KiB.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        crate::stats::memory_kib(&status).ok_or_else(|| anyhow!("no VmRSS/VmHWM in {path}"))
    }

    /// SIGTERM by pid, then SIGKILL if it has not exited within 5 s.
    pub async fn stop(mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let term = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if term.is_ok_and(|s| s.success())
            && tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                .await
                .is_ok()
        {
            return Ok(());
        }
        let what = self.what.clone();
        self.child
            .kill()
            .await
            .with_context(|| format!("killing {what}"))
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// GET `path` over HTTP/1.0 (so the answer is neither chunked nor kept
/// alive): the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut raw = vec![];
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow!("GET http://{addr}{path} timed out"))?
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET http://{addr}{path}: malformed answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("GET http://{addr}{path}: no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

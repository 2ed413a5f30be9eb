//! The controller under test: `tandem failover run` as a child process, and
//! plain HTTP/1.0 GETs of its admin port.

use std::{
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

/// A running controller. Dropping it kills the process (SIGKILL), so that an
/// error anywhere in the benchmark leaves no controller behind.
pub struct Controller {
    child: Child,
    pid: u32,
    pub admin: SocketAddr,
    log: PathBuf,
}

impl Controller {
    pub fn start(tandem: &Path, kubeconfig: &Path, context: &str, log: &Path) -> Result<Self> {
        let admin = free_port().context("finding a free port for the admin server")?;
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("creating the controller log {}", log.display()))?;
        let child = Command::new(tandem)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--context", context, "--log", "info"])
            .args(["failover", "run", "--no-leader-election"])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--resync-period", "10m"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} failover run", tandem.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the controller exited at once"))?;
        Ok(Self {
            child,
            pid,
            admin,
            log: log.to_path_buf(),
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
                "the controller exited ({status}); see its log {}",
                self.log.display()
            ),
            Err(e) => Err(e).context("checking the controller process"),
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
                    "the controller was not ready within {timeout:?}; see its log {}",
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
        self.child.kill().await.context("killing the controller")
    }
}

/// A port that was free a moment ago.
fn free_port() -> std::io::Result<SocketAddr> {
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

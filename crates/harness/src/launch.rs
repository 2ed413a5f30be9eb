//! The one way the tests and the benchmarks start a process and wait on it:
//! its output goes to a log file, an early exit is noticed, readiness is a
//! GET that answers 200, and it is killed, by its pid, when dropped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use nix::{sys::signal, unistd::Pid};
use tokio::time::Instant;

use crate::http;

/// Why a launched process is not (or no longer) doing its job.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("creating the log of {what}, {}: {source}", log.display())]
    Log {
        what: String,
        log: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {what} ({program}): {source}")]
    Spawn {
        what: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited ({status}); see its log {}", log.display())]
    Exited {
        what: String,
        status: ExitStatus,
        log: PathBuf,
    },
    #[error("checking the process of {what}: {source}")]
    Wait {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not answer 200 to GET http://{addr}{path} within {timeout:?}; see its log {}", log.display())]
    NotReady {
        what: String,
        addr: SocketAddr,
        path: String,
        timeout: Duration,
        log: PathBuf,
    },
}

/// A running child process with its log.
pub struct Launched {
    child: Child,
    log: PathBuf,
    /// What it is, for messages: "the controller", "the testbed agent".
    what: String,
}

impl Launched {
    /// Starts `cmd` with stdin closed and stdout and stderr in `log`
    /// (created, or emptied).
    pub fn start(what: &str, mut cmd: Command, log: &Path) -> Result<Self, LaunchError> {
        let log_err = |source| LaunchError::Log {
            what: what.to_string(),
            log: log.to_path_buf(),
            source,
        };
        let out = std::fs::File::create(log).map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                what: what.to_string(),
                program: format!("{cmd:?}"),
                source,
            })?;
        Ok(Self {
            child,
            log: log.to_path_buf(),
            what: what.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> Result<(), LaunchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(LaunchError::Exited {
                what: self.what.clone(),
                status,
                log: self.log.clone(),
            }),
            Err(source) => Err(LaunchError::Wait {
                what: self.what.clone(),
                source,
            }),
        }
    }

    /// Waits until GET `path` of `addr` answers 200; fails at once if the
    /// process exits.
    pub async fn wait_http_ok(
        &mut self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<(), LaunchError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if http::get(addr, path).await.is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::NotReady {
                    what: self.what.clone(),
                    addr,
                    path: path.to_string(),
                    timeout,
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Self::wait_http_ok`] for synchronous code.
    pub fn wait_http_ok_blocking(
        &mut self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<(), LaunchError> {
        http::block_on(self.wait_http_ok(addr, path, timeout))
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let term = i32::try_from(self.pid())
            .ok()
            .and_then(|pid| signal::kill(Pid::from_raw(pid), signal::Signal::SIGTERM).ok());
        if term.is_some() {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.kill();
    }

    /// SIGKILL, as a crash or an OOM kill would end it; then reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("===== log of {} =====\n{}", self.what, self.log_text());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[tokio::test]
    async fn an_exit_is_noticed_and_the_log_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut p =
            Launched::start("the script", sh("echo out; echo err >&2; exit 3"), &log).unwrap();
        let err = p
            .wait_http_ok(
                http::free_addr().unwrap(),
                "/ready",
                Duration::from_secs(30),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, LaunchError::Exited { .. }), "{err}");
        assert!(err.to_string().contains("the script exited"), "{err}");
        assert_eq!(p.log_text(), "out\nerr\n");
    }

    #[tokio::test]
    async fn stop_ends_a_process_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Launched::start(
            "a stubborn one",
            sh("trap '' TERM; while :; do sleep 1; done"),
            &dir.path().join("log"),
        )
        .unwrap();
        p.check_running().unwrap();
        p.stop(Duration::from_millis(200)).await;
        assert!(matches!(
            p.check_running(),
            Err(LaunchError::Exited { .. } | LaunchError::Wait { .. })
        ));
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = match Launched::start(
            "nothing",
            Command::new("/nonexistent/tandem"),
            &dir.path().join("log"),
        ) {
            Err(e) => e,
            Ok(_) => panic!("a missing program started"),
        };
        assert!(matches!(err, LaunchError::Spawn { .. }), "{err}");
    }

    #[test]
    fn not_ready_in_time_says_what_it_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut p =
            Launched::start("the sleeper", sh("sleep 30"), &dir.path().join("log")).unwrap();
        let addr = http::free_addr().unwrap();
        let err = p
            .wait_http_ok_blocking(addr, "/healthz", Duration::from_millis(300))
            .unwrap_err();
        assert!(matches!(err, LaunchError::NotReady { .. }), "{err}");
        assert!(err.to_string().contains("/healthz"), "{err}");
    }
}

//! A process under test, started with the shared launcher: its log is a
//! temporary file, printed if the test fails; it is killed, by pid, when
//! dropped.

use std::{net::SocketAddr, process::Command, time::Duration};

use crate::{
    Env,
    http::{free_port, http_get},
    launch::Launched,
};

/// A process under test with an HTTP port (a `tandem` controller's admin
/// port, the testbed agent's health port).
pub struct Process {
    // Before `log`: dropping it kills the process and prints the log.
    launched: Launched,
    _log: tempfile::NamedTempFile,
    pub name: String,
    /// The port it serves /ready (or /healthz) and /metrics on.
    pub admin_port: u16,
}

impl Process {
    /// Starts `tandem ARGS --admin-addr 127.0.0.1:PORT` with the env's kubeconfig.
    pub fn start(env: &Env, name: &str, args: &[&str]) -> Self {
        let admin_port = free_port();
        let mut cmd = Command::new(&env.tandem);
        cmd.args(args)
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
            .env("KUBECONFIG", &env.kubeconfig);
        Self::spawn(name, cmd, admin_port)
    }

    /// Starts `cmd`, which serves HTTP on 127.0.0.1:`port`, logging at info.
    pub fn spawn(name: &str, mut cmd: Command, port: u16) -> Self {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        cmd.env("TANDEM_LOG", "info,kube_client::client::builder=off");
        let launched = Launched::start(name, cmd, log.path()).unwrap_or_else(|e| panic!("{e}"));
        Self {
            launched,
            _log: log,
            name: name.to_string(),
            admin_port: port,
        }
    }

    pub fn pid(&self) -> u32 {
        self.launched.pid()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    /// Waits until /ready answers 200; panics with the log otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) {
        self.wait_http_ok("/ready", timeout);
    }

    /// Waits until GET `path` answers 200; panics with the log otherwise.
    pub fn wait_http_ok(&mut self, path: &str, timeout: Duration) {
        let addr = self.addr();
        if let Err(e) = self.launched.wait_http_ok_blocking(addr, path, timeout) {
            panic!("{e}:\n{}", self.log_text());
        }
    }

    /// The value of a metric line (`name{labels} value`) whose text starts with `prefix`.
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, body) = http_get(self.admin_port, "/metrics")?;
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn log_text(&self) -> String {
        self.launched.log_text()
    }

    /// SIGKILL, as a crash or an OOM kill would end it.
    pub fn kill(&mut self) {
        self.launched.kill();
    }
}

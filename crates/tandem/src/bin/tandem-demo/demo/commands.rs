//! How the demo talks to its audience and runs commands: step titles,
//! shell pipelines printed as a user types them, quiet kubectl checks, and
//! waits with a progress line.

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::Demo;

impl Demo {
    pub(super) fn testbed_dir(&self) -> PathBuf {
        self.dir.join("testbed")
    }

    pub(super) fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    pub(super) fn kubeconfig(&self) -> PathBuf {
        self.testbed_dir().join("kubeconfig")
    }

    pub(super) fn title(&mut self, what: &str) {
        self.step += 1;
        if self.pause {
            print!("\n[press Enter for step {}: {what}] ", self.step);
            let _ = std::io::stdout().flush();
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        println!("\n== Step {}: {what} ==", self.step);
    }

    /// Runs a shell pipeline as the workshop writes it (with `tandem`), in
    /// the certificate directory, printing the command and its output.
    pub(super) fn sh(&self, command: &str) -> Result<String> {
        println!("$ {command}");
        let out = self.bash(command)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in text.lines() {
            println!("  {line}");
        }
        if !out.status.success() {
            bail!("`{command}` failed ({})", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a pipeline as `sh` does, without printing it (the demo's own
    /// checks); returns its stdout, or its stderr as the error.
    pub(super) fn quiet(&self, command: &str) -> Result<String> {
        let out = self.bash(command)?;
        if !out.status.success() {
            bail!(
                "`{command}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn bash(&self, command: &str) -> Result<std::process::Output> {
        let tandem_dir = self
            .tandem
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![tandem_dir];
        paths.extend(std::env::split_paths(&path));
        Command::new("bash")
            .arg("-o")
            .arg("pipefail")
            .arg("-c")
            .arg(command)
            .current_dir(self.certs())
            .env("KUBECONFIG", self.kubeconfig())
            .env("PATH", std::env::join_paths(paths)?)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {command}"))
    }

    /// Waits for a condition with a visible progress line and a timeout.
    pub(super) async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<bool>,
    ) -> Result<Duration> {
        let start = Instant::now();
        let tty = std::io::stdout().is_terminal();
        let mut last = None;
        loop {
            match check() {
                Ok(true) => {
                    if tty {
                        print!("\r\x1b[2K");
                    }
                    println!("  ✓ {what} ({} ms)", start.elapsed().as_millis());
                    return Ok(start.elapsed());
                }
                Ok(false) => {}
                Err(e) => last = Some(format!("{e:#}")),
            }
            if start.elapsed() > timeout {
                if tty {
                    println!();
                }
                bail!(
                    "timed out after {}s waiting for {what}{}",
                    timeout.as_secs(),
                    last.map(|l| format!(" (last error: {l})"))
                        .unwrap_or_default()
                );
            }
            if tty {
                print!(
                    "\r  ⋯ waiting for {what} ({:.0}s)",
                    start.elapsed().as_secs_f64()
                );
                let _ = std::io::stdout().flush();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kubectl --context CLUSTER -n emojivoto get WHAT... -o
    /// jsonpath=PATH`, quietly: a field of the app's objects.
    pub(super) fn app_get(&self, cluster: &str, what: &[&str], path: &str) -> Result<String> {
        let path = format!("jsonpath={path}");
        let mut args = vec!["--context", cluster, "-n", "emojivoto", "get"];
        args.extend_from_slice(what);
        args.extend(["-o", path.as_str()]);
        self.kubectl(&args)
    }

    /// Runs kubectl quietly (for the demo's own checks), returning stdout.
    pub(super) fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .context("running kubectl (is it on PATH?)")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

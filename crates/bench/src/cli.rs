//! The CLI as users run it: `tandem ... | kubectl apply -f -`, with a
//! bound on each command.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use tokio::{
    io::AsyncWriteExt,
    process::Command,
    time::{sleep, timeout},
};

/// The longest one `tandem` or `kubectl` command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// `tandem` and `kubectl` on the testbed, in the work directory.
pub(crate) struct Cli<'a> {
    pub(crate) tandem: &'a Path,
    pub(crate) kubectl: &'a Path,
    pub(crate) kubeconfig: &'a Path,
    pub(crate) dir: &'a Path,
}

impl Cli<'_> {
    /// `tandem [--kubeconfig K --context CTX] ARGS`: its stdout.
    pub(crate) async fn tandem(&self, context: Option<&str>, args: &[&str]) -> Result<Vec<u8>> {
        let mut cmd = Command::new(self.tandem);
        if let Some(ctx) = context {
            cmd.arg("--kubeconfig")
                .arg(self.kubeconfig)
                .args(["--context", ctx]);
        }
        let shown = format!(
            "tandem {}{}",
            context
                .map(|c| format!("--context {c} "))
                .unwrap_or_default(),
            args.join(" ")
        );
        let out = timeout(
            CLI_TIMEOUT,
            cmd.args(args)
                .current_dir(self.dir)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| anyhow!("`{shown}` took over {CLI_TIMEOUT:?}"))?
        .with_context(|| format!("running `{shown}` ({})", self.tandem.display()))?;
        if !out.status.success() {
            bail!(
                "`{shown}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// `kubectl --context CTX apply -f -`, tried again a few times (a CRD
    /// applied a moment ago may not be served yet).
    pub(crate) async fn apply(&self, context: &str, what: &str, manifest: &[u8]) -> Result<()> {
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        loop {
            let err = match self.apply_once(context, manifest).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if attempt == ATTEMPTS {
                return Err(err.context(format!(
                    "`{what} | kubectl --context {context} apply -f -`, {ATTEMPTS} attempts"
                )));
            }
            sleep(Duration::from_secs(2)).await;
            attempt += 1;
        }
    }

    async fn apply_once(&self, context: &str, manifest: &[u8]) -> Result<()> {
        let mut kubectl = Command::new(self.kubectl)
            .arg("--kubeconfig")
            .arg(self.kubeconfig)
            .args(["--context", context, "apply", "-f", "-"])
            .current_dir(self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {} (is kubectl on PATH?)", self.kubectl.display()))?;
        let mut stdin = kubectl
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin for kubectl"))?;
        stdin
            .write_all(manifest)
            .await
            .context("writing to kubectl")?;
        drop(stdin);
        let out = timeout(CLI_TIMEOUT, kubectl.wait_with_output())
            .await
            .map_err(|_| anyhow!("kubectl apply took over {CLI_TIMEOUT:?}"))?
            .context("waiting for kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `tandem --context FROM ARGS | kubectl --context TO apply -f -`.
    pub(crate) async fn pipe(&self, from: &str, args: &[&str], to: &str) -> Result<()> {
        let manifest = self.tandem(Some(from), args).await?;
        let what = format!("tandem --context {from} {}", args.join(" "));
        self.apply(to, &what, &manifest).await
    }
}

/// `tandem smi install | kubectl --context CONTEXT apply -f -`.
pub(crate) async fn install_split_crd(
    tandem: &Path,
    kubectl: &Path,
    kubeconfig: &Path,
    context: &str,
) -> Result<()> {
    let cli = Cli {
        tandem,
        kubectl,
        kubeconfig,
        dir: Path::new("."),
    };
    let crd = cli.tandem(None, &["smi", "install"]).await?;
    cli.apply(context, "tandem smi install", &crd).await
}

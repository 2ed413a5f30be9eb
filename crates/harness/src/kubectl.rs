//! Running commands (kubectl, tandem) from tests: must start, and with
//! `run_ok` must succeed.

use std::{
    path::Path,
    process::{Command, Output},
};

/// The workshop's certificates, made in `dir` with its own commands (with
/// `tandem` for `step`): the trust anchor `root.crt`/`root.key` and, for
/// each cluster, the issuer `<cluster>-issuer.crt`/`.key`.
pub fn workshop_certificates(tandem: &Path, dir: &Path, clusters: &[&str]) {
    let cli = crate::cli::Cli::offline(tandem, dir);
    cli.cert(&[
        "root.linkerd.cluster.local",
        "root.crt",
        "root.key",
        "--profile",
        "root-ca",
    ]);
    for c in clusters {
        cli.cert_signed(
            "root",
            &[
                "identity.linkerd.cluster.local",
                &format!("{c}-issuer.crt"),
                &format!("{c}-issuer.key"),
                "--profile",
                "intermediate-ca",
                "--not-after",
                "8760h",
            ],
        );
    }
}

/// Runs a command, panicking only if it cannot be started at all.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl ... apply -f -` with `manifest` on stdin; must succeed.
pub(crate) fn kubectl_apply(mut cmd: Command, manifest: &str, what: &str) {
    use std::io::Write;
    let mut child = cmd
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("manifest written");
    let out = child.wait_with_output().expect("kubectl finishes");
    assert!(
        out.status.success(),
        "kubectl apply in {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

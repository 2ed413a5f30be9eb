//! `tandem identity`, run as the control plane runs it: ready only with a
//! valid issuer, with the issuer's expiry on /metrics.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tandem_harness::{cli::Cli, free_port, http_get as get};

fn tandem() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A kubeconfig naming an API server that is never called here (only
/// Certify calls it, and this test makes none).
const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
";

fn start(anchors: &Path, issuer_dir: &Path, port: u16) -> Running {
    let kubeconfig = issuer_dir.with_file_name("kubeconfig");
    std::fs::write(&kubeconfig, KUBECONFIG).unwrap();
    Running(
        tandem()
            .args(["identity", "--check-period", "1s", "--admin-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--grpc-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--trust-anchors-file")
            .arg(anchors)
            .arg("--issuer-dir")
            .arg(issuer_dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(issuer_dir.with_file_name("identity.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Polls /ready until it answers `want`; a deadline for the expected state.
fn wait_ready(port: u16, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = None;
    while Instant::now() < deadline {
        last = get(port, "/ready");
        if last.as_ref().map(|(s, _)| *s) == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/ready never answered {want}; last: {last:?}");
}

#[test]
fn identity_is_ready_only_with_a_valid_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cli = Cli::offline(env!("CARGO_BIN_EXE_tandem"), d);
    cli.cert(&["root", "root.crt", "root.key", "--profile", "root-ca"]);
    cli.cert(&["other", "other.crt", "other.key", "--profile", "root-ca"]);
    cli.cert_signed(
        "root",
        &[
            "issuer",
            "crt.pem",
            "key.pem",
            "--profile",
            "intermediate-ca",
        ],
    );
    let issuer_dir = d.join("issuer");
    std::fs::create_dir(&issuer_dir).unwrap();
    for f in ["crt.pem", "key.pem"] {
        std::fs::rename(d.join(f), issuer_dir.join(f)).unwrap();
    }

    let anchors = d.join("anchors.pem");
    std::fs::copy(d.join("root.crt"), &anchors).unwrap();
    let port = free_port();
    let _identity = start(&anchors, &issuer_dir, port);
    wait_ready(port, 200);
    assert_eq!(get(port, "/live").unwrap().0, 200);
    let (status, metrics) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("tandem_identity_issuer_valid 1"),
        "{metrics}"
    );
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tandem_identity_issuer_expiry_timestamp_seconds "))
        .expect("expiry gauge")
        .trim()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        expiry > now + 300 * 86400,
        "a 10-year issuer expires years from now"
    );

    // The mounted anchors change to another root: the issuer is no longer
    // trusted, and the next periodic check says so.
    std::fs::copy(d.join("other.crt"), &anchors).unwrap();
    wait_ready(port, 503);
    let (_, metrics) = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("tandem_identity_issuer_valid 0"),
        "{metrics}"
    );

    // Back to the right root: ready again.
    std::fs::copy(d.join("root.crt"), &anchors).unwrap();
    wait_ready(port, 200);

    // The mounted issuer is replaced by one that has expired: not ready,
    // and the log says why.
    cli.cert_signed(
        "root",
        &[
            "old-issuer",
            "old.crt",
            "old.key",
            "--profile",
            "intermediate-ca",
            "--not-before",
            "-2h",
            "--not-after",
            "-1h",
        ],
    );
    std::fs::copy(d.join("old.crt"), issuer_dir.join("crt.pem")).unwrap();
    std::fs::copy(d.join("old.key"), issuer_dir.join("key.pem")).unwrap();
    wait_ready(port, 503);
    let log = std::fs::read_to_string(d.join("identity.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("issuer is not usable") && l.contains("expired at"))
        .unwrap_or_else(|| panic!("no log line says the issuer expired:\n{log}"));
    assert!(line.contains("old-issuer"), "{line}");
}

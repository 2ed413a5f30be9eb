//! Running the `tandem` binary as a user types it: in a directory of the
//! test's, with a testbed's kubeconfig, its manifests piped into kubectl.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use crate::run;

/// `tandem` and `kubectl` in `dir`, with `kubeconfig`.
pub struct Cli {
    /// The binary under test (`env!("CARGO_BIN_EXE_tandem")`).
    pub tandem: PathBuf,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Cli {
    pub fn new(
        tandem: impl Into<PathBuf>,
        dir: impl Into<PathBuf>,
        kubeconfig: impl Into<PathBuf>,
    ) -> Self {
        Cli {
            tandem: tandem.into(),
            dir: dir.into(),
            kubeconfig: kubeconfig.into(),
        }
    }

    /// For commands that need no cluster: KUBECONFIG names a file that does
    /// not exist, so that no cluster is reached by mistake.
    pub fn offline(tandem: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let kubeconfig = dir.join("no-such-kubeconfig");
        Cli::new(tandem, dir, kubeconfig)
    }

    /// `tandem ARGS`, whatever its outcome.
    pub fn tandem(&self, args: &[&str]) -> Output {
        run(Command::new(&self.tandem)
            .args(args)
            .current_dir(&self.dir)
            .env("KUBECONFIG", &self.kubeconfig))
    }

    /// `tandem ARGS`, which must succeed: its stdout.
    #[track_caller]
    pub fn tandem_ok(&self, args: &[&str]) -> String {
        let out = self.tandem(args);
        assert!(
            out.status.success(),
            "tandem {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `tandem ARGS` (`check`, mostly): whether it passed, and its stdout
    /// then its stderr.
    pub fn outcome(&self, args: &[&str]) -> (bool, String) {
        let out = self.tandem(args);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `kubectl ARGS` with `stdin`, which must succeed: its stdout.
    #[track_caller]
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `tandem ARGS | kubectl KUBECTL_ARGS -f -`, as the workshop types it.
    #[track_caller]
    pub fn pipe(&self, args: &[&str], kubectl_args: &[&str]) -> String {
        let manifest = self.tandem_ok(args);
        let mut k = kubectl_args.to_vec();
        k.extend(["-f", "-"]);
        self.kubectl(&k, Some(&manifest))
    }

    /// `tandem certificate create ARGS --no-password --insecure`.
    pub fn cert(&self, args: &[&str]) {
        let mut all = vec!["certificate", "create"];
        all.extend(args);
        all.extend(["--no-password", "--insecure"]);
        self.tandem_ok(&all);
    }

    /// `tandem certificate create ARGS --ca CA.crt --ca-key CA.key
    /// --no-password --insecure`: a certificate signed by the CA whose files
    /// are `CA`.crt and `CA`.key.
    pub fn cert_signed(&self, ca: &str, args: &[&str]) {
        let (crt, key) = (format!("{ca}.crt"), format!("{ca}.key"));
        let mut all = args.to_vec();
        all.extend(["--ca", &crt, "--ca-key", &key]);
        self.cert(&all);
    }

    /// A trust anchor `root.crt`/`root.key` for `identity.tandem.cluster.local`,
    /// and an issuer it signed in `issuer/crt.pem` and `issuer/key.pem` (the
    /// layout `tandem identity --issuer-dir` reads); the root's PEM.
    pub fn root_and_issuer_dir(&self) -> String {
        self.cert(&["root", "root.crt", "root.key", "--profile", "root-ca"]);
        self.cert_signed(
            "root",
            &[
                "identity.tandem.cluster.local",
                "crt.pem",
                "key.pem",
                "--profile",
                "intermediate-ca",
            ],
        );
        let issuer = self.dir.join("issuer");
        std::fs::create_dir(&issuer)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", issuer.display()));
        for f in ["crt.pem", "key.pem"] {
            std::fs::rename(self.dir.join(f), issuer.join(f))
                .unwrap_or_else(|e| panic!("cannot move {f} into {}: {e}", issuer.display()));
        }
        let root = self.dir.join("root.crt");
        std::fs::read_to_string(&root)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
    }

    /// `tandem install` of the core into `namespace` of context `ctx`, with
    /// `root` as trust anchors and `issuer`.crt/.key as the issuer.
    pub fn install_core(&self, ctx: &str, namespace: &str, root: &str, issuer: &str) {
        let crt = format!("{issuer}.crt");
        let key = format!("{issuer}.key");
        self.pipe(
            &[
                "install",
                "--namespace",
                namespace,
                "--identity-trust-anchors-file",
                root,
                "--identity-issuer-certificate-file",
                &crt,
                "--identity-issuer-key-file",
                &key,
            ],
            &["--context", ctx, "apply"],
        );
    }

    /// Puts `crt` and `key` (files in `dir`) into the issuer Secret of the
    /// core in context `ctx`, as an operator might by mistake.
    #[track_caller]
    pub fn set_issuer(&self, ctx: &str, crt: &str, key: &str) {
        let b64 = |f: &str| {
            let bytes = std::fs::read(self.dir.join(f))
                .unwrap_or_else(|e| panic!("{f} in {}: {e}", self.dir.display()));
            base64_encode(&bytes)
        };
        let patch = serde_json::json!({"data": {"crt.pem": b64(crt), "key.pem": b64(key)}});
        self.kubectl(
            &[
                "--context",
                ctx,
                "-n",
                "tandem",
                "patch",
                "secret",
                "tandem-identity-issuer",
                "--type",
                "merge",
                "-p",
                &patch.to_string(),
            ],
            None,
        );
    }
}

/// With coreutils' `base64`, so that a test uses nothing of tandem's.
fn base64_encode(bytes: &[u8]) -> String {
    let mut child = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64 runs");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "base64 failed");
    String::from_utf8(out.stdout).unwrap()
}

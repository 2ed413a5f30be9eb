//! `tandem certificate` fixtures: a temporary directory in which to run the
//! real binary and the real `openssl`, with what each command did.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;

/// What a command did.
pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(
            self.ok,
            "expected success, got {:?}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Asserts a non-zero exit and that stderr says each of `says`.
    #[track_caller]
    pub fn failure(self, says: &[&str]) -> Self {
        assert!(
            !self.ok && self.code.is_some_and(|c| c != 0),
            "expected a non-zero exit, got {:?}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        for s in says {
            assert!(
                self.stderr.contains(s),
                "stderr lacks {s:?}:\n{}",
                self.stderr
            );
        }
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        self
    }
}

/// A temporary directory to run `tandem certificate` and `openssl` in.
pub struct CertDir {
    tmp: tempfile::TempDir,
    tandem: PathBuf,
}

impl CertDir {
    /// `tandem` is the binary under test (`env!("CARGO_BIN_EXE_tandem")`).
    pub fn new(tandem: impl Into<PathBuf>) -> Self {
        CertDir {
            tmp: tempfile::tempdir().expect("a temporary directory"),
            tandem: tandem.into(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        fs::write(self.path(name), contents).unwrap();
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    pub fn mode(&self, name: &str) -> u32 {
        fs::metadata(self.path(name)).unwrap().permissions().mode() & 0o777
    }

    pub fn run(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Run {
        let program = program.as_ref();
        let out = Command::new(program)
            .args(args)
            .current_dir(self.tmp.path())
            .env_remove("TANDEM_LOG")
            .output()
            .unwrap_or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    panic!(
                        "{} was not found on PATH: these tests check tandem's certificates \
                         with the real {0}; install it (apt-get install openssl)",
                        program.display()
                    )
                }
                panic!("cannot run {}: {e}", program.display())
            });
        Run {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `tandem certificate ARGS...`
    pub fn tandem(&self, args: &[&str]) -> Run {
        let mut all = vec!["certificate"];
        all.extend_from_slice(args);
        let tandem = self.tandem.clone();
        self.run(&tandem, &all)
    }

    pub fn openssl(&self, args: &[&str]) -> Run {
        self.run("openssl", args)
    }

    /// The workshop's two commands, exactly: `root.crt`/`.key` and the
    /// issuer `east-issuer.crt`/`.key`.
    pub fn workshop(&self) {
        crate::workshop_certificates(&self.tandem, self.tmp.path(), &["east"]);
    }

    pub fn leaf(&self, name: &str, ca: &str, extra: &[&str]) -> Run {
        let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
        let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
        let mut args = vec![
            "create",
            name,
            &crt,
            &key,
            "--ca",
            &ca_crt,
            "--ca-key",
            &ca_key,
            "--no-password",
            "--insecure",
        ];
        args.extend_from_slice(extra);
        self.tandem(&args)
    }

    pub fn inspect_json(&self, name: &str) -> serde_json::Value {
        let out = self
            .tandem(&["inspect", name, "--format", "json"])
            .success();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("inspect json of {name}: {e}: {}", out.stdout))
    }
}

pub fn text_of(d: &CertDir, crt: &str) -> String {
    d.openssl(&["x509", "-noout", "-text", "-in", crt])
        .success()
        .stdout
}

/// The public key of a certificate and of a key file, as openssl sees them.
pub fn same_public_key(d: &CertDir, crt: &str, key: &str, passin: Option<&str>) {
    let from_cert = d
        .openssl(&["x509", "-noout", "-pubkey", "-in", crt])
        .success();
    let mut args = vec!["pkey", "-pubout", "-in", key];
    if let Some(p) = passin {
        args.extend_from_slice(&["-passin", p]);
    }
    let from_key = d.openssl(&args).success();
    assert_eq!(from_cert.stdout, from_key.stdout, "{crt} and {key} differ");
}

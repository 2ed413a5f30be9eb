//! `tandem certificate` end to end: the real binary in a temporary directory,
//! checked with the real `openssl`. Needs no cluster.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;

/// What a command did.
struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn success(self) -> Self {
        assert!(
            self.ok,
            "expected success, got {:?}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Asserts a non-zero exit and that stderr says each of `says`.
    #[track_caller]
    fn failure(self, says: &[&str]) -> Self {
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

struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Self {
        Dir {
            tmp: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        fs::write(self.path(name), contents).unwrap();
    }

    fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    fn mode(&self, name: &str) -> u32 {
        fs::metadata(self.path(name)).unwrap().permissions().mode() & 0o777
    }

    fn run(&self, program: &str, args: &[&str]) -> Run {
        let out = Command::new(program)
            .args(args)
            .current_dir(self.tmp.path())
            .env_remove("TANDEM_LOG")
            .output()
            .unwrap_or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    panic!(
                        "{program} was not found on PATH: these tests check tandem's certificates \
                         with the real {program}; install it (apt-get install openssl)"
                    )
                }
                panic!("cannot run {program}: {e}")
            });
        Run {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `tandem certificate ARGS...`
    fn tandem(&self, args: &[&str]) -> Run {
        let mut all = vec!["certificate"];
        all.extend_from_slice(args);
        self.run(env!("CARGO_BIN_EXE_tandem"), &all)
    }

    fn openssl(&self, args: &[&str]) -> Run {
        self.run("openssl", args)
    }

    /// The workshop's two commands, exactly.
    fn workshop(&self) {
        self.tandem(&[
            "create",
            "root.linkerd.cluster.local",
            "root.crt",
            "root.key",
            "--profile",
            "root-ca",
            "--no-password",
            "--insecure",
        ])
        .success();
        self.tandem(&[
            "create",
            "identity.linkerd.cluster.local",
            "east-issuer.crt",
            "east-issuer.key",
            "--profile",
            "intermediate-ca",
            "--ca",
            "root.crt",
            "--ca-key",
            "root.key",
            "--not-after",
            "8760h",
            "--no-password",
            "--insecure",
        ])
        .success();
    }

    fn leaf(&self, name: &str, ca: &str, extra: &[&str]) -> Run {
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

    fn inspect_json(&self, name: &str) -> serde_json::Value {
        let out = self
            .tandem(&["inspect", name, "--format", "json"])
            .success();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("inspect json of {name}: {e}: {}", out.stdout))
    }
}

fn text_of(d: &Dir, crt: &str) -> String {
    d.openssl(&["x509", "-noout", "-text", "-in", crt])
        .success()
        .stdout
}

/// The public key of a certificate and of a key file, as openssl sees them.
fn same_public_key(d: &Dir, crt: &str, key: &str, passin: Option<&str>) {
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

#[test]
fn workshop_commands_verify_with_openssl() {
    let d = Dir::new();
    d.workshop();

    let out = d
        .openssl(&["verify", "-CAfile", "root.crt", "east-issuer.crt"])
        .success();
    assert_eq!(out.stdout.trim(), "east-issuer.crt: OK");

    let root = text_of(&d, "root.crt");
    for want in [
        "Issuer: CN = root.linkerd.cluster.local",
        "Subject: CN = root.linkerd.cluster.local",
        "X509v3 Basic Constraints: critical",
        "CA:TRUE, pathlen:1",
        "X509v3 Key Usage: critical",
        "Certificate Sign, CRL Sign",
        "X509v3 Subject Key Identifier",
        "NIST CURVE: P-256",
        "ecdsa-with-SHA256",
    ] {
        assert!(root.contains(want), "root lacks {want:?}:\n{root}");
    }
    let issuer = text_of(&d, "east-issuer.crt");
    for want in [
        "Issuer: CN = root.linkerd.cluster.local",
        "Subject: CN = identity.linkerd.cluster.local",
        "X509v3 Basic Constraints: critical",
        "CA:TRUE, pathlen:0",
        "X509v3 Key Usage: critical",
        "Certificate Sign, CRL Sign",
        "X509v3 Authority Key Identifier",
        "X509v3 Subject Key Identifier",
    ] {
        assert!(issuer.contains(want), "issuer lacks {want:?}:\n{issuer}");
    }
    assert!(!issuer.contains("pathlen:1"));

    // The issuer's AKI is the root's SKI.
    let root_info = d.inspect_json("root.crt");
    let issuer_info = d.inspect_json("east-issuer.crt");
    assert_eq!(issuer_info["authority_key_id"], root_info["subject_key_id"]);
    // 8760h from the root's start, give or take the seconds between the commands.
    let span = |info: &serde_json::Value| {
        let parse = |f: &str| {
            tandem_identity::time::OffsetDateTime::parse(
                info[f].as_str().unwrap(),
                &tandem_identity::time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        };
        parse("not_after") - parse("not_before")
    };
    assert_eq!(span(&issuer_info).whole_hours(), 8760);
    assert_eq!(span(&root_info).whole_days(), 3650);

    // Keys: mode 0600, PKCS#8, readable by openssl, matching their certificates.
    for key in ["root.key", "east-issuer.key"] {
        assert_eq!(d.mode(key), 0o600, "{key}");
        assert!(d.read(key).starts_with("-----BEGIN PRIVATE KEY-----\n"));
        d.openssl(&["pkey", "-in", key, "-noout"]).success();
    }
    assert_eq!(
        d.mode("root.crt") & 0o077,
        0o044,
        "certificates are world-readable"
    );
    same_public_key(&d, "root.crt", "root.key", None);
    same_public_key(&d, "east-issuer.crt", "east-issuer.key", None);

    // A leaf signed by the issuer verifies through it.
    d.leaf("web.example", "east-issuer", &[]).success();
    d.openssl(&[
        "verify",
        "-CAfile",
        "root.crt",
        "-untrusted",
        "east-issuer.crt",
        "web.example.crt",
    ])
    .success();
    let leaf = text_of(&d, "web.example.crt");
    for want in [
        "CA:FALSE",
        "Digital Signature",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "DNS:web.example",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(leaf.contains(want), "leaf lacks {want:?}:\n{leaf}");
    }
    assert!(
        !leaf.contains("Key Encipherment"),
        "an EC leaf has no keyEncipherment"
    );
    // ... but not without the intermediate.
    d.openssl(&["verify", "-CAfile", "root.crt", "web.example.crt"])
        .failure(&[]);
}

#[test]
fn leaf_options() {
    let d = Dir::new();
    d.workshop();
    d.leaf(
        "svc",
        "east-issuer",
        &[
            "--san",
            "svc.example",
            "--san",
            "10.1.2.3",
            "--not-before",
            "-5m",
            "--not-after",
            "1h30m",
            "--crv",
            "P-384",
        ],
    )
    .success();
    let info = d.inspect_json("svc.crt");
    assert_eq!(info["dns_names"], serde_json::json!(["svc.example"]));
    assert_eq!(info["ip_addresses"], serde_json::json!(["10.1.2.3"]));
    assert_eq!(info["key_algorithm"], "ECDSA P-384");
    let text = text_of(&d, "svc.crt");
    assert!(
        text.contains("DNS:svc.example, IP Address:10.1.2.3"),
        "{text}"
    );
    assert!(text.contains("NIST CURVE: P-384"), "{text}");
    d.openssl(&[
        "verify",
        "-CAfile",
        "root.crt",
        "-untrusted",
        "east-issuer.crt",
        "svc.crt",
    ])
    .success();
    // -5m .. +1h30m is 95 minutes.
    let t = |f: &str| {
        tandem_identity::time::OffsetDateTime::parse(
            info[f].as_str().unwrap(),
            &tandem_identity::time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!((t("not_after") - t("not_before")).whole_minutes(), 95);

    // An RFC 3339 --not-after.
    d.leaf(
        "abs",
        "east-issuer",
        &[
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--not-after",
            "2020-01-02T00:00:00+00:00",
        ],
    )
    .success();
    let info = d.inspect_json("abs.crt");
    assert_eq!(info["not_before"], "2020-01-01T00:00:00Z");
    assert_eq!(info["not_after"], "2020-01-02T00:00:00Z");
}

#[test]
fn no_overwrite_without_force() {
    let d = Dir::new();
    d.workshop();
    let (crt, key) = (d.read("root.crt"), d.read("root.key"));
    let again = [
        "create",
        "root.linkerd.cluster.local",
        "root.crt",
        "root.key",
        "--profile",
        "root-ca",
        "--no-password",
        "--insecure",
    ];
    d.tandem(&again)
        .failure(&["root.crt already exists; give --force to overwrite it"]);
    assert_eq!(
        (d.read("root.crt"), d.read("root.key")),
        (crt.clone(), key.clone())
    );

    // Both files are checked before either is written.
    d.write("only.key", "keep me");
    d.tandem(&[
        "create",
        "x",
        "only.crt",
        "only.key",
        "--profile",
        "root-ca",
        "--no-password",
        "--insecure",
    ])
    .failure(&["only.key already exists; give --force"]);
    assert!(
        !d.exists("only.crt"),
        "nothing is written when one file exists"
    );
    assert_eq!(d.read("only.key"), "keep me");

    // --force replaces both, and the replaced key is 0600 even if the old one was not.
    fs::set_permissions(d.path("root.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let mut forced = again.to_vec();
    forced.push("--force");
    d.tandem(&forced).success();
    assert_ne!(d.read("root.crt"), crt);
    assert_ne!(d.read("root.key"), key);
    assert_eq!(d.mode("root.key"), 0o600);
    same_public_key(&d, "root.crt", "root.key", None);
}

#[test]
fn key_protection() {
    let d = Dir::new();
    let root = ["create", "r", "r.crt", "r.key", "--profile", "root-ca"];
    d.tandem(&root).failure(&[
        "refusing to write an unencrypted private key",
        "--no-password --insecure",
        "--password-file",
    ]);
    let mut no_insecure = root.to_vec();
    no_insecure.push("--no-password");
    d.tandem(&no_insecure)
        .failure(&["--no-password needs --insecure", "--password-file"]);
    assert!(!d.exists("r.crt") && !d.exists("r.key"));

    // An encrypted key that openssl decrypts with the same password file.
    d.write("pw.txt", "correct horse\n");
    d.write("bad-pw.txt", "wrong\n");
    let mut encrypted = root.to_vec();
    encrypted.extend_from_slice(&["--password-file", "pw.txt"]);
    d.tandem(&encrypted).success();
    assert_eq!(d.mode("r.key"), 0o600);
    assert!(
        d.read("r.key")
            .starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    );
    d.openssl(&["pkey", "-in", "r.key", "-passin", "file:pw.txt", "-noout"])
        .success();
    d.openssl(&[
        "pkey",
        "-in",
        "r.key",
        "-passin",
        "file:bad-pw.txt",
        "-noout",
    ])
    .failure(&[]);
    same_public_key(&d, "r.crt", "r.key", Some("file:pw.txt"));

    // The encrypted key signs with --ca-password-file, and says how without it.
    d.tandem(&[
        "create",
        "l",
        "l.crt",
        "l.key",
        "--ca",
        "r.crt",
        "--ca-key",
        "r.key",
        "--no-password",
        "--insecure",
    ])
    .failure(&["r.key is encrypted", "--ca-password-file"]);
    d.tandem(&[
        "create",
        "l",
        "l.crt",
        "l.key",
        "--ca",
        "r.crt",
        "--ca-key",
        "r.key",
        "--ca-password-file",
        "bad-pw.txt",
        "--no-password",
        "--insecure",
    ])
    .failure(&["cannot decrypt r.key"]);
    d.tandem(&[
        "create",
        "l",
        "l.crt",
        "l.key",
        "--ca",
        "r.crt",
        "--ca-key",
        "r.key",
        "--ca-password-file",
        "pw.txt",
        "--no-password",
        "--insecure",
    ])
    .success();
    d.openssl(&["verify", "-CAfile", "r.crt", "l.crt"])
        .success();

    d.write("empty.txt", "\n");
    d.tandem(&[
        "create",
        "e",
        "e.crt",
        "e.key",
        "--profile",
        "root-ca",
        "--password-file",
        "empty.txt",
    ])
    .failure(&["empty.txt holds an empty password"]);
}

#[test]
fn rsa_keys() {
    let d = Dir::new();
    d.tandem(&[
        "create",
        "rsa-root",
        "rsa.crt",
        "rsa.key",
        "--profile",
        "root-ca",
        "--kty",
        "RSA",
        "--size",
        "2048",
        "--no-password",
        "--insecure",
    ])
    .success();
    let text = text_of(&d, "rsa.crt");
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    assert!(text.contains("sha256WithRSAEncryption"), "{text}");
    assert!(text.contains("CA:TRUE, pathlen:1"), "{text}");
    same_public_key(&d, "rsa.crt", "rsa.key", None);
    // An EC leaf under the RSA root.
    d.leaf("leaf", "rsa", &[]).success();
    d.openssl(&["verify", "-CAfile", "rsa.crt", "leaf.crt"])
        .success();

    d.tandem(&[
        "create",
        "weak",
        "weak.crt",
        "weak.key",
        "--profile",
        "root-ca",
        "--kty",
        "RSA",
        "--size",
        "1024",
        "--no-password",
        "--insecure",
    ])
    .failure(&["--size 1024 is refused", "at least 2048"]);
    assert!(!d.exists("weak.crt") && !d.exists("weak.key"));
}

#[test]
fn bad_inputs() {
    let d = Dir::new();
    d.workshop();
    d.leaf("leaf.example", "east-issuer", &[]).success();
    d.write("hello.crt", "hello, world\n");
    fs::create_dir(d.path("adir")).unwrap();
    d.openssl(&[
        "x509", "-in", "root.crt", "-outform", "der", "-out", "root.der",
    ])
    .success();
    // A CA with an RSA 1024 key, made by openssl itself.
    d.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:1024",
        "-nodes",
        "-keyout",
        "weak.key",
        "-out",
        "weak.crt",
        "-subj",
        "/CN=weak.example",
        "-days",
        "2",
    ])
    .success();
    // A CA that expired yesterday.
    d.tandem(&[
        "create",
        "expired.example",
        "expired.crt",
        "expired.key",
        "--profile",
        "root-ca",
        "--not-before",
        "-48h",
        "--not-after",
        "-24h",
        "--no-password",
        "--insecure",
    ])
    .success();
    let issuer_expiry = d.inspect_json("east-issuer.crt")["not_after"]
        .as_str()
        .unwrap()
        .to_string();

    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "missing file",
            vec!["--ca", "missing.crt", "--ca-key", "root.key"],
            vec!["cannot read --ca file missing.crt", "No such file"],
        ),
        (
            "unreadable file (a directory)",
            vec!["--ca", "root.crt", "--ca-key", "adir"],
            vec!["cannot read --ca-key file adir"],
        ),
        (
            "not PEM",
            vec!["--ca", "hello.crt", "--ca-key", "root.key"],
            vec!["hello.crt is not PEM"],
        ),
        (
            "DER instead of PEM",
            vec!["--ca", "root.der", "--ca-key", "root.key"],
            vec!["root.der is not PEM", "DER"],
        ),
        (
            "PEM without a certificate",
            vec!["--ca", "root.key", "--ca-key", "root.key"],
            vec!["root.key holds no CERTIFICATE PEM block (it holds: PRIVATE KEY)"],
        ),
        (
            "a key file without a key",
            vec!["--ca", "root.crt", "--ca-key", "root.crt"],
            vec!["root.crt holds no private key PEM block"],
        ),
        (
            "key does not match the CA",
            vec!["--ca", "root.crt", "--ca-key", "east-issuer.key"],
            vec!["east-issuer.key does not match root.crt"],
        ),
        (
            "RSA 1024 CA",
            vec!["--ca", "weak.crt", "--ca-key", "weak.key"],
            vec!["weak.crt has an RSA key of 1024 bits", "at least 2048"],
        ),
        (
            "expired CA",
            vec!["--ca", "expired.crt", "--ca-key", "expired.key"],
            vec!["expired.crt (CN=expired.example) expired at"],
        ),
        (
            "a leaf as CA",
            vec!["--ca", "leaf.example.crt", "--ca-key", "leaf.example.key"],
            vec!["leaf.example.crt (CN=leaf.example) is not a CA certificate"],
        ),
        (
            "pathlen 0 issuer signing a CA",
            vec![
                "--profile",
                "intermediate-ca",
                "--ca",
                "east-issuer.crt",
                "--ca-key",
                "east-issuer.key",
            ],
            vec![
                "east-issuer.crt (CN=identity.linkerd.cluster.local) has pathlen 0",
                "not another CA",
            ],
        ),
        (
            "not-after beyond the issuer",
            vec![
                "--ca",
                "east-issuer.crt",
                "--ca-key",
                "east-issuer.key",
                "--not-after",
                "87600h",
            ],
            vec![
                "is beyond the expiry of the signing CA east-issuer.crt",
                &issuer_expiry,
            ],
        ),
        (
            "a root with a CA",
            vec![
                "--profile",
                "root-ca",
                "--ca",
                "root.crt",
                "--ca-key",
                "root.key",
            ],
            vec!["root-ca makes a self-signed certificate"],
        ),
        (
            "a leaf without a CA",
            vec![],
            vec!["profile leaf needs a signing CA: give --ca and --ca-key"],
        ),
        (
            "--ca without --ca-key",
            vec!["--ca", "root.crt"],
            vec!["--ca needs --ca-key"],
        ),
        (
            "a bad duration",
            vec![
                "--ca",
                "root.crt",
                "--ca-key",
                "root.key",
                "--not-after",
                "10d",
            ],
            vec!["invalid value '10d' for '--not-after", "unknown unit \"d\""],
        ),
        (
            "a bad time",
            vec![
                "--ca",
                "root.crt",
                "--ca-key",
                "root.key",
                "--not-after",
                "2030-02-30T00:00:00Z",
            ],
            vec!["not an RFC 3339 time"],
        ),
        (
            "an empty validity",
            vec![
                "--ca",
                "root.crt",
                "--ca-key",
                "root.key",
                "--not-after",
                "-1h",
            ],
            vec!["the validity is empty"],
        ),
        (
            "--size with EC",
            vec!["--ca", "root.crt", "--ca-key", "root.key", "--size", "4096"],
            vec!["--size is for --kty RSA"],
        ),
        (
            "an unknown profile",
            vec!["--profile", "server"],
            vec!["invalid value 'server' for '--profile"],
        ),
    ];
    for (name, extra, says) in cases {
        let mut args = vec!["create", "new.example", "new.crt", "new.key"];
        args.extend(extra);
        args.extend(["--no-password", "--insecure"]);
        let run = d.tandem(&args);
        assert!(!run.ok, "{name}: succeeded");
        run.failure(&says);
        assert!(
            !d.exists("new.crt") && !d.exists("new.key"),
            "{name}: a failed create left files behind"
        );
    }
}

#[test]
fn inspect_and_verify() {
    let d = Dir::new();
    d.workshop();
    d.leaf(
        "web.example",
        "east-issuer",
        &["--san", "web.example", "--san", "127.0.0.1"],
    )
    .success();

    let root = d.inspect_json("root.crt");
    assert_eq!(root["subject"], "CN=root.linkerd.cluster.local");
    assert_eq!(root["is_ca"], true);
    assert_eq!(root["path_len"], 1);
    assert_eq!(root["self_signed"], true);
    assert_eq!(
        root["key_usage"],
        serde_json::json!(["keyCertSign", "cRLSign"])
    );
    let issuer = d.inspect_json("east-issuer.crt");
    assert_eq!(issuer["issuer"], "CN=root.linkerd.cluster.local");
    assert_eq!(issuer["path_len"], 0);
    assert_eq!(issuer["self_signed"], false);
    let leaf = d.inspect_json("web.example.crt");
    assert_eq!(leaf["is_ca"], false);
    assert_eq!(leaf["path_len"], serde_json::Value::Null);
    assert_eq!(leaf["key_usage"], serde_json::json!(["digitalSignature"]));
    assert_eq!(
        leaf["ext_key_usage"],
        serde_json::json!(["serverAuth", "clientAuth"])
    );
    assert_eq!(leaf["dns_names"], serde_json::json!(["web.example"]));
    assert_eq!(leaf["ip_addresses"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(leaf["key_algorithm"], "ECDSA P-256");
    assert_eq!(leaf["authority_key_id"], issuer["subject_key_id"]);
    // The serial openssl reads is the one inspect prints.
    let serial = d
        .openssl(&["x509", "-noout", "-serial", "-in", "web.example.crt"])
        .success()
        .stdout;
    assert_eq!(
        serial.trim().trim_start_matches("serial=").to_lowercase(),
        leaf["serial"].as_str().unwrap()
    );

    let text = d.tandem(&["inspect", "east-issuer.crt"]).success().stdout;
    for want in [
        "X.509v3 intermediate CA certificate (ECDSA P-256)",
        "Subject:          CN=identity.linkerd.cluster.local",
        "CA:               yes, pathlen 0",
        "Key usage:        Certificate Sign, CRL Sign",
    ] {
        assert!(text.contains(want), "text lacks {want:?}:\n{text}");
    }
    d.tandem(&["inspect", "nothing.crt"])
        .failure(&["cannot read certificate file nothing.crt"]);
    d.tandem(&["inspect", "root.key"])
        .failure(&["root.key: certificate holds no CERTIFICATE PEM block"]);

    // verify: the issuer, a leaf through a bundle, and failures.
    let ok = d
        .tandem(&["verify", "east-issuer.crt", "--roots", "root.crt"])
        .success();
    assert!(
        ok.stdout.starts_with("ok: east-issuer.crt is valid"),
        "{}",
        ok.stdout
    );
    let bundle = d.read("web.example.crt") + &d.read("east-issuer.crt");
    d.write("bundle.crt", bundle);
    let ok = d
        .tandem(&["verify", "bundle.crt", "--roots", "root.crt"])
        .success();
    assert!(
        ok.stdout.contains(
            "CN=web.example <- CN=identity.linkerd.cluster.local <- CN=root.linkerd.cluster.local"
        ),
        "{}",
        ok.stdout
    );
    let inspect_all = d
        .tandem(&["inspect", "bundle.crt", "--bundle", "--format", "json"])
        .success();
    let all: serde_json::Value = serde_json::from_str(&inspect_all.stdout).unwrap();
    assert_eq!(all.as_array().map(Vec::len), Some(2));

    d.tandem(&["verify", "web.example.crt", "--roots", "root.crt"])
        .failure(&[
            "web.example.crt does not verify against root.crt",
            "no certificate in the bundle or in root.crt issued CN=web.example",
        ]);
    d.tandem(&[
        "create",
        "other",
        "other.crt",
        "other.key",
        "--profile",
        "root-ca",
        "--no-password",
        "--insecure",
    ])
    .success();
    d.tandem(&["verify", "east-issuer.crt", "--roots", "other.crt"])
        .failure(&["its issuer is CN=root.linkerd.cluster.local"]);
    d.write("hello.crt", "hello\n");
    d.tandem(&["verify", "east-issuer.crt", "--roots", "hello.crt"])
        .failure(&["hello.crt is not PEM"]);
    d.tandem(&["verify", "east-issuer.crt", "--roots", "missing.crt"])
        .failure(&["cannot read --roots file missing.crt"]);
}

#[test]
fn ca_keys_made_by_openssl() {
    let d = Dir::new();
    d.write("pw.txt", "pw\n");
    // SEC1 "EC PRIVATE KEY" (after an "EC PARAMETERS" block), as step and
    // `openssl ecparam -genkey` write them.
    d.openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-out",
        "ec.key",
    ])
    .success();
    assert!(d.read("ec.key").contains("-----BEGIN EC PRIVATE KEY-----"));
    // PKCS#1 "RSA PRIVATE KEY".
    d.openssl(&["genrsa", "-traditional", "-out", "rsa.key", "2048"])
        .success();
    assert!(
        d.read("rsa.key")
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    // Encrypted PKCS#8, and the legacy Proc-Type encryption.
    d.openssl(&[
        "pkey",
        "-in",
        "ec.key",
        "-aes256",
        "-passout",
        "pass:pw",
        "-out",
        "ec-enc.key",
    ])
    .success();
    d.openssl(&[
        "pkey",
        "-in",
        "ec.key",
        "-traditional",
        "-aes256",
        "-passout",
        "pass:pw",
        "-out",
        "ec-legacy.key",
    ])
    .success();
    for ca in ["ec", "rsa"] {
        d.openssl(&[
            "req",
            "-x509",
            "-key",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
            "-subj",
            &format!("/CN={ca}.example"),
            "-days",
            "2",
        ])
        .success();
    }

    for (ca_crt, ca_key, extra) in [
        ("ec.crt", "ec.key", &[][..]),
        ("rsa.crt", "rsa.key", &[][..]),
        (
            "ec.crt",
            "ec-enc.key",
            &["--ca-password-file", "pw.txt"][..],
        ),
    ] {
        let _ = fs::remove_file(d.path("leaf.crt"));
        let _ = fs::remove_file(d.path("leaf.key"));
        let mut args = vec![
            "create",
            "leaf",
            "leaf.crt",
            "leaf.key",
            "--ca",
            ca_crt,
            "--ca-key",
            ca_key,
            "--no-password",
            "--insecure",
        ];
        args.extend_from_slice(extra);
        d.tandem(&args).success();
        d.openssl(&["verify", "-CAfile", ca_crt, "leaf.crt"])
            .success();
    }
    d.tandem(&[
        "create",
        "x",
        "x.crt",
        "x.key",
        "--ca",
        "ec.crt",
        "--ca-key",
        "ec-legacy.key",
        "--ca-password-file",
        "pw.txt",
        "--no-password",
        "--insecure",
    ])
    .failure(&[
        "ec-legacy.key uses legacy PEM encryption",
        "openssl pkcs8 -topk8",
    ]);
}

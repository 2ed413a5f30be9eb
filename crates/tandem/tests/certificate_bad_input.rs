//! `tandem certificate` with bad input: a clear error, never a panic. Needs no
//! cluster.

use std::fs;
use tandem_harness::certificate::CertDir;

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

#[test]
fn bad_inputs() {
    let d = CertDir::new(TANDEM);
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

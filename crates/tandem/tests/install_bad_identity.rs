//! `tandem install` with bad identity inputs: it refuses, says which input is
//! wrong, and prints no manifest; with none of them it installs a trial
//! identity and warns.

use std::path::Path;

use tandem_harness::cli::Cli;

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

#[test]
fn install_refuses_bad_identity_inputs_and_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::offline(tandem_bin(), dir.path());
    cli.cert(&["root", "root.crt", "root.key", "--profile", "root-ca"]);
    cli.cert_signed(
        "root",
        &[
            "issuer",
            "issuer.crt",
            "issuer.key",
            "--profile",
            "intermediate-ca",
        ],
    );
    cli.cert(&["other", "other.crt", "other.key", "--profile", "root-ca"]);
    cli.cert_signed(
        "issuer",
        &["leaf.example", "leaf.crt", "leaf.key", "--profile", "leaf"],
    );

    for (anchors, cert, key, want) in [
        ("other.crt", "issuer.crt", "issuer.key", "anchor"),
        ("root.crt", "issuer.crt", "other.key", "key"),
        ("root.crt", "leaf.crt", "leaf.key", "CA"),
        ("missing.crt", "issuer.crt", "issuer.key", "missing.crt"),
        ("root.key", "issuer.crt", "issuer.key", "PEM"),
    ] {
        let out = cli.tandem(&[
            "install",
            "--identity-trust-anchors-file",
            anchors,
            "--identity-issuer-certificate-file",
            cert,
            "--identity-issuer-key-file",
            key,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{anchors} {cert} {key}");
        assert!(
            out.stdout.is_empty(),
            "nothing is printed on stdout: {anchors} {cert} {key}"
        );
        assert!(err.contains(want), "{anchors} {cert} {key}: {err}");
    }
    // Only some of the three flags.
    let out = cli.tandem(&["install", "--identity-trust-anchors-file", "root.crt"]);
    assert!(!out.status.success() && out.stdout.is_empty());

    // None of them: a trial identity, with a warning.
    let out = cli.tandem(&["install"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("for trials"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tandem-identity-issuer"));
}

//! `tandem certificate create` and the files it writes: no overwrite without
//! `--force`, and keys protected by mode and password. Needs no cluster.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use tandem_harness::certificate::{CertDir, same_public_key};

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

#[test]
fn no_overwrite_without_force() {
    let d = CertDir::new(TANDEM);
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
    let d = CertDir::new(TANDEM);
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

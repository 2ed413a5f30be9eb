//! `tandem certificate create`: the workshop's commands, leaf options and key
//! types, each checked with the real `openssl`. Needs no cluster.

use std::fs;
use tandem_harness::certificate::{CertDir, same_public_key, text_of};

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

#[test]
fn workshop_commands_verify_with_openssl() {
    let d = CertDir::new(TANDEM);
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
    let d = CertDir::new(TANDEM);
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
fn rsa_keys() {
    let d = CertDir::new(TANDEM);
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
fn ca_keys_made_by_openssl() {
    let d = CertDir::new(TANDEM);
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

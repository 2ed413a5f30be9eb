//! `tandem certificate inspect` and `verify`, against `openssl`. Needs no
//! cluster.

use tandem_harness::certificate::CertDir;

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

#[test]
fn inspect_and_verify() {
    let d = CertDir::new(TANDEM);
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

//! `inspect`: what a certificate's summary says.

use super::*;

#[test]
fn inspect_output() {
    let root = mk_root();
    let l = {
        let mut r = req("web.example", Profile::Leaf, Some(&root));
        r.sans = vec!["web.example".into(), "10.0.0.7".into()];
        create(&r).unwrap()
    };
    let info = inspect(&l.cert_pem).unwrap();
    let json = serde_json::to_value(&info).unwrap();
    for field in [
        "subject",
        "common_name",
        "issuer",
        "serial",
        "not_before",
        "not_after",
        "key_algorithm",
        "key_bits",
        "signature_algorithm",
        "is_ca",
        "path_len",
        "key_usage",
        "ext_key_usage",
        "dns_names",
        "ip_addresses",
        "uris",
        "emails",
        "subject_key_id",
        "authority_key_id",
        "self_signed",
        "fingerprint_sha256",
    ] {
        assert!(json.get(field).is_some(), "json lacks {field}: {json}");
    }
    assert_eq!(json["not_before"], "2026-06-01T12:00:00Z");
    assert_eq!(json["ip_addresses"][0], "10.0.0.7");
    let text = info.to_text();
    assert!(
        text.starts_with("X.509v3 leaf certificate (ECDSA P-256)\n"),
        "{text}"
    );
    assert!(
        text.contains("  SANs:             DNS:web.example, IP:10.0.0.7\n"),
        "{text}"
    );
    assert!(
        text.contains("  Ext key usage:    serverAuth, clientAuth\n"),
        "{text}"
    );
    assert!(text.contains("  CA:               no\n"), "{text}");
    let root_text = inspect(&root.cert_pem).unwrap().to_text();
    assert!(
        root_text.contains("  CA:               yes, pathlen 1\n"),
        "{root_text}"
    );
    assert!(
        root_text.contains("  Key usage:        Certificate Sign, CRL Sign\n"),
        "{root_text}"
    );

    let all = inspect_bundle(&bundle(&[&l, &root])).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].subject, "CN=root.linkerd.cluster.local");
    // Garbage in a CERTIFICATE block is an error, not a panic.
    let junk = crate::pem::encode("CERTIFICATE", &[0x30, 0x03, 0x01, 0x01, 0xff]);
    assert!(matches!(inspect(&junk), Err(Error::BadCertificate { .. })));
}

//! Creating certificates: profiles, key types and SANs.

use super::*;

#[test]
fn profiles() {
    let root = mk_root();
    let issuer = mk_issuer(&root);
    let leaf = mk_leaf(&issuer);
    let (ri, ii, li) = (
        inspect(&root.cert_pem).unwrap(),
        inspect(&issuer.cert_pem).unwrap(),
        inspect(&leaf.cert_pem).unwrap(),
    );
    struct Want {
        is_ca: bool,
        path_len: Option<u32>,
        key_usage: &'static [&'static str],
        eku: &'static [&'static str],
        lifetime: Duration,
        kind: &'static str,
    }
    let cases = [
        (
            &ri,
            Want {
                is_ca: true,
                path_len: Some(1),
                key_usage: &["keyCertSign", "cRLSign"],
                eku: &[],
                lifetime: Duration::days(3650),
                kind: "root CA",
            },
        ),
        (
            &ii,
            Want {
                is_ca: true,
                path_len: Some(0),
                key_usage: &["keyCertSign", "cRLSign"],
                eku: &[],
                lifetime: Duration::hours(8760),
                kind: "intermediate CA",
            },
        ),
        (
            &li,
            Want {
                is_ca: false,
                path_len: None,
                key_usage: &["digitalSignature"],
                eku: &["serverAuth", "clientAuth"],
                lifetime: Duration::hours(24),
                kind: "leaf",
            },
        ),
    ];
    for (info, want) in cases {
        let s = &info.subject;
        assert_eq!(info.is_ca, want.is_ca, "{s}");
        assert_eq!(info.path_len, want.path_len, "{s}");
        assert_eq!(info.key_usage, want.key_usage, "{s}");
        assert_eq!(info.ext_key_usage, want.eku, "{s}");
        assert_eq!(info.not_before, NOW, "{s}");
        assert_eq!(info.not_after - info.not_before, want.lifetime, "{s}");
        assert_eq!(info.kind(), want.kind, "{s}");
        assert_eq!(info.key_algorithm, "ECDSA P-256", "{s}");
        assert_eq!(info.signature_algorithm, "ECDSA-SHA256", "{s}");
        // At least 128 random bits, positive: 20 bytes, top bit clear.
        assert_eq!(info.serial.len(), 40, "{s}: serial {}", info.serial);
        assert!(matches!(info.serial.as_bytes()[0], b'4'..=b'7'), "{s}");
        assert!(info.subject_key_id.is_some(), "{s}");
    }
    assert_eq!(ri.subject, "CN=root.linkerd.cluster.local");
    assert_eq!(ri.issuer, ri.subject);
    assert!(ri.self_signed);
    assert_eq!(ri.authority_key_id, None);
    assert_eq!(ii.issuer, "CN=root.linkerd.cluster.local");
    assert_eq!(
        ii.common_name.as_deref(),
        Some("identity.linkerd.cluster.local")
    );
    assert!(!ii.self_signed);
    assert_eq!(ii.authority_key_id, ri.subject_key_id);
    assert_eq!(li.authority_key_id, ii.subject_key_id);
    // CAs have no SANs; a leaf without --san names its subject.
    assert!(ri.dns_names.is_empty() && ii.dns_names.is_empty());
    assert_eq!(li.dns_names, ["web.example"]);
    // Critical basicConstraints and keyUsage everywhere; EKU not critical.
    for c in [&root, &issuer, &leaf] {
        assert_eq!(critical(&c.cert_pem, "2.5.29.19"), Some(true));
        assert_eq!(critical(&c.cert_pem, "2.5.29.15"), Some(true));
    }
    assert_eq!(critical(&leaf.cert_pem, "2.5.29.37"), Some(false));
    // Two certificates never share a serial.
    assert_ne!(ri.serial, ii.serial);
    assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
}

#[test]
fn key_types() {
    let root = mk_root();
    let mut r = req("p384.example", Profile::RootCa, None);
    r.key_type = KeyType::Ec(Curve::P384);
    let p384 = create(&r).unwrap();
    let info = inspect(&p384.cert_pem).unwrap();
    assert_eq!(
        (
            info.key_algorithm.as_str(),
            info.key_bits,
            info.signature_algorithm.as_str()
        ),
        ("ECDSA P-384", 384, "ECDSA-SHA384")
    );
    // A P-384 CA signs a P-256 leaf with its own algorithm.
    let l = mk_leaf(&p384);
    let info = inspect(&l.cert_pem).unwrap();
    assert_eq!(info.key_algorithm, "ECDSA P-256");
    assert_eq!(info.signature_algorithm, "ECDSA-SHA384");
    verify_chain(&l.cert_pem, &p384.cert_pem, NOW).unwrap();

    let mut r = req("rsa.example", Profile::Leaf, Some(&root));
    r.key_type = KeyType::Rsa { bits: 2048 };
    let rsa_leaf = create(&r).unwrap();
    let info = inspect(&rsa_leaf.cert_pem).unwrap();
    assert_eq!(
        (info.key_algorithm.as_str(), info.key_bits),
        ("RSA 2048", 2048)
    );
    assert_eq!(info.key_usage, ["digitalSignature", "keyEncipherment"]);
    verify_chain(&rsa_leaf.cert_pem, &root.cert_pem, NOW).unwrap();
}

#[test]
fn sans() {
    let root = mk_root();
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&[], &["web.example"], &[]),
        (
            &["a.example", "10.0.0.1", "::1", "a.example"],
            &["a.example"],
            &["10.0.0.1", "::1"],
        ),
        (&["127.0.0.1"], &[], &["127.0.0.1"]),
    ];
    for (given, dns, ips) in cases {
        let mut r = req("web.example", Profile::Leaf, Some(&root));
        r.sans = given.iter().map(|s| s.to_string()).collect();
        let info = inspect(&create(&r).unwrap().cert_pem).unwrap();
        assert_eq!(info.dns_names, *dns, "{given:?}");
        assert_eq!(info.ip_addresses, *ips, "{given:?}");
    }
    // An IP subject becomes an IP SAN.
    let info = inspect(
        &create(&req("10.1.2.3", Profile::Leaf, Some(&root)))
            .unwrap()
            .cert_pem,
    )
    .unwrap();
    assert_eq!(info.ip_addresses, ["10.1.2.3"]);
    for bad in ["é.example", ""] {
        let mut r = req("web.example", Profile::Leaf, Some(&root));
        r.sans = vec![bad.to_string()];
        assert!(
            matches!(create(&r), Err(Error::InvalidSan { .. })),
            "{bad:?}"
        );
    }
}

//! Tests across modules: profiles, bad inputs, chains, issuers and checks.

use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::checks::{self, CheckOutcome};
use crate::*;

/// Says whether an error is the expected variant.
type Matcher = fn(&Error) -> bool;

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00:00 UTC);

// === helpers ===

fn req(subject: &str, profile: Profile, ca: Option<&Created>) -> CreateRequest {
    CreateRequest {
        now: NOW,
        ca: ca.map(ca_input),
        ..CreateRequest::new(subject, profile)
    }
}

fn ca_input(c: &Created) -> CaInput {
    CaInput {
        cert_pem: c.cert_pem.clone(),
        key_pem: c.key_pem.clone(),
        key_password: None,
        cert_name: "ca.crt".into(),
        key_name: "ca.key".into(),
    }
}

fn mk_root() -> Created {
    create(&req("root.linkerd.cluster.local", Profile::RootCa, None)).unwrap()
}

fn mk_issuer(root: &Created) -> Created {
    let mut r = req(
        "identity.linkerd.cluster.local",
        Profile::IntermediateCa,
        Some(root),
    );
    r.not_after = Some("8760h".parse().unwrap());
    create(&r).unwrap()
}

fn mk_leaf(ca: &Created) -> Created {
    create(&req("web.example", Profile::Leaf, Some(ca))).unwrap()
}

/// A certificate rcgen makes directly, for shapes our profiles refuse to make.
fn manual(
    subject: &str,
    is_ca: IsCa,
    usages: Vec<KeyUsagePurpose>,
    signer: Option<&Created>,
) -> Created {
    let kp = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, subject);
    p.not_before = NOW - Duration::hours(1);
    p.not_after = NOW + Duration::days(30);
    p.is_ca = is_ca;
    p.key_usages = usages;
    let cert = match signer {
        Some(s) => {
            let issuer =
                Issuer::from_ca_cert_pem(&s.cert_pem, KeyPair::from_pem(&s.key_pem).unwrap())
                    .unwrap();
            p.use_authority_key_identifier_extension = true;
            p.signed_by(&kp, &issuer).unwrap()
        }
        None => p.self_signed(&kp).unwrap(),
    };
    Created {
        cert_pem: cert.pem(),
        key_pem: kp.serialize_pem(),
    }
}

fn ca_usages() -> Vec<KeyUsagePurpose> {
    vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
}

/// A CA with a 1024-bit RSA key, signed by `signer` (ring cannot sign with
/// such a key, but it can be certified by a P-256 root).
fn weak_rsa_ca(signer: &Created) -> Created {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let spki = key.to_public_key().to_public_key_der().unwrap();
    let public = rcgen::SubjectPublicKeyInfo::from_der(spki.as_bytes()).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "weak.example");
    p.not_before = NOW - Duration::hours(1);
    p.not_after = NOW + Duration::days(30);
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = ca_usages();
    let issuer = Issuer::from_ca_cert_pem(
        &signer.cert_pem,
        KeyPair::from_pem(&signer.key_pem).unwrap(),
    )
    .unwrap();
    let cert = p.signed_by(&public, &issuer).unwrap();
    Created {
        cert_pem: cert.pem(),
        key_pem: crate::pem::encode("PRIVATE KEY", key.to_pkcs8_der().unwrap().as_bytes()),
    }
}

fn critical(cert_pem: &str, oid: &str) -> Option<bool> {
    let ders = crate::cert::load_der("c", cert_pem).unwrap();
    let c = crate::cert::Cert::parse("c", 1, &ders[0]).unwrap();
    c.x.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .map(|e| e.critical)
}

fn bundle(certs: &[&Created]) -> String {
    certs.iter().map(|c| c.cert_pem.as_str()).collect()
}

// === create: profiles ===

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

#[test]
fn validity_windows() {
    let root = mk_root();
    // --not-before -5m and an absolute --not-after.
    let mut r = req("web.example", Profile::Leaf, Some(&root));
    r.not_before = Some("-5m".parse().unwrap());
    r.not_after = Some("2026-06-03T00:00:00Z".parse().unwrap());
    let info = inspect(&create(&r).unwrap().cert_pem).unwrap();
    assert_eq!(info.not_before, NOW - Duration::minutes(5));
    assert_eq!(info.not_after, datetime!(2026-06-03 00:00:00 UTC));

    // Default lifetimes are cut to the CA's expiry instead of failing:
    // an intermediate made a minute after its root, and a leaf under a 1h CA.
    let mut r = req("int", Profile::IntermediateCa, Some(&root));
    r.now = NOW + Duration::minutes(1);
    let info = inspect(&create(&r).unwrap().cert_pem).unwrap();
    assert_eq!(info.not_after, inspect(&root.cert_pem).unwrap().not_after);
    let mut r = req("short", Profile::IntermediateCa, Some(&root));
    r.not_after = Some("1h".parse().unwrap());
    let short = create(&r).unwrap();
    let info = inspect(
        &create(&req("l", Profile::Leaf, Some(&short)))
            .unwrap()
            .cert_pem,
    )
    .unwrap();
    assert_eq!(info.not_after, NOW + Duration::hours(1));

    // An explicit --not-after beyond the CA is refused, naming both times.
    let mut r = req("l", Profile::Leaf, Some(&short));
    r.not_after = Some("2h".parse().unwrap());
    let err = create(&r).unwrap_err();
    assert!(matches!(err, Error::BeyondIssuerExpiry { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("2026-06-01T14:00:00Z"), "{msg}");
    assert!(msg.contains("2026-06-01T13:00:00Z"), "{msg}");
    assert!(msg.contains("ca.crt"), "{msg}");

    // An empty window.
    let mut r = req("l", Profile::RootCa, None);
    r.not_after = Some("-1h".parse().unwrap());
    assert!(matches!(create(&r), Err(Error::EmptyValidity { .. })));
}

// === create: bad input ===

#[test]
fn create_refusals() {
    let root = mk_root();
    let other_root = root_named("other.example");
    let issuer = mk_issuer(&root);
    let leaf = mk_leaf(&issuer);
    let weak = weak_rsa_ca(&root);
    let no_sign = manual(
        "nosign.example",
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        vec![KeyUsagePurpose::DigitalSignature],
        None,
    );
    let expired = {
        let mut r = req("old.example", Profile::RootCa, None);
        r.now = NOW - Duration::days(800);
        r.not_after = Some("8760h".parse().unwrap());
        create(&r).unwrap()
    };
    let future = {
        let mut r = req("future.example", Profile::RootCa, None);
        r.not_before = Some("24h".parse().unwrap());
        create(&r).unwrap()
    };
    let p384 = {
        let mut r = req("p384", Profile::RootCa, None);
        r.key_type = KeyType::Ec(Curve::P384);
        create(&r).unwrap()
    };
    let with_key = |c: &Created, key: &Created| Created {
        cert_pem: c.cert_pem.clone(),
        key_pem: key.key_pem.clone(),
    };
    let swap_cert = |c: &Created, cert_pem: &str| Created {
        cert_pem: cert_pem.to_string(),
        key_pem: c.key_pem.clone(),
    };

    struct Case {
        name: &'static str,
        req: CreateRequest,
        want: fn(&Error) -> bool,
        says: &'static [&'static str],
    }
    let mut rsa1024 = req("x", Profile::RootCa, None);
    rsa1024.key_type = KeyType::Rsa { bits: 1024 };
    let mut root_with_ca = req("x", Profile::RootCa, None);
    root_with_ca.ca = Some(ca_input(&root));
    let cases = vec![
        Case {
            name: "root with a CA",
            req: root_with_ca,
            want: |e| matches!(e, Error::CaNotAllowed),
            says: &["self-signed"],
        },
        Case {
            name: "leaf without a CA",
            req: req("x", Profile::Leaf, None),
            want: |e| matches!(e, Error::CaRequired { .. }),
            says: &["leaf needs a signing CA"],
        },
        Case {
            name: "intermediate without a CA",
            req: req("x", Profile::IntermediateCa, None),
            want: |e| matches!(e, Error::CaRequired { .. }),
            says: &["intermediate-ca needs a signing CA"],
        },
        Case {
            name: "empty subject",
            req: req(" ", Profile::RootCa, None),
            want: |e| matches!(e, Error::EmptySubject),
            says: &["subject is empty"],
        },
        Case {
            name: "RSA 1024 requested",
            req: rsa1024,
            want: |e| matches!(e, Error::RsaSize { bits: 1024 }),
            says: &["1024", "at least 2048"],
        },
        Case {
            name: "CA certificate not PEM",
            req: req("x", Profile::Leaf, Some(&swap_cert(&root, "hello\n"))),
            want: |e| matches!(e, Error::NotPem { .. }),
            says: &["ca.crt is not PEM"],
        },
        Case {
            name: "CA certificate holds a key",
            req: req("x", Profile::Leaf, Some(&swap_cert(&root, &root.key_pem))),
            want: |e| matches!(e, Error::NoCertificate { .. }),
            says: &["ca.crt holds no CERTIFICATE", "PRIVATE KEY"],
        },
        Case {
            name: "CA key holds a certificate",
            req: req(
                "x",
                Profile::Leaf,
                Some(&with_key(
                    &root,
                    &Created {
                        cert_pem: String::new(),
                        key_pem: root.cert_pem.clone(),
                    },
                )),
            ),
            want: |e| matches!(e, Error::NoKey { .. }),
            says: &["ca.key holds no private key"],
        },
        Case {
            name: "key of another CA",
            req: req("x", Profile::Leaf, Some(&with_key(&root, &other_root))),
            want: |e| matches!(e, Error::KeyMismatch { .. }),
            says: &["ca.key does not match ca.crt"],
        },
        Case {
            name: "key of another algorithm",
            req: req("x", Profile::Leaf, Some(&with_key(&root, &p384))),
            want: |e| matches!(e, Error::KeyMismatch { .. }),
            says: &["ca.key does not match ca.crt"],
        },
        Case {
            name: "leaf as CA",
            req: req("x", Profile::Leaf, Some(&leaf)),
            want: |e| matches!(e, Error::NotCa { .. }),
            says: &["ca.crt (CN=web.example) is not a CA"],
        },
        Case {
            name: "CA without keyCertSign",
            req: req("x", Profile::Leaf, Some(&no_sign)),
            want: |e| matches!(e, Error::NoCertSign { .. }),
            says: &["ca.crt", "keyCertSign"],
        },
        Case {
            name: "pathlen 0 CA signing a CA",
            req: req("x", Profile::IntermediateCa, Some(&issuer)),
            want: |e| matches!(e, Error::PathLenZero { .. }),
            says: &["ca.crt (CN=identity.linkerd.cluster.local) has pathlen 0"],
        },
        Case {
            name: "expired CA",
            req: req("x", Profile::Leaf, Some(&expired)),
            want: |e| matches!(e, Error::Expired { .. }),
            says: &["ca.crt (CN=old.example) expired at 2025-03-"],
        },
        Case {
            name: "CA not yet valid",
            req: req("x", Profile::Leaf, Some(&future)),
            want: |e| matches!(e, Error::NotYetValid { .. }),
            says: &["ca.crt", "not valid before 2026-06-02T12:00:00Z"],
        },
        Case {
            name: "RSA 1024 CA",
            req: req("x", Profile::Leaf, Some(&weak)),
            want: |e| matches!(e, Error::WeakRsaKey { bits: 1024, .. }),
            says: &["ca.crt has an RSA key of 1024 bits"],
        },
    ];
    for case in cases {
        let err = create(&case.req).expect_err(case.name);
        assert!((case.want)(&err), "{}: wrong error: {err:?}", case.name);
        let msg = err.to_string();
        for s in case.says {
            assert!(msg.contains(s), "{}: {msg:?} lacks {s:?}", case.name);
        }
    }
    // The pathlen 0 issuer may still sign leaves.
    create(&req("x", Profile::Leaf, Some(&issuer))).unwrap();
}

fn root_named(cn: &str) -> Created {
    create(&req(cn, Profile::RootCa, None)).unwrap()
}

#[test]
fn encrypted_ca_key() {
    let root = mk_root();
    let encrypted = Created {
        cert_pem: root.cert_pem.clone(),
        key_pem: encrypt_key(&root.key_pem, "pw").unwrap(),
    };
    let mut r = req("x", Profile::Leaf, Some(&encrypted));
    assert!(matches!(create(&r), Err(Error::KeyEncrypted { .. })));
    r.ca.as_mut().unwrap().key_password = Some(b"nope".to_vec());
    assert!(matches!(create(&r), Err(Error::Decrypt { .. })));
    r.ca.as_mut().unwrap().key_password = Some(b"pw".to_vec());
    let l = create(&r).unwrap();
    verify_chain(&l.cert_pem, &root.cert_pem, NOW).unwrap();
}

// === verify_chain ===

#[test]
fn chains() {
    let root = mk_root();
    let issuer = mk_issuer(&root);
    let leaf = mk_leaf(&issuer);
    let report = verify_chain_report(
        "leaf.crt",
        &bundle(&[&leaf, &issuer]),
        "root.crt",
        &root.cert_pem,
        NOW,
    )
    .unwrap();
    assert_eq!(
        report.chain,
        [
            "CN=web.example",
            "CN=identity.linkerd.cluster.local",
            "CN=root.linkerd.cluster.local"
        ]
    );
    assert_eq!(report.expires, NOW + Duration::hours(24));
    verify_chain(&issuer.cert_pem, &root.cert_pem, NOW).unwrap();
    verify_chain(&root.cert_pem, &root.cert_pem, NOW).unwrap();
    // Roots in a bundle of several.
    let other = root_named("other.example");
    verify_chain(&issuer.cert_pem, &bundle(&[&other, &root]), NOW).unwrap();
}

#[test]
fn chain_failures() {
    let root = mk_root();
    let issuer = mk_issuer(&root);
    let leaf = mk_leaf(&issuer);
    let other = root_named("other.example");
    // Same name as the root, different key.
    let impostor = root_named("root.linkerd.cluster.local");
    // root (pathlen 1) -> A -> B -> leaf: two CAs below the root.
    let a = manual(
        "a.example",
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        ca_usages(),
        Some(&root),
    );
    let b = manual(
        "b.example",
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        ca_usages(),
        Some(&a),
    );
    let deep_leaf = mk_leaf(&b);
    // issuer (pathlen 0) -> X (a CA, made by hand) -> leaf.
    let x = manual(
        "x.example",
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        ca_usages(),
        Some(&issuer),
    );
    let x_leaf = mk_leaf(&x);
    // A leaf signed by a leaf.
    let leafs_child = manual("child.example", IsCa::ExplicitNoCa, vec![], Some(&leaf));

    let cases: Vec<(&str, String, String, OffsetDateTime, Matcher, &str)> = vec![
        (
            "leaf without its intermediate",
            leaf.cert_pem.clone(),
            root.cert_pem.clone(),
            NOW,
            |e| matches!(e, Error::NoIssuer { .. }),
            "no certificate in the bundle or in roots issued CN=web.example",
        ),
        (
            "another root",
            issuer.cert_pem.clone(),
            other.cert_pem.clone(),
            NOW,
            |e| matches!(e, Error::NoIssuer { .. }),
            "its issuer is CN=root.linkerd.cluster.local",
        ),
        (
            "same name, other key",
            issuer.cert_pem.clone(),
            impostor.cert_pem.clone(),
            NOW,
            |e| matches!(e, Error::BadSignature { .. }),
            "signature of CN=identity.linkerd.cluster.local does not verify",
        ),
        (
            "expired leaf",
            bundle(&[&leaf, &issuer]),
            root.cert_pem.clone(),
            NOW + Duration::days(2),
            |e| matches!(e, Error::Expired { .. }),
            "certificate (CN=web.example) expired at 2026-06-02T12:00:00Z",
        ),
        (
            "not yet valid",
            bundle(&[&leaf, &issuer]),
            root.cert_pem.clone(),
            NOW - Duration::hours(1),
            |e| matches!(e, Error::NotYetValid { .. }),
            "not valid before",
        ),
        (
            "root pathlen 1 with two CAs below",
            bundle(&[&deep_leaf, &b, &a]),
            root.cert_pem.clone(),
            NOW,
            |e| {
                matches!(
                    e,
                    Error::PathLenExceeded {
                        pathlen: 1,
                        below: 2,
                        ..
                    }
                )
            },
            "CN=root.linkerd.cluster.local has pathlen 1 but 2 CA certificate(s) follow it",
        ),
        (
            "pathlen 0 issuer with a CA below",
            bundle(&[&x_leaf, &x, &issuer]),
            root.cert_pem.clone(),
            NOW,
            |e| {
                matches!(
                    e,
                    Error::PathLenExceeded {
                        pathlen: 0,
                        below: 1,
                        ..
                    }
                )
            },
            "CN=identity.linkerd.cluster.local has pathlen 0",
        ),
        (
            "leaf signed by a leaf",
            bundle(&[&leafs_child, &leaf, &issuer]),
            root.cert_pem.clone(),
            NOW,
            |e| matches!(e, Error::NotCa { .. }),
            "(CN=web.example) is not a CA certificate",
        ),
        (
            "roots not PEM",
            leaf.cert_pem.clone(),
            "junk".into(),
            NOW,
            |e| matches!(e, Error::NotPem { .. }),
            "roots is not PEM",
        ),
    ];
    for (name, certs, roots, now, want, says) in cases {
        let err = verify_chain(&certs, &roots, now).expect_err(name);
        assert!(want(&err), "{name}: wrong error {err:?}");
        assert!(
            err.to_string().contains(says),
            "{name}: {err} lacks {says:?}"
        );
    }
    // The same chains pass where they should: the deep leaf through a root
    // without a pathlen limit is fine.
    let free_root = manual(
        "root.linkerd.cluster.local",
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        ca_usages(),
        None,
    );
    let a2 = manual(
        "a.example",
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        ca_usages(),
        Some(&free_root),
    );
    let b2 = manual(
        "b.example",
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        ca_usages(),
        Some(&a2),
    );
    verify_chain(
        &bundle(&[&mk_leaf(&b2), &b2, &a2]),
        &free_root.cert_pem,
        NOW,
    )
    .unwrap();
}

// === validate_issuer ===

#[test]
fn validate_issuer_cases() {
    let root = mk_root();
    let issuer = mk_issuer(&root);
    let summary = validate_issuer(&root.cert_pem, &issuer.cert_pem, &issuer.key_pem, NOW).unwrap();
    assert_eq!(summary.subject, "CN=identity.linkerd.cluster.local");
    assert_eq!(summary.anchor, "CN=root.linkerd.cluster.local");
    assert_eq!(summary.key_algorithm, "ECDSA P-256");
    assert_eq!(summary.path_len, Some(0));
    assert_eq!(summary.not_after, NOW + Duration::hours(8760));
    // A bundle of anchors where the second one signed the issuer.
    let other = root_named("other.example");
    validate_issuer(
        &bundle(&[&other, &root]),
        &issuer.cert_pem,
        &issuer.key_pem,
        NOW,
    )
    .unwrap();

    let foreign = issuer_of(&other);
    let leaf = mk_leaf(&issuer);
    let weak = weak_rsa_ca(&root);
    let expired_issuer = {
        let mut r = req("old-issuer", Profile::IntermediateCa, Some(&root));
        r.not_after = Some("1h".parse().unwrap());
        create(&r).unwrap()
    };
    let old_root = {
        let mut r = req("old-root", Profile::RootCa, None);
        r.now = NOW - Duration::days(400);
        r.not_after = Some("8760h".parse().unwrap());
        create(&r).unwrap()
    };
    let issuer_of_old_root = {
        let mut r = req("i", Profile::IntermediateCa, Some(&old_root));
        r.now = NOW - Duration::days(399);
        create(&r).unwrap()
    };
    let p0_anchor = issuer.clone();
    let under_p0 = manual(
        "under.example",
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
        ca_usages(),
        Some(&p0_anchor),
    );
    let encrypted_key = encrypt_key(&issuer.key_pem, "pw").unwrap();

    let later = NOW + Duration::hours(2);
    let cases: Vec<(&str, &str, &str, &str, OffsetDateTime, Matcher, &str)> = vec![
        (
            "issuer from another root",
            &root.cert_pem,
            &foreign.cert_pem,
            &foreign.key_pem,
            NOW,
            |e| matches!(e, Error::NotSignedByAnchor { .. }),
            "issued by CN=other.example) is not signed by any of the trust anchors (CN=root.linkerd.cluster.local)",
        ),
        (
            "issuer is not a CA",
            &root.cert_pem,
            &leaf.cert_pem,
            &leaf.key_pem,
            NOW,
            |e| matches!(e, Error::NotCa { .. }),
            "issuer certificate (CN=web.example) is not a CA certificate",
        ),
        (
            "mismatched key",
            &root.cert_pem,
            &issuer.cert_pem,
            &foreign.key_pem,
            NOW,
            |e| matches!(e, Error::KeyMismatch { .. }),
            "issuer key does not match issuer certificate",
        ),
        (
            "expired issuer",
            &root.cert_pem,
            &expired_issuer.cert_pem,
            &expired_issuer.key_pem,
            later,
            |e| matches!(e, Error::Expired { .. }),
            "issuer certificate (CN=old-issuer) expired at 2026-06-01T13:00:00Z",
        ),
        (
            "expired anchor",
            &old_root.cert_pem,
            &issuer_of_old_root.cert_pem,
            &issuer_of_old_root.key_pem,
            NOW,
            |e| matches!(e, Error::Expired { .. }),
            "trust anchor (CN=old-root) expired at",
        ),
        (
            "RSA 1024 issuer",
            &root.cert_pem,
            &weak.cert_pem,
            &weak.key_pem,
            NOW,
            |e| matches!(e, Error::WeakRsaKey { bits: 1024, .. }),
            "issuer certificate has an RSA key of 1024 bits",
        ),
        (
            "anchor with pathlen 0",
            &p0_anchor.cert_pem,
            &under_p0.cert_pem,
            &under_p0.key_pem,
            NOW,
            |e| matches!(e, Error::AnchorPathLenZero { .. }),
            "has pathlen 0",
        ),
        (
            "encrypted issuer key",
            &root.cert_pem,
            &issuer.cert_pem,
            &encrypted_key,
            NOW,
            |e| matches!(e, Error::KeyEncrypted { .. }),
            "issuer key is encrypted",
        ),
        (
            "anchors not PEM",
            "garbage",
            &issuer.cert_pem,
            &issuer.key_pem,
            NOW,
            |e| matches!(e, Error::NotPem { .. }),
            "trust anchors is not PEM",
        ),
        (
            "issuer file holds only a key",
            &root.cert_pem,
            &issuer.key_pem,
            &issuer.key_pem,
            NOW,
            |e| matches!(e, Error::NoCertificate { .. }),
            "issuer certificate holds no CERTIFICATE",
        ),
    ];
    for (name, anchors, cert, key, now, want, says) in cases {
        let err = validate_issuer(anchors, cert, key, now).expect_err(name);
        assert!(want(&err), "{name}: wrong error {err:?}");
        assert!(
            err.to_string().contains(says),
            "{name}: {err} lacks {says:?}"
        );
    }
}

fn issuer_of(root: &Created) -> Created {
    create(&req(
        "identity.linkerd.cluster.local",
        Profile::IntermediateCa,
        Some(root),
    ))
    .unwrap()
}

// === checks ===

#[test]
fn check_helpers() {
    let root = mk_root();
    let year = mk_issuer(&root);
    let month = {
        let mut r = req("month", Profile::IntermediateCa, Some(&root));
        r.not_after = Some("720h".parse().unwrap());
        create(&r).unwrap()
    };
    let weak = weak_rsa_ca(&root);
    let other = root_named("other.example");
    let short_root = {
        let mut r = req("short-root", Profile::RootCa, None);
        r.not_after = Some("720h".parse().unwrap());
        create(&r).unwrap()
    };

    assert!(matches!(
        checks::issuer_valid(&year.cert_pem, NOW),
        CheckOutcome::Ok(_)
    ));
    let warn = checks::issuer_valid(&month.cert_pem, NOW);
    assert!(matches!(warn, CheckOutcome::Warn(_)), "{warn:?}");
    assert!(warn.message().contains("expires in 30 days"), "{warn:?}");
    let gone = checks::issuer_valid(&month.cert_pem, NOW + Duration::days(31));
    assert!(
        gone.is_fail() && gone.message().contains("expired"),
        "{gone:?}"
    );

    assert!(matches!(
        checks::anchors_valid(&root.cert_pem, NOW),
        CheckOutcome::Ok(_)
    ));
    let warn = checks::anchors_valid(&bundle(&[&root, &short_root]), NOW);
    assert!(
        matches!(&warn, CheckOutcome::Warn(m) if m.contains("CN=short-root")),
        "{warn:?}"
    );

    let ok = checks::anchors_parse(&bundle(&[&root, &other]));
    assert_eq!(
        ok,
        CheckOutcome::Ok(
            "2 trust anchor(s): CN=root.linkerd.cluster.local; CN=other.example".into()
        )
    );
    assert!(checks::anchors_parse("nope").is_fail());
    assert!(checks::anchors_parse(&root.key_pem).is_fail());

    assert!(matches!(
        checks::issuer_signed_by_anchor(&root.cert_pem, &year.cert_pem),
        CheckOutcome::Ok(_)
    ));
    let fail = checks::issuer_signed_by_anchor(&other.cert_pem, &year.cert_pem);
    assert!(
        fail.is_fail() && fail.message().contains("not signed by any trust anchor"),
        "{fail:?}"
    );

    assert!(
        matches!(checks::issuer_algorithm(&year.cert_pem), CheckOutcome::Ok(m) if m.contains("ECDSA P-256"))
    );
    let fail = checks::issuer_algorithm(&weak.cert_pem);
    assert!(
        fail.is_fail() && fail.message().contains("1024 bits"),
        "{fail:?}"
    );
    assert!(checks::anchors_algorithm(&bundle(&[&root, &weak])).is_fail());

    let all = checks::run_all(&root.cert_pem, &year.cert_pem, NOW);
    assert_eq!(all.len(), 6);
    assert!(
        all.iter().all(|c| matches!(c.outcome, CheckOutcome::Ok(_))),
        "{all:?}"
    );
    let all = checks::run_all(&other.cert_pem, &month.cert_pem, NOW);
    assert!(all[3].outcome.is_fail(), "{all:?}");
    assert!(matches!(all[4].outcome, CheckOutcome::Warn(_)), "{all:?}");
}

// === inspect ===

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

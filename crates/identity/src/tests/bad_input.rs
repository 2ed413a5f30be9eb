//! What `create` refuses, and CA keys that are encrypted.

use super::*;

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

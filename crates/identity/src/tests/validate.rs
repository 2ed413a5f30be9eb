//! `validate_issuer`: an issuer against its trust anchors.

use super::*;

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

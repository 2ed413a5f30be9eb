//! `verify_chain`: chains that verify and the ways they fail.

use super::*;

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

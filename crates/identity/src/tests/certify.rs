//! Certify's rules: fields, CSRs, token users, validity and the signed leaf.

use std::sync::Arc;

use rcgen::{DistinguishedName, SanType};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;
use crate::certify::*;

const ID: &str = "web.emojivoto.serviceaccount.identity.tandem.cluster.local";

/// A CSR with this CN (None: no CN), these SANs and this key.
fn mk_csr(cn: Option<&str>, sans: Vec<SanType>, key: &KeyPair) -> Vec<u8> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.serialize_request(key).unwrap().der().to_vec()
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

fn good_csr() -> Vec<u8> {
    mk_csr(Some(ID), vec![dns(ID)], &p256())
}

#[test]
fn empty_fields_are_invalid_arguments() {
    /// (identity, token, CSR, the empty field named)
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], Option<&'a str>);
    let cases: &[Case] = &[
        (ID, b"t", b"c", None),
        ("", b"t", b"c", Some("identity")),
        (ID, b"", b"c", Some("token")),
        (ID, b"t", b"", Some("certificate_signing_request")),
        ("", b"", b"", Some("identity")),
    ];
    for (id, tok, csr, want) in cases {
        let got = check_fields(id, tok, csr);
        match want {
            None => assert_eq!(got, Ok(())),
            Some(field) => {
                let err = got.unwrap_err();
                assert_eq!(err, CertifyError::EmptyField { field });
                assert_eq!(err.code(), Code::InvalidArgument);
            }
        }
    }
}

#[test]
fn csr_rules() {
    let key = p256();
    let flipped = {
        let mut der = good_csr();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        der
    };
    let other = "api.emojivoto.serviceaccount.identity.tandem.cluster.local";
    type Want = fn(&CertifyError) -> bool;
    let names: Want = |e| matches!(e, CertifyError::CsrNames { .. });
    let cases: Vec<(&str, Vec<u8>, Option<Want>)> = vec![
        ("CN and SAN equal", good_csr(), None),
        ("no CN", mk_csr(None, vec![dns(ID)], &key), None),
        ("empty CN", mk_csr(Some(""), vec![dns(ID)], &key), None),
        (
            "other SAN",
            mk_csr(Some(ID), vec![dns(other)], &key),
            Some(names),
        ),
        (
            "other CN",
            mk_csr(Some(other), vec![dns(ID)], &key),
            Some(names),
        ),
        ("no SAN", mk_csr(Some(ID), vec![], &key), Some(names)),
        (
            "two DNS SANs",
            mk_csr(Some(ID), vec![dns(ID), dns(other)], &key),
            Some(names),
        ),
        (
            "an email SAN",
            mk_csr(
                Some(ID),
                vec![dns(ID), SanType::Rfc822Name("a@b.c".try_into().unwrap())],
                &key,
            ),
            Some(names),
        ),
        (
            "an IP SAN",
            mk_csr(
                Some(ID),
                vec![dns(ID), SanType::IpAddress([10, 0, 0, 1].into())],
                &key,
            ),
            Some(names),
        ),
        (
            "a URI SAN",
            mk_csr(
                Some(ID),
                vec![dns(ID), SanType::URI("spiffe://x/y".try_into().unwrap())],
                &key,
            ),
            Some(names),
        ),
        (
            "a P-384 key",
            mk_csr(
                Some(ID),
                vec![dns(ID)],
                &KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
            ),
            Some(|e| matches!(e, CertifyError::CsrKey { found } if found == "ECDSA P-384")),
        ),
        (
            "an Ed25519 key",
            mk_csr(
                Some(ID),
                vec![dns(ID)],
                &KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            ),
            Some(|e| matches!(e, CertifyError::CsrKey { .. })),
        ),
        (
            "a broken signature",
            flipped,
            Some(|e| *e == CertifyError::CsrSignature),
        ),
        (
            "garbage",
            vec![0x30, 0x03, 0x02, 0x01, 0x01],
            Some(|e| matches!(e, CertifyError::CsrParse { .. })),
        ),
        (
            "trailing bytes",
            [good_csr(), vec![0]].concat(),
            Some(|e| matches!(e, CertifyError::CsrParse { .. })),
        ),
    ];
    for (name, der, want) in cases {
        let got = check_csr(&der, ID);
        match want {
            None => assert_eq!(got.unwrap().identity(), ID, "{name}"),
            Some(want) => {
                let err = got.expect_err(name);
                assert!(want(&err), "{name}: {err}");
                assert_eq!(err.code(), Code::FailedPrecondition, "{name}: {err}");
            }
        }
    }
}

#[test]
fn a_new_key_and_csr_pass_the_rules() {
    let (key, csr) = new_key_and_csr(ID).unwrap();
    assert_eq!(check_csr(&csr, ID).unwrap().identity(), ID);
    assert!(KeyPair::try_from(key.as_slice()).is_ok());
    assert!(check_csr(&csr, "other.ns").is_err());
}

#[test]
fn token_users() {
    let cases: &[(&str, Option<&str>)] = &[
        (
            "system:serviceaccount:emojivoto:web",
            Some("web.emojivoto.serviceaccount.identity.tandem.cluster.local"),
        ),
        ("system:serviceaccount:emojivoto", None),
        ("system:serviceaccount:emojivoto:web:x", None),
        ("system:serviceaccount::web", None),
        ("system:serviceaccount:emojivoto:", None),
        ("system:node:n1:x", None),
        ("admin", None),
        ("", None),
        ("system:serviceaccount:Emoji:web", None),
    ];
    for (user, want) in cases {
        let got = identity_of_token_user(user, "tandem", "cluster.local");
        match want {
            Some(id) => assert_eq!(got.unwrap().as_str(), *id, "{user}"),
            None => {
                let err = got.expect_err(user);
                assert!(
                    matches!(&err, CertifyError::NotServiceAccount { user: u, .. } if u == user),
                    "{err}"
                );
                assert_eq!(err.code(), Code::Unauthenticated);
            }
        }
    }
    let web = identity_of_token_user(
        "system:serviceaccount:emojivoto:web",
        "tandem",
        "cluster.local",
    )
    .unwrap();
    assert_eq!(check_identity_matches(ID, &web), Ok(()));
    let err = check_identity_matches("x.y", &web).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[test]
fn codes() {
    let s = String::new;
    let cases = [
        (CertifyError::NoIssuer { reason: s() }, Code::Unavailable),
        (CertifyError::Review { reason: s() }, Code::Unavailable),
        (
            CertifyError::EmptyField { field: "token" },
            Code::InvalidArgument,
        ),
        (
            CertifyError::CsrParse { reason: s() },
            Code::FailedPrecondition,
        ),
        (CertifyError::CsrSignature, Code::FailedPrecondition),
        (
            CertifyError::IdentityMismatch {
                requested: s(),
                token: s(),
            },
            Code::FailedPrecondition,
        ),
        (
            CertifyError::TokenRefused { reason: s() },
            Code::Unauthenticated,
        ),
        (CertifyError::Sign { reason: s() }, Code::Internal),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err}");
    }
}

#[test]
fn validity_has_skew_and_stops_at_the_issuer() {
    let s = Duration::seconds;
    let h = Duration::hours;
    // (lifetime, issuer expires after NOW by, want not_after after NOW by)
    let cases = [
        (h(24), h(8760), h(24) + s(20)),
        (h(1), h(8760), h(1) + s(20)),
        (h(24), h(2), h(2)),
        (h(24), h(24) + s(5), h(24) + s(5)),
    ];
    for (lifetime, issuer, want) in cases {
        let (nb, na) = leaf_validity(NOW, lifetime, NOW + issuer);
        assert_eq!(nb, NOW - s(20));
        assert_eq!(na, NOW + want, "{lifetime} / {issuer}");
    }
}

fn loaded(root: &Created, issuer: &Created) -> LeafIssuer {
    LeafIssuer::from_pem(&root.cert_pem, &issuer.cert_pem, &issuer.key_pem, NOW).unwrap()
}

#[test]
fn the_leaf_verifies_up_to_the_anchor_for_its_name() {
    let root = mk_root();
    let issuer_pem = mk_issuer(&root);
    let issuer = loaded(&root, &issuer_pem);
    let csr = check_csr(&good_csr(), ID).unwrap();
    let leaf = sign_leaf(&issuer, &csr, NOW, DEFAULT_LIFETIME).unwrap();
    assert_eq!(leaf.not_after, NOW + DEFAULT_LIFETIME + CLOCK_SKEW);

    let info = inspect(&crate::pem::encode("CERTIFICATE", &leaf.der)).unwrap();
    assert_eq!(info.dns_names, [ID]);
    assert_eq!(info.common_name.as_deref(), Some(ID));
    assert!(!info.is_ca);
    assert_eq!(info.key_usage, ["digitalSignature", "keyEncipherment"]);
    assert_eq!(info.ext_key_usage, ["serverAuth", "clientAuth"]);
    assert_eq!(info.signature_algorithm, "ECDSA-SHA256");
    assert_eq!(info.not_before, NOW - CLOCK_SKEW);
    assert_eq!(info.not_after, leaf.not_after);
    assert_eq!(info.issuer, "CN=identity.linkerd.cluster.local");

    // webpki, as every peer's rustls will check it.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(
            crate::cert::load_der("root", &root.cert_pem).unwrap()[0].clone(),
        ))
        .unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        (NOW + Duration::minutes(1)).unix_timestamp() as u64,
    ));
    let end = CertificateDer::from(leaf.der.clone());
    let inter = [CertificateDer::from(issuer.cert_der().to_vec())];
    let verify = |name: &str| {
        verifier.verify_server_cert(
            &end,
            &inter,
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            at,
        )
    };
    verify(ID).unwrap();
    assert!(verify("api.emojivoto.serviceaccount.identity.tandem.cluster.local").is_err());
    // Without the issuer there is no path to the anchor.
    let alone = verifier.verify_server_cert(
        &end,
        &[],
        &ServerName::try_from(ID.to_string()).unwrap(),
        &[],
        at,
    );
    assert!(alone.is_err());
}

#[test]
fn an_expired_issuer_signs_nothing() {
    let root = mk_root();
    let issuer = loaded(&root, &mk_issuer(&root));
    let csr = check_csr(&good_csr(), ID).unwrap();
    let later = issuer.not_after() + Duration::seconds(1);
    let err = sign_leaf(&issuer, &csr, later, DEFAULT_LIFETIME).unwrap_err();
    assert!(matches!(err, CertifyError::NoIssuer { .. }), "{err}");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(issuer.check_valid(NOW).is_ok());

    // An hour before the issuer's end, the leaf stops with the issuer.
    let late = issuer.not_after() - Duration::hours(1);
    let leaf = sign_leaf(&issuer, &csr, late, DEFAULT_LIFETIME).unwrap();
    assert_eq!(leaf.not_after, issuer.not_after());
}

#[test]
fn a_bad_issuer_is_not_loaded() {
    let root = mk_root();
    let other = mk_root();
    let issuer = mk_issuer(&root);
    assert!(LeafIssuer::from_pem(&other.cert_pem, &issuer.cert_pem, &issuer.key_pem, NOW).is_err());
    assert!(LeafIssuer::from_pem(&root.cert_pem, &issuer.cert_pem, &root.key_pem, NOW).is_err());
    let expired = NOW + Duration::days(400);
    assert!(
        LeafIssuer::from_pem(&root.cert_pem, &issuer.cert_pem, &issuer.key_pem, expired).is_err()
    );
}

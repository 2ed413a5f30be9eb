//! Tests across modules, one submodule per behaviour; the shared builders
//! are here.

use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::*;

mod bad_input;
mod certify;
mod check;
mod create;
mod inspect;
mod validate;
mod validity;
mod verify;

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

fn root_named(cn: &str) -> Created {
    create(&req(cn, Profile::RootCa, None)).unwrap()
}

fn issuer_of(root: &Created) -> Created {
    create(&req(
        "identity.linkerd.cluster.local",
        Profile::IntermediateCa,
        Some(root),
    ))
    .unwrap()
}

//! Real certificates for the tests, in the shape crates/identity makes them:
//! a root (pathlen 1), an issuer (pathlen 0) and leaves with one DNS SAN,
//! all ECDSA P-256; leaves carry serverAuth + clientAuth.

use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::{Credentials, Name, TrustAnchors};

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
    pem: String,
}

fn ca_params(cn: &str, path_len: u8) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(10);
    params.not_after = now + Duration::days(3650);
    params
}

impl Ca {
    pub fn root(cn: &str) -> Ca {
        let params = ca_params(cn, 1);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            params,
            key,
        }
    }

    fn sign(&self, params: &CertificateParams, key: &KeyPair) -> rcgen::Certificate {
        params
            .signed_by(key, &Issuer::from_params(&self.params, &self.key))
            .unwrap()
    }

    pub fn intermediate(&self, cn: &str) -> Ca {
        let params = ca_params(cn, 0);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = self.sign(&params, &key);
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            params,
            key,
        }
    }
}

/// A root and the issuer it signed.
pub struct Pki {
    pub root: Ca,
    pub issuer: Ca,
}

impl Pki {
    pub fn new(label: &str) -> Pki {
        let root = Ca::root(&format!("{label} root"));
        let issuer = root.intermediate(&format!("{label} issuer"));
        Pki { root, issuer }
    }

    /// The root's PEM, as `LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS` holds it.
    pub fn root_pem(&self) -> &str {
        &self.root.pem
    }

    pub fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_pem(&self.root.pem).unwrap()
    }

    /// Credentials for `name`, valid from a minute ago for a day.
    pub fn creds(&self, name: &str) -> Credentials {
        let now = OffsetDateTime::now_utc();
        self.creds_valid(name, now - Duration::minutes(1), now + Duration::days(1))
    }

    pub fn creds_valid(
        &self,
        name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Credentials {
        let both = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.leaf(name, not_before, not_after, &both)
    }

    /// Credentials for `name` whose leaf allows only `ekus`.
    pub fn creds_for_purposes(&self, name: &str, ekus: &[ExtendedKeyUsagePurpose]) -> Credentials {
        let now = OffsetDateTime::now_utc();
        self.leaf(
            name,
            now - Duration::minutes(1),
            now + Duration::days(1),
            ekus,
        )
    }

    fn leaf(
        &self,
        name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        ekus: &[ExtendedKeyUsagePurpose],
    ) -> Credentials {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus.to_vec();
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = self.issuer.sign(&params, &key);
        Credentials {
            name: name.parse::<Name>().unwrap(),
            chain: vec![leaf.der().clone(), self.issuer.der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            not_after: SystemTime::from(not_after),
        }
    }
}

pub const WEB: &str = "web.emojivoto.serviceaccount.identity.tandem.cluster.local";
pub const EMOJI: &str = "emoji.emojivoto.serviceaccount.identity.tandem.cluster.local";
pub const VOTING: &str = "voting.emojivoto.serviceaccount.identity.tandem.cluster.local";

pub fn name(s: &str) -> Name {
    s.parse().unwrap()
}

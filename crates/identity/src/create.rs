//! Creating certificates with step's profiles.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom as _;
use time::{Duration, OffsetDateTime};

use crate::cert::{self, Cert};
use crate::key::{self, PrivateKey};
use crate::{Error, TimeSpec};

/// step's certificate profiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    /// A self-signed CA with pathlen 1: the trust anchor.
    RootCa,
    /// A CA with pathlen 0, signed by a root: a cluster's issuer.
    IntermediateCa,
    /// An end-entity certificate for TLS servers and clients.
    #[default]
    Leaf,
}

impl Profile {
    /// The lifetime when no --not-after is given (as step).
    pub fn default_lifetime(self) -> Duration {
        match self {
            Profile::RootCa | Profile::IntermediateCa => Duration::days(3650),
            Profile::Leaf => Duration::hours(24),
        }
    }

    /// Whether the profile makes a CA certificate.
    pub fn is_ca(self) -> bool {
        !matches!(self, Profile::Leaf)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::RootCa => "root-ca",
            Profile::IntermediateCa => "intermediate-ca",
            Profile::Leaf => "leaf",
        })
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "root-ca" => Ok(Profile::RootCa),
            "intermediate-ca" => Ok(Profile::IntermediateCa),
            "leaf" => Ok(Profile::Leaf),
            other => Err(format!(
                "unknown profile {other:?}: use root-ca, intermediate-ca or leaf"
            )),
        }
    }
}

/// An elliptic curve for ECDSA keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (the default, and what Linkerd proxies use).
    #[default]
    P256,
    /// NIST P-384.
    P384,
}

/// The kind of key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on a curve.
    Ec(Curve),
    /// RSA with a modulus of `bits` bits (2048 to 8192).
    Rsa {
        /// Modulus size.
        bits: u32,
    },
}

impl Default for KeyType {
    fn default() -> Self {
        KeyType::Ec(Curve::P256)
    }
}

/// The CA that signs a new certificate.
#[derive(Clone)]
pub struct CaInput {
    /// The CA certificate, PEM; its first certificate is the signer.
    pub cert_pem: String,
    /// The CA's private key, PEM (PKCS#8, SEC1, PKCS#1 or encrypted PKCS#8).
    pub key_pem: String,
    /// The password of an encrypted CA key.
    pub key_password: Option<Vec<u8>>,
    /// How messages name the certificate (a file name, say).
    pub cert_name: String,
    /// How messages name the key.
    pub key_name: String,
}

impl fmt::Debug for CaInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key or its password.
        f.debug_struct("CaInput")
            .field("cert_name", &self.cert_name)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The subject's common name.
    pub subject: String,
    /// The profile.
    pub profile: Profile,
    /// The new key's type.
    pub key_type: KeyType,
    /// Subject alternative names: IPs become IP SANs, anything else DNS SANs.
    /// A leaf with none gets its subject as its one SAN.
    pub sans: Vec<String>,
    /// Start of validity (default: now).
    pub not_before: Option<TimeSpec>,
    /// End of validity. Default: the profile's lifetime from now, cut to the
    /// signing CA's expiry. An explicit value beyond the CA's expiry is refused.
    pub not_after: Option<TimeSpec>,
    /// The signing CA; required for intermediate-ca and leaf, refused for root-ca.
    pub ca: Option<CaInput>,
    /// The current time.
    pub now: OffsetDateTime,
}

impl CreateRequest {
    /// A request with step's defaults: ECDSA P-256, no SANs, default validity, now.
    pub fn new(subject: impl Into<String>, profile: Profile) -> Self {
        CreateRequest {
            subject: subject.into(),
            profile,
            key_type: KeyType::default(),
            sans: Vec::new(),
            not_before: None,
            not_after: None,
            ca: None,
            now: OffsetDateTime::now_utc(),
        }
    }
}

/// A new certificate and its key.
#[derive(Clone)]
pub struct Created {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, plain PKCS#8 PEM ("PRIVATE KEY"); see [`crate::encrypt_key`].
    pub key_pem: String,
}

impl fmt::Debug for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Created")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Creates a certificate and a new key as `req` says.
///
/// Refuses, each with its own [`Error`]: a root with a CA, a non-root
/// without one, a signing CA that is not a CA, may not sign certificates, has
/// expired or is not yet valid, uses a weak or unsupported key, has pathlen 0
/// while asked to sign a CA, or whose key does not match it; an explicit
/// not-after beyond the CA's expiry; and an empty validity.
pub fn create(req: &CreateRequest) -> Result<Created, Error> {
    if req.subject.trim().is_empty() {
        return Err(Error::EmptySubject);
    }
    match (req.profile, &req.ca) {
        (Profile::RootCa, Some(_)) => return Err(Error::CaNotAllowed),
        (Profile::IntermediateCa | Profile::Leaf, None) => {
            return Err(Error::CaRequired {
                profile: req.profile,
            });
        }
        _ => {}
    }
    if let KeyType::Rsa { bits } = req.key_type {
        key::check_rsa_size(bits)?;
    }
    let sans = sans(req)?;

    // Certificates hold whole seconds; so do the times in our messages.
    let now = req.now.replace_nanosecond(0).unwrap_or(req.now);
    let not_before = match &req.not_before {
        Some(spec) => spec.resolve(now)?,
        None => now,
    };

    // Read and check the signing CA before spending time on a new key.
    let ca_ders = match &req.ca {
        Some(ca) => Some(cert::load_der(&ca.cert_name, &ca.cert_pem)?),
        None => None,
    };
    let signer = match (&req.ca, &ca_ders) {
        (Some(ca), Some(ders)) => Some(check_signer(req, ca, ders)?),
        _ => None,
    };
    let ca_not_after = signer.as_ref().map(|s| s.not_after);

    let not_after = match &req.not_after {
        Some(spec) => {
            let t = spec.resolve(now)?;
            if let (Some(ca), Some(ca_not_after)) = (&req.ca, ca_not_after)
                && t > ca_not_after
            {
                return Err(Error::BeyondIssuerExpiry {
                    what: ca.cert_name.clone(),
                    not_after: t,
                    issuer_not_after: ca_not_after,
                });
            }
            t
        }
        None => {
            let t = now
                .checked_add(req.profile.default_lifetime())
                .ok_or_else(|| Error::InvalidTime {
                    input: "the default lifetime".into(),
                    reason: "out of range".into(),
                })?;
            // Unasked, never outlive the CA: cut the default instead of failing.
            match ca_not_after {
                Some(ca) if ca < t => ca,
                _ => t,
            }
        }
    };
    if not_after <= not_before {
        return Err(Error::EmptyValidity {
            not_before,
            not_after,
        });
    }

    let key = PrivateKey::generate(req.key_type)?;
    let key_pair = key.key_pair("the new key")?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, req.subject.as_str());
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial()?);
    params.not_before = not_before;
    params.not_after = not_after;
    params.subject_alt_names = sans;
    let rsa = matches!(req.key_type, KeyType::Rsa { .. });
    apply_profile(&mut params, req.profile, rsa);
    params.use_authority_key_identifier_extension = signer.is_some();

    let sign_err = |e: rcgen::Error| Error::Crypto {
        action: "signing the certificate",
        reason: e.to_string(),
    };
    let cert = match (signer, &ca_ders) {
        (Some(signer), Some(ders)) => {
            let issuer = Issuer::from_ca_cert_der(&ders[0].as_slice().into(), signer.key_pair)
                .map_err(sign_err)?;
            params.signed_by(&key_pair, &issuer).map_err(sign_err)?
        }
        _ => params.self_signed(&key_pair).map_err(sign_err)?,
    };
    Ok(Created {
        cert_pem: crate::pem::encode("CERTIFICATE", cert.der()),
        key_pem: key.to_pem(),
    })
}

/// Sets the CA flag, pathlen, key usages and extended key usages of a profile.
fn apply_profile(params: &mut CertificateParams, profile: Profile, rsa: bool) {
    match profile {
        Profile::RootCa | Profile::IntermediateCa => {
            let pathlen = if profile == Profile::RootCa { 1 } else { 0 };
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(pathlen));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.extended_key_usages = Vec::new();
        }
        Profile::Leaf => {
            // ExplicitNoCa writes CA:FALSE and, with it, the SubjectKeyIdentifier.
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            if rsa {
                params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
            }
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
    }
}

/// The checked signing CA.
struct Signer {
    key_pair: rcgen::KeyPair,
    not_after: OffsetDateTime,
}

fn check_signer(req: &CreateRequest, ca: &CaInput, ders: &[Vec<u8>]) -> Result<Signer, Error> {
    let what = ca.cert_name.as_str();
    let cert = Cert::parse(what, 1, &ders[0])?;
    cert.key_alg().check_allowed(what)?;
    cert.check_ca(what)?;
    cert.check_validity(what, req.now)?;
    if req.profile.is_ca() && cert.path_len() == Some(0) {
        return Err(Error::PathLenZero {
            what: what.to_string(),
            subject: cert.subject(),
        });
    }
    let key = PrivateKey::from_pem(&ca.key_name, &ca.key_pem, ca.key_password.as_deref())?;
    if key.alg != cert.key_alg() {
        return Err(Error::KeyMismatch {
            key: ca.key_name.clone(),
            cert: ca.cert_name.clone(),
        });
    }
    let key_pair = key.key_pair(&ca.key_name)?;
    key::check_matches(&key, &key_pair, &ca.key_name, &cert, what)?;
    Ok(Signer {
        key_pair,
        not_after: cert.not_after(),
    })
}

fn sans(req: &CreateRequest) -> Result<Vec<SanType>, Error> {
    let mut names: Vec<&str> = req.sans.iter().map(String::as_str).collect();
    if names.is_empty() && req.profile == Profile::Leaf {
        names.push(req.subject.as_str());
    }
    let mut out: Vec<SanType> = Vec::new();
    for name in names {
        let name = name.trim();
        let san = match IpAddr::from_str(name) {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                if name.is_empty() {
                    return Err(Error::InvalidSan {
                        san: name.to_string(),
                        reason: "empty".into(),
                    });
                }
                let dns = name.try_into().map_err(|_| Error::InvalidSan {
                    san: name.to_string(),
                    reason: "a DNS name must be ASCII (use the punycode form)".into(),
                })?;
                SanType::DnsName(dns)
            }
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

/// 158 random bits in a positive 20-byte number (the RFC 5280 maximum length).
pub(crate) fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 20];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Crypto {
            action: "drawing a serial number",
            reason: "the system random generator failed".into(),
        })?;
    // Clear the sign bit and set the next one, so the DER INTEGER is
    // positive and needs no padding byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

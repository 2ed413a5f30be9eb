//! Reading X.509 certificates: the facts the rest of the crate decides on.

use std::fmt;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::Error;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P521: &str = "1.3.132.0.35";

/// A public key algorithm, as far as tandem cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyAlg {
    EcP256,
    EcP384,
    Rsa { bits: usize },
    Other(String),
}

impl KeyAlg {
    /// The algorithm of a SubjectPublicKeyInfo.
    pub fn of_spki(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> KeyAlg {
        let alg = spki.algorithm.algorithm.to_id_string();
        match alg.as_str() {
            OID_EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                match curve.as_deref() {
                    Some(OID_P256) => KeyAlg::EcP256,
                    Some(OID_P384) => KeyAlg::EcP384,
                    Some(OID_P521) => KeyAlg::Other("ECDSA P-521".into()),
                    Some(other) => KeyAlg::Other(format!("ECDSA on curve {other}")),
                    None => KeyAlg::Other("ECDSA without a named curve".into()),
                }
            }
            OID_RSA => match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => KeyAlg::Rsa {
                    bits: bit_len(rsa.modulus),
                },
                _ => KeyAlg::Other("RSA (unreadable key)".into()),
            },
            OID_ED25519 => KeyAlg::Other("Ed25519".into()),
            other => KeyAlg::Other(format!("key algorithm {other}")),
        }
    }

    /// Whether tandem accepts this algorithm for CAs, and if not, why.
    pub fn check_allowed(&self, what: &str) -> Result<(), Error> {
        match self {
            KeyAlg::EcP256 | KeyAlg::EcP384 => Ok(()),
            KeyAlg::Rsa { bits } if *bits >= 2048 => Ok(()),
            KeyAlg::Rsa { bits } => Err(Error::WeakRsaKey {
                what: what.to_string(),
                bits: *bits,
            }),
            KeyAlg::Other(name) => Err(Error::UnsupportedAlgorithm {
                what: what.to_string(),
                algorithm: name.clone(),
            }),
        }
    }

    /// Key size in bits (0 when unknown).
    pub fn bits(&self) -> usize {
        match self {
            KeyAlg::EcP256 => 256,
            KeyAlg::EcP384 => 384,
            KeyAlg::Rsa { bits } => *bits,
            KeyAlg::Other(_) => 0,
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlg::EcP256 => f.write_str("ECDSA P-256"),
            KeyAlg::EcP384 => f.write_str("ECDSA P-384"),
            KeyAlg::Rsa { bits } => write!(f, "RSA {bits}"),
            KeyAlg::Other(name) => f.write_str(name),
        }
    }
}

/// Bit length of a big-endian unsigned integer (leading zero bytes allowed).
pub(crate) fn bit_len(bytes: &[u8]) -> usize {
    let trimmed: &[u8] = match bytes.iter().position(|b| *b != 0) {
        Some(i) => &bytes[i..],
        None => return 0,
    };
    (trimmed.len() - 1) * 8 + (8 - trimmed[0].leading_zeros() as usize)
}

/// A parsed certificate that remembers where it came from.
pub(crate) struct Cert<'a> {
    pub x: X509Certificate<'a>,
    pub der: &'a [u8],
}

impl<'a> Cert<'a> {
    /// Parses one DER certificate; `index` counts from 1 for messages.
    pub fn parse(what: &str, index: usize, der: &'a [u8]) -> Result<Self, Error> {
        let bad = |reason: String| Error::BadCertificate {
            what: what.to_string(),
            index,
            reason,
        };
        let (rest, x) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} bytes of trailing data", rest.len())));
        }
        // Read the extensions once here, so that later accessors cannot fail
        // on duplicates or bad encodings.
        x.basic_constraints().map_err(|e| bad(e.to_string()))?;
        x.key_usage().map_err(|e| bad(e.to_string()))?;
        x.extended_key_usage().map_err(|e| bad(e.to_string()))?;
        x.subject_alternative_name()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Cert { x, der })
    }

    pub fn subject(&self) -> String {
        name_string(self.x.subject())
    }

    pub fn issuer(&self) -> String {
        name_string(self.x.issuer())
    }

    pub fn not_before(&self) -> OffsetDateTime {
        self.x.validity().not_before.to_datetime()
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.x.validity().not_after.to_datetime()
    }

    pub fn key_alg(&self) -> KeyAlg {
        KeyAlg::of_spki(self.x.public_key())
    }

    /// The basicConstraints cA flag.
    pub fn is_ca(&self) -> bool {
        matches!(self.x.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
    }

    /// The pathLenConstraint of a CA.
    pub fn path_len(&self) -> Option<u32> {
        match self.x.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => bc.value.path_len_constraint,
            _ => None,
        }
    }

    /// False only when a keyUsage extension is present and lacks keyCertSign.
    pub fn may_sign_certs(&self) -> bool {
        match self.x.key_usage() {
            Ok(Some(ku)) => ku.value.key_cert_sign(),
            _ => true,
        }
    }

    /// Whether `self` names `issuer` as its issuer.
    pub fn issuer_name_matches(&self, issuer: &Cert<'_>) -> bool {
        let (a, b) = (self.x.issuer(), issuer.x.subject());
        a.as_raw() == b.as_raw() || name_string(a) == name_string(b)
    }

    /// Whether `issuer`'s key made `self`'s signature.
    pub fn signed_by(&self, issuer: &Cert<'_>) -> bool {
        self.x.verify_signature(Some(issuer.x.public_key())).is_ok()
    }

    pub fn is_self_issued(&self) -> bool {
        self.issuer_name_matches(self)
    }

    /// Checks notBefore <= now <= notAfter.
    pub fn check_validity(&self, what: &str, now: OffsetDateTime) -> Result<(), Error> {
        if now > self.not_after() {
            return Err(Error::Expired {
                what: what.to_string(),
                subject: self.subject(),
                not_after: self.not_after(),
            });
        }
        if now < self.not_before() {
            return Err(Error::NotYetValid {
                what: what.to_string(),
                subject: self.subject(),
                not_before: self.not_before(),
            });
        }
        Ok(())
    }

    /// Checks that this certificate may act as a CA.
    pub fn check_ca(&self, what: &str) -> Result<(), Error> {
        if !self.is_ca() {
            return Err(Error::NotCa {
                what: what.to_string(),
                subject: self.subject(),
            });
        }
        if !self.may_sign_certs() {
            return Err(Error::NoCertSign {
                what: what.to_string(),
                subject: self.subject(),
            });
        }
        Ok(())
    }

    /// The raw public key bits (for comparing with a private key's).
    pub fn public_key_bits(&self) -> &[u8] {
        &self.x.public_key().subject_public_key.data
    }
}

/// "CN=foo, O=bar", or "(empty)" for an empty name.
pub(crate) fn name_string(name: &x509_parser::x509::X509Name<'_>) -> String {
    let s = name.to_string();
    if s.is_empty() {
        "(empty name)".into()
    } else {
        s
    }
}

/// Reads every certificate in a PEM input as DER.
pub(crate) fn load_der(what: &str, pem: &str) -> Result<Vec<Vec<u8>>, Error> {
    crate::pem::certificates(what, pem.as_bytes())
}

/// Parses a list of DER certificates.
pub(crate) fn parse_all<'a>(what: &str, ders: &'a [Vec<u8>]) -> Result<Vec<Cert<'a>>, Error> {
    ders.iter()
        .enumerate()
        .map(|(i, der)| Cert::parse(what, i + 1, der))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_lengths() {
        let cases: &[(&[u8], usize)] = &[
            (&[], 0),
            (&[0, 0], 0),
            (&[1], 1),
            (&[0x80], 8),
            (&[0x00, 0x80, 0x00], 16),
            (&[0x7f, 0xff], 15),
        ];
        for (bytes, want) in cases {
            assert_eq!(bit_len(bytes), *want, "{bytes:?}");
        }
    }

    #[test]
    fn garbage_der_is_an_error() {
        let cases: &[&[u8]] = &[&[], &[0x30], &[0x30, 0x03, 0x02, 0x01, 0x01], &[0xff; 64]];
        for der in cases {
            let err = Cert::parse("x.crt", 1, der).err().unwrap();
            assert!(matches!(err, Error::BadCertificate { .. }), "{err}");
            assert!(
                err.to_string().starts_with("x.crt: certificate #1"),
                "{err}"
            );
        }
    }
}

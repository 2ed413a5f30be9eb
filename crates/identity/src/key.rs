//! Private keys: generate, read (PKCS#8, SEC1, PKCS#1, encrypted PKCS#8),
//! encrypt, and match against a certificate.

use pkcs8::der::asn1::AnyRef;
use pkcs8::der::{Decode, Encode};
use pkcs8::{AlgorithmIdentifierRef, EncryptedPrivateKeyInfo, ObjectIdentifier, PrivateKeyInfo};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256};
use ring::rand::SecureRandom as _;
use rsa::pkcs8::EncodePrivateKey as _;

use crate::cert::{Cert, KeyAlg, bit_len};
use crate::{Curve, Error, KeyType, pem};

const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// PBKDF2 rounds for encrypted keys: well above OpenSSL's default (2048),
/// and still quick to decrypt.
const PBKDF2_ITERATIONS: u32 = 100_000;

/// A private key as PKCS#8 DER, with its algorithm.
pub(crate) struct PrivateKey {
    pub der: Vec<u8>,
    pub alg: KeyAlg,
}

impl PrivateKey {
    /// Generates a new key.
    pub fn generate(key_type: KeyType) -> Result<Self, Error> {
        let crypto = |action: &'static str| {
            move |e: &dyn std::fmt::Display| Error::Crypto {
                action,
                reason: e.to_string(),
            }
        };
        match key_type {
            KeyType::Ec(curve) => {
                let (alg, key_alg) = match curve {
                    Curve::P256 => (&PKCS_ECDSA_P256_SHA256, KeyAlg::EcP256),
                    Curve::P384 => (&PKCS_ECDSA_P384_SHA384, KeyAlg::EcP384),
                };
                let kp = KeyPair::generate_for(alg)
                    .map_err(|e| crypto("generating the ECDSA key")(&e))?;
                Ok(PrivateKey {
                    der: kp.serialize_der(),
                    alg: key_alg,
                })
            }
            KeyType::Rsa { bits } => {
                check_rsa_size(bits)?;
                // ring cannot generate RSA keys, so the rsa crate does.
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits as usize)
                    .map_err(|e| crypto("generating the RSA key")(&e))?;
                let der = key
                    .to_pkcs8_der()
                    .map_err(|e| crypto("encoding the RSA key")(&e))?;
                Ok(PrivateKey {
                    der: der.as_bytes().to_vec(),
                    alg: KeyAlg::Rsa {
                        bits: bits as usize,
                    },
                })
            }
        }
    }

    /// Reads a key from PEM; `password` decrypts an ENCRYPTED PRIVATE KEY.
    pub fn from_pem(what: &str, input: &str, password: Option<&[u8]>) -> Result<Self, Error> {
        let bad = |reason: String| Error::BadKey {
            what: what.to_string(),
            reason,
        };
        let blocks = pem::parse(what, input.as_bytes())?;
        let block = blocks
            .iter()
            .find(|b| {
                matches!(
                    b.label.as_str(),
                    "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY"
                )
            })
            .ok_or_else(|| Error::NoKey {
                what: what.to_string(),
                found: pem::labels(&blocks),
            })?;
        let pkcs8 = match block.label.as_str() {
            "PRIVATE KEY" => block.der.clone(),
            "ENCRYPTED PRIVATE KEY" => {
                let password = password.ok_or_else(|| Error::KeyEncrypted {
                    what: what.to_string(),
                })?;
                decrypt(what, &block.der, password)?
            }
            "EC PRIVATE KEY" => sec1_to_pkcs8(&block.der).map_err(bad)?,
            // The only label left is "RSA PRIVATE KEY" (PKCS#1).
            _ => wrap(OID_RSA, AnyRef::NULL, &block.der).map_err(bad)?,
        };
        Self::from_pkcs8(what, pkcs8)
    }

    fn from_pkcs8(what: &str, der: Vec<u8>) -> Result<Self, Error> {
        let bad = |reason: String| Error::BadKey {
            what: what.to_string(),
            reason,
        };
        let info = PrivateKeyInfo::from_der(&der).map_err(|e| bad(format!("not PKCS#8: {e}")))?;
        let oid = info.algorithm.oid;
        let alg = if oid == OID_EC_PUBLIC_KEY {
            match info.algorithm.parameters_oid() {
                Ok(c) if c == OID_P256 => KeyAlg::EcP256,
                Ok(c) if c == OID_P384 => KeyAlg::EcP384,
                Ok(c) => KeyAlg::Other(format!("ECDSA on curve {c}")),
                Err(_) => KeyAlg::Other("ECDSA without a named curve".into()),
            }
        } else if oid == OID_RSA {
            let rsa = rsa::pkcs1::RsaPrivateKey::from_der(info.private_key)
                .map_err(|e| bad(format!("not an RSA key: {e}")))?;
            KeyAlg::Rsa {
                bits: bit_len(rsa.modulus.as_bytes()),
            }
        } else if oid == OID_ED25519 {
            KeyAlg::Other("Ed25519".into())
        } else {
            KeyAlg::Other(format!("key algorithm {oid}"))
        };
        // ring reads only version 1 PKCS#8; drop the optional public key of v2.
        let der = if info.public_key.is_some() {
            PrivateKeyInfo::new(info.algorithm, info.private_key)
                .to_der()
                .map_err(|e| bad(e.to_string()))?
        } else {
            der
        };
        Ok(PrivateKey { der, alg })
    }

    /// The rcgen signing key; refuses algorithms tandem does not accept.
    pub fn key_pair(&self, what: &str) -> Result<KeyPair, Error> {
        self.alg.check_allowed(what)?;
        let alg = match self.alg {
            KeyAlg::EcP256 => &PKCS_ECDSA_P256_SHA256,
            KeyAlg::EcP384 => &PKCS_ECDSA_P384_SHA384,
            _ => &PKCS_RSA_SHA256,
        };
        KeyPair::from_pkcs8_der_and_sign_algo(&self.der.as_slice().into(), alg).map_err(|e| {
            Error::BadKey {
                what: what.to_string(),
                reason: e.to_string(),
            }
        })
    }

    /// Plain PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        pem::encode("PRIVATE KEY", &self.der)
    }
}

/// Checks that `key` (named `key_what`) belongs to `cert` (named `cert_what`).
pub(crate) fn check_matches(
    key: &PrivateKey,
    key_pair: &KeyPair,
    key_what: &str,
    cert: &Cert<'_>,
    cert_what: &str,
) -> Result<(), Error> {
    if key.alg != cert.key_alg() || key_pair.public_key_raw() != cert.public_key_bits() {
        return Err(Error::KeyMismatch {
            key: key_what.to_string(),
            cert: cert_what.to_string(),
        });
    }
    Ok(())
}

pub(crate) fn check_rsa_size(bits: u32) -> Result<(), Error> {
    // ring signs with 2048 to 8192 bit keys.
    if !(2048..=8192).contains(&bits) {
        return Err(Error::RsaSize { bits });
    }
    Ok(())
}

/// Wraps a SEC1 ECPrivateKey into PKCS#8.
fn sec1_to_pkcs8(der: &[u8]) -> Result<Vec<u8>, String> {
    let key = sec1::EcPrivateKey::from_der(der).map_err(|e| format!("not a SEC1 EC key: {e}"))?;
    let curve = key
        .parameters
        .and_then(|p| p.named_curve())
        .ok_or("the EC key does not name its curve")?;
    wrap(OID_EC_PUBLIC_KEY, AnyRef::from(&curve), der)
}

fn wrap(oid: ObjectIdentifier, parameters: AnyRef<'_>, key: &[u8]) -> Result<Vec<u8>, String> {
    PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid,
            parameters: Some(parameters),
        },
        key,
    )
    .to_der()
    .map_err(|e| e.to_string())
}

fn decrypt(what: &str, der: &[u8], password: &[u8]) -> Result<Vec<u8>, Error> {
    let fail = |reason: String| Error::Decrypt {
        what: what.to_string(),
        reason,
    };
    let info = EncryptedPrivateKeyInfo::from_der(der).map_err(|e| fail(e.to_string()))?;
    let doc = info.decrypt(password).map_err(|e| fail(e.to_string()))?;
    Ok(doc.as_bytes().to_vec())
}

/// Encrypts a plain PKCS#8 PEM key with `password` into an
/// "ENCRYPTED PRIVATE KEY" PEM (PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC),
/// which `openssl pkey -passin` and step read.
pub fn encrypt_key(key_pem: &str, password: impl AsRef<[u8]>) -> Result<String, Error> {
    let password = password.as_ref();
    if password.is_empty() {
        return Err(Error::EmptyPassword);
    }
    let key = PrivateKey::from_pem("the key", key_pem, None)?;
    let info = PrivateKeyInfo::from_der(&key.der).map_err(|e| Error::Encrypt {
        reason: e.to_string(),
    })?;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    let rng = ring::rand::SystemRandom::new();
    rng.fill(&mut salt)
        .and_then(|()| rng.fill(&mut iv))
        .map_err(|_| Error::Encrypt {
            reason: "the system random generator failed".into(),
        })?;
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
            .map_err(|e| Error::Encrypt {
                reason: e.to_string(),
            })?;
    let doc = info
        .encrypt_with_params(params, password)
        .map_err(|e| Error::Encrypt {
            reason: e.to_string(),
        })?;
    Ok(pem::encode("ENCRYPTED PRIVATE KEY", doc.as_bytes()))
}

/// Reads a key in any supported PEM form (PKCS#8, encrypted PKCS#8 with
/// `password`, SEC1 "EC PRIVATE KEY", PKCS#1 "RSA PRIVATE KEY") and returns
/// it as plain PKCS#8 PEM.
pub fn decrypt_key(key_pem: &str, password: Option<&[u8]>) -> Result<String, Error> {
    Ok(PrivateKey::from_pem("the key", key_pem, password)?.to_pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip() {
        for (kt, want) in [
            (KeyType::Ec(Curve::P256), KeyAlg::EcP256),
            (KeyType::Ec(Curve::P384), KeyAlg::EcP384),
        ] {
            let key = PrivateKey::generate(kt).unwrap();
            assert_eq!(key.alg, want);
            let back = PrivateKey::from_pem("k", &key.to_pem(), None).unwrap();
            assert_eq!(back.alg, want);
            assert_eq!(back.der, key.der);
            back.key_pair("k").unwrap();
        }
    }

    #[test]
    fn rsa_sizes() {
        for bits in [0, 512, 1024, 2047, 8193, 16384] {
            let err = PrivateKey::generate(KeyType::Rsa { bits }).err().unwrap();
            assert!(matches!(err, Error::RsaSize { .. }), "{bits}: {err}");
            assert!(err.to_string().contains("at least 2048"), "{err}");
        }
    }

    #[test]
    fn encrypt_then_decrypt() {
        let key = PrivateKey::generate(KeyType::Ec(Curve::P256)).unwrap();
        let enc = encrypt_key(&key.to_pem(), "s3cret").unwrap();
        assert!(enc.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        assert_eq!(
            decrypt_key(&enc, Some(b"s3cret")).unwrap(),
            key.to_pem(),
            "decrypts to the same key"
        );
        let err = PrivateKey::from_pem("k.key", &enc, Some(b"wrong"))
            .err()
            .unwrap();
        assert!(matches!(err, Error::Decrypt { .. }), "{err}");
        let err = PrivateKey::from_pem("k.key", &enc, None).err().unwrap();
        assert!(matches!(err, Error::KeyEncrypted { .. }), "{err}");
        assert!(matches!(
            encrypt_key(&key.to_pem(), ""),
            Err(Error::EmptyPassword)
        ));
    }

    #[test]
    fn sec1_and_pkcs1_keys_are_read() {
        // The SEC1 form of a generated P-256 key is the OCTET STRING inside its PKCS#8.
        let key = PrivateKey::generate(KeyType::Ec(Curve::P256)).unwrap();
        let info = PrivateKeyInfo::from_der(&key.der).unwrap();
        let ec = sec1::EcPrivateKey::from_der(info.private_key).unwrap();
        // SEC1 files name their curve; the key inside PKCS#8 need not.
        let with_curve = sec1::EcPrivateKey {
            parameters: Some(sec1::EcParameters::NamedCurve(OID_P256)),
            ..ec.clone()
        };
        let sec1_pem = pem::encode("EC PRIVATE KEY", &with_curve.to_der().unwrap());
        let back = PrivateKey::from_pem("ec.key", &sec1_pem, None).unwrap();
        assert_eq!(back.alg, KeyAlg::EcP256);
        let (a, b) = (back.key_pair("x").unwrap(), key.key_pair("y").unwrap());
        assert_eq!(a.public_key_raw(), b.public_key_raw());

        // A SEC1 key without its curve cannot be placed.
        let no_curve = sec1::EcPrivateKey {
            parameters: None,
            ..ec
        };
        let no_curve = pem::encode("EC PRIVATE KEY", &no_curve.to_der().unwrap());
        let err = PrivateKey::from_pem("ec.key", &no_curve, None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("does not name its curve"), "{err}");
    }

    #[test]
    fn not_keys() {
        let cert = pem::encode("CERTIFICATE", b"x");
        let err = PrivateKey::from_pem("a.key", &cert, None).err().unwrap();
        assert_eq!(
            err.to_string(),
            "a.key holds no private key PEM block (it holds: CERTIFICATE)"
        );
        let junk = pem::encode("PRIVATE KEY", b"junk");
        let err = PrivateKey::from_pem("a.key", &junk, None).err().unwrap();
        assert!(matches!(err, Error::BadKey { .. }), "{err}");
        let junk = pem::encode("RSA PRIVATE KEY", b"junk");
        let err = PrivateKey::from_pem("a.key", &junk, None).err().unwrap();
        assert!(matches!(err, Error::BadKey { .. }), "{err}");
        let err = PrivateKey::from_pem("a.key", "nothing", None)
            .err()
            .unwrap();
        assert!(matches!(err, Error::NotPem { .. }), "{err}");
    }
}

//! Chain verification, and the checks `tandem install` runs on an issuer.

use serde::Serialize;
use time::OffsetDateTime;

use crate::Error;
use crate::cert::{self, Cert};
use crate::key::{self, PrivateKey};

/// No real chain is longer; a longer one is a loop or an attack.
const MAX_CHAIN: usize = 8;

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Subjects from the verified certificate up to the trust anchor.
    pub chain: Vec<String>,
    /// When the first certificate of the chain expires (the chain's end).
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

/// Verifies that the first certificate in `cert_pem` chains up to a
/// certificate in `roots_pem`, through the other certificates of `cert_pem`
/// if needed: signatures, validity windows at `now`, CA flags, keyCertSign
/// and pathlen constraints.
pub fn verify_chain(cert_pem: &str, roots_pem: &str, now: OffsetDateTime) -> Result<(), Error> {
    verify_chain_report("certificate", cert_pem, "roots", roots_pem, now).map(|_| ())
}

/// [`verify_chain`], naming the inputs in errors (file names, say) and
/// returning the chain it found.
pub fn verify_chain_report(
    cert_name: &str,
    cert_pem: &str,
    roots_name: &str,
    roots_pem: &str,
    now: OffsetDateTime,
) -> Result<ChainReport, Error> {
    let cert_ders = cert::load_der(cert_name, cert_pem)?;
    let root_ders = cert::load_der(roots_name, roots_pem)?;
    let certs = cert::parse_all(cert_name, &cert_ders)?;
    let roots = cert::parse_all(roots_name, &root_ders)?;

    // Build the path: indexes into `certs`, then the anchor's index into `roots`.
    let mut path: Vec<usize> = vec![0];
    let anchor: usize = loop {
        let cur = &certs[path[path.len() - 1]];
        if let Some(i) = roots.iter().position(|r| r.der == cur.der) {
            // The certificate is itself trusted; its own position is the anchor.
            path.pop();
            break i;
        }
        if path.len() > MAX_CHAIN {
            return Err(Error::ChainTooLong {
                subject: certs[0].subject(),
                max: MAX_CHAIN,
            });
        }
        let mut bad_signer: Option<String> = None;
        let mut found_root = None;
        for (i, r) in roots.iter().enumerate() {
            if cur.issuer_name_matches(r) {
                r.key_alg()
                    .check_allowed(&format!("{roots_name} ({})", r.subject()))?;
                if cur.signed_by(r) {
                    found_root = Some(i);
                    break;
                }
                bad_signer = Some(r.subject());
            }
        }
        if let Some(i) = found_root {
            break i;
        }
        let mut next = None;
        for (i, c) in certs.iter().enumerate().skip(1) {
            if path.contains(&i) || !cur.issuer_name_matches(c) {
                continue;
            }
            c.key_alg()
                .check_allowed(&format!("{cert_name} ({})", c.subject()))?;
            if cur.signed_by(c) {
                next = Some(i);
                break;
            }
            bad_signer = Some(c.subject());
        }
        match (next, bad_signer) {
            (Some(i), _) => path.push(i),
            (None, Some(issuer)) => {
                return Err(Error::BadSignature {
                    subject: cur.subject(),
                    issuer,
                });
            }
            (None, None) => {
                return Err(Error::NoIssuer {
                    what: cert_name.to_string(),
                    roots: roots_name.to_string(),
                    subject: cur.subject(),
                    issuer: cur.issuer(),
                });
            }
        }
    };

    // Check the path, leaf first, anchor last.
    let chain: Vec<&Cert<'_>> = path
        .iter()
        .map(|i| &certs[*i])
        .chain(std::iter::once(&roots[anchor]))
        .collect();
    for (depth, c) in chain.iter().enumerate() {
        let what = if depth + 1 == chain.len() {
            format!("trust anchor in {roots_name}")
        } else if depth == 0 {
            cert_name.to_string()
        } else {
            format!("intermediate in {cert_name}")
        };
        c.check_validity(&what, now)?;
        if depth > 0 {
            c.check_ca(&what)?;
            // RFC 5280: pathlen counts the CAs between this one and the
            // end of the path, not the end certificate itself.
            let below = depth - 1;
            if let Some(pathlen) = c.path_len()
                && (pathlen as usize) < below
            {
                return Err(Error::PathLenExceeded {
                    subject: c.subject(),
                    pathlen,
                    below,
                });
            }
        }
    }
    Ok(ChainReport {
        chain: chain.iter().map(|c| c.subject()).collect(),
        expires: chain
            .iter()
            .map(|c| c.not_after())
            .min()
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    })
}

/// What `validate_issuer` learned about a valid issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuerSummary {
    /// The issuer's subject.
    pub subject: String,
    /// The subject of the anchor that signed it.
    pub anchor: String,
    /// The issuer's key algorithm ("ECDSA P-256", ...).
    pub key_algorithm: String,
    /// The issuer's pathlen, if set.
    pub path_len: Option<u32>,
    /// The issuer's expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The earliest expiry among the anchors.
    #[serde(with = "time::serde::rfc3339")]
    pub anchors_not_after: OffsetDateTime,
}

/// Checks an issuer certificate and key against trust anchors, as
/// `tandem install` needs before it writes anything:
///
/// - every input parses; the anchors (one or more) and the issuer use ECDSA
///   P-256/P-384 or RSA of 2048 bits or more;
/// - no anchor and not the issuer is expired or not yet valid at `now`;
/// - the issuer is a CA allowed to sign certificates;
/// - the key matches the issuer certificate;
/// - the issuer is signed by one of the anchors, and that anchor allows a CA
///   below it (its pathlen is not 0).
///
/// Each failure is its own [`Error`] variant.
pub fn validate_issuer(
    anchors_pem: &str,
    issuer_cert_pem: &str,
    issuer_key_pem: &str,
    now: OffsetDateTime,
) -> Result<IssuerSummary, Error> {
    const ANCHORS: &str = "trust anchors";
    const ISSUER: &str = "issuer certificate";
    const KEY: &str = "issuer key";
    let anchor_ders = cert::load_der(ANCHORS, anchors_pem)?;
    let anchors = cert::parse_all(ANCHORS, &anchor_ders)?;
    let issuer_ders = cert::load_der(ISSUER, issuer_cert_pem)?;
    let issuer = Cert::parse(ISSUER, 1, &issuer_ders[0])?;

    for a in &anchors {
        a.key_alg()
            .check_allowed(&format!("trust anchor {}", a.subject()))?;
    }
    issuer.key_alg().check_allowed(ISSUER)?;
    for a in &anchors {
        a.check_validity("trust anchor", now)?;
    }
    issuer.check_validity(ISSUER, now)?;
    issuer.check_ca(ISSUER)?;

    let key = PrivateKey::from_pem(KEY, issuer_key_pem, None)?;
    if key.alg != issuer.key_alg() {
        return Err(Error::KeyMismatch {
            key: KEY.into(),
            cert: ISSUER.into(),
        });
    }
    let key_pair = key.key_pair(KEY)?;
    key::check_matches(&key, &key_pair, KEY, &issuer, ISSUER)?;

    let anchor = signing_anchor(&anchors, &issuer).ok_or_else(|| Error::NotSignedByAnchor {
        what: ISSUER.into(),
        subject: issuer.subject(),
        issuer: issuer.issuer(),
        anchors: anchor_list(&anchors),
    })?;
    anchor.check_ca("trust anchor")?;
    // The issuer is itself an anchor (a root used directly): no CA between.
    let issuer_is_anchor = anchor.der == issuer.der;
    if !issuer_is_anchor && anchor.path_len() == Some(0) {
        return Err(Error::AnchorPathLenZero {
            anchor: anchor.subject(),
            subject: issuer.subject(),
        });
    }
    Ok(IssuerSummary {
        subject: issuer.subject(),
        anchor: anchor.subject(),
        key_algorithm: issuer.key_alg().to_string(),
        path_len: issuer.path_len(),
        not_after: issuer.not_after(),
        anchors_not_after: anchors
            .iter()
            .map(|a| a.not_after())
            .min()
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    })
}

/// The anchor whose name and key signed `issuer`.
pub(crate) fn signing_anchor<'a, 'b>(
    anchors: &'a [Cert<'b>],
    issuer: &Cert<'_>,
) -> Option<&'a Cert<'b>> {
    anchors
        .iter()
        .find(|a| issuer.issuer_name_matches(a) && issuer.signed_by(a))
}

pub(crate) fn anchor_list(anchors: &[Cert<'_>]) -> String {
    anchors
        .iter()
        .map(|a| a.subject())
        .collect::<Vec<_>>()
        .join("; ")
}

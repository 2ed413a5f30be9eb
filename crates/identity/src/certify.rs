//! The rules of `Identity/Certify`, as Linkerd's identity service applies
//! them (`pkg/identity/service.go`, `pkg/tls/ca.go`), without I/O: the
//! server gathers the request, the token review and the time, and these
//! functions judge and sign.
//!
//! The server checks, in this order:
//! 1. a valid issuer is loaded ([`LeafIssuer::check_valid`]), else
//!    [`Code::Unavailable`];
//! 2. the identity, token and CSR are non-empty ([`check_fields`]), else
//!    [`Code::InvalidArgument`];
//! 3. the CSR ([`check_csr`]): it parses, its self-signature verifies, it has
//!    exactly one DNS SAN equal to the identity, a CN empty or equal, no
//!    other SAN, and an ECDSA P-256 key; else [`Code::FailedPrecondition`];
//! 4. the token review authenticates the token ([`Code::Unauthenticated`]
//!    when not) as `system:serviceaccount:<ns>:<sa>`
//!    ([`identity_of_token_user`]);
//! 5. that ServiceAccount's identity is the requested one
//!    ([`check_identity_matches`]), else [`Code::FailedPrecondition`];
//! 6. [`sign_leaf`]: ECDSA-SHA256, subject and SAN from the CSR, key usage
//!    digitalSignature + keyEncipherment, EKU serverAuth + clientAuth, valid
//!    from now − 20 s to now + lifetime + 20 s, cut at the issuer's notAfter.

use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tandem_meshtls::Name;
use time::{Duration, OffsetDateTime};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::cert::{Cert, KeyAlg};
use crate::key::PrivateKey;

/// How long a leaf lives unless told otherwise (Linkerd's issuance lifetime).
pub const DEFAULT_LIFETIME: Duration = Duration::hours(24);
/// The clock-skew allowance on both ends of a leaf's validity.
pub const CLOCK_SKEW: Duration = Duration::seconds(20);
/// The audience of the workloads' projected tokens.
pub const TOKEN_AUDIENCE: &str = "identity.l5d.io";

// === errors ===

/// The gRPC status code a refusal maps to (this crate has no tonic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    FailedPrecondition,
    Unauthenticated,
    Unavailable,
    Internal,
}

impl Code {
    /// The code's name as gRPC spells it in snake case, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unauthenticated => "unauthenticated",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }
}

/// Why a Certify request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertifyError {
    #[error("no valid issuer is loaded: {reason}")]
    NoIssuer { reason: String },
    #[error("the request's {field} is empty")]
    EmptyField { field: &'static str },
    #[error("the CSR is not a valid PKCS#10 request: {reason}")]
    CsrParse { reason: String },
    #[error("the CSR's signature does not verify with its own key")]
    CsrSignature,
    #[error("the CSR's key is {found}; only ECDSA P-256 keys are accepted")]
    CsrKey { found: String },
    #[error("the CSR does not name identity {identity:?}: {reason}")]
    CsrNames { identity: String, reason: String },
    #[error("the token was refused: {reason}")]
    TokenRefused { reason: String },
    #[error("the token's user {user:?} is not a ServiceAccount: {reason}")]
    NotServiceAccount { user: String, reason: String },
    #[error("the token is for {token:?}, but the request asks for {requested:?}")]
    IdentityMismatch { requested: String, token: String },
    #[error("cannot review the token: {reason}")]
    Review { reason: String },
    #[error("cannot sign the leaf certificate: {reason}")]
    Sign { reason: String },
}

impl CertifyError {
    /// The gRPC code this refusal is answered with.
    pub fn code(&self) -> Code {
        match self {
            CertifyError::NoIssuer { .. } | CertifyError::Review { .. } => Code::Unavailable,
            CertifyError::EmptyField { .. } => Code::InvalidArgument,
            CertifyError::CsrParse { .. }
            | CertifyError::CsrSignature
            | CertifyError::CsrKey { .. }
            | CertifyError::CsrNames { .. }
            | CertifyError::IdentityMismatch { .. } => Code::FailedPrecondition,
            CertifyError::TokenRefused { .. } | CertifyError::NotServiceAccount { .. } => {
                Code::Unauthenticated
            }
            CertifyError::Sign { .. } => Code::Internal,
        }
    }
}

// === request checks ===

/// Rule 2: every field of the request is set.
pub fn check_fields(identity: &str, token: &[u8], csr: &[u8]) -> Result<(), CertifyError> {
    for (field, empty) in [
        ("identity", identity.is_empty()),
        ("token", token.is_empty()),
        ("certificate_signing_request", csr.is_empty()),
    ] {
        if empty {
            return Err(CertifyError::EmptyField { field });
        }
    }
    Ok(())
}

/// A CSR that passed [`check_csr`], ready for [`sign_leaf`].
#[derive(Clone, Debug)]
pub struct ParsedCsr {
    identity: String,
    params: CertificateSigningRequestParams,
}

impl ParsedCsr {
    /// The identity the CSR names (its one DNS SAN).
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

/// Rule 3: parses a DER PKCS#10 request and checks it names `identity`.
pub fn check_csr(csr_der: &[u8], identity: &str) -> Result<ParsedCsr, CertifyError> {
    let parse = |reason: String| CertifyError::CsrParse { reason };
    let names = |reason: String| CertifyError::CsrNames {
        identity: identity.to_string(),
        reason,
    };
    let (rest, csr) =
        X509CertificationRequest::from_der(csr_der).map_err(|e| parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(parse(format!("{} bytes of trailing data", rest.len())));
    }
    csr.verify_signature()
        .map_err(|_| CertifyError::CsrSignature)?;
    let info = &csr.certification_request_info;
    let alg = KeyAlg::of_spki(&info.subject_pki);
    if alg != KeyAlg::EcP256 {
        return Err(CertifyError::CsrKey {
            found: alg.to_string(),
        });
    }

    let mut dns: Vec<&str> = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d),
                GeneralName::RFC822Name(_) => return Err(names("it has an email SAN".into())),
                GeneralName::IPAddress(_) => return Err(names("it has an IP SAN".into())),
                GeneralName::URI(_) => return Err(names("it has a URI SAN".into())),
                other => return Err(names(format!("it has an unsupported SAN {other:?}"))),
            }
        }
    }
    match dns.as_slice() {
        [one] if *one == identity => {}
        [one] => return Err(names(format!("its DNS SAN is {one:?}"))),
        many => {
            return Err(names(format!(
                "it has {} DNS SANs; exactly one is required",
                many.len()
            )));
        }
    }
    for cn in info.subject.iter_common_name() {
        let cn = cn.as_str().map_err(|e| parse(format!("its CN: {e}")))?;
        if !cn.is_empty() && cn != identity {
            return Err(names(format!("its CN is {cn:?}")));
        }
    }

    // rcgen re-reads the request for signing (the subject and the key).
    let params = CertificateSigningRequestParams::from_der(&csr_der.into())
        .map_err(|e| parse(e.to_string()))?;
    Ok(ParsedCsr {
        identity: identity.to_string(),
        params,
    })
}

/// Rule 4: the namespace and name of the ServiceAccount an authenticated
/// token's user names: `system:serviceaccount:<ns>:<sa>`.
pub fn token_user_service_account(user: &str) -> Result<(&str, &str), CertifyError> {
    match user.split(':').collect::<Vec<_>>().as_slice() {
        ["system", "serviceaccount", ns, sa] if !ns.is_empty() && !sa.is_empty() => Ok((ns, sa)),
        _ => Err(CertifyError::NotServiceAccount {
            user: user.to_string(),
            reason: "it must read system:serviceaccount:<ns>:<sa>".into(),
        }),
    }
}

/// Rule 4: the identity of an authenticated token's user.
pub fn identity_of_token_user(
    user: &str,
    control_plane_ns: &str,
    trust_domain: &str,
) -> Result<Name, CertifyError> {
    let (ns, sa) = token_user_service_account(user)?;
    Name::service_account(sa, ns, control_plane_ns, trust_domain).map_err(|e| {
        CertifyError::NotServiceAccount {
            user: user.to_string(),
            reason: e.to_string(),
        }
    })
}

/// Rule 5: the token's identity is the one asked for.
pub fn check_identity_matches(requested: &str, token: &Name) -> Result<(), CertifyError> {
    if token.as_str() == requested {
        Ok(())
    } else {
        Err(CertifyError::IdentityMismatch {
            requested: requested.to_string(),
            token: token.to_string(),
        })
    }
}

/// A new ECDSA P-256 key (PKCS#8 DER) and a CSR (DER) whose CN and one DNS
/// SAN are `identity`, as Linkerd's proxy makes them.
pub fn new_key_and_csr(identity: &str) -> Result<(Vec<u8>, Vec<u8>), CertifyError> {
    let fail = |e: rcgen::Error| CertifyError::Sign {
        reason: format!("making a key and CSR for {identity}: {e}"),
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(vec![identity.to_string()]).map_err(fail)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, identity);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(fail)?;
    Ok((key.serialize_der(), csr.der().to_vec()))
}

// === signing ===

/// The cluster's issuer, read and checked once, that signs leaves.
pub struct LeafIssuer {
    cert_der: Vec<u8>,
    key: KeyPair,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for LeafIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("LeafIssuer")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl LeafIssuer {
    /// Reads the issuer and checks it as `tandem install` does
    /// ([`crate::validate_issuer`]); it must use an ECDSA key, as Linkerd's.
    pub fn from_pem(
        anchors_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        now: OffsetDateTime,
    ) -> Result<Self, crate::Error> {
        const ISSUER: &str = "issuer certificate";
        let summary = crate::validate_issuer(anchors_pem, cert_pem, key_pem, now)?;
        let ders = crate::cert::load_der(ISSUER, cert_pem)?;
        let cert = Cert::parse(ISSUER, 1, &ders[0])?;
        if !matches!(cert.key_alg(), KeyAlg::EcP256 | KeyAlg::EcP384) {
            return Err(crate::Error::UnsupportedAlgorithm {
                what: ISSUER.into(),
                algorithm: format!("{} (leaves are signed with ECDSA only)", cert.key_alg()),
            });
        }
        let key = PrivateKey::from_pem("issuer key", key_pem, None)?.key_pair("issuer key")?;
        Ok(LeafIssuer {
            cert_der: ders[0].clone(),
            key,
            not_after: summary.not_after,
        })
    }

    /// The issuer certificate, DER: the one intermediate of every leaf.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Rule 1: the issuer may still sign at `now`.
    pub fn check_valid(&self, now: OffsetDateTime) -> Result<(), CertifyError> {
        if now >= self.not_after {
            return Err(CertifyError::NoIssuer {
                reason: format!("the issuer expired at {}", crate::fmt_time(self.not_after)),
            });
        }
        Ok(())
    }
}

/// A signed leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub der: Vec<u8>,
    pub not_after: OffsetDateTime,
}

/// The validity of a leaf issued at `now`: the skew allowance on both ends,
/// cut at the issuer's notAfter.
pub fn leaf_validity(
    now: OffsetDateTime,
    lifetime: Duration,
    issuer_not_after: OffsetDateTime,
) -> (OffsetDateTime, OffsetDateTime) {
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let not_after = (now + lifetime + CLOCK_SKEW).min(issuer_not_after);
    (now - CLOCK_SKEW, not_after)
}

/// Rule 6: signs the CSR's key and names with the issuer.
pub fn sign_leaf(
    issuer: &LeafIssuer,
    csr: &ParsedCsr,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<Leaf, CertifyError> {
    issuer.check_valid(now)?;
    let sign = |e: rcgen::Error| CertifyError::Sign {
        reason: e.to_string(),
    };
    let (not_before, not_after) = leaf_validity(now, lifetime, issuer.not_after);
    let mut req = csr.params.clone();
    let p = &mut req.params;
    p.serial_number = Some(
        crate::create::random_serial().map_err(|e| CertifyError::Sign {
            reason: e.to_string(),
        })?,
    );
    p.not_before = not_before;
    p.not_after = not_after;
    p.is_ca = IsCa::NoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.name_constraints = None;
    p.crl_distribution_points.clear();
    p.custom_extensions.clear();
    p.use_authority_key_identifier_extension = true;
    let signer =
        Issuer::from_ca_cert_der(&issuer.cert_der.as_slice().into(), &issuer.key).map_err(sign)?;
    let cert = req.signed_by(&signer).map_err(sign)?;
    Ok(Leaf {
        der: cert.der().to_vec(),
        not_after,
    })
}

//! The one error type of this crate.
//!
//! Every message names what it is about (`what`: a file name when the caller
//! gave one, otherwise a role such as "issuer certificate") and the problem.

use time::OffsetDateTime;

use crate::fmt_time;

/// Everything that can go wrong while creating, reading or checking certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input has no PEM block at all.
    #[error("{what} is not PEM: no \"-----BEGIN ...-----\" line found{hint}")]
    NotPem {
        /// What was read.
        what: String,
        /// A hint on what the input looks like instead (may be empty).
        hint: &'static str,
    },

    /// A PEM block is broken (unterminated, bad base64, mismatched labels).
    #[error("{what} holds a broken PEM block: {reason}")]
    BadPem {
        /// What was read.
        what: String,
        /// The problem.
        reason: String,
    },

    /// The PEM input holds no certificate.
    #[error("{what} holds no CERTIFICATE PEM block (it holds: {found})")]
    NoCertificate {
        /// What was read.
        what: String,
        /// The labels of the blocks found instead.
        found: String,
    },

    /// A certificate block does not parse as X.509.
    #[error("{what}: certificate #{index} is not a valid X.509 certificate: {reason}")]
    BadCertificate {
        /// What was read.
        what: String,
        /// Position of the certificate in the input, from 1.
        index: usize,
        /// The parser's complaint.
        reason: String,
    },

    /// The PEM input holds no private key.
    #[error("{what} holds no private key PEM block (it holds: {found})")]
    NoKey {
        /// What was read.
        what: String,
        /// The labels of the blocks found instead.
        found: String,
    },

    /// A private key does not parse.
    #[error("{what} is not a valid private key: {reason}")]
    BadKey {
        /// What was read.
        what: String,
        /// The problem.
        reason: String,
    },

    /// The key is encrypted and no password was given.
    #[error("{what} is encrypted (ENCRYPTED PRIVATE KEY) and no password was given for it")]
    KeyEncrypted {
        /// What was read.
        what: String,
    },

    /// The key uses the old OpenSSL PEM encryption (Proc-Type headers).
    #[error(
        "{what} uses legacy PEM encryption (Proc-Type: 4,ENCRYPTED), which is not supported; \
         convert it with `openssl pkcs8 -topk8 -in KEY -out NEW.key`"
    )]
    LegacyEncryptedKey {
        /// What was read.
        what: String,
    },

    /// Decryption failed.
    #[error(
        "cannot decrypt {what}: wrong password, or an unsupported encryption scheme ({reason})"
    )]
    Decrypt {
        /// What was read.
        what: String,
        /// The underlying problem.
        reason: String,
    },

    /// Encryption failed.
    #[error("cannot encrypt the private key: {reason}")]
    Encrypt {
        /// The underlying problem.
        reason: String,
    },

    /// The password is empty.
    #[error("the password is empty")]
    EmptyPassword,

    /// The private key does not belong to the certificate.
    #[error("{key} does not match {cert}: the key's public key differs from the certificate's")]
    KeyMismatch {
        /// The key.
        key: String,
        /// The certificate.
        cert: String,
    },

    /// An RSA key below 2048 bits.
    #[error(
        "{what} has an RSA key of {bits} bits, which is too weak: at least 2048 bits are required"
    )]
    WeakRsaKey {
        /// What holds the key.
        what: String,
        /// Its size.
        bits: usize,
    },

    /// A requested RSA size out of range.
    #[error("RSA key size {bits} is refused: use at least 2048 and at most 8192 bits")]
    RsaSize {
        /// The requested size.
        bits: u32,
    },

    /// A key algorithm tandem does not accept.
    #[error(
        "{what} uses {algorithm}; only ECDSA P-256, ECDSA P-384 and RSA (2048 bits or more) are accepted"
    )]
    UnsupportedAlgorithm {
        /// What holds the key.
        what: String,
        /// The algorithm found.
        algorithm: String,
    },

    /// A certificate used as a CA is not one.
    #[error("{what} ({subject}) is not a CA certificate (its basicConstraints has no CA:TRUE)")]
    NotCa {
        /// Which certificate.
        what: String,
        /// Its subject.
        subject: String,
    },

    /// A CA certificate whose key usage does not allow signing certificates.
    #[error("{what} ({subject}) may not sign certificates: its keyUsage lacks keyCertSign")]
    NoCertSign {
        /// Which certificate.
        what: String,
        /// Its subject.
        subject: String,
    },

    /// A pathlen 0 CA asked to sign another CA.
    #[error("{what} ({subject}) has pathlen 0: it may sign only leaf certificates, not another CA")]
    PathLenZero {
        /// Which certificate.
        what: String,
        /// Its subject.
        subject: String,
    },

    /// A certificate past its notAfter.
    #[error("{what} ({subject}) expired at {}", fmt_time(*not_after))]
    Expired {
        /// Which certificate.
        what: String,
        /// Its subject.
        subject: String,
        /// Its notAfter.
        not_after: OffsetDateTime,
    },

    /// A certificate before its notBefore.
    #[error("{what} ({subject}) is not valid before {}", fmt_time(*not_before))]
    NotYetValid {
        /// Which certificate.
        what: String,
        /// Its subject.
        subject: String,
        /// Its notBefore.
        not_before: OffsetDateTime,
    },

    /// A requested expiry after the signing CA's.
    #[error(
        "the requested not-after {} is beyond the expiry of the signing CA {what} ({}); \
         a certificate may not outlive its issuer",
        fmt_time(*not_after),
        fmt_time(*issuer_not_after)
    )]
    BeyondIssuerExpiry {
        /// The signing CA.
        what: String,
        /// The requested expiry.
        not_after: OffsetDateTime,
        /// The CA's expiry.
        issuer_not_after: OffsetDateTime,
    },

    /// notAfter not after notBefore.
    #[error(
        "the validity is empty: not-after {} is not after not-before {}",
        fmt_time(*not_after),
        fmt_time(*not_before)
    )]
    EmptyValidity {
        /// The start.
        not_before: OffsetDateTime,
        /// The end.
        not_after: OffsetDateTime,
    },

    /// A duration or time that does not parse or is out of range.
    #[error("invalid time or duration {input:?}: {reason}")]
    InvalidTime {
        /// The input.
        input: String,
        /// The problem.
        reason: String,
    },

    /// An empty subject.
    #[error("the subject is empty")]
    EmptySubject,

    /// A subject alternative name that cannot be encoded.
    #[error("invalid SAN {san:?}: {reason}")]
    InvalidSan {
        /// The SAN.
        san: String,
        /// The problem.
        reason: String,
    },

    /// A profile that needs a signing CA got none.
    #[error("profile {profile} needs a signing CA: give --ca and --ca-key")]
    CaRequired {
        /// The profile.
        profile: crate::Profile,
    },

    /// A root got a signing CA.
    #[error(
        "profile root-ca makes a self-signed certificate: --ca and --ca-key are not used with it"
    )]
    CaNotAllowed,

    /// validate_issuer: no anchor signed the issuer.
    #[error(
        "{what} ({subject}, issued by {issuer}) is not signed by any of the trust anchors ({anchors})"
    )]
    NotSignedByAnchor {
        /// Which certificate.
        what: String,
        /// Its subject.
        subject: String,
        /// Its issuer name.
        issuer: String,
        /// The anchors' subjects.
        anchors: String,
    },

    /// validate_issuer: the anchor that signed the issuer forbids CAs below it.
    #[error(
        "trust anchor {anchor} has pathlen 0, so the issuer {subject} it signed may not sign \
         certificates"
    )]
    AnchorPathLenZero {
        /// The anchor's subject.
        anchor: String,
        /// The issuer's subject.
        subject: String,
    },

    /// verify: no certificate in the chain or roots issued this one.
    #[error(
        "{what}: no certificate in the bundle or in {roots} issued {subject} (its issuer is {issuer})"
    )]
    NoIssuer {
        /// The file holding the chain.
        what: String,
        /// The roots file.
        roots: String,
        /// The orphan's subject.
        subject: String,
        /// Its issuer name.
        issuer: String,
    },

    /// verify: a candidate issuer was found by name but its signature does not verify.
    #[error("the signature of {subject} does not verify with the key of {issuer}")]
    BadSignature {
        /// The signed certificate.
        subject: String,
        /// The would-be issuer.
        issuer: String,
    },

    /// verify: a CA's pathlen is exceeded by the CAs below it.
    #[error("{subject} has pathlen {pathlen} but {below} CA certificate(s) follow it in the chain")]
    PathLenExceeded {
        /// The constrained CA.
        subject: String,
        /// Its pathlen.
        pathlen: u32,
        /// How many intermediates follow it.
        below: usize,
    },

    /// verify: the chain is longer than any sane chain.
    #[error("the chain of {subject} is longer than {max} certificates")]
    ChainTooLong {
        /// The starting certificate.
        subject: String,
        /// The limit.
        max: usize,
    },

    /// Key generation or signing failed inside the crypto library.
    #[error("{action} failed: {reason}")]
    Crypto {
        /// What was being done.
        action: &'static str,
        /// The library's complaint.
        reason: String,
    },
}

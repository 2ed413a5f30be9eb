//! Certificates for tandem: the trust anchor, the per-cluster issuers and
//! leaves of the multicluster workshop, made and checked without `step`.
//!
//! Pure logic over PEM strings and a given `now`: no files, no clock reads
//! except in [`CreateRequest::new`]. The `tandem certificate` command reads
//! and writes the files; `tandem install` and `tandem check` call
//! [`validate_issuer`] and [`checks`].
//!
//! - [`create`] makes a certificate and key with step's profiles
//!   (root-ca: pathlen 1; intermediate-ca: pathlen 0; leaf).
//! - [`encrypt_key`] turns the plain key into an encrypted PKCS#8 PEM.
//! - [`inspect`] reads a certificate's fields.
//! - [`verify_chain`] verifies a chain up to a set of roots.
//! - [`validate_issuer`] checks an issuer certificate and key against anchors.
//! - [`certify`] holds the rules of the identity service's Certify call.

#![forbid(unsafe_code)]

mod cert;
pub mod certify;
pub mod checks;
mod create;
mod error;
mod inspect;
mod key;
mod pem;
mod time_spec;
mod verify;

#[cfg(test)]
mod tests;

pub use create::{CaInput, CreateRequest, Created, Curve, KeyType, Profile, create};
pub use error::Error;
pub use inspect::{CertInfo, inspect, inspect_bundle};
pub use key::{decrypt_key, encrypt_key};
pub use time_spec::{TimeSpec, parse_time_spec};
pub use verify::{ChainReport, IssuerSummary, validate_issuer, verify_chain, verify_chain_report};

/// The `time` crate this API uses, for callers without their own.
pub use time;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Formats a time as RFC 3339 (UTC times end in Z).
pub fn fmt_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

//! The `tandem-identity` checks of `tandem check`, after `linkerd check`'s
//! identity checks. Each returns a [`CheckOutcome`]; none panics or errors.

use time::{Duration, OffsetDateTime};

use crate::cert::{self, Cert};
use crate::fmt_time;
use crate::verify::{anchor_list, signing_anchor};

/// The category name `tandem check` prints these checks under.
pub const CATEGORY: &str = "tandem-identity";

/// Certificates with less life left than this get a warning.
pub const EXPIRY_WARNING: Duration = Duration::days(60);

/// The result of one check, with a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Passed.
    Ok(String),
    /// Passed, but needs attention soon.
    Warn(String),
    /// Failed.
    Fail(String),
}

impl CheckOutcome {
    /// The message, whatever the outcome.
    pub fn message(&self) -> &str {
        match self {
            CheckOutcome::Ok(m) | CheckOutcome::Warn(m) | CheckOutcome::Fail(m) => m,
        }
    }

    /// True for [`CheckOutcome::Fail`].
    pub fn is_fail(&self) -> bool {
        matches!(self, CheckOutcome::Fail(_))
    }
}

/// A named check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, as `tandem check` prints it.
    pub name: &'static str,
    /// The outcome.
    pub outcome: CheckOutcome,
}

/// The trust anchors parse as one or more certificates.
pub fn anchors_parse(anchors_pem: &str) -> CheckOutcome {
    let ders = match cert::load_der("trust anchors", anchors_pem) {
        Ok(d) => d,
        Err(e) => return CheckOutcome::Fail(e.to_string()),
    };
    match cert::parse_all("trust anchors", &ders) {
        Ok(certs) => CheckOutcome::Ok(format!(
            "{} trust anchor(s): {}",
            certs.len(),
            anchor_list(&certs)
        )),
        Err(e) => CheckOutcome::Fail(e.to_string()),
    }
}

/// Each anchor is within its validity; warns when one has under 60 days left.
pub fn anchors_valid(anchors_pem: &str, now: OffsetDateTime) -> CheckOutcome {
    with_certs("trust anchors", anchors_pem, |certs| {
        let outcomes: Vec<CheckOutcome> = certs
            .iter()
            .map(|c| validity(&format!("trust anchor {}", c.subject()), c, now))
            .collect();
        worst(outcomes)
    })
}

/// Each anchor uses an accepted algorithm.
pub fn anchors_algorithm(anchors_pem: &str) -> CheckOutcome {
    with_certs("trust anchors", anchors_pem, |certs| {
        worst(
            certs
                .iter()
                .map(|c| algorithm(&format!("trust anchor {}", c.subject()), c))
                .collect(),
        )
    })
}

/// The issuer certificate is signed by one of the anchors.
pub fn issuer_signed_by_anchor(anchors_pem: &str, issuer_cert_pem: &str) -> CheckOutcome {
    with_certs("trust anchors", anchors_pem, |anchors| {
        with_certs("issuer certificate", issuer_cert_pem, |issuer| {
            let issuer = &issuer[0];
            match signing_anchor(anchors, issuer) {
                Some(a) => CheckOutcome::Ok(format!(
                    "issuer {} is signed by trust anchor {}",
                    issuer.subject(),
                    a.subject()
                )),
                None => CheckOutcome::Fail(format!(
                    "issuer {} (issued by {}) is not signed by any trust anchor ({})",
                    issuer.subject(),
                    issuer.issuer(),
                    anchor_list(anchors)
                )),
            }
        })
    })
}

/// The issuer is within its validity; warns when it has under 60 days left.
pub fn issuer_valid(issuer_cert_pem: &str, now: OffsetDateTime) -> CheckOutcome {
    with_certs("issuer certificate", issuer_cert_pem, |issuer| {
        validity(&format!("issuer {}", issuer[0].subject()), &issuer[0], now)
    })
}

/// The issuer uses an accepted algorithm: ECDSA P-256/P-384 or RSA >= 2048.
pub fn issuer_algorithm(issuer_cert_pem: &str) -> CheckOutcome {
    with_certs("issuer certificate", issuer_cert_pem, |issuer| {
        algorithm(&format!("issuer {}", issuer[0].subject()), &issuer[0])
    })
}

/// Every check above, in the order `tandem check` prints them.
pub fn run_all(anchors_pem: &str, issuer_cert_pem: &str, now: OffsetDateTime) -> Vec<Check> {
    vec![
        Check {
            name: "trust anchors are using a valid format",
            outcome: anchors_parse(anchors_pem),
        },
        Check {
            name: "trust anchors use an accepted algorithm",
            outcome: anchors_algorithm(anchors_pem),
        },
        Check {
            name: "trust anchors are within their validity period",
            outcome: anchors_valid(anchors_pem, now),
        },
        Check {
            name: "issuer cert is signed by a trust anchor",
            outcome: issuer_signed_by_anchor(anchors_pem, issuer_cert_pem),
        },
        Check {
            name: "issuer cert is within its validity period",
            outcome: issuer_valid(issuer_cert_pem, now),
        },
        Check {
            name: "issuer cert uses an accepted algorithm",
            outcome: issuer_algorithm(issuer_cert_pem),
        },
    ]
}

// === helpers ===

fn with_certs(what: &str, pem: &str, f: impl FnOnce(&[Cert<'_>]) -> CheckOutcome) -> CheckOutcome {
    let ders = match cert::load_der(what, pem) {
        Ok(d) => d,
        Err(e) => return CheckOutcome::Fail(e.to_string()),
    };
    match cert::parse_all(what, &ders) {
        Ok(certs) => f(&certs),
        Err(e) => CheckOutcome::Fail(e.to_string()),
    }
}

fn validity(what: &str, c: &Cert<'_>, now: OffsetDateTime) -> CheckOutcome {
    if let Err(e) = c.check_validity(what, now) {
        return CheckOutcome::Fail(e.to_string());
    }
    let left = c.not_after() - now;
    if left < EXPIRY_WARNING {
        CheckOutcome::Warn(format!(
            "{what} expires in {} days, at {}: rotate it",
            left.whole_days(),
            fmt_time(c.not_after())
        ))
    } else {
        CheckOutcome::Ok(format!("{what} is valid until {}", fmt_time(c.not_after())))
    }
}

fn algorithm(what: &str, c: &Cert<'_>) -> CheckOutcome {
    match c.key_alg().check_allowed(what) {
        Ok(()) => CheckOutcome::Ok(format!("{what} uses {}", c.key_alg())),
        Err(e) => CheckOutcome::Fail(e.to_string()),
    }
}

/// Fail beats Warn beats Ok; messages of the same rank are joined.
fn worst(outcomes: Vec<CheckOutcome>) -> CheckOutcome {
    let pick = |rank: fn(&CheckOutcome) -> bool| -> Option<String> {
        let msgs: Vec<&str> = outcomes
            .iter()
            .filter(|o| rank(o))
            .map(CheckOutcome::message)
            .collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    };
    if let Some(m) = pick(|o| matches!(o, CheckOutcome::Fail(_))) {
        CheckOutcome::Fail(m)
    } else if let Some(m) = pick(|o| matches!(o, CheckOutcome::Warn(_))) {
        CheckOutcome::Warn(m)
    } else {
        CheckOutcome::Ok(pick(|_| true).unwrap_or_else(|| "no certificates".into()))
    }
}

//! A mesh identity: a DNS-like name.

use std::{fmt, str::FromStr, sync::Arc};

/// A workload's identity, e.g.
/// `emoji.emojivoto.serviceaccount.identity.tandem.cluster.local`: lower-case
/// DNS labels (1–63 characters of `a-z`, `0-9`, `-`, not starting or ending
/// with `-`), at least two, at most 253 characters in all.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name:?} is not a valid mesh identity: {reason}")]
pub struct InvalidName {
    pub name: String,
    pub reason: &'static str,
}

impl Name {
    /// The identity of ServiceAccount `sa` in namespace `ns`, under the
    /// control plane in `control_plane_ns` and trust domain `trust_domain`.
    pub fn service_account(
        sa: &str,
        ns: &str,
        control_plane_ns: &str,
        trust_domain: &str,
    ) -> Result<Self, InvalidName> {
        format!("{sa}.{ns}.serviceaccount.identity.{control_plane_ns}.{trust_domain}").parse()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| InvalidName {
            name: s.to_string(),
            reason,
        };
        let s = s.strip_suffix('.').unwrap_or(s);
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > 253 {
            return Err(bad("it is longer than 253 characters"));
        }
        let mut labels = 0;
        for label in s.split('.') {
            labels += 1;
            if label.is_empty() || label.len() > 63 {
                return Err(bad("each label must have 1 to 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(bad("labels hold only a-z, 0-9 and '-'"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a label may not start or end with '-'"));
            }
        }
        if labels < 2 {
            return Err(bad("it needs at least two labels"));
        }
        Ok(Name(s.into()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let ok = Name::service_account("emoji", "emojivoto", "tandem", "cluster.local").unwrap();
        assert_eq!(
            ok.as_str(),
            "emoji.emojivoto.serviceaccount.identity.tandem.cluster.local"
        );
        assert_eq!("a.b.".parse::<Name>().unwrap().as_str(), "a.b");
        for bad in [
            "",
            "a",
            "A.b",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            &"x".repeat(64),
        ] {
            assert!(bad.parse::<Name>().is_err(), "{bad:?} was accepted");
        }
        let long = ["a"; 128].join(".");
        assert!(long.parse::<Name>().is_err());
    }
}

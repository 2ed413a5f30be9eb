//! Port lists as annotations and proxy-init's flags write them:
//! `25,587,4000-4010`.

use std::fmt;

/// One port (`first == last`) or an inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{item:?} in {list:?} is not a port (1-65535) or a range of ports (low-high)")]
pub struct PortsError {
    pub list: String,
    pub item: String,
}

impl PortRange {
    pub fn port(p: u16) -> Self {
        PortRange { first: p, last: p }
    }

    /// How many of `multiport`'s 15 slots this takes (a range takes two).
    pub fn slots(&self) -> usize {
        if self.first == self.last { 1 } else { 2 }
    }

    /// As `iptables -m multiport` writes it: `80` or `4000:4010`.
    pub fn to_iptables(self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}:{}", self.first, self.last)
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Parses a comma-separated list; blanks around items and empty items are
/// allowed, duplicates are dropped, order is kept.
pub fn parse_ports(list: &str) -> Result<Vec<PortRange>, PortsError> {
    let mut out: Vec<PortRange> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || PortsError {
            list: list.into(),
            item: item.into(),
        };
        let port = |s: &str| match s.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(bad()),
        };
        let range = match item.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (port(a)?, port(b)?);
                if first > last {
                    return Err(bad());
                }
                PortRange { first, last }
            }
            None => PortRange::port(port(item)?),
        };
        if !out.contains(&range) {
            out.push(range);
        }
    }
    Ok(out)
}

/// `a,b,c-d`.
pub fn join(ports: &[PortRange]) -> String {
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

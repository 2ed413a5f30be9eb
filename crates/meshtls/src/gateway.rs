//! The multicluster gateway's routing rules: may a connection or request
//! that arrived over mesh TLS be forwarded, and where to.
//!
//! [`Gateway::decide`] applies, in order (Linkerd 2.12's gateway does the
//! same, see `linkerd/app/gateway` in linkerd2-proxy):
//!
//! 1. The client must have presented a mesh identity (mTLS).
//! 2. The target name (from the transport header, or an HTTP request's
//!    authority) must end with one of the gateway's suffixes,
//!    `svc.cluster.local` by default, on a label boundary. Case and a
//!    trailing dot do not matter.
//! 3. The labels before the suffix must be exactly `<service>.<namespace>`:
//!    a Service, not a pod's name under a headless Service.
//! 4. The Service must be exported (the caller says, from its index).
//! 5. A `Forwarded` header whose `by=` is the gateway's own identity means
//!    the request has already passed through it: a loop.
//!
//! A request that passes gets the `Forwarded` element to append:
//! `by=<gateway-id>;for=<client-id>;host=<name>:<port>;proto=https`.

use std::fmt;

use crate::Name;
use crate::transport_header::Header;

/// Linkerd's default, `LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES=svc.cluster.local.`.
pub const DEFAULT_SUFFIX: &str = "svc.cluster.local.";

/// The DNS suffixes a gateway forwards to, normalised: lower case, without
/// leading or trailing dots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suffixes(Vec<String>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{suffix:?} is not a valid gateway suffix: {reason}")]
pub struct InvalidSuffix {
    pub suffix: String,
    pub reason: &'static str,
}

impl Suffixes {
    /// Parses a comma-separated list, as in
    /// `LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES`. Empty entries are skipped.
    pub fn parse(list: &str) -> Result<Self, InvalidSuffix> {
        let mut out = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = |reason| InvalidSuffix {
                suffix: raw.to_string(),
                reason,
            };
            let s = raw.trim_matches('.').to_ascii_lowercase();
            if s.is_empty() {
                return Err(bad("it must name at least one label"));
            }
            let labels_ok = s.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
            if !labels_ok {
                return Err(bad(
                    "labels hold only a-z, 0-9 and '-', separated by single dots",
                ));
            }
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Ok(Suffixes(out))
    }

    /// The suffix `name` ends with on a label boundary, if any.
    fn matching(&self, name: &str) -> Option<&str> {
        self.0.iter().map(String::as_str).find(|s| {
            name.strip_suffix(*s)
                .is_some_and(|head| head.is_empty() || head.ends_with('.'))
        })
    }
}

impl Default for Suffixes {
    fn default() -> Self {
        Suffixes(vec![DEFAULT_SUFFIX.trim_end_matches('.').to_string()])
    }
}

impl fmt::Display for Suffixes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none configured");
        }
        f.write_str(&self.0.join(", "))
    }
}

/// Where a client asks the gateway to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: Name,
    pub port: u16,
}

/// The gateway's answer when it will not forward.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("the client presented no mesh identity; the gateway forwards only mTLS traffic")]
    NoClientIdentity,
    #[error("the transport header names no target")]
    NoName,
    #[error("{authority:?} is not a valid authority: {reason}")]
    BadAuthority {
        authority: String,
        reason: &'static str,
    },
    #[error("{name} does not end with a gateway suffix ({suffixes})")]
    NotInSuffixes { name: Name, suffixes: String },
    #[error("{name} does not name a Service: expected <service>.<namespace>.{suffix}")]
    NotAService { name: Name, suffix: String },
    #[error("Service {namespace}/{service} is not exported")]
    NotExported { namespace: String, service: String },
    #[error("the request has already passed through this gateway ({gateway}): a loop")]
    Loop { gateway: Name },
}

impl Target {
    /// The target of a transport header.
    pub fn from_header(header: &Header) -> Result<Self, Refusal> {
        let name = header.name.clone().ok_or(Refusal::NoName)?;
        Ok(Target {
            name,
            port: header.port,
        })
    }

    /// The target of an HTTP authority, `host[:port]`; `default_port` when
    /// it has none.
    pub fn from_authority(authority: &str, default_port: u16) -> Result<Self, Refusal> {
        let bad = |reason| Refusal::BadAuthority {
            authority: authority.to_string(),
            reason,
        };
        if authority.starts_with('[') {
            return Err(bad("an IP address names no Service"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port is not a number in 1-65535"))?;
                (host, port)
            }
            None => (authority, default_port),
        };
        let name = host
            .to_ascii_lowercase()
            .parse()
            .map_err(|_| bad("the host is not a DNS name"))?;
        Ok(Target { name, port })
    }

    /// `<name>:<port>`.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.name, self.port)
    }
}

/// What one connection or request asks of the gateway.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    pub target: Target,
    /// The client's mesh identity from the TLS handshake.
    pub client_id: Option<&'a Name>,
    /// The values of the request's `Forwarded` headers (none for TCP).
    pub forwarded: &'a [&'a str],
}

/// Where the gateway forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub service: String,
    pub namespace: String,
    /// `<name>:<port>`: the Host of a forwarded HTTP/1 request.
    pub authority: String,
    /// The `Forwarded` element to append to an HTTP request.
    pub forwarded: String,
}

/// A gateway's identity and suffixes.
#[derive(Clone, Debug)]
pub struct Gateway {
    pub identity: Name,
    pub suffixes: Suffixes,
}

impl Gateway {
    /// Applies the rules of the module docs; `exported(namespace, service)`
    /// says whether a Service is exported.
    pub fn decide(
        &self,
        ask: &Ask<'_>,
        exported: impl Fn(&str, &str) -> bool,
    ) -> Result<Forward, Refusal> {
        let client = ask.client_id.ok_or(Refusal::NoClientIdentity)?;
        let name = &ask.target.name;
        let suffix =
            self.suffixes
                .matching(name.as_str())
                .ok_or_else(|| Refusal::NotInSuffixes {
                    name: name.clone(),
                    suffixes: self.suffixes.to_string(),
                })?;
        let head = name.as_str()[..name.as_str().len() - suffix.len()].trim_end_matches('.');
        let (service, namespace) = match head.split_once('.') {
            Some((svc, ns)) if !svc.is_empty() && !ns.is_empty() && !ns.contains('.') => (svc, ns),
            _ => {
                return Err(Refusal::NotAService {
                    name: name.clone(),
                    suffix: suffix.to_string(),
                });
            }
        };
        if !exported(namespace, service) {
            return Err(Refusal::NotExported {
                namespace: namespace.to_string(),
                service: service.to_string(),
            });
        }
        if ask
            .forwarded
            .iter()
            .any(|value| forwarded_by(value).any(|by| same_name(by, &self.identity)))
        {
            return Err(Refusal::Loop {
                gateway: self.identity.clone(),
            });
        }
        let authority = ask.target.authority();
        Ok(Forward {
            service: service.to_string(),
            namespace: namespace.to_string(),
            forwarded: forwarded_element(&self.identity, client, &authority),
            authority,
        })
    }
}

/// `by=<gateway>;for=<client>;host=<authority>;proto=https`, as Linkerd
/// writes it (the host unquoted).
pub fn forwarded_element(gateway: &Name, client: &Name, authority: &str) -> String {
    format!("by={gateway};for={client};host={authority};proto=https")
}

/// Every `by=` value of a `Forwarded` header value (RFC 7239: elements
/// separated by commas, pairs by semicolons, values maybe quoted).
fn forwarded_by(value: &str) -> impl Iterator<Item = &str> {
    value
        .split([',', ';'])
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| key.trim().eq_ignore_ascii_case("by"))
        .map(|(_, v)| v.trim().trim_matches('"'))
}

fn same_name(value: &str, name: &Name) -> bool {
    value
        .trim_end_matches('.')
        .eq_ignore_ascii_case(name.as_str())
}

#[cfg(test)]
mod tests;

//! Linkerd's Destination API over the index: `Get` streams the endpoints of
//! a Service port (a full set, then diffs), `GetProfile` streams a
//! destination's profile (its name and split) on every change.

use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
};

use futures::Stream;
use linkerd2_proxy_api::{
    destination::{
        AddrSet, AuthorityOverride, DestinationProfile, GetDestination, NoEndpoints, ProtocolHint,
        TlsIdentity, Update, WeightedAddr, WeightedAddrSet, WeightedDst,
        destination_server::Destination, protocol_hint, tls_identity, update,
    },
    net::TcpAddress,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::{
    index::{Addr, Endpoints, Index, Profile, ProfileTarget},
    metrics::{Guard, Kind, Metrics},
    objects::SvcKey,
};

/// The index, shared by the watches (writers) and the streams (readers).
pub type SharedIndex = Arc<Mutex<Index>>;

/// What a request's path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Service(SvcKey, u16),
    Ip(IpAddr, u16),
}

/// Parses `<svc>.<ns>.svc.<domain>[.]:<port>` or `<ip>:<port>` (port 80
/// when left out, as Linkerd reads it).
pub fn parse_path(path: &str, domain: &str) -> Result<Target, String> {
    if let Ok(addr) = path.parse::<SocketAddr>() {
        return Ok(Target::Ip(addr.ip(), addr.port()));
    }
    let (host, port) = match path.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{path:?} has an invalid port"))?,
        ),
        None => (path, 80),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Target::Ip(ip, port));
    }
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let suffix = format!(".svc.{domain}");
    let labels: Vec<&str> = host
        .strip_suffix(&suffix)
        .ok_or_else(|| format!("{path:?} is not a Service of cluster domain {domain}"))?
        .split('.')
        .collect();
    match labels.as_slice() {
        [name, ns] if !name.is_empty() && !ns.is_empty() => {
            Ok(Target::Service(SvcKey::new(*ns, *name), port))
        }
        _ => Err(format!(
            "{path:?} is not <service>.<namespace>.svc.{domain}:<port>"
        )),
    }
}

/// What the proxy says about itself in `context_token`; read leniently and
/// only logged.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Context {
    pub ns: Option<String>,
    #[serde(rename = "nodeName")]
    pub node_name: Option<String>,
}

pub fn parse_context(token: &str) -> Context {
    serde_json::from_str(token).unwrap_or_default()
}

// === updates ===

/// The updates that take a client from `old` (`None`: nothing sent yet) to
/// `new`: a full `add` (or `no_endpoints`) first, then adds of what is new
/// or changed and removes of what went.
pub fn diff(old: Option<&Endpoints>, new: &Endpoints) -> Vec<Update> {
    let no_endpoints = |exists| Update {
        update: Some(update::Update::NoEndpoints(NoEndpoints { exists })),
    };
    if !new.exists {
        return match old {
            Some(o) if !o.exists => vec![],
            _ => vec![no_endpoints(false)],
        };
    }
    let old = old.filter(|o| o.exists);
    let Some(old) = old else {
        return if new.addrs.is_empty() {
            vec![no_endpoints(true)]
        } else {
            vec![add(new, new.addrs.iter())]
        };
    };
    let mut out = vec![];
    let added: Vec<(&SocketAddr, &Addr)> = new
        .addrs
        .iter()
        .filter(|(a, v)| old.labels != new.labels || old.addrs.get(a) != Some(v))
        .collect();
    if !added.is_empty() {
        out.push(add(new, added.into_iter()));
    }
    let removed: Vec<TcpAddress> = old
        .addrs
        .keys()
        .filter(|a| !new.addrs.contains_key(a))
        .map(|a| tcp(*a))
        .collect();
    if !removed.is_empty() {
        out.push(Update {
            update: Some(update::Update::Remove(AddrSet { addrs: removed })),
        });
    }
    out
}

fn add<'a>(set: &Endpoints, addrs: impl Iterator<Item = (&'a SocketAddr, &'a Addr)>) -> Update {
    Update {
        update: Some(update::Update::Add(WeightedAddrSet {
            addrs: addrs.map(|(a, v)| weighted(*a, v)).collect(),
            metric_labels: set.labels.clone().into_iter().collect(),
        })),
    }
}

fn tcp(addr: SocketAddr) -> TcpAddress {
    TcpAddress {
        ip: Some(addr.ip().into()),
        port: u32::from(addr.port()),
    }
}

pub fn weighted(addr: SocketAddr, a: &Addr) -> WeightedAddr {
    let dns = |name: &String| tls_identity::DnsLikeIdentity { name: name.clone() };
    WeightedAddr {
        addr: Some(tcp(addr)),
        weight: a.weight,
        metric_labels: a.labels.clone().into_iter().collect(),
        tls_identity: a.identity.as_ref().map(|n| TlsIdentity {
            server_name: Some(dns(n)),
            strategy: Some(tls_identity::Strategy::DnsLikeIdentity(dns(n))),
        }),
        protocol_hint: (a.h2 || a.opaque_transport.is_some()).then_some(ProtocolHint {
            opaque_transport: a.opaque_transport.map(|p| protocol_hint::OpaqueTransport {
                inbound_port: u32::from(p),
            }),
            protocol: a
                .h2
                .then_some(protocol_hint::Protocol::H2(protocol_hint::H2 {})),
        }),
        authority_override: a.authority_override.as_ref().map(|o| AuthorityOverride {
            authority_override: o.clone(),
        }),
        ..Default::default()
    }
}

pub fn profile(p: &Profile) -> DestinationProfile {
    DestinationProfile {
        fully_qualified_name: p.fqn.clone(),
        opaque_protocol: p.opaque,
        dst_overrides: p
            .overrides
            .iter()
            .map(|o| WeightedDst {
                authority: o.authority.clone(),
                weight: o.weight,
                backend_ref: None,
            })
            .collect(),
        endpoint: p.endpoint.as_ref().map(|(a, v)| weighted(*a, v)),
        ..Default::default()
    }
}

// === impl Server ===

/// The Destination service.
#[derive(Clone)]
pub struct Server {
    index: SharedIndex,
    metrics: Metrics,
    cluster_domain: String,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Server {
    pub fn new(index: SharedIndex, metrics: Metrics, cluster_domain: String) -> Self {
        Self {
            index,
            metrics,
            cluster_domain,
        }
    }

    fn target(&self, req: &GetDestination) -> Result<Target, Status> {
        let ctx = parse_context(&req.context_token);
        tracing::debug!(path = %req.path, ns = ?ctx.ns, node = ?ctx.node_name, "request");
        parse_path(&req.path, &self.cluster_domain).map_err(Status::invalid_argument)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock can't leave the maps half-written
        // in a way that matters more than stopping would: keep serving.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[tonic::async_trait]
impl Destination for Server {
    type GetStream = BoxStream<Update>;
    type GetProfileStream = BoxStream<DestinationProfile>;

    async fn get(&self, req: Request<GetDestination>) -> Result<Response<Self::GetStream>, Status> {
        let (svc, port) = match self.target(req.get_ref())? {
            Target::Service(svc, port) => (svc, port),
            Target::Ip(..) => {
                return Err(Status::invalid_argument(
                    "Get takes a Service name, not an IP",
                ));
            }
        };
        let rx = self.lock().endpoints_rx(svc, port);
        let guard = self.metrics.subscribe(Kind::Get);
        Ok(Response::new(Box::pin(endpoint_stream(rx, guard))))
    }

    async fn get_profile(
        &self,
        req: Request<GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let target = match self.target(req.get_ref())? {
            Target::Service(svc, port) => ProfileTarget::Service(svc, port),
            Target::Ip(ip, port) => ProfileTarget::Ip(ip, port),
        };
        let rx = self.lock().profile_rx(target);
        let guard = self.metrics.subscribe(Kind::GetProfile);
        Ok(Response::new(Box::pin(profile_stream(rx, guard))))
    }
}

struct EndpointState {
    rx: watch::Receiver<Endpoints>,
    last: Option<Endpoints>,
    queue: VecDeque<Update>,
    guard: Guard,
}

fn endpoint_stream(
    rx: watch::Receiver<Endpoints>,
    guard: Guard,
) -> impl Stream<Item = Result<Update, Status>> + Send {
    let state = EndpointState {
        rx,
        last: None,
        queue: VecDeque::new(),
        guard,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(u) = s.queue.pop_front() {
                s.guard.sent();
                return Some((Ok(u), s));
            }
            if s.last.is_some() && s.rx.changed().await.is_err() {
                return None;
            }
            let new = s.rx.borrow_and_update().clone();
            s.queue.extend(diff(s.last.as_ref(), &new));
            s.last = Some(new);
        }
    })
}

fn profile_stream(
    rx: watch::Receiver<Profile>,
    guard: Guard,
) -> impl Stream<Item = Result<DestinationProfile, Status>> + Send {
    futures::stream::unfold((rx, guard, true), |(mut rx, guard, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let p = profile(&rx.borrow_and_update());
        guard.sent();
        Some((Ok(p), (rx, guard, false)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "cluster.local";

    #[test]
    fn paths() {
        let s = |ns: &str, n: &str, p| Ok(Target::Service(SvcKey::new(ns, n), p));
        #[rustfmt::skip]
    let cases = [
        ("emoji-svc.ev.svc.cluster.local:8080", s("ev", "emoji-svc", 8080)),
        ("emoji-svc.ev.svc.cluster.local.:8080", s("ev", "emoji-svc", 8080)),
        ("emoji-svc.ev.svc.cluster.local", s("ev", "emoji-svc", 80)),
        ("10.96.0.10:8080", Ok(Target::Ip("10.96.0.10".parse().unwrap(), 8080))),
        ("[fd00::1]:80", Ok(Target::Ip("fd00::1".parse().unwrap(), 80))),
    ];
        for (path, want) in cases {
            assert_eq!(parse_path(path, DOMAIN), want, "{path}");
        }
        for bad in [
            "example.com:80",
            "a.b.c.svc.cluster.local:80",
            "emoji-svc.ev.svc.cluster.local:http",
            ".ev.svc.cluster.local:80",
        ] {
            assert!(parse_path(bad, DOMAIN).is_err(), "{bad}");
        }
        assert_eq!(
            parse_context(r#"{"ns":"ev","nodeName":"n1"}"#)
                .ns
                .as_deref(),
            Some("ev")
        );
        assert_eq!(parse_context("garbage"), Default::default());
    }
}

//! The destination client: `GetProfile` for an original destination and
//! `Get` for each backend, each followed on a `watch` channel.
//!
//! A broken stream reconnects with backoff and the channel keeps the last
//! known value meanwhile; a reconnected `Get` replaces the endpoint set with
//! the server's first answer.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::SocketAddr,
    time::Duration,
};

use linkerd2_proxy_api::destination::{
    DestinationProfile, GetDestination, TlsIdentity, Update, WeightedAddr,
    destination_client::DestinationClient, protocol_hint, tls_identity, update,
};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::endpoint::{Endpoint, Protocol};

/// What a profile lookup says about an original destination.
#[derive(Clone, Debug, PartialEq)]
pub enum Profile {
    /// Not a known service: forward to the original destination as it is.
    Unknown,
    /// A known pod: connect to it directly.
    Endpoint(Endpoint),
    /// A service: split between weighted backends.
    Logical { fqn: String, backends: Vec<Backend> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// `<fqdn>:<port>`, the path of its `Get`.
    pub authority: String,
    pub weight: u32,
}

pub type Endpoints = BTreeMap<SocketAddr, Endpoint>;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the destination service refused {path:?}: {status}")]
    Refused { path: String, status: tonic::Status },
    #[error("the destination service did not answer for {path:?} within {timeout:?}")]
    Timeout { path: String, timeout: Duration },
}

// === pure conversions ===

/// A profile message for `target`. Backends of weight 0 stay, after the
/// others, as fallbacks: never picked by weight, but tried when the
/// weighted ones have no endpoint left or failed to connect (the moment
/// of a failover, before the weights flip). With no positive weight,
/// everything goes to the service itself, the others behind it.
pub fn profile_from_proto(p: DestinationProfile, target: SocketAddr) -> Profile {
    if let Some(ep) = p
        .endpoint
        .and_then(|wa| endpoint_from_proto(wa, &HashMap::new()))
    {
        return Profile::Endpoint(ep);
    }
    let fqn = p.fully_qualified_name.trim_end_matches('.').to_string();
    if fqn.is_empty() {
        return Profile::Unknown;
    }
    let mut backends: Vec<Backend> = vec![];
    for d in p.dst_overrides {
        if d.authority.is_empty() {
            continue;
        }
        let authority = with_port(d.authority.trim_end_matches('.'), target.port());
        match backends.iter_mut().find(|b| b.authority == authority) {
            Some(b) => b.weight = b.weight.saturating_add(d.weight),
            None => backends.push(Backend {
                authority,
                weight: d.weight,
            }),
        }
    }
    if backends.iter().all(|b| b.weight == 0) {
        let apex = format!("{fqn}:{}", target.port());
        backends.retain(|b| b.authority != apex);
        backends.insert(
            0,
            Backend {
                authority: apex,
                weight: 1,
            },
        );
    }
    // Weighted first, then the fallbacks, each in the profile's order.
    backends.sort_by_key(|b| b.weight == 0);
    Profile::Logical { fqn, backends }
}

fn with_port(authority: &str, port: u16) -> String {
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{port}")
    }
}

/// An address of an endpoint set, its labels merged over the set's.
pub fn endpoint_from_proto(
    wa: WeightedAddr,
    set_labels: &HashMap<String, String>,
) -> Option<Endpoint> {
    let addr = SocketAddr::try_from(wa.addr?).ok()?;
    let mut labels: BTreeMap<String, String> = set_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(wa.metric_labels);
    let identity = match wa.tls_identity {
        Some(TlsIdentity {
            strategy: Some(tls_identity::Strategy::DnsLikeIdentity(d)),
            ..
        }) => d.name.parse().ok(),
        _ => None,
    };
    let opaque_transport = wa
        .protocol_hint
        .as_ref()
        .and_then(|h| h.opaque_transport.as_ref())
        .and_then(|t| u16::try_from(t.inbound_port).ok())
        .filter(|p| *p != 0);
    let hint = match wa.protocol_hint.and_then(|h| h.protocol) {
        Some(protocol_hint::Protocol::H2(_)) => Protocol::H2,
        Some(protocol_hint::Protocol::Opaque(_)) => Protocol::Opaque,
        None => Protocol::Unknown,
    };
    Some(Endpoint {
        addr,
        identity,
        authority_override: wa
            .authority_override
            .map(|a| a.authority_override)
            .filter(|a| !a.is_empty()),
        hint,
        opaque_transport,
        labels,
    })
}

/// Applies one `Get` update to an endpoint set.
pub fn apply_update(eps: &mut Endpoints, u: Update) {
    match u.update {
        Some(update::Update::Add(set)) => {
            for wa in set.addrs {
                if let Some(ep) = endpoint_from_proto(wa, &set.metric_labels) {
                    eps.insert(ep.addr, ep);
                }
            }
        }
        Some(update::Update::Remove(set)) => {
            for a in set.addrs {
                if let Ok(addr) = SocketAddr::try_from(a) {
                    eps.remove(&addr);
                }
            }
        }
        Some(update::Update::NoEndpoints(_)) => eps.clear(),
        None => {}
    }
}

// === impl Resolver ===

/// Lookups. Each is a stream that lives while its receivers do (the
/// outbound router of a target, and its backends), so an idle target's
/// streams end with its router.
#[derive(Clone)]
pub struct Resolver {
    client: DestinationClient<Channel>,
    context: String,
    timeout: Duration,
}

impl Resolver {
    /// A resolver for the destination service at `addr` (host:port); the
    /// connection is made lazily and remade as needed.
    pub fn new(addr: &str, context: String) -> Result<Self, http::uri::InvalidUri> {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        Ok(Resolver {
            client: DestinationClient::new(channel),
            context,
            timeout: Duration::from_secs(3),
        })
    }

    /// The profile of `target`; [`Profile::Unknown`] when the service has
    /// none or cannot be asked (the connection is forwarded as it is).
    pub async fn profile(&self, target: SocketAddr) -> watch::Receiver<Profile> {
        let req = self.request(target.to_string());
        let client = self.client.clone();
        let open = move || {
            let mut c = client.clone();
            let req = req.clone();
            async move { c.get_profile(req).await.map(|r| r.into_inner()) }
        };
        let apply =
            move |p: &mut Profile, m: DestinationProfile| *p = profile_from_proto(m, target);
        match follow(
            target.to_string(),
            self.timeout,
            open,
            apply,
            Profile::Unknown,
        )
        .await
        {
            Ok(rx) => rx,
            Err(error) => {
                tracing::info!(%target, %error, "no profile; forwarding to the original destination");
                watch::channel(Profile::Unknown).1
            }
        }
    }

    /// The endpoints of `authority` (`<fqdn>:<port>`); an unknown authority
    /// fails at once.
    pub async fn endpoints(
        &self,
        authority: &str,
    ) -> Result<watch::Receiver<Endpoints>, ResolveError> {
        let req = self.request(authority.to_string());
        let client = self.client.clone();
        let open = move || {
            let mut c = client.clone();
            let req = req.clone();
            async move { c.get(req).await.map(|r| r.into_inner()) }
        };
        let rx = follow(
            authority.to_string(),
            self.timeout,
            open,
            apply_update,
            Endpoints::new(),
        )
        .await
        .inspect_err(|error| tracing::warn!(authority, %error, "cannot resolve backend"))?;
        Ok(rx)
    }

    fn request(&self, path: String) -> GetDestination {
        GetDestination {
            scheme: "k8s".into(),
            path,
            context_token: self.context.clone(),
        }
    }
}

/// Opens a stream, waits for its first message, then follows it in a task
/// that reconnects with backoff while the channel has receivers.
async fn follow<M, S, Open, Fut>(
    path: String,
    timeout: Duration,
    open: Open,
    apply: impl Fn(&mut S, M) + Send + Sync + 'static,
    init: S,
) -> Result<watch::Receiver<S>, ResolveError>
where
    M: Send + 'static,
    S: Clone + Send + Sync + 'static,
    Open: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<tonic::Streaming<M>, tonic::Status>> + Send,
{
    let refused = |status| ResolveError::Refused {
        path: path.clone(),
        status,
    };
    let first = async {
        let mut stream = open().await.map_err(refused)?;
        match stream.message().await.map_err(refused)? {
            Some(m) => Ok((stream, m)),
            None => Err(refused(tonic::Status::unavailable("stream ended"))),
        }
    };
    let (mut stream, m) =
        tokio::time::timeout(timeout, first)
            .await
            .map_err(|_| ResolveError::Timeout {
                path: path.clone(),
                timeout,
            })??;
    let mut state = init.clone();
    apply(&mut state, m);
    let (tx, rx) = watch::channel(state);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    // No one listens any more: end the stream.
                    _ = tx.closed() => return,
                };
                match message {
                    Ok(Some(m)) => {
                        tx.send_modify(|s| apply(s, m));
                        backoff = Duration::from_millis(100);
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(%path, %error, "destination stream broke; keeping the last answer");
                        break;
                    }
                }
            }
            // Reconnect; the first answer of a new stream replaces the state.
            loop {
                if tx.is_closed() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tx.closed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                let Ok(mut s) = open().await else { continue };
                if let Ok(Some(m)) = s.message().await {
                    let mut fresh = init.clone();
                    apply(&mut fresh, m);
                    tx.send_replace(fresh);
                    stream = s;
                    tracing::info!(%path, "destination stream reconnected");
                    break;
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkerd2_proxy_api::{
        destination::{AddrSet, NoEndpoints, ProtocolHint, WeightedAddrSet, WeightedDst},
        net::TcpAddress,
    };

    fn wa(addr: &str) -> WeightedAddr {
        WeightedAddr {
            addr: Some(TcpAddress::from(addr.parse::<SocketAddr>().unwrap())),
            weight: 10000,
            ..Default::default()
        }
    }

    #[test]
    fn profiles_keep_weight_zero_as_fallbacks_and_fall_back_to_the_apex() {
        let target: SocketAddr = "10.96.0.10:8080".parse().unwrap();
        let p = |fqn: &str, dsts: &[(&str, u32)]| DestinationProfile {
            fully_qualified_name: fqn.into(),
            dst_overrides: dsts
                .iter()
                .map(|(a, w)| WeightedDst {
                    authority: a.to_string(),
                    weight: *w,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let logical = |backends: &[(&str, u32)]| Profile::Logical {
            fqn: "emoji-svc.emojivoto.svc.cluster.local".into(),
            backends: backends
                .iter()
                .map(|(a, w)| Backend {
                    authority: a.to_string(),
                    weight: *w,
                })
                .collect(),
        };
        let fqn = "emoji-svc.emojivoto.svc.cluster.local.";
        let cases = [
            (p("", &[]), Profile::Unknown),
            (
                p(fqn, &[]),
                logical(&[("emoji-svc.emojivoto.svc.cluster.local:8080", 1)]),
            ),
            (
                p(
                    fqn,
                    &[
                        ("b.ns.svc.cluster.local", 0),
                        ("a.ns.svc.cluster.local:8080", 30000),
                        ("", 5),
                    ],
                ),
                logical(&[
                    ("a.ns.svc.cluster.local:8080", 30000),
                    ("b.ns.svc.cluster.local:8080", 0),
                ]),
            ),
            (
                p(fqn, &[("a.ns.svc.cluster.local", 0)]),
                logical(&[
                    ("emoji-svc.emojivoto.svc.cluster.local:8080", 1),
                    ("a.ns.svc.cluster.local:8080", 0),
                ]),
            ),
            (
                // The apex at weight 0 is still the one that takes it all.
                p(
                    fqn,
                    &[
                        ("emoji-svc.emojivoto.svc.cluster.local", 0),
                        ("a.ns.svc.cluster.local", 0),
                        ("a.ns.svc.cluster.local:8080", 0),
                    ],
                ),
                logical(&[
                    ("emoji-svc.emojivoto.svc.cluster.local:8080", 1),
                    ("a.ns.svc.cluster.local:8080", 0),
                ]),
            ),
            (
                p(
                    fqn,
                    &[
                        ("a.ns.svc.cluster.local", 1),
                        ("b.ns.svc.cluster.local:9", 3),
                    ],
                ),
                logical(&[
                    ("a.ns.svc.cluster.local:8080", 1),
                    ("b.ns.svc.cluster.local:9", 3),
                ]),
            ),
        ];
        for (proto, want) in cases {
            assert_eq!(profile_from_proto(proto.clone(), target), want, "{proto:?}");
        }
        let direct = DestinationProfile {
            endpoint: Some(wa("10.1.0.4:8080")),
            ..Default::default()
        };
        assert_eq!(
            profile_from_proto(direct, target),
            Profile::Endpoint(Endpoint::forward("10.1.0.4:8080".parse().unwrap()))
        );
    }

    #[test]
    fn updates_add_remove_and_clear() {
        let mut eps = Endpoints::new();
        let mut a = wa("10.1.0.1:8080");
        a.tls_identity = Some(TlsIdentity {
            strategy: Some(tls_identity::Strategy::DnsLikeIdentity(
                tls_identity::DnsLikeIdentity {
                    name: "emoji.emojivoto.serviceaccount.identity.tandem.cluster.local".into(),
                },
            )),
            ..Default::default()
        });
        a.protocol_hint = Some(ProtocolHint {
            protocol: Some(protocol_hint::Protocol::H2(protocol_hint::H2 {})),
            ..Default::default()
        });
        a.metric_labels = [("pod".to_string(), "emoji-1".to_string())].into();
        let add = |addrs| Update {
            update: Some(update::Update::Add(WeightedAddrSet {
                addrs,
                metric_labels: [("service".to_string(), "emoji-svc".to_string())].into(),
            })),
        };
        apply_update(
            &mut eps,
            add(vec![a, wa("10.1.0.2:8080"), WeightedAddr::default()]),
        );
        assert_eq!(eps.len(), 2, "an address-less entry is skipped");
        let first = &eps[&"10.1.0.1:8080".parse().unwrap()];
        assert_eq!(first.hint, Protocol::H2);
        assert!(first.identity.is_some());
        assert_eq!(first.labels["service"], "emoji-svc");
        assert_eq!(first.labels["pod"], "emoji-1");
        apply_update(
            &mut eps,
            Update {
                update: Some(update::Update::Remove(AddrSet {
                    addrs: vec![TcpAddress::from(
                        "10.1.0.1:8080".parse::<SocketAddr>().unwrap(),
                    )],
                })),
            },
        );
        assert_eq!(
            eps.keys().copied().collect::<Vec<_>>(),
            ["10.1.0.2:8080".parse().unwrap()]
        );
        apply_update(
            &mut eps,
            Update {
                update: Some(update::Update::NoEndpoints(NoEndpoints { exists: true })),
            },
        );
        assert!(eps.is_empty());
    }
}

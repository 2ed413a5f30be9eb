//! The multicluster gateway (`tandem gateway`), as Linkerd 2.12's gateway
//! behaves (`linkerd/app/gateway` in linkerd2-proxy):
//!
//! 1. **Accept** on 4143: mesh TLS with a client certificate that chains to
//!    the trust anchors ([`ClientAuth::Required`]); anything else is
//!    refused with one log line and `gateway_refused_total{reason}`.
//! 2. **Target**: the transport header's `name:port` (ALPN
//!    `transport.l5d.io/v1`), or, for HTTP without a header, each request's
//!    authority.
//! 3. **Decide** with [`tandem_meshtls::gateway`]'s rules: a name under the
//!    suffixes, a Service in the [`Exports`] set, no `Forwarded: by=` of the
//!    gateway's own identity (a loop). HTTP refusals answer 400/403/502;
//!    TCP refusals close the connection.
//! 4. **Forward** through the local mesh ([`backends`]): `Get` from the
//!    destination service, P2C over the endpoints, the proxy's
//!    `endpoint::connect`. HTTP gets the `Forwarded` element appended and,
//!    for HTTP/1, its Host rewritten; opaque TCP is copied both ways.
//!
//! [`readiness`] keeps `/ready` at 503 while the gateway holds no
//! certificate or the destination service does not answer.

pub mod backends;
pub mod config;
pub mod exports;
mod http;
pub mod metrics;

use std::{sync::Arc, time::Duration};

use tandem_admin::Readiness;
use tandem_meshtls::{
    ClientAuth, CredentialsRx, Name, PrefixedIo, TRANSPORT_ALPN, Tls, accept,
    gateway::{self as rules, Ask, Refusal, Target},
    transport_header::{self, SessionProtocol},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::watch,
};

use crate::{
    detect::{Detected, detect},
    discover::Resolver,
    io::Counted,
    metrics::Peer,
};

pub use backends::{Backends, destination_answered};
pub use config::{Config, ConfigError, GatewayArgs};
pub use exports::{EXPORT_LABEL, Exports, ServiceRef, is_exported};
pub use metrics::{GatewayMetrics, Reason};

/// Tries per connection or request: the first and two others.
const MAX_TRIES: usize = 3;

/// The gateway's connection handler; cheap to clone.
#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

struct Inner {
    rules: rules::Gateway,
    tls: Tls,
    exports: Exports,
    backends: Backends,
    metrics: GatewayMetrics,
    detect_timeout: Duration,
}

impl Gateway {
    pub fn new(
        rules: rules::Gateway,
        tls: Tls,
        exports: Exports,
        backends: Backends,
        metrics: GatewayMetrics,
        detect_timeout: Duration,
    ) -> Self {
        Gateway(Arc::new(Inner {
            rules,
            tls,
            exports,
            backends,
            metrics,
            detect_timeout,
        }))
    }

    pub fn identity(&self) -> &Name {
        &self.0.rules.identity
    }

    fn refuse(&self, reason: Reason, client: Option<&Name>, why: &dyn std::fmt::Display) {
        tracing::info!(
            reason = reason.as_str(),
            client = client.map(Name::as_str).unwrap_or("-"),
            why = %why,
            "gateway refused"
        );
        self.0.metrics.refused(reason);
    }

    fn decide(&self, ask: &Ask<'_>) -> Result<rules::Forward, Refusal> {
        self.0
            .rules
            .decide(ask, |ns, svc| self.0.exports.contains(ns, svc))
    }

    /// Handles one accepted connection to its end.
    pub async fn handle(self, stream: TcpStream, shutdown: watch::Receiver<bool>) {
        let peer = stream.peer_addr().ok();
        let _ = stream.set_nodelay(true);
        let config = match self.0.tls.server(ClientAuth::Required) {
            Ok(c) => c,
            Err(error) => return self.refuse(Reason::NoCredentials, None, &error),
        };
        let accepted = tokio::time::timeout(self.0.detect_timeout, accept(stream, config)).await;
        let accepted = match accepted {
            Ok(Ok(a)) => a,
            Ok(Err(error)) => {
                let why = format!("{error} (from {peer:?})");
                return self.refuse(Reason::of_handshake(&error), None, &why);
            }
            Err(_) => {
                let why = format!("no TLS handshake within {:?}", self.0.detect_timeout);
                return self.refuse(Reason::Tls, None, &why);
            }
        };
        let client = accepted.client_id.clone();
        let io = accepted.io;
        if accepted.alpn.as_deref() == Some(TRANSPORT_ALPN) {
            match transport_header::read(io, self.0.detect_timeout).await {
                Ok((Some(header), io)) => {
                    let target = match Target::from_header(&header) {
                        Ok(t) => t,
                        Err(r) => return self.refuse(Reason::of_refusal(&r), client.as_ref(), &r),
                    };
                    match header.protocol {
                        None => self.forward_tcp(target, client, io).await,
                        Some(p) => {
                            let proto = match p {
                                SessionProtocol::Http1 => Detected::Http1,
                                SessionProtocol::Http2 => Detected::H2,
                            };
                            self.serve_http(Some(target), client, io, Some(proto), shutdown)
                                .await
                        }
                    }
                }
                Ok((None, io)) => self.serve_http(None, client, io, None, shutdown).await,
                Err(error) => self.refuse(Reason::BadHeader, client.as_ref(), &error),
            }
        } else {
            let io = PrefixedIo::new(Vec::new(), io);
            self.serve_http(None, client, io, None, shutdown).await
        }
    }

    /// HTTP on the connection: `target` from the header, else each
    /// request's authority; `proto` as the header says, else detected.
    async fn serve_http<I>(
        self,
        target: Option<Target>,
        client: Option<Name>,
        io: I,
        proto: Option<Detected>,
        shutdown: watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (detected, io) = match detect(io, self.0.detect_timeout).await {
            Ok(d) => d,
            Err(error) => {
                tracing::debug!(%error, "gateway connection failed during detection");
                return;
            }
        };
        let proto = match (proto, detected) {
            (_, Detected::Opaque) => {
                let why = "neither a transport header nor an HTTP request names a target";
                return self.refuse(Reason::NoTarget, client.as_ref(), &why);
            }
            (Some(p), _) => p,
            (None, d) => d,
        };
        let handle = move |req| {
            self.clone()
                .http_request(target.clone(), client.clone(), req)
        };
        crate::http::serve(io, proto, handle, shutdown).await
    }

    /// Opaque TCP to `target`'s endpoints.
    async fn forward_tcp<I>(self, target: Target, client: Option<Name>, mut io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let ask = Ask {
            target,
            client_id: client.as_ref(),
            forwarded: &[],
        };
        let fwd = match self.decide(&ask) {
            Ok(f) => f,
            Err(r) => return self.refuse(Reason::of_refusal(&r), client.as_ref(), &r),
        };
        let backends = &self.0.backends;
        let mut tried = vec![];
        for _ in 0..MAX_TRIES {
            let slot = match backends.pick(&fwd.authority, &tried).await {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(error) => return self.refuse(Reason::Unresolved, client.as_ref(), &error),
            };
            match backends.connect(&slot).await {
                Ok(stream) => {
                    self.0.metrics.forwarded("tcp");
                    let labels = slot.target.tcp_labels(Peer::Dst);
                    let (guard, read, write) = backends.metrics().tcp(labels);
                    let mut dst = Counted::new(stream, read, write).with_guard(guard);
                    if let Err(error) = tokio::io::copy_bidirectional(&mut io, &mut dst).await {
                        tracing::debug!(%error, endpoint = %slot.ep.addr, "gateway TCP ended");
                    }
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, endpoint = %slot.ep.addr, "connect failed");
                    tried.push(slot.ep.addr);
                }
            }
        }
        let why = format!("no endpoint of {} is reachable", fwd.authority);
        self.refuse(Reason::Unresolved, client.as_ref(), &why);
    }
}

/// Keeps `/ready` true only while the gateway holds a certificate and the
/// destination service answers (checked every `period` by resolving
/// `probe_authority`).
pub async fn readiness(
    readiness: Readiness,
    mut creds: CredentialsRx,
    resolver: Resolver,
    probe_authority: String,
    period: Duration,
) {
    let mut tick = tokio::time::interval(period);
    let mut answered = false;
    loop {
        let has_creds = creds.borrow_and_update().is_some();
        readiness.set(has_creds && answered);
        tokio::select! {
            _ = tick.tick() => {
                let outcome = resolver.endpoints(&probe_authority).await;
                let now = destination_answered(&outcome);
                if now != answered {
                    tracing::info!(answered = now, authority = %probe_authority, "destination service");
                }
                answered = now;
            }
            changed = creds.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests;

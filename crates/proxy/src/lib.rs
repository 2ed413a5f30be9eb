//! tandem's sidecar proxy, shaped like linkerd2-proxy: inbound on 4143,
//! outbound on 4140, admin on 4191, with Linkerd's metric names.
//!
//! - [`config`]: `LINKERD2_PROXY_*` into a typed [`Config`].
//! - [`endpoint`]: the targets and their TLS status; [`connect`]: outbound
//!   connections, mTLS to an endpoint's identity, transport headers.
//! - [`detect`]: HTTP/1, HTTP/2 or opaque, by the first bytes.
//! - [`discover`]: profiles and endpoints from the destination service, on
//!   `watch` channels.
//! - [`balance`]: the weighted split and P2C over peak-EWMA.
//! - [`outbound`], [`inbound`]: the two data paths; [`admin`], [`metrics`].
//! - [`gateway`]: the multicluster gateway (`tandem gateway`) on 4143.

#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod connect;
pub mod detect;
pub mod direct;
pub mod discover;
pub mod endpoint;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod io;
pub mod metrics;
pub mod outbound;

use std::{net::SocketAddr, time::Duration};

use prometheus_client::registry::Registry;
use tandem_meshtls::{CredentialsRx, Tls};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

pub use config::{Args, Config};

use crate::{discover::Resolver, endpoint::OrigDst, metrics::Metrics};

/// What every connection handler shares.
#[derive(Clone)]
pub struct Ctx {
    pub metrics: Metrics,
    pub resolver: Option<Resolver>,
    pub connect_timeout: Duration,
    pub detect_timeout: Duration,
    /// Mesh TLS, unless identity is disabled: the credentials identity
    /// publishes and the anchors every peer must chain to.
    pub tls: Option<Tls>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("bad destination service address {addr:?}: {source}")]
    Destination {
        addr: String,
        #[source]
        source: ::http::uri::InvalidUri,
    },
}

/// The three listeners, bound; [`Proxy::serve`] runs them.
pub struct Proxy {
    pub inbound_addr: SocketAddr,
    pub outbound_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Identity's metrics, on the admin server; for the Certify client.
    pub identity_metrics: identity::Metrics,
    inbound: (TcpListener, inbound::Inbound),
    outbound: (TcpListener, outbound::Outbound),
    admin: (TcpListener, axum::Router, Option<Tls>),
    shutdown: watch::Sender<bool>,
}

impl Proxy {
    /// Binds the listeners. `creds` carries the proxy's certificate (the
    /// caller runs the Certify client on its sender, see [`identity::run`]);
    /// with identity enabled it is used for mTLS both ways. `orig_dst` tells
    /// each accepted connection's target (`SO_ORIGINAL_DST` in a pod).
    pub async fn bind(
        config: &Config,
        creds: CredentialsRx,
        orig_dst: OrigDst,
    ) -> Result<Self, ProxyError> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let identity_metrics = identity::Metrics::register(&mut registry);
        let resolver = match &config.destination {
            Some(d) => Some(Resolver::new(&d.addr, d.context.clone()).map_err(|source| {
                ProxyError::Destination {
                    addr: d.addr.clone(),
                    source,
                }
            })?),
            None => None,
        };
        let ctx = Ctx {
            metrics,
            resolver,
            connect_timeout: config.connect_timeout,
            detect_timeout: config.detect_timeout,
            tls: config
                .identity
                .as_ref()
                .map(|i| Tls::new(creds.clone(), i.anchors.clone())),
        };
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Bind { what, addr, source })
        };
        let admin_tls = ctx.tls.clone();
        let inbound = bind("inbound", config.inbound_addr).await?;
        let outbound = bind("outbound", config.outbound_addr).await?;
        let admin_listener = bind("admin", config.admin_addr).await?;
        let local = |l: &TcpListener| l.local_addr().expect("a bound listener has an address");
        let (inbound_addr, outbound_addr, admin_addr) =
            (local(&inbound), local(&outbound), local(&admin_listener));
        let (shutdown, _) = watch::channel(false);
        let admin = admin::admin(registry, config.identity_disabled, creds);
        let admin_router = admin::router(&admin, shutdown.clone());
        Ok(Proxy {
            inbound_addr,
            outbound_addr,
            admin_addr,
            identity_metrics,
            inbound: (
                inbound,
                inbound::Inbound::new(ctx.clone(), orig_dst.clone(), inbound_addr),
            ),
            outbound: (
                outbound,
                outbound::Outbound::new(
                    ctx,
                    orig_dst,
                    outbound_addr,
                    config.discovery_idle_timeout,
                ),
            ),
            admin: (admin_listener, admin_router, admin_tls),
            shutdown,
        })
    }

    /// What connection handlers share (metrics, discovery, mesh TLS), for a
    /// gateway that routes like the outbound side.
    pub fn ctx(&self) -> Ctx {
        self.inbound.1.ctx().clone()
    }

    /// Hands direct connections for a named target (the multicluster
    /// gateway's) to `gateway`; without one they are refused.
    pub fn with_gateway(mut self, gateway: std::sync::Arc<dyn direct::GatewayHandler>) -> Self {
        let (listener, inbound) = self.inbound;
        self.inbound = (listener, inbound.with_gateway(Some(gateway)));
        self
    }

    /// A handle that stops the proxy (as `POST /shutdown` does).
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Serves until `signal` completes or `/shutdown` is posted; then stops
    /// accepting and gives open connections `grace` to finish.
    pub async fn serve(self, signal: impl std::future::Future<Output = ()>, grace: Duration) {
        let Proxy {
            inbound: (in_listener, inbound),
            outbound: (out_listener, outbound),
            admin: (admin_listener, admin_router, admin_tls),
            shutdown,
            ..
        } = self;
        let mut conns = JoinSet::new();
        let admin_task = tokio::spawn(admin::serve(admin_listener, admin_router, admin_tls));
        let mut stop = shutdown.subscribe();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                _ = http::stopped(&mut stop) => break,
                accepted = out_listener.accept() => match accepted {
                    Ok((s, _)) => { conns.spawn(outbound.clone().handle(s, shutdown.subscribe())); }
                    Err(error) => accept_failed("outbound", error).await,
                },
                accepted = in_listener.accept() => match accepted {
                    Ok((s, _)) => { conns.spawn(inbound.clone().handle(s, shutdown.subscribe())); }
                    Err(error) => accept_failed("inbound", error).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        tracing::info!(open = conns.len(), "shutting down");
        shutdown.send_replace(true);
        drop((in_listener, out_listener));
        let drained =
            tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::info!(open = conns.len(), "grace period over; closing connections");
        }
        conns.shutdown().await;
        admin_task.abort();
    }
}

/// An accept error (e.g. out of file descriptors) is logged, and the
/// listener rests a moment rather than spinning.
async fn accept_failed(listener: &'static str, error: std::io::Error) {
    tracing::warn!(listener, %error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

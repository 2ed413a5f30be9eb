//! `tandem viz dashboard`: a page, served on loopback, of each cluster's
//! TrafficSplits (live weights, failover state and Events), gateways (the
//! Links and the service mirror's probes of the remote gateway) and
//! services' traffic (when viz answers).
//!
//! - [`model`]: what the page shows, made from API objects by pure functions.
//! - [`gather`]: one task per cluster reads it every refresh period into a
//!   watch channel.
//! - [`server`]: the routes, over the latest views.
//! - [`stats`]: the seam to Prometheus.

#![forbid(unsafe_code)]

pub mod gather;
pub mod model;
pub mod server;
pub mod stats;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};

pub use gather::Cluster;
pub use stats::StatsSource;

use crate::model::ClusterView;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the dashboard serves on loopback only, and {addr} is not a loopback address")]
    NotLoopback { addr: SocketAddr },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving the dashboard")]
    Serve(#[source] std::io::Error),
}

/// A dashboard bound to its address, not serving yet.
pub struct Dashboard {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Dashboard {
    /// Listens on `addr`, which must be a loopback address (port 0 picks one).
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        if !addr.ip().is_loopback() {
            return Err(Error::NotLoopback { addr });
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(Self { listener, addr })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Gathers each of `clusters` every `refresh` and serves the page until
    /// `shutdown` completes.
    pub async fn serve(
        self,
        clusters: Vec<Cluster>,
        refresh: Duration,
        stats: Arc<dyn StatsSource>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let mut receivers = vec![];
        let mut tasks = tokio::task::JoinSet::new();
        for cluster in clusters {
            let (tx, rx) = watch::channel(ClusterView {
                context: cluster.context.clone(),
                ..Default::default()
            });
            receivers.push(rx);
            let span = tracing::info_span!("gather", context = %cluster.context);
            let stats = stats.clone();
            tasks.spawn(tracing::Instrument::instrument(
                gather::run(cluster, refresh, stats, tx),
                span,
            ));
        }
        let views = server::Views {
            refresh_ms: u64::try_from(refresh.as_millis()).unwrap_or(u64::MAX),
            clusters: Arc::new(receivers),
        };
        let served = axum::serve(self.listener, server::router(views))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve);
        tasks.abort_all();
        served
    }
}

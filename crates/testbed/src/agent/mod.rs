//! The testbed agent: one process per cluster that does what a cloud
//! provider and a registry would.
//!
//! - [`allocate`]: which LoadBalancer address each Service gets (pure).
//! - [`lb`]: the controller that watches Services and writes
//!   `status.loadBalancer.ingress = [{ip, ipMode: VIP}]`, with the Events
//!   `IPAllocated` and `AllocationFailed`. Routes to the node and kube-proxy
//!   carry the traffic; the agent only hands out addresses.
//! - [`images`]: nodes never pull, so a pod waiting for an image that was
//!   not loaded gets one `ImageNotLoaded` Event naming the command that
//!   loads it.
//! - `writer`: the only place that writes to the API, with a timeout on
//!   every call and retries with backoff.
//!
//! It serves `/healthz` (200 once Services and Pods are listed), `/live`,
//! `/ready` and `/metrics` on 127.0.0.1.

use std::{future::Future, net::SocketAddr};

use axum::{http::StatusCode, routing::get};
use prometheus_client::registry::Registry;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tracing::Instrument;

pub mod allocate;
pub mod images;
pub mod lb;
mod metrics;
mod writer;

pub use allocate::{Pool, PoolError};

/// The field manager of status writes and the reporting controller of Events.
pub const FIELD_MANAGER: &str = "tandem-testbed-agent";

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The LoadBalancer address pool, such as `198.18.64.0/24`.
    pub pool: Pool,
    /// Where to serve `/healthz`, `/live`, `/ready` and `/metrics`.
    pub health_addr: SocketAddr,
    /// This process in Events (`reportingInstance`).
    pub instance: String,
}

impl AgentConfig {
    /// Serves on 127.0.0.1:`health_port`; the instance is `agent-<pid>`.
    pub fn new(pool: Pool, health_port: u16) -> Self {
        Self {
            pool,
            health_addr: SocketAddr::from(([127, 0, 0, 1], health_port)),
            instance: format!("{FIELD_MANAGER}-{}", std::process::id()),
        }
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serve /healthz on {addr}: {source}; choose another port with --health-port")]
    Health {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A task that runs for the agent's whole life ended: a bug.
    #[error("the agent's {task} stopped unexpectedly")]
    TaskEnded { task: &'static str },
}

/// Runs the LoadBalancer controller and the image hints until `shutdown`
/// resolves. Fails at once if the health port cannot be bound.
pub async fn run(
    client: kube::Client,
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let mut registry = Registry::with_prefix("tandem_testbed_agent");
    let metrics = metrics::Metrics::register(&mut registry, &config.pool);
    let (admin, readiness) = tandem_admin::Admin::new(registry);
    let listener = tokio::net::TcpListener::bind(config.health_addr)
        .await
        .map_err(|source| Error::Health {
            addr: config.health_addr,
            source,
        })?;
    let (services_synced, services) = watch::channel(false);
    let (pods_synced, pods) = watch::channel(false);
    let router = admin.router().route(
        "/healthz",
        get(move || healthz(services.clone(), pods.clone())),
    );

    let (commands, queue) = mpsc::channel(1024);
    let writer = writer::Writer::new(
        writer::KubeSink::new(client.clone(), config.instance.clone()),
        metrics.clone(),
    );

    let mut tasks: JoinSet<&'static str> = JoinSet::new();
    tasks.spawn(
        async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "health server failed");
            }
            "health server"
        }
        .instrument(tracing::info_span!("health")),
    );
    tasks.spawn(async move {
        writer
            .run(queue)
            .instrument(tracing::info_span!("writer"))
            .await;
        "writer"
    });
    {
        let (client, pool, commands, synced, metrics) = (
            client.clone(),
            config.pool,
            commands.clone(),
            services_synced.clone(),
            metrics.clone(),
        );
        tasks.spawn(async move {
            lb::watch_services(client, pool, commands, synced, metrics).await;
            "service watch"
        });
    }
    {
        let synced = pods_synced.clone();
        tasks.spawn(async move {
            images::watch_pods(client, commands, synced, metrics).await;
            "pod watch"
        });
    }
    {
        let (mut s, mut p) = (services_synced.subscribe(), pods_synced.subscribe());
        tasks.spawn(async move {
            let _ = s.wait_for(|v| *v).await;
            let _ = p.wait_for(|v| *v).await;
            readiness.set(true);
            tracing::info!("ready");
            std::future::pending::<()>().await;
            "readiness"
        });
    }
    tracing::info!(pool = %config.pool, addresses = config.pool.size(), health = %config.health_addr, "testbed agent started");

    tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            tasks.abort_all();
            Ok(())
        }
        Some(ended) = tasks.join_next() => {
            let task = match ended {
                Ok(task) => task,
                Err(e) if e.is_panic() => "task (it panicked)",
                Err(_) => "task",
            };
            tasks.abort_all();
            Err(Error::TaskEnded { task })
        }
    }
}

/// 200 once Services and Pods are listed (and the assignments rebuilt).
async fn healthz(
    services: watch::Receiver<bool>,
    pods: watch::Receiver<bool>,
) -> (StatusCode, &'static str) {
    if *services.borrow() && *pods.borrow() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "syncing\n")
    }
}

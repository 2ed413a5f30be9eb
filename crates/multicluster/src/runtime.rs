//! The service mirror's runtime: it wires the jobs together.
//!
//! - Watches (`tandem_runtime::watch`) feed one loop: the Link and this
//!   Link's local mirrors (Services and slices) with the local client for
//!   the whole run; the remote Services and slices in a [`Session`].
//! - The loop keeps the sync [`State`], which says which keys need work,
//!   urgent ones (readiness) first.
//! - The writer runs one job per key, at most [`WRITE_CONCURRENCY`] at once
//!   ([`Pool`]), so that mirroring a thousand Services is not serial.
//! - The finalizer ([`crate::finalizer`]) runs once the Link is deleted and
//!   no job runs.
//! - The status writer ([`crate::status_writer`]) gets snapshots over a
//!   watch channel, on its own task.
//! - The gateway task resolves and probes the gateway.
//!
//! Nothing is deleted because the linked cluster cannot be reached: a remote
//! Service's absence counts only after a successful full list in the current
//! session.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    runtime::{
        events::{Recorder, Reporter},
        watcher,
    },
};
use prometheus_client::registry::Registry;
use tandem_api::multicluster::{Link, LinkSpec, MIRROR_MANAGED_BY, MIRRORED_SERVICE_LABEL};
use tandem_lease::LeaseParams;
use tandem_runtime::{
    Task,
    pool::Pool,
    watch::{self as watches, Update},
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::Instrument;

use crate::{
    finalizer,
    gateway::{self, GatewayConfig, GatewayState},
    index::Key,
    metrics::{self, Metrics},
    mirror::{LINK_LABEL, LinkConfig, MANAGED_BY_LABEL, link_label_value},
    own::{self, OwnObjects},
    session::{RemoteHealth, RemoteWatch, Session, SessionMsg},
    state::State,
    status::Remote,
    status_writer::{self, Snapshot},
    writer::{Report, Writer},
};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "tandem-service-mirror";

/// How many mirrors are written at once.
pub const WRITE_CONCURRENCY: usize = 32;

/// How a service mirror runs.
#[derive(Clone, Debug)]
pub struct MirrorSettings {
    pub link_namespace: String,
    pub link_name: String,
    pub admin_addr: Option<SocketAddr>,
    /// Create a mirror's missing namespace instead of reporting it.
    pub create_namespaces: bool,
    /// How often gateway hostnames are looked up again.
    pub dns_refresh: Duration,
    /// How often the Link's status is decided again when things changed.
    pub status_interval: Duration,
    /// How often every mirror is written again, whatever the record of
    /// what was written says.
    pub resync_period: Duration,
    /// The mirror's own objects, when it runs as `link` deploys it: they
    /// go with the Link (see [`crate::own`]).
    pub own: Option<OwnObjects>,
    /// Leader election among the mirror's replicas: only the holder of
    /// this Lease watches and writes. `None` runs as the only writer.
    pub lease: Option<LeaseParams>,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        Self {
            link_namespace: "tandem-multicluster".into(),
            link_name: String::new(),
            admin_addr: None,
            create_namespaces: false,
            dns_refresh: Duration::from_secs(30),
            status_interval: Duration::from_secs(5),
            resync_period: Duration::from_secs(300),
            own: None,
            lease: None,
        }
    }
}

/// The credentials Secret is read again this often, to pick up a rotation.
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(30);
/// How soon the status follows a change that matters (the remote, the
/// gateway, a session).
const STATUS_SOON: Duration = Duration::from_millis(500);

pub(crate) enum Msg {
    Link(Update<Link>),
    Mirrors(Update<Service>),
    MirrorSlices(Update<EndpointSlice>),
    Remote(u64, SessionMsg),
}

// === entry point ===

/// Runs the service mirror of one Link until `shutdown` turns true.
pub async fn run_mirror(
    local: Client,
    settings: MirrorSettings,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if settings.link_name.is_empty() || settings.link_namespace.is_empty() {
        anyhow::bail!("the service mirror needs a Link name and namespace");
    }
    let mut registry = Registry::with_prefix(metrics::PREFIX);
    let metrics = Metrics::register(&mut registry);
    let (admin, readiness) = tandem_admin::Admin::new(registry);
    let _admin = settings.admin_addr.map(|addr| {
        let server = admin.serve(addr);
        Task::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(%addr, error = %e, "admin server failed");
            }
        })
    });

    match settings.lease.clone() {
        None => {
            metrics.leader.set(1);
            serve(local, settings, metrics, readiness, shutdown).await
        }
        Some(params) => lead::run(local, settings, params, metrics, readiness, shutdown).await,
    }
}

/// Watches and writes until `shutdown` turns true (or the future is
/// dropped: a leader that steps down drops it, and every task goes with it).
async fn serve(
    local: Client,
    settings: MirrorSettings,
    metrics: Metrics,
    readiness: tandem_admin::Readiness,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let span = tracing::info_span!(
        "service_mirror",
        link = %format!("{}/{}", settings.link_namespace, settings.link_name)
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let label = link_label_value(&settings.link_namespace, &settings.link_name);
    let links: Api<Link> = Api::namespaced(local.clone(), &settings.link_namespace);
    let (status_tx, status_rx) = watch::channel(None);
    let mut tasks = vec![
        watches::spawn(
            links.clone(),
            watcher::Config::default().fields(&format!("metadata.name={}", settings.link_name)),
            tx.clone(),
            Msg::Link,
        ),
        watches::spawn(
            Api::<Service>::all(local.clone()),
            watcher::Config::default().labels(&format!(
                "{MIRRORED_SERVICE_LABEL}=true,{LINK_LABEL}={label}"
            )),
            tx.clone(),
            Msg::Mirrors,
        ),
        watches::spawn(
            Api::<EndpointSlice>::all(local.clone()),
            watcher::Config::default().labels(&format!(
                "{MANAGED_BY_LABEL}={MIRROR_MANAGED_BY},{LINK_LABEL}={label}"
            )),
            tx.clone(),
            Msg::MirrorSlices,
        ),
        Task::spawn(
            status_writer::run(links, settings.link_name.clone(), status_rx)
                .instrument(span.clone()),
        ),
    ];
    tracing::info!(
        link = %settings.link_name,
        namespace = %settings.link_namespace,
        "service mirror starting"
    );

    // Zero would spin.
    let settings = MirrorSettings {
        dns_refresh: settings.dns_refresh.max(Duration::from_secs(1)),
        status_interval: settings.status_interval.max(Duration::from_millis(100)),
        resync_period: settings.resync_period.max(Duration::from_secs(1)),
        ..settings
    };
    let writer = Arc::new(Writer {
        recorder: Recorder::new(
            local.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("HOSTNAME").ok(),
            },
        ),
        local: local.clone(),
        metrics: metrics.clone(),
        create_namespaces: settings.create_namespaces,
        label: label.clone(),
    });
    let mut c = Controller::new(local, settings, metrics, readiness, tx, label, writer);
    c.status_tx = Some(status_tx);
    let res = async {
        loop {
            let wake = c.next_wake();
            let gateway = async {
                match c.gateway.as_mut() {
                    Some(g) => g.rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => c.handle(m),
                    None => anyhow::bail!("the watches stopped"),
                },
                Some((key, res)) = c.pool.next(), if !c.pool.is_empty() => {
                    let now = Instant::now();
                    match res {
                        Ok(report) => c.state.finished(key, report, now),
                        Err(e) => {
                            tracing::error!(remote = %key, error = %e, "a mirror write ended unexpectedly");
                            c.state.lost(key, now);
                        }
                    }
                }
                ok = gateway => if ok {
                    c.gateway_changed();
                } else {
                    tracing::error!("the gateway task ended; starting it again");
                    c.gateway = None;
                },
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            }
            while let Ok(m) = rx.try_recv() {
                c.handle(m);
            }
            c.step().await;
        }
    }
    .instrument(span)
    .await;
    tasks.clear();
    tracing::info!("service mirror stopped");
    res
}

mod lead;

// === controller ===

struct GatewayTask {
    cfg: GatewayConfig,
    rx: watch::Receiver<GatewayState>,
    _task: Task,
}

/// The Link and its lifecycle: the spec checked, the finalizer, adoption.
struct LinkState {
    link: Option<Link>,
    listed: bool,
    config: Option<Result<LinkConfig, String>>,
    spec: Option<LinkSpec>,
    finalizer_retry_at: Option<Instant>,
    finalize_retry_at: Option<Instant>,
    /// The mirror's own objects were given to the Link (or there are none).
    adopted: bool,
    adopt_retry_at: Option<Instant>,
}

struct Controller {
    local: Client,
    settings: MirrorSettings,
    metrics: Metrics,
    readiness: tandem_admin::Readiness,
    tx: mpsc::UnboundedSender<Msg>,
    label: String,
    writer: Arc<Writer>,

    link: LinkState,

    session: Option<Session>,
    next_session: u64,
    credentials: Option<Result<(), String>>,
    connect_at: Option<Instant>,
    connect_attempts: u32,
    recheck_credentials_at: Option<Instant>,
    health: RemoteHealth,

    gateway: Option<GatewayTask>,
    /// The gateway as the mirrors' endpoints last saw it.
    gateway_seen: GatewayState,

    state: State,
    pool: Pool<Key, Report>,
    /// When every mirror is written again.
    resync_at: Instant,

    status_tx: Option<watch::Sender<Option<Snapshot>>>,
    status_at: Instant,
}

mod controller;

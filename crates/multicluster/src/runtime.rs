//! The service mirror's runtime: watches feed one loop, which keeps the
//! [`Index`], and one writer in that loop applies mirrors, deletes them,
//! writes the Link's status and finalizes a deleted Link.
//!
//! - The Link and this Link's local mirrors (Services and slices) are
//!   watched with the local client for the whole run.
//! - The remote Services (the Link's selector) and all remote
//!   EndpointSlices are watched with a client built from the credentials
//!   Secret; a new Secret or selector starts a new session.
//! - The gateway task resolves and probes the gateway.
//!
//! Nothing is deleted because the linked cluster cannot be reached: a remote
//! Service's absence counts only after a successful full list in the current
//! session.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::{
        WatchStreamExt,
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        watcher::{self, Event},
    },
};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use tandem_api::multicluster::{
    CLUSTER_NAME_LABEL, LINK_FINALIZER, Link, MAX_LISTED_FAILURES, MIRROR_MANAGED_BY,
    MIRRORED_SERVICE_LABEL,
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::Instrument;

use crate::{
    call::{CALL_TIMEOUT, CallError, call},
    gateway::{self, GatewayConfig, GatewayState},
    index::{Index, Key},
    metrics::{self, Metrics},
    mirror::{
        self, LINK_LABEL, LinkConfig, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, link_label_value,
        mirror_name, mirror_service, mirror_slice, slice_name,
    },
    own::{self, OwnObjects},
    probe::Liveness,
    record::{Record, Written},
    remote::{self, error_chain, status_code, unreachable_reason, watch_status_code},
    status::{self, Outcome, Remote},
    status_writer::{self, Snapshot},
};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "tandem-service-mirror";

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
    /// How often the Link's status is written when it changed.
    pub status_interval: Duration,
    /// How often every mirror is written again, whatever the record of
    /// what was written says.
    pub resync_period: Duration,
    /// The mirror's own objects, when it runs as `link` deploys it: they
    /// go with the Link (see [`crate::own`]).
    pub own: Option<OwnObjects>,
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
        }
    }
}

/// The credentials Secret is read again this often, to pick up a rotation.
const CREDENTIALS_RECHECK: Duration = Duration::from_secs(30);
/// The remote API server is asked this often even while the watches are
/// quiet: a hung or black-holed server sends no error to a watch.
const REMOTE_CHECK: Duration = Duration::from_secs(30);
/// And this often while it fails.
const REMOTE_RECHECK: Duration = Duration::from_secs(3);

// === messages ===

/// What a watch reports, with a full list delivered at once.
enum WatchEv<K> {
    Listed(Vec<K>),
    Apply(K),
    Delete(K),
    Error { message: String, code: Option<u16> },
}

enum Msg {
    Link(WatchEv<Link>),
    Mirrors(WatchEv<Service>),
    MirrorSlices(WatchEv<EndpointSlice>),
    RemoteServices(u64, WatchEv<Service>),
    RemoteSlices(u64, WatchEv<EndpointSlice>),
    /// A health check of the remote API server (periodic, and after errors).
    RemoteHealth(u64, Result<(), (String, Option<u16>)>),
}

/// Aborts its task when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs a watch, sending full lists at once and every event, until aborted.
fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    tx: mpsc::UnboundedSender<Msg>,
    wrap: impl Fn(WatchEv<K>) -> Msg + Send + 'static,
) -> Task
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    Task(tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut buffer = vec![];
        while let Some(event) = stream.next().await {
            let ev = match event {
                Ok(Event::Init) => {
                    buffer.clear();
                    continue;
                }
                Ok(Event::InitApply(o)) => {
                    buffer.push(o);
                    continue;
                }
                Ok(Event::InitDone) => WatchEv::Listed(std::mem::take(&mut buffer)),
                Ok(Event::Apply(o)) => WatchEv::Apply(o),
                Ok(Event::Delete(o)) => WatchEv::Delete(o),
                Err(e) => WatchEv::Error {
                    code: watch_status_code(&e),
                    message: error_chain(&e),
                },
            };
            if tx.send(wrap(ev)).is_err() {
                return;
            }
        }
    }))
}

// === entry point ===

/// Runs the service mirror of one Link until `shutdown` turns true.
pub async fn run_mirror(
    local: Client,
    settings: MirrorSettings,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if settings.link_name.is_empty() || settings.link_namespace.is_empty() {
        anyhow::bail!("the service mirror needs a Link name and namespace");
    }
    let mut registry = Registry::with_prefix(metrics::PREFIX);
    let metrics = Metrics::register(&mut registry);
    let (admin, readiness) = tandem_admin::Admin::new(registry);
    let _admin = settings.admin_addr.map(|addr| {
        let server = admin.serve(addr);
        Task(tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(%addr, error = %e, "admin server failed");
            }
        }))
    });

    let span = tracing::info_span!(
        "service_mirror",
        link = %format!("{}/{}", settings.link_namespace, settings.link_name)
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let label = link_label_value(&settings.link_namespace, &settings.link_name);
    let links: Api<Link> = Api::namespaced(local.clone(), &settings.link_namespace);
    let mut tasks = vec![
        spawn_watch(
            links,
            watcher::Config::default().fields(&format!("metadata.name={}", settings.link_name)),
            tx.clone(),
            Msg::Link,
        ),
        spawn_watch(
            Api::<Service>::all(local.clone()),
            watcher::Config::default().labels(&format!(
                "{MIRRORED_SERVICE_LABEL}=true,{LINK_LABEL}={label}"
            )),
            tx.clone(),
            Msg::Mirrors,
        ),
        spawn_watch(
            Api::<EndpointSlice>::all(local.clone()),
            watcher::Config::default().labels(&format!(
                "{MANAGED_BY_LABEL}={MIRROR_MANAGED_BY},{LINK_LABEL}={label}"
            )),
            tx.clone(),
            Msg::MirrorSlices,
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
    let (status_tx, status_rx) = watch::channel(None);
    tasks.push(Task(tokio::spawn(
        status_writer::run(
            Api::namespaced(local.clone(), &settings.link_namespace),
            settings.link_name.clone(),
            status_rx,
        )
        .instrument(span.clone()),
    )));
    let mut c = Controller::new(local, settings, metrics, readiness, tx, label, status_tx);
    let res = async {
        loop {
            let wake = c.next_wake();
            let ev = {
                let gateway = async {
                    match c.gateway.as_mut() {
                        Some(g) => g.rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    m = rx.recv() => Wake::Msg(m.map(Box::new)),
                    ok = gateway => Wake::Gateway(ok),
                    _ = tokio::time::sleep_until(wake) => Wake::Timer,
                    _ = shutdown.wait_for(|s| *s) => Wake::Stop,
                }
            };
            match ev {
                Wake::Msg(Some(m)) => c.handle(*m),
                Wake::Msg(None) => anyhow::bail!("the watches stopped"),
                Wake::Gateway(true) => c.gateway_changed(),
                Wake::Gateway(false) => {
                    tracing::error!("the gateway task ended; starting it again");
                    c.gateway = None;
                }
                Wake::Timer => {}
                Wake::Stop => return Ok(()),
            }
            while let Ok(m) = rx.try_recv() {
                c.handle(m);
            }
            c.step(&mut rx, &shutdown).await;
        }
    }
    .instrument(span)
    .await;
    tasks.clear();
    tracing::info!("service mirror stopped");
    res
}

enum Wake {
    Msg(Option<Box<Msg>>),
    Gateway(bool),
    Timer,
    Stop,
}

// === controller ===

struct Session {
    id: u64,
    secret: String,
    selector: String,
    version: String,
    client: Client,
    _tasks: Vec<Task>,
}

struct GatewayTask {
    cfg: GatewayConfig,
    rx: watch::Receiver<GatewayState>,
    _task: Task,
}

struct Controller {
    local: Client,
    settings: MirrorSettings,
    metrics: Metrics,
    readiness: tandem_admin::Readiness,
    tx: mpsc::UnboundedSender<Msg>,
    label: String,
    recorder: Recorder,

    link: Option<Link>,
    link_listed: bool,
    config: Option<Result<LinkConfig, String>>,
    config_spec: Option<tandem_api::multicluster::LinkSpec>,
    /// Counts spec changes, so that a pass over dirty mirrors stops when the
    /// spec it started with is no longer the Link's.
    config_version: u64,
    finalizer_retry_at: Option<Instant>,
    finalize_retry_at: Option<Instant>,
    /// The mirror's own objects were given to the Link (or there are none).
    adopted: bool,
    adopt_retry_at: Option<Instant>,

    session: Option<Session>,
    next_session: u64,
    credentials: Option<Result<(), String>>,
    connect_at: Option<Instant>,
    connect_attempts: u32,
    recheck_credentials_at: Option<Instant>,
    remote: Remote,
    /// The last error of each remote watch (services, slices).
    remote_errors: [Option<(String, Option<u16>)>; 2],
    health_check_at: Option<Instant>,
    health_in_flight: bool,

    gateway: Option<GatewayTask>,
    /// The gateway as the mirrors' endpoints last saw it.
    gateway_seen: GatewayState,

    index: Index,
    /// Remote Services whose mirror may need a write.
    dirty: BTreeSet<Key>,
    /// Those whose readiness changed: written before the others, so that a
    /// flip never waits behind a full resync.
    urgent: BTreeSet<Key>,
    written: Record,
    /// When every mirror is written again.
    resync_at: Instant,
    outcomes: HashMap<Key, Outcome>,
    retries: HashMap<Key, (u32, Instant)>,

    /// To the status writer's task.
    status_tx: watch::Sender<Option<Snapshot>>,
    status_at: Instant,
}

impl Controller {
    fn new(
        local: Client,
        settings: MirrorSettings,
        metrics: Metrics,
        readiness: tandem_admin::Readiness,
        tx: mpsc::UnboundedSender<Msg>,
        label: String,
        status_tx: watch::Sender<Option<Snapshot>>,
    ) -> Self {
        let recorder = Recorder::new(
            local.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("HOSTNAME").ok(),
            },
        );
        Self {
            local,
            resync_at: Instant::now() + settings.resync_period,
            adopted: settings.own.is_none(),
            settings,
            metrics,
            readiness,
            tx,
            label,
            recorder,
            link: None,
            link_listed: false,
            config: None,
            config_spec: None,
            config_version: 0,
            finalizer_retry_at: None,
            finalize_retry_at: None,
            adopt_retry_at: None,
            session: None,
            next_session: 0,
            credentials: None,
            connect_at: Some(Instant::now()),
            connect_attempts: 0,
            recheck_credentials_at: None,
            remote: Remote::Unknown,
            remote_errors: [None, None],
            health_check_at: None,
            health_in_flight: false,
            gateway: None,
            gateway_seen: GatewayState::default(),
            index: Index::new(),
            dirty: BTreeSet::new(),
            urgent: BTreeSet::new(),
            written: Record::default(),
            outcomes: HashMap::new(),
            retries: HashMap::new(),
            status_tx,
            status_at: Instant::now(),
        }
    }

    fn cluster(&self) -> &str {
        match &self.config {
            Some(Ok(c)) => &c.cluster,
            _ => self
                .link
                .as_ref()
                .map(|l| l.spec.target_cluster_name.as_str())
                .unwrap_or_default(),
        }
    }

    fn deleting(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.metadata.deletion_timestamp.is_some())
    }

    fn has_finalizer(&self) -> bool {
        self.link.as_ref().is_some_and(|l| {
            l.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == LINK_FINALIZER)
        })
    }

    /// The earliest timer.
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        [
            self.connect_at,
            self.recheck_credentials_at,
            self.health_check_at,
            self.finalizer_retry_at,
            self.finalize_retry_at,
            (!self.adopted).then_some(self.adopt_retry_at).flatten(),
            self.link.is_some().then_some(self.resync_at),
            self.retries.values().map(|(_, at)| *at).min(),
            self.link.is_some().then_some(self.status_at),
        ]
        .into_iter()
        .flatten()
        .fold(far, Instant::min)
    }

    // === events ===

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Link(ev) => self.handle_link(ev),
            Msg::Mirrors(ev) => {
                let keys = match ev {
                    WatchEv::Listed(list) => {
                        // What went or changed while the watch was down
                        // comes with no event: compare with the record.
                        let repair = self.written.relisted_services(&list);
                        if !repair.is_empty() {
                            tracing::info!(
                                mirrors = repair.len(),
                                "mirrors deleted or changed while the watch was down; writing them again"
                            );
                        }
                        let mut keys = self.index.reset_mirrors(list);
                        keys.extend(repair);
                        keys
                    }
                    WatchEv::Apply(s) => {
                        let drifted = |w: &Written| {
                            w.service
                                .as_ref()
                                .is_some_and(|d| mirror::service_drifted(&s, d))
                        };
                        let key = self.index.apply_mirror(s.clone());
                        match key {
                            Some(k) if self.written.get(&k).is_some_and(drifted) => {
                                tracing::info!(mirror = ?Key::of(&s.metadata), "the mirror was changed by someone else; writing it again");
                                self.written.remove(&k);
                                vec![k]
                            }
                            Some(k) => vec![k],
                            None => vec![],
                        }
                    }
                    WatchEv::Delete(s) => {
                        let key = self.index.delete_mirror(&s);
                        // Deleted by someone else: written again if still wanted.
                        if let Some(k) = &key {
                            self.written.remove(k);
                        }
                        key.into_iter().collect()
                    }
                    WatchEv::Error { message, .. } => {
                        tracing::warn!(error = %message, "local mirror watch failed; retrying");
                        vec![]
                    }
                };
                self.dirty.extend(keys);
            }
            Msg::MirrorSlices(ev) => match ev {
                WatchEv::Delete(s) => {
                    self.index.delete_mirror_slice(&s);
                    if let Some(k) = slice_remote_key(&s) {
                        if let Some(w) = self.written.get_mut(&k) {
                            w.slice = None;
                        }
                        self.dirty.insert(k);
                    }
                }
                WatchEv::Error { message, .. } => {
                    tracing::warn!(error = %message, "local mirror slice watch failed; retrying");
                }
                WatchEv::Apply(s) => {
                    self.index.apply_mirror_slice(&s);
                    if let Some(k) = slice_remote_key(&s)
                        && let Some(w) = self.written.get_mut(&k)
                        && w.slice
                            .as_ref()
                            .is_some_and(|d| mirror::slice_drifted(&s, d))
                    {
                        w.slice = None;
                        self.dirty.insert(k);
                    }
                }
                WatchEv::Listed(list) => {
                    self.index.reset_mirror_slices(&list);
                    let repair = self.written.relisted_slices(&list);
                    if !repair.is_empty() {
                        tracing::info!(
                            slices = repair.len(),
                            "mirror slices deleted or changed while the watch was down; writing them again"
                        );
                    }
                    self.dirty.extend(repair);
                }
            },
            Msg::RemoteServices(id, ev) => {
                if !self.current(id) {
                    return;
                }
                let keys = match ev {
                    WatchEv::Listed(list) => {
                        tracing::info!(cluster = %self.cluster(), services = list.len(), "remote services listed");
                        self.remote_ok(0);
                        self.index.reset_services(list)
                    }
                    WatchEv::Apply(s) => {
                        self.remote_ok(0);
                        self.index.apply_service(s).into_iter().collect()
                    }
                    WatchEv::Delete(s) => {
                        self.remote_ok(0);
                        self.index.delete_service(&s).into_iter().collect()
                    }
                    WatchEv::Error { message, code } => {
                        self.remote_failed(0, format!("watching Services: {message}"), code);
                        vec![]
                    }
                };
                self.dirty.extend(keys);
            }
            Msg::RemoteSlices(id, ev) => {
                if !self.current(id) {
                    return;
                }
                let keys = match ev {
                    WatchEv::Listed(list) => {
                        self.remote_ok(1);
                        self.index.reset_slices(&list)
                    }
                    WatchEv::Apply(s) => {
                        self.remote_ok(1);
                        self.index.apply_slice(&s)
                    }
                    WatchEv::Delete(s) => {
                        self.remote_ok(1);
                        self.index.delete_slice(&s)
                    }
                    WatchEv::Error { message, code } => {
                        self.remote_failed(1, format!("watching EndpointSlices: {message}"), code);
                        vec![]
                    }
                };
                self.urgent.extend(keys);
            }
            Msg::RemoteHealth(id, res) => {
                if !self.current(id) {
                    return;
                }
                self.health_in_flight = false;
                match res {
                    Ok(()) => {
                        self.remote_errors = [None, None];
                        self.set_remote(Remote::Reachable);
                        self.health_check_at = Some(Instant::now() + REMOTE_CHECK);
                    }
                    Err((message, code)) => {
                        self.set_remote(Remote::Unreachable {
                            reason: unreachable_reason(code).into(),
                            message: format!("cluster {}: {message}", self.cluster()),
                        });
                        self.health_check_at = Some(Instant::now() + REMOTE_RECHECK);
                    }
                }
            }
        }
    }

    fn current(&self, id: u64) -> bool {
        self.session.as_ref().is_some_and(|s| s.id == id)
    }

    fn handle_link(&mut self, ev: WatchEv<Link>) {
        match ev {
            WatchEv::Listed(mut list) => {
                self.link_listed = true;
                self.set_link(list.pop());
            }
            WatchEv::Apply(l) => {
                self.link_listed = true;
                self.set_link(Some(l));
            }
            WatchEv::Delete(_) => self.set_link(None),
            WatchEv::Error { message, code } => {
                let hint = if code == Some(404) {
                    " (is the Link CRD installed?)"
                } else {
                    ""
                };
                tracing::warn!(error = %message, "Link watch failed{hint}; retrying");
            }
        }
    }

    fn set_link(&mut self, link: Option<Link>) {
        match (&self.link, &link) {
            (None, Some(_)) => tracing::info!("Link found"),
            (Some(_), None) => tracing::info!("Link gone"),
            (None, None) if self.link_listed => {
                tracing::warn!("the Link does not exist (yet); waiting for it")
            }
            _ => {}
        }
        let spec = link.as_ref().map(|l| l.spec.clone());
        self.link = link;
        if spec != self.config_spec {
            self.config_spec = spec.clone();
            self.config_version += 1;
            self.config = self.link.as_ref().map(LinkConfig::from_link);
            if let Some(Err(e)) = &self.config {
                tracing::warn!(error = %e, "the Link's spec is invalid; mirrors are left as they are");
            }
            // Labels, ports, the gateway: anything may change.
            self.dirty.extend(self.index.all_keys());
            self.written.clear();
            self.status_at = Instant::now();
        }
        if self.link.is_none() {
            self.session = None;
            self.gateway = None;
            self.credentials = None;
            self.remote = Remote::Unknown;
            self.status_tx.send_replace(None);
            self.readiness.set(false);
        }
    }

    fn remote_ok(&mut self, watch: usize) {
        self.remote_errors[watch] = None;
        if self.remote_errors.iter().all(Option::is_none) {
            self.set_remote(Remote::Reachable);
        }
    }

    fn remote_failed(&mut self, watch: usize, message: String, code: Option<u16>) {
        if code == Some(410) {
            // An expired resourceVersion: the watch lists again by itself.
            return;
        }
        self.remote_errors[watch] = Some((message.clone(), code));
        self.set_remote(Remote::Unreachable {
            reason: unreachable_reason(code).into(),
            message: format!("cluster {}: {message}", self.cluster()),
        });
        let soon = Instant::now() + REMOTE_RECHECK;
        if self.health_check_at.is_none_or(|at| at > soon) {
            self.health_check_at = Some(soon);
        }
    }

    fn set_remote(&mut self, remote: Remote) {
        let cluster = self.cluster().to_string();
        match (&self.remote, &remote) {
            (Remote::Unreachable { .. }, Remote::Reachable) => {
                tracing::info!(%cluster, "the remote API server answers again")
            }
            (Remote::Unreachable { message: a, .. }, Remote::Unreachable { message: b, .. })
                if a == b => {}
            (_, Remote::Unreachable { reason, message }) => {
                tracing::warn!(%cluster, %reason, error = %message, "the remote API server cannot be used; mirrors are left as they are")
            }
            _ => {}
        }
        let up = i64::from(remote == Remote::Reachable);
        self.metrics
            .remote_reachable
            .get_or_create(&Metrics::cluster(&cluster))
            .set(up);
        if self.remote != remote {
            self.status_at = self
                .status_at
                .min(Instant::now() + Duration::from_millis(500));
        }
        self.remote = remote;
    }

    fn gateway_changed(&mut self) {
        let Some(g) = &mut self.gateway else { return };
        let s = g.rx.borrow_and_update().clone();
        if !s.same_endpoints(&self.gateway_seen) {
            self.gateway_seen = s;
            let keys = self.index.service_keys();
            self.urgent.extend(keys);
            self.status_at = self
                .status_at
                .min(Instant::now() + Duration::from_millis(500));
        }
    }

    // === the writer ===

    async fn step(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Msg>,
        shutdown: &watch::Receiver<bool>,
    ) {
        if !self.link_listed || self.link.is_none() {
            return;
        }
        let now = Instant::now();
        if self.deleting() {
            self.session = None;
            self.gateway = None;
            if self.finalize_retry_at.is_none_or(|at| at <= now) {
                self.finalize().await;
            }
            return;
        }
        if !self.has_finalizer() && self.finalizer_retry_at.is_none_or(|at| at <= now) {
            self.add_finalizer().await;
        }
        if !self.adopted && self.has_finalizer() && self.adopt_retry_at.is_none_or(|at| at <= now) {
            self.adopt().await;
        }
        if self.resync_at <= now {
            // Whatever the record says, every mirror is written again (a
            // no-op for the API server when nothing changed).
            self.resync_at = now + self.settings.resync_period;
            self.written.clear();
            self.dirty.extend(self.index.all_keys());
        }
        let cfg = match &self.config {
            Some(Ok(c)) => c.clone(),
            _ => {
                // An invalid spec: nothing runs, nothing is touched.
                self.session = None;
                self.gateway = None;
                self.readiness.set(false);
                self.publish_status_if_due();
                return;
            }
        };
        self.ensure_gateway(&cfg);
        self.ensure_session(&cfg).await;
        if self.health_check_at.is_some_and(|at| at <= Instant::now()) && !self.health_in_flight {
            self.spawn_health_check(&cfg);
        }
        let now = Instant::now();
        let due: Vec<Key> = self
            .retries
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(r) = self.retries.get_mut(&k) {
                // Keep the attempt count; clear the time until it fails again.
                r.1 = now + Duration::from_secs(3600);
            }
            self.dirty.insert(k);
        }

        let ready = self.index.synced() && self.session.is_some();
        self.readiness.set(ready);
        if ready && self.has_finalizer() {
            let version = self.config_version;
            while let Some(key) = self.urgent.pop_first().or_else(|| self.dirty.pop_first()) {
                self.dirty.remove(&key);
                if *shutdown.borrow() {
                    return;
                }
                if self.config_version != version || self.deleting() {
                    // The next step starts over with the Link as it is now.
                    self.dirty.insert(key);
                    break;
                }
                self.reconcile(&key, &cfg).await;
                // Events that came meanwhile (a readiness flip) go next.
                while let Ok(m) = rx.try_recv() {
                    self.handle(m);
                }
                if self
                    .gateway
                    .as_ref()
                    .is_some_and(|g| g.rx.has_changed().unwrap_or(false))
                {
                    self.gateway_changed();
                }
            }
        }
        self.publish_status_if_due();
    }

    fn ensure_gateway(&mut self, cfg: &LinkConfig) {
        let want = GatewayConfig {
            cluster: cfg.cluster.clone(),
            addresses: cfg.gateway_addresses.clone(),
            probe: cfg.probe.clone(),
            dns_refresh: self.settings.dns_refresh,
        };
        if self.gateway.as_ref().is_some_and(|g| g.cfg == want) {
            return;
        }
        tracing::info!(cluster = %cfg.cluster, addresses = ?cfg.gateway_addresses, probe_port = cfg.probe.port, "probing the gateway");
        let (tx, rx) = watch::channel(GatewayState::default());
        let task = tokio::spawn(
            gateway::run_http(want.clone(), self.metrics.clone(), tx)
                .instrument(tracing::Span::current()),
        );
        self.gateway = Some(GatewayTask {
            cfg: want,
            rx,
            _task: Task(task),
        });
        self.gateway_seen = GatewayState::default();
    }

    async fn ensure_session(&mut self, cfg: &LinkConfig) {
        let now = Instant::now();
        let stale = self
            .session
            .as_ref()
            .is_some_and(|s| s.secret != cfg.credentials_secret || s.selector != cfg.selector);
        if stale {
            tracing::info!("the Link's credentials or selector changed; reconnecting");
            self.session = None;
            self.connect_at = Some(now);
        }
        let recheck =
            self.session.is_some() && self.recheck_credentials_at.is_some_and(|at| at <= now);
        if self.session.is_none() {
            if self.connect_at.is_none_or(|at| at <= now) {
                self.connect(cfg).await;
            }
        } else if recheck {
            self.recheck_credentials_at = Some(now + CREDENTIALS_RECHECK);
            let ns = self.settings.link_namespace.clone();
            let read = tokio::time::timeout(
                CALL_TIMEOUT,
                remote::read_credentials(&self.local, &ns, &cfg.credentials_secret),
            )
            .await;
            if let Ok(Ok((version, _))) = read
                && self.session.as_ref().is_some_and(|s| s.version != version)
            {
                tracing::info!("the credentials Secret changed; reconnecting");
                self.session = None;
                self.connect(cfg).await;
            }
        }
    }

    async fn connect(&mut self, cfg: &LinkConfig) {
        let ns = self.settings.link_namespace.clone();
        let secret = cfg.credentials_secret.clone();
        let built = async {
            let (version, text) = remote::read_credentials(&self.local, &ns, &secret).await?;
            let client = remote::client_from_kubeconfig(&text, &ns, &secret).await?;
            Ok::<_, remote::CredentialsError>((version, client))
        };
        let built = match tokio::time::timeout(CALL_TIMEOUT, built).await {
            Ok(r) => r.map_err(|e| error_chain(&e)),
            Err(_) => Err(format!(
                "reading the credentials Secret {ns}/{secret}: timed out"
            )),
        };
        match built {
            Ok((version, client)) => {
                self.connect_attempts = 0;
                self.connect_at = None;
                self.credentials = Some(Ok(()));
                self.recheck_credentials_at = Some(Instant::now() + CREDENTIALS_RECHECK);
                self.next_session += 1;
                let id = self.next_session;
                self.index.new_session();
                self.remote = Remote::Unknown;
                self.metrics
                    .remote_reachable
                    .get_or_create(&Metrics::cluster(&cfg.cluster))
                    .set(0);
                self.remote_errors = [None, None];
                self.health_check_at = Some(Instant::now() + REMOTE_CHECK);
                self.health_in_flight = false;
                let tasks = vec![
                    spawn_watch(
                        Api::<Service>::all(client.clone()),
                        watcher::Config::default().labels(&cfg.selector),
                        self.tx.clone(),
                        move |ev| Msg::RemoteServices(id, ev),
                    ),
                    spawn_watch(
                        Api::<EndpointSlice>::all(client.clone()),
                        watcher::Config::default(),
                        self.tx.clone(),
                        move |ev| Msg::RemoteSlices(id, ev),
                    ),
                ];
                tracing::info!(cluster = %cfg.cluster, selector = %cfg.selector, "watching the linked cluster");
                self.session = Some(Session {
                    id,
                    secret: cfg.credentials_secret.clone(),
                    selector: cfg.selector.clone(),
                    version,
                    client,
                    _tasks: tasks,
                });
                self.status_at = self
                    .status_at
                    .min(Instant::now() + Duration::from_millis(500));
            }
            Err(message) => {
                self.connect_attempts += 1;
                let after = backoff(self.connect_attempts).max(Duration::from_secs(1));
                if self.credentials.as_ref().and_then(|c| c.as_ref().err()) != Some(&message) {
                    tracing::warn!(error = %message, retry_in_ms = after.as_millis() as u64, "cannot build the linked cluster's client; retrying");
                    self.status_at = self
                        .status_at
                        .min(Instant::now() + Duration::from_millis(500));
                }
                self.credentials = Some(Err(message));
                self.connect_at = Some(Instant::now() + after);
            }
        }
    }

    fn spawn_health_check(&mut self, cfg: &LinkConfig) {
        let Some(s) = &self.session else { return };
        self.health_in_flight = true;
        self.health_check_at = None;
        let services: Api<Service> = Api::all(s.client.clone());
        let slices: Api<EndpointSlice> = Api::all(s.client.clone());
        let lp = ListParams::default().labels(&cfg.selector).limit(1);
        let tx = self.tx.clone();
        let id = s.id;
        tokio::spawn(async move {
            // What the two watches need: both lists.
            let check = async {
                services
                    .list(&lp)
                    .await
                    .map_err(|e| ("listing Services", e))?;
                slices
                    .list(&ListParams::default().limit(1))
                    .await
                    .map_err(|e| ("listing EndpointSlices", e))?;
                Ok::<_, (&str, kube::Error)>(())
            };
            let res = match tokio::time::timeout(CALL_TIMEOUT, check).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err((what, e))) => {
                    Err((format!("{what}: {}", error_chain(&e)), status_code(&e)))
                }
                Err(_) => Err(("listing Services: timed out".to_string(), None)),
            };
            let _ = tx.send(Msg::RemoteHealth(id, res));
        });
    }

    /// Brings one remote Service's mirror to what it should be.
    async fn reconcile(&mut self, key: &Key, cfg: &LinkConfig) {
        let span = tracing::info_span!(
            "mirror",
            remote = %key,
            mirror = %mirror_name(&key.name, &cfg.cluster)
        );
        self.reconcile_in_span(key, cfg).instrument(span).await
    }

    async fn reconcile_in_span(&mut self, key: &Key, cfg: &LinkConfig) {
        let Some(link) = self.link.clone() else {
            return;
        };
        let local = Key::new(key.namespace.clone(), mirror_name(&key.name, &cfg.cluster));
        // Mirrors of this Service under another name (an older cluster name).
        let stale: Vec<Key> = self
            .index
            .mirrors_of(key)
            .into_iter()
            .filter(|m| *m != local)
            .collect();
        for m in stale {
            tracing::info!(stale = %m, "deleting a mirror made under another cluster name");
            self.delete_mirror(key, &m).await;
        }

        let Some(remote) = self.index.service(key).cloned() else {
            self.outcomes.remove(key);
            self.retries.remove(key);
            if self.index.authoritative() && self.index.mirror(&local).is_some() {
                tracing::info!(
                    "the remote Service is gone or no longer exported; deleting its mirror"
                );
                self.delete_mirror(key, &local).await;
            }
            return;
        };
        let desired = match mirror_service(&remote, &link) {
            Ok(d) => d,
            Err(why) => {
                if self.outcomes.get(key) != Some(&Outcome::Invalid(why.clone())) {
                    tracing::warn!(reason = %why, "the remote Service cannot be mirrored");
                }
                self.outcomes.insert(key.clone(), Outcome::Invalid(why));
                if self.index.mirror(&local).is_some() {
                    self.delete_mirror(key, &local).await;
                }
                return;
            }
        };

        // Write the Service when it changed: a new mirror is created, so
        // that an object of its name (a user's) makes the write fail and is
        // left alone; a known one is applied with its uid as a precondition.
        let written_service = self.written.get(key).and_then(|w| w.service.as_ref());
        if written_service != Some(&desired) {
            let uid = self
                .index
                .mirror(&local)
                .and_then(|m| m.metadata.uid.clone())
                .or_else(|| self.written.get(key).and_then(|w| w.uid.clone()));
            let res = match uid {
                Some(uid) => self.apply_service(&desired, &uid).await,
                None => self.create_service(&desired).await,
            };
            match res {
                Ok(applied) => {
                    let w = self.written.entry(key.clone());
                    w.service = Some(desired.clone());
                    w.uid = applied.metadata.uid.clone();
                    tracing::info!("mirror service written");
                }
                Err(outcome @ Outcome::NameTaken(_)) => {
                    if self.outcomes.get(key) != Some(&outcome) {
                        self.publish_name_taken(&outcome).await;
                    }
                    self.written.remove(key);
                    return self.failed(key, outcome, 30_000);
                }
                Err(outcome) => {
                    self.written.remove(key);
                    return self.failed(key, outcome, 0);
                }
            }
        }

        // Then its slice, once the gateway's addresses and liveness are
        // known. No address or no verdict (yet): whatever endpoints there
        // are stay, so that a restart writes no readiness it does not know.
        let gw = self.gateway.as_ref().map(|g| g.rx.borrow().clone());
        if let Some(gw) =
            gw.filter(|g| g.resolved && !g.ips.is_empty() && g.liveness != Liveness::Unknown)
        {
            let mut owner = desired.clone();
            owner.metadata.uid = self.written.get(key).and_then(|w| w.uid.clone());
            let ready = self.index.is_ready(key) && gw.liveness == Liveness::Alive;
            let slice = mirror_slice(&owner, &link, &gw.ips, ready);
            let written_slice = self.written.get(key).and_then(|w| w.slice.as_ref());
            if written_slice != Some(&slice) {
                match self.apply_slice(&slice).await {
                    Ok(()) => {
                        tracing::info!(
                            ready,
                            remote_ready = self.index.is_ready(key),
                            gateway_alive = gw.liveness == Liveness::Alive,
                            endpoints = slice.endpoints.len(),
                            "mirror endpoints written"
                        );
                        self.written.entry(key.clone()).slice = Some(slice);
                    }
                    Err(outcome) => return self.failed(key, outcome, 0),
                }
            }
        }
        self.retries.remove(key);
        self.outcomes.insert(key.clone(), Outcome::Mirrored);
    }

    /// Creates a new mirror Service. An object of its name that is not this
    /// Link's makes it fail: [`Outcome::NameTaken`].
    async fn create_service(&self, desired: &Service) -> Result<Service, Outcome> {
        let ns = desired.metadata.namespace.clone().unwrap_or_default();
        let name = desired.metadata.name.clone().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(self.local.clone(), &ns);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let mut created_namespace = false;
        loop {
            self.metrics.writes.inc();
            let res = call("creating the mirror Service", api.create(&params, desired)).await;
            let e = match res {
                Ok(created) => {
                    self.own_fields(&api, &created).await;
                    return Ok(created);
                }
                Err(e) => e,
            };
            match e.code() {
                Some(409) => {
                    // Taken: ours (a watch that lags), or someone else's.
                    let existing = call("reading the local Service", api.get_opt(&name))
                        .await
                        .map_err(|e| Outcome::Error(e.to_string()))?;
                    let ours = existing.as_ref().and_then(|s| {
                        let labels = s.metadata.labels.as_ref()?;
                        (labels.get(LINK_LABEL) == Some(&self.label))
                            .then_some(s.metadata.uid.clone()?)
                    });
                    return match (existing, ours) {
                        (_, Some(uid)) => self.apply_service(desired, &uid).await,
                        // Deleted meanwhile: the next pass creates it.
                        (None, _) => Err(Outcome::Error(
                            "the local Service of the mirror's name was just deleted; retrying"
                                .into(),
                        )),
                        (Some(_), None) => {
                            self.metrics.write_errors.inc();
                            Err(Outcome::NameTaken(format!(
                                "a Service {ns}/{name} exists and is not a mirror of this Link; it is left alone"
                            )))
                        }
                    };
                }
                Some(404) => {
                    if self.settings.create_namespaces && !created_namespace {
                        created_namespace = true;
                        if let Err(e) = self.create_namespace(&ns).await {
                            self.metrics.write_errors.inc();
                            return Err(Outcome::Error(e));
                        }
                        continue;
                    }
                    self.metrics.write_errors.inc();
                    return Err(Outcome::MissingNamespace(format!(
                        "the namespace {ns} does not exist in this cluster"
                    )));
                }
                Some(422) => {
                    self.metrics.write_errors.inc();
                    return Err(Outcome::Invalid(format!("the mirror was refused: {e}")));
                }
                _ => {
                    self.metrics.write_errors.inc();
                    return Err(Outcome::Error(e.to_string()));
                }
            }
        }
    }

    /// Makes the fields a create set this writer's server-side-apply fields,
    /// so that a later apply that leaves one out removes it (fields of an
    /// update would stay, owned by the create). Best effort: a failure
    /// leaves only fields that a later remote change may not remove.
    async fn own_fields(&self, api: &Api<Service>, created: &Service) {
        let Some(uid) = &created.metadata.uid else {
            return;
        };
        let mut fields = created.metadata.managed_fields.clone().unwrap_or_default();
        let mut changed = false;
        for f in &mut fields {
            if f.manager.as_deref() == Some(FIELD_MANAGER)
                && f.operation.as_deref() == Some("Update")
            {
                f.operation = Some("Apply".into());
                changed = true;
            }
        }
        if !changed {
            return;
        }
        // The uid makes it a precondition: an object made again meanwhile
        // refuses the patch (its uid cannot change).
        let patch = serde_json::json!({
            "metadata": { "uid": uid, "managedFields": fields },
        });
        let name = created.metadata.name.clone().unwrap_or_default();
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.metrics.writes.inc();
        if let Err(e) = call(
            "taking the created mirror's fields as applied",
            api.patch(&name, &params, &Patch::Merge(&patch)),
        )
        .await
        {
            self.metrics.write_errors.inc();
            tracing::warn!(error = %e, "the created mirror's fields stay owned by its create");
        }
    }

    /// Applies a known mirror Service, exactly the object of `uid`: one
    /// deleted and made again meanwhile (by anyone) is not written.
    async fn apply_service(&self, desired: &Service, uid: &str) -> Result<Service, Outcome> {
        let ns = desired.metadata.namespace.clone().unwrap_or_default();
        let name = desired.metadata.name.clone().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(self.local.clone(), &ns);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut exact = desired.clone();
        exact.metadata.uid = Some(uid.to_string());
        self.metrics.writes.inc();
        let res = call(
            "writing the mirror Service",
            api.patch(&name, &params, &Patch::Apply(&exact)),
        )
        .await;
        let e = match res {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        self.metrics.write_errors.inc();
        // Deleted (the API server answers 409: no object of that uid), or
        // replaced by another object (422: a uid cannot change): looked at
        // again on the next pass, when the watch has seen it.
        let replaced = match e.code() {
            Some(409) => true,
            Some(422) => e.to_string().contains("metadata.uid"),
            _ => false,
        };
        Err(match e.code() {
            _ if replaced => Outcome::Error(format!(
                "the mirror Service {ns}/{name} was deleted or replaced meanwhile; looking again: {e}"
            )),
            Some(404) => Outcome::MissingNamespace(format!(
                "the namespace {ns} does not exist in this cluster"
            )),
            Some(422) => Outcome::Invalid(format!("the mirror was refused: {e}")),
            _ => Outcome::Error(e.to_string()),
        })
    }

    /// An Event on the Link: a mirror it must leave alone.
    async fn publish_name_taken(&self, outcome: &Outcome) {
        let (Some(link), Outcome::NameTaken(note)) = (&self.link, outcome) else {
            return;
        };
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "MirrorNameTaken".into(),
            note: Some(note.clone()),
            action: "Mirror".into(),
            secondary: None,
        };
        let reference = link.object_ref(&());
        if let Err(e) = call(
            "publishing an Event",
            self.recorder.publish(&event, &reference),
        )
        .await
        {
            tracing::warn!(error = %e, "publishing the Event failed");
        }
    }

    async fn create_namespace(&self, ns: &str) -> Result<(), String> {
        let api: Api<Namespace> = Api::all(self.local.clone());
        let mut n = Namespace::default();
        n.metadata.name = Some(ns.to_string());
        match tokio::time::timeout(CALL_TIMEOUT, api.create(&PostParams::default(), &n)).await {
            Ok(Ok(_)) => {
                tracing::info!(namespace = %ns, "created the mirror's namespace");
                Ok(())
            }
            Ok(Err(e)) if status_code(&e) == Some(409) => Ok(()),
            Ok(Err(e)) => Err(format!("creating the namespace {ns}: {}", error_chain(&e))),
            Err(_) => Err(format!("creating the namespace {ns}: timed out")),
        }
    }

    async fn apply_slice(&self, slice: &EndpointSlice) -> Result<(), Outcome> {
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let name = slice.metadata.name.clone().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.local.clone(), &ns);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.metrics.writes.inc();
        let res = tokio::time::timeout(
            CALL_TIMEOUT,
            api.patch(&name, &params, &Patch::Apply(slice)),
        )
        .await;
        let err = match res {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => format!("writing the mirror EndpointSlice: {}", error_chain(&e)),
            Err(_) => "writing the mirror EndpointSlice: timed out".into(),
        };
        self.metrics.write_errors.inc();
        Err(Outcome::Error(err))
    }

    /// Deletes a mirror Service and its slice; absent ones count as deleted.
    async fn delete_mirror(&mut self, key: &Key, local: &Key) {
        // Exactly the objects the watches saw: never one of the same name
        // made meanwhile by someone else.
        let Some(uid) = self
            .index
            .mirror(local)
            .and_then(|m| m.metadata.uid.clone())
        else {
            return;
        };
        let slice_uid = self
            .index
            .mirror_slice_uid(&Key::new(local.namespace.clone(), slice_name(&local.name)))
            .map(str::to_string);
        let res = delete_pair(
            &self.local,
            &self.metrics,
            local,
            Some(&uid),
            slice_uid.as_deref(),
        )
        .await;
        match res {
            Ok(()) => {
                tracing::info!(mirror = %local, "mirror deleted");
                if local.name == mirror_name(&key.name, self.cluster()) {
                    self.written.remove(key);
                }
            }
            Err(e) => {
                tracing::warn!(mirror = %local, error = %e, "deleting the mirror failed; retrying");
                let attempt = self.retries.get(key).map_or(0, |r| r.0) + 1;
                self.retries
                    .insert(key.clone(), (attempt, Instant::now() + backoff(attempt)));
            }
        }
    }

    /// Records a failed mirror and schedules its retry.
    fn failed(&mut self, key: &Key, outcome: Outcome, min_ms: u64) {
        let attempt = self.retries.get(key).map_or(0, |r| r.0) + 1;
        let cap = match outcome {
            // A namespace may appear any time: look again soon.
            Outcome::MissingNamespace(_) => Duration::from_secs(10),
            Outcome::Invalid(_) => Duration::from_secs(60),
            _ => Duration::from_secs(30),
        };
        let after = backoff(attempt)
            .min(cap)
            .max(Duration::from_millis(min_ms).min(cap));
        let previous = self.outcomes.get(key);
        if previous != Some(&outcome) {
            match &outcome {
                Outcome::MissingNamespace(m)
                | Outcome::Invalid(m)
                | Outcome::NameTaken(m)
                | Outcome::Error(m) => {
                    tracing::warn!(remote = %key, error = %m, retry_in_ms = after.as_millis() as u64, "mirror not written")
                }
                _ => {}
            }
        }
        self.outcomes.insert(key.clone(), outcome);
        self.retries
            .insert(key.clone(), (attempt, Instant::now() + after));
    }

    async fn add_finalizer(&mut self) {
        let Some(link) = &self.link else { return };
        let mut finalizers = link.metadata.finalizers.clone().unwrap_or_default();
        finalizers.push(LINK_FINALIZER.to_string());
        let patch = serde_json::json!({
            "metadata": {
                "finalizers": finalizers,
                "resourceVersion": link.metadata.resource_version,
            }
        });
        match self.patch_link(&patch).await {
            Ok(l) => {
                tracing::info!(finalizer = LINK_FINALIZER, "finalizer added to the Link");
                self.finalizer_retry_at = None;
                self.set_link(Some(l));
            }
            Err((e, _)) => {
                tracing::warn!(error = %e, "adding the finalizer failed; retrying");
                self.finalizer_retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// Gives the mirror's own objects to the Link (see [`crate::own`]); a
    /// failure is retried, and stops nothing else.
    async fn adopt(&mut self) {
        let (Some(own), Some(link)) = (&self.settings.own, &self.link) else {
            return;
        };
        match own::adopt(&self.local, own, link).await {
            Ok(()) => {
                tracing::info!(name = %own.name, cluster_role = %own.cluster_role, "the mirror's own objects go with the Link");
                self.adopted = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "giving the mirror's own objects to the Link failed; retrying");
                self.adopt_retry_at = Some(Instant::now() + Duration::from_secs(30));
            }
        }
    }

    /// A merge patch of the Link; the error has the HTTP status, if any.
    async fn patch_link(&self, patch: &serde_json::Value) -> Result<Link, (String, Option<u16>)> {
        let api: Api<Link> = Api::namespaced(self.local.clone(), &self.settings.link_namespace);
        match tokio::time::timeout(
            CALL_TIMEOUT,
            api.patch(
                &self.settings.link_name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            ),
        )
        .await
        {
            Ok(Ok(l)) => Ok(l),
            Ok(Err(e)) => Err((error_chain(&e), status_code(&e))),
            Err(_) => Err(("timed out".into(), None)),
        }
    }

    /// The Link is being deleted: delete every mirror it owns, give up the
    /// mirror's cluster-wide rights (when it runs as `link` deploys it),
    /// then let the Link go.
    async fn finalize(&mut self) {
        if !self.has_finalizer() {
            return;
        }
        if !self.adopted {
            // Started after the Link's deletion: its own objects go with the
            // Link all the same (a deleted owner's dependents are collected).
            self.adopt().await;
        }
        let res = self.delete_everything().await;
        let res = match res {
            Ok(()) => {
                let Some(link) = &self.link else { return };
                let finalizers: Vec<String> = link
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .filter(|f| *f != LINK_FINALIZER)
                    .cloned()
                    .collect();
                let patch = serde_json::json!({
                    "metadata": {
                        "finalizers": finalizers,
                        "resourceVersion": link.metadata.resource_version,
                    }
                });
                match self.patch_link(&patch).await {
                    Ok(l) => {
                        self.set_link(Some(l));
                        Ok(())
                    }
                    // Already gone: nothing holds it any more.
                    Err((_, Some(404))) => Ok(()),
                    Err((e, _)) => Err(format!("removing the finalizer: {e}")),
                }
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => {
                tracing::info!("finalizer removed");
                self.finalize_retry_at = None;
                self.written.clear();
                self.outcomes.clear();
                self.retries.clear();
            }
            Err(e) => {
                tracing::warn!(error = %e, "finalizing the Link failed; retrying");
                self.finalize_retry_at = Some(Instant::now() + Duration::from_secs(2));
            }
        }
    }

    /// The finalizer's work before the Link may go.
    async fn delete_everything(&self) -> Result<(), String> {
        match delete_all_mirrors(&self.local, &self.metrics, &self.label).await {
            Ok(n) => tracing::info!(deleted = n, "the Link is deleted; its mirrors are gone"),
            // The mirror's cluster-wide rights are gone: given up before a
            // restart, or taken away. Nothing more can be deleted, and
            // holding the Link would help no one.
            Err(e) if e.code() == Some(403) && self.settings.own.is_some() => {
                tracing::warn!(
                    error = %e,
                    label = %format!("{LINK_LABEL}={}", self.label),
                    "the mirrors can no longer be listed; letting the Link go (delete what is left by its label)"
                );
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        }
        if let Some(own) = &self.settings.own {
            match own::release(&self.local, own).await {
                Ok(()) => {
                    tracing::info!(cluster_role = %own.cluster_role, "the mirror's cluster-wide rights are given up")
                }
                // Already given up, and the role with them.
                Err(e) if e.code() == Some(403) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    // === status ===

    /// Publishes what the status is decided from, when due, to the status
    /// writer's task: summarising is one pass over the remote Services, at
    /// most once per `status_interval`.
    fn publish_status_if_due(&mut self) {
        let now = Instant::now();
        if now < self.status_at {
            return;
        }
        self.status_at = now + self.settings.status_interval;
        let Some(link) = &self.link else {
            self.status_tx.send_replace(None);
            return;
        };
        let outcomes = &self.outcomes;
        let services = status::summarize(
            self.index
                .services()
                .map(|k| (k, outcomes.get(k).unwrap_or(&Outcome::Pending))),
            MAX_LISTED_FAILURES,
        );
        self.metrics
            .mirrored_services
            .get_or_create(&Metrics::cluster(self.cluster()))
            .set(i64::from(services.mirrored));
        let snapshot = Snapshot {
            cluster: self.cluster().to_string(),
            spec_error: match &self.config {
                Some(Err(e)) => Some(e.clone()),
                _ => None,
            },
            credentials: self.credentials.clone(),
            remote: self.remote.clone(),
            synced: self.index.synced(),
            gateway: self.gateway.as_ref().map(|g| g.rx.borrow().clone()),
            generation: link.metadata.generation,
            services,
            previous: link.status.clone(),
        };
        // The Link's own status changes with each write: it is not what
        // makes a new snapshot.
        self.status_tx.send_if_modified(|old| {
            let same = old.as_ref().is_some_and(|o| {
                Snapshot {
                    previous: snapshot.previous.clone(),
                    ..o.clone()
                } == snapshot
            });
            if !same {
                *old = Some(snapshot);
            }
            !same
        });
    }
}

/// The remote Service a local mirror slice belongs to.
fn slice_remote_key(s: &EndpointSlice) -> Option<Key> {
    let labels = s.metadata.labels.as_ref()?;
    let mirror = labels.get(SERVICE_NAME_LABEL)?;
    let cluster = labels.get(CLUSTER_NAME_LABEL)?;
    let name = mirror.strip_suffix(cluster.as_str())?.strip_suffix('-')?;
    Some(Key::new(s.metadata.namespace.clone()?, name))
}

/// A delete of exactly the object of this uid: a Service of the same name
/// made meanwhile by someone else is not touched.
fn delete_params(uid: Option<&str>) -> DeleteParams {
    DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Deletes one object of this uid; gone, or replaced by another (a failed
/// uid precondition), counts as deleted: what is there now is not ours.
async fn delete_exactly<K>(
    api: &Api<K>,
    metrics: &Metrics,
    name: &str,
    uid: Option<&str>,
) -> Result<(), CallError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    metrics.writes.inc();
    let what = format!(
        "deleting the mirror {} {name}",
        K::kind(&Default::default())
    );
    match call(what, api.delete(name, &delete_params(uid))).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.code(), Some(404) | Some(409)) => Ok(()),
        Err(e) => {
            metrics.write_errors.inc();
            Err(e)
        }
    }
}

/// Deletes a mirror Service of this uid and its slice (of its uid, when
/// known; else the garbage collector takes it with the Service, its owner).
async fn delete_pair(
    local: &Client,
    metrics: &Metrics,
    mirror: &Key,
    service_uid: Option<&str>,
    slice_uid: Option<&str>,
) -> Result<(), CallError> {
    if slice_uid.is_some() {
        let slices: Api<EndpointSlice> = Api::namespaced(local.clone(), &mirror.namespace);
        delete_exactly(&slices, metrics, &slice_name(&mirror.name), slice_uid).await?;
    }
    let services: Api<Service> = Api::namespaced(local.clone(), &mirror.namespace);
    delete_exactly(&services, metrics, &mirror.name, service_uid).await
}

/// Deletes every mirror (and stray slice) that carries this Link's label,
/// listed fresh from the API, each by its uid; returns how many mirrors.
async fn delete_all_mirrors(
    local: &Client,
    metrics: &Metrics,
    label: &str,
) -> Result<usize, CallError> {
    let services: Api<Service> = Api::all(local.clone());
    let lp = ListParams::default().labels(&format!(
        "{MIRRORED_SERVICE_LABEL}=true,{LINK_LABEL}={label}"
    ));
    let list = call("listing the mirrors", services.list(&lp)).await?;
    let mut n = 0;
    for svc in &list.items {
        if let Some(k) = Key::of(&svc.metadata) {
            let api: Api<Service> = Api::namespaced(local.clone(), &k.namespace);
            delete_exactly(&api, metrics, &k.name, svc.metadata.uid.as_deref()).await?;
            n += 1;
        }
    }
    let slices: Api<EndpointSlice> = Api::all(local.clone());
    let lp = ListParams::default().labels(&format!(
        "{MANAGED_BY_LABEL}={MIRROR_MANAGED_BY},{LINK_LABEL}={label}"
    ));
    let list = call("listing the mirror slices", slices.list(&lp)).await?;
    for s in &list.items {
        if let Some(k) = Key::of(&s.metadata) {
            let api: Api<EndpointSlice> = Api::namespaced(local.clone(), &k.namespace);
            delete_exactly(&api, metrics, &k.name, s.metadata.uid.as_deref()).await?;
        }
    }
    Ok(n)
}

/// 100ms, doubling, at most 30s.
fn backoff(attempt: u32) -> Duration {
    tandem_util::backoff(Duration::from_millis(100), attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }

    #[test]
    fn mirror_slices_map_back_to_the_remote_service() {
        let mut s = EndpointSlice::default();
        s.metadata.namespace = Some("ns".into());
        s.metadata.labels = Some(
            [
                (SERVICE_NAME_LABEL.to_string(), "emoji-west".to_string()),
                (CLUSTER_NAME_LABEL.to_string(), "west".to_string()),
            ]
            .into(),
        );
        assert_eq!(slice_remote_key(&s), Some(Key::new("ns", "emoji")));
        s.metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(CLUSTER_NAME_LABEL);
        assert_eq!(slice_remote_key(&s), None);
    }
}

//! The controller's runtime: watches feed the [`Index`], changes queue the
//! splits they concern, and one [`Writer`] decides and writes, only while
//! this replica leads.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client, api::DynamicObject, runtime::watcher};
use prometheus_client::registry::Registry;
use tandem_lease::{Elector, Leadership, LeaseParams};
use tandem_runtime::watch::{self, Update};
use tokio::{
    sync::{mpsc, watch as channel},
    time::Instant,
};

use crate::{
    discovery::{self, Wait},
    index::{Index, Slice},
    metrics::Metrics,
    progress::{Progress, STALL_AFTER},
    resource::{self, Key, Kind, Resource},
    writer::Writer,
};

pub const FIELD_MANAGER: &str = "tandem-failover";

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Label selector of the TrafficSplits and HTTPRoutes to control.
    pub selector: String,
    pub cluster_domain: String,
    /// How often every split is decided again, to repair drift (above zero).
    pub resync_period: Duration,
    pub admin_addr: Option<SocketAddr>,
    /// Leader election; `None` runs as the only writer.
    pub lease: Option<LeaseParams>,
    /// This replica's name, in events.
    pub instance: String,
}

impl Settings {
    /// Refuses settings the controller cannot run with.
    pub fn validate(&self) -> Result<(), String> {
        if self.resync_period.is_zero() {
            return Err("the resync period must be above zero".into());
        }
        Ok(())
    }
}

/// A split to reconsider, and since when (for the reaction-time metric).
#[derive(Debug)]
pub(crate) struct Trigger {
    pub(crate) key: Key,
    pub(crate) at: Instant,
}

/// State shared by the watches and the writer.
pub(crate) struct Shared {
    index: Mutex<Index>,
    pub(crate) queue: mpsc::UnboundedSender<Trigger>,
    slices_synced: AtomicBool,
    splits_synced: AtomicBool,
    /// Wakes the writer when a watch has synced, even with nothing to queue.
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) metrics: Metrics,
    /// The served version of each kind, once discovered.
    resources: Mutex<HashMap<Kind, Resource>>,
    /// Whether the writer makes progress, for `/live`.
    progress: Mutex<Progress>,
}

impl Shared {
    pub(crate) fn new(
        cluster_domain: &str,
        queue: mpsc::UnboundedSender<Trigger>,
        metrics: Metrics,
    ) -> Self {
        Self {
            index: Mutex::new(Index::new(cluster_domain)),
            queue,
            slices_synced: AtomicBool::new(false),
            splits_synced: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            metrics,
            resources: Mutex::new(HashMap::new()),
            progress: Mutex::new(Progress::new(STALL_AFTER)),
        }
    }

    pub(crate) fn index(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock would be a bug; keep serving anyway.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn resource(&self, kind: Kind) -> Option<Resource> {
        let resources = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        resources.get(&kind).cloned()
    }

    pub(crate) fn add_resource(&self, res: Resource) {
        let mut resources = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        resources.insert(res.kind, res);
    }

    fn enqueue(&self, keys: impl IntoIterator<Item = Key>, at: Instant) {
        for key in keys {
            let _ = self.queue.send(Trigger { key, at });
        }
    }

    /// Both watches have listed (tests drive the writer without watches).
    #[cfg(test)]
    pub(crate) fn mark_synced(&self) {
        self.slices_synced.store(true, Ordering::Release);
        self.splits_synced.store(true, Ordering::Release);
    }

    pub(crate) fn synced(&self) -> bool {
        self.slices_synced.load(Ordering::Acquire) && self.splits_synced.load(Ordering::Acquire)
    }

    /// `/live`'s verdict: the writer has not sat on work for too long.
    pub(crate) fn live(&self) -> Result<(), String> {
        self.progress().check(Instant::now()).map_err(|stalled| {
            format!(
                "the failover writer has had work pending for {}s with nothing done",
                stalled.as_secs()
            )
        })
    }
}

/// Runs until `shutdown` changes to true. Ends with an error when the
/// settings are invalid, or when leader election cannot work (its Lease's
/// namespace does not exist: a [`tandem_lease::Error`] in the chain).
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: channel::Receiver<bool>,
) -> anyhow::Result<()> {
    settings.validate().map_err(anyhow::Error::msg)?;
    let mut registry = Registry::with_prefix("tandem_failover");
    let metrics = Metrics::register(&mut registry);
    let (queue, triggers) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(&settings.cluster_domain, queue, metrics));

    let (admin, readiness) = tandem_admin::Admin::new(registry);
    let live = shared.clone();
    let admin = admin.with_liveness(move || live.live());
    if let Some(addr) = settings.admin_addr {
        let server = admin.serve(addr);
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
    }

    // Leadership: from the Lease, or always when running alone (the sender
    // is kept to the end, so that the channel stays open).
    let (_alone, leadership, mut election) = match settings.lease.clone() {
        Some(params) => {
            let elector = Elector::new(client.clone(), params);
            let rx = elector.leadership();
            let mut stop = shutdown.clone();
            let election = tokio::spawn(elector.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            }));
            (None, rx, Some(election))
        }
        None => {
            let (tx, rx) = channel::channel(Leadership::Leader {
                since: Instant::now(),
            });
            (Some(tx), rx, None)
        }
    };

    let controller = control(
        client,
        settings,
        shared,
        triggers,
        leadership,
        readiness,
        shutdown.clone(),
    );
    let res = tokio::select! {
        biased;
        e = election_failed(&mut election, &shutdown) => return Err(election_error(e)),
        res = controller => res,
    };
    // The writer stops when the election does: the election says why.
    if res.is_err()
        && let Some(election) = election
        && let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(1), election).await
    {
        return Err(election_error(e));
    }
    res
}

fn election_error(e: tandem_lease::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("leader election cannot work")
}

/// Resolves with the election's error if it ends with one before shutdown
/// (it then cannot work: retrying would only repeat the warning).
/// The handle is taken once the election has ended.
async fn election_failed(
    election: &mut Option<tokio::task::JoinHandle<Result<(), tandem_lease::Error>>>,
    shutdown: &channel::Receiver<bool>,
) -> tandem_lease::Error {
    if let Some(handle) = election.as_mut() {
        let ended = handle.await;
        *election = None;
        match ended {
            Ok(Err(e)) if !*shutdown.borrow() => return e,
            Ok(Err(e)) => tracing::warn!(error = %e, "leader election ended"),
            Ok(Ok(())) => {}
            Err(e) => tracing::error!(error = %e, "leader election panicked"),
        }
    }
    // Otherwise the writer sees the leadership channel close, or shutdown.
    std::future::pending().await
}

/// Discovers what to control, starts the watches, and runs the writer.
async fn control(
    client: Client,
    settings: Settings,
    shared: Arc<Shared>,
    triggers: mpsc::UnboundedReceiver<Trigger>,
    leadership: channel::Receiver<Leadership>,
    readiness: tandem_admin::Readiness,
    mut shutdown: channel::Receiver<bool>,
) -> anyhow::Result<()> {
    let wait = Wait {
        recheck: Duration::from_secs(5),
        hint: Some(
            "the TrafficSplit CRD is not served yet; waiting (install it with `tandem smi install`)",
        ),
    };
    let Some(version) = discovery::served_version(
        &client,
        tandem_api::smi::GROUP,
        &["v1alpha2", "v1alpha1"],
        wait,
        &mut shutdown,
    )
    .await
    else {
        return Ok(());
    };
    let ts = Resource::traffic_split(&version);
    tracing::info!(%version, "controlling TrafficSplits");
    shared.add_resource(ts.clone());
    tokio::spawn(watch_slices(client.clone(), shared.clone()));
    tokio::spawn(watch_splits(
        client.clone(),
        shared.clone(),
        ts,
        settings.selector.clone(),
        true,
    ));
    tokio::spawn(control_http_routes(
        client.clone(),
        shared.clone(),
        settings.selector.clone(),
        settings.resync_period,
        shutdown.clone(),
    ));

    Writer::new(client, shared, &settings.instance)
        .run(
            triggers,
            leadership,
            readiness,
            settings.resync_period,
            shutdown,
        )
        .await
        .map_err(|why| anyhow::anyhow!("the failover controller stopped: {why}"))
}

/// Controls HTTPRoutes once the cluster serves them: a failed discovery is
/// retried, and a Gateway API installed later is found at the next recheck.
async fn control_http_routes(
    client: Client,
    shared: Arc<Shared>,
    selector: String,
    recheck: Duration,
    mut shutdown: channel::Receiver<bool>,
) {
    let wait = Wait {
        recheck,
        hint: None,
    };
    let Some(version) =
        discovery::served_version(&client, GATEWAY_GROUP, &["v1"], wait, &mut shutdown).await
    else {
        return;
    };
    tracing::info!(%version, "controlling HTTPRoutes");
    let res = Resource::http_route(&version);
    shared.add_resource(res.clone());
    watch_splits(client, shared, res, selector, false).await;
}

// === watches ===

async fn watch_slices(client: Client, shared: Arc<Shared>) {
    let api: Api<EndpointSlice> = Api::all(client);
    // Each slice is folded as it arrives: a list buffers no whole slices.
    let updates = watch::folded(api, watcher::Config::default(), Slice::fold);
    let mut updates = std::pin::pin!(updates);
    while let Some(update) = updates.next().await {
        let at = Instant::now();
        let keys = match update {
            Update::Listed(slices) => {
                let keys = shared.index().reset_slices(&slices);
                drop(slices);
                shared.slices_synced.store(true, Ordering::Release);
                shared.wake.notify_one();
                tracing::info!("endpoint slices synced");
                keys
            }
            Update::Apply(s) => shared.index().apply_slice(&s),
            Update::Delete(s) => shared.index().delete_slice(&s),
            Update::Failed(e) => {
                tracing::warn!(error = %e, code = e.code, "endpoint slice watch failed; retrying");
                continue;
            }
        };
        shared.enqueue(keys, at);
    }
}

async fn watch_splits(
    client: Client,
    shared: Arc<Shared>,
    res: Resource,
    selector: String,
    gates_sync: bool,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &res.api);
    let config = watcher::Config::default().labels(&selector);
    let kind = res.kind;
    let updates = watch::folded(api, config, move |o| resource::read(&res, o));
    let mut updates = std::pin::pin!(updates);
    while let Some(update) = updates.next().await {
        let at = Instant::now();
        let keys = match update {
            Update::Listed(entries) => {
                let mut index = shared.index();
                let relisted = index.reset_splits(kind, entries);
                shared.metrics.watched_splits.set(index.len() as i64);
                drop(index);
                for key in &relisted.removed {
                    shared.metrics.forget(key);
                }
                if gates_sync {
                    shared.splits_synced.store(true, Ordering::Release);
                    shared.wake.notify_one();
                }
                tracing::info!(
                    kind = kind.as_str(),
                    count = relisted.listed.len(),
                    "splits synced"
                );
                // The removed ones too: the writer forgets them.
                let mut keys = relisted.listed;
                keys.extend(relisted.removed);
                keys
            }
            Update::Apply(entry) => {
                let mut index = shared.index();
                let key = index.apply_split(entry);
                shared.metrics.watched_splits.set(index.len() as i64);
                vec![key]
            }
            Update::Delete(entry) => {
                let key = entry.key;
                let mut index = shared.index();
                index.delete_split(&key);
                shared.metrics.watched_splits.set(index.len() as i64);
                drop(index);
                shared.metrics.forget(&key);
                // So that the writer forgets it.
                vec![key]
            }
            Update::Failed(e) => {
                tracing::warn!(kind = kind.as_str(), error = %e, code = e.code, "split watch failed; retrying");
                continue;
            }
        };
        shared.enqueue(keys, at);
    }
}

//! The controller's runtime: watches feed the [`Index`], changes queue the
//! splits they concern, and one writer decides and writes, only while this
//! replica leads.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{core::v1::ObjectReference, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        watcher::{self, Event},
    },
};
use prometheus_client::registry::Registry;
use tandem_core::failover::{self, Decision, Invalid, Memory, State};
use tandem_lease::{Elector, Leadership, LeaseParams};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    index::Index,
    metrics::Metrics,
    resource::{self, Entry, Key, Kind, Resource},
};

pub const FIELD_MANAGER: &str = "tandem-failover";

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Label selector of the TrafficSplits and HTTPRoutes to control.
    pub selector: String,
    pub cluster_domain: String,
    /// How often every split is decided again, to repair drift.
    pub resync_period: Duration,
    pub admin_addr: Option<SocketAddr>,
    /// Leader election; `None` runs as the only writer.
    pub lease: Option<LeaseParams>,
    /// This replica's name, in events.
    pub instance: String,
}

/// A split to reconsider, and since when (for the reaction-time metric).
#[derive(Debug)]
struct Trigger {
    key: Key,
    at: Instant,
}

/// State shared by the watches and the writer.
struct Shared {
    index: Mutex<Index>,
    queue: mpsc::UnboundedSender<Trigger>,
    slices_synced: AtomicBool,
    splits_synced: AtomicBool,
    /// Wakes the writer when a watch has synced, even with nothing to queue.
    wake: tokio::sync::Notify,
    metrics: Metrics,
}

impl Shared {
    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock would be a bug; keep serving anyway.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue(&self, keys: impl IntoIterator<Item = Key>, at: Instant) {
        for key in keys {
            let _ = self.queue.send(Trigger { key, at });
        }
    }

    fn synced(&self) -> bool {
        self.slices_synced.load(Ordering::Acquire) && self.splits_synced.load(Ordering::Acquire)
    }
}

/// Runs until `shutdown` changes to true.
pub async fn run(
    client: Client,
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut registry = Registry::with_prefix("tandem_failover");
    let metrics = Metrics::register(&mut registry);
    let (admin, readiness) = tandem_admin::Admin::new(registry);
    if let Some(addr) = settings.admin_addr {
        let server = admin.serve(addr);
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
    }

    let (queue, triggers) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        index: Mutex::new(Index::new(settings.cluster_domain.clone())),
        queue,
        slices_synced: AtomicBool::new(false),
        splits_synced: AtomicBool::new(false),
        wake: tokio::sync::Notify::new(),
        metrics,
    });

    // Leadership: from the Lease, or always when running alone (the sender
    // is kept to the end, so that the channel stays open).
    let (_alone, leadership) = match settings.lease.clone() {
        Some(params) => {
            let elector = Elector::new(client.clone(), params);
            let rx = elector.leadership();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = elector.run(stopped).await {
                    tracing::error!(error = %e, "leader election ended");
                }
            });
            (None, rx)
        }
        None => {
            let (tx, rx) = watch::channel(Leadership::Leader {
                since: Instant::now(),
            });
            (Some(tx), rx)
        }
    };

    let ts = discover_traffic_split(&client, &mut shutdown).await?;
    let Some(ts) = ts else { return Ok(()) };
    tracing::info!(version = %ts.api.version, "controlling TrafficSplits");
    tokio::spawn(watch_slices(client.clone(), shared.clone()));
    tokio::spawn(watch_splits(
        client.clone(),
        shared.clone(),
        ts.clone(),
        settings.selector.clone(),
        true,
    ));
    let http_route = discover(&client, "gateway.networking.k8s.io", &["v1"]).await;
    if let Some(version) = &http_route {
        tracing::info!(%version, "controlling HTTPRoutes");
        tokio::spawn(watch_splits(
            client.clone(),
            shared.clone(),
            Resource::http_route(version),
            settings.selector.clone(),
            false,
        ));
    }

    let writer = Writer {
        client: client.clone(),
        shared: shared.clone(),
        resources: [Some(ts), http_route.map(|v| Resource::http_route(&v))]
            .into_iter()
            .flatten()
            .map(|r| (r.kind, r))
            .collect(),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(settings.instance.clone()),
            },
        ),
        memory: HashMap::new(),
        attempts: HashMap::new(),
        reported_invalid: HashMap::new(),
        start: Instant::now(),
    };
    writer
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

/// The served TrafficSplit version, v1alpha2 first; waits for the CRD.
async fn discover_traffic_split(
    client: &Client,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<Resource>> {
    let mut waited = false;
    loop {
        if let Some(v) = discover(client, tandem_api::smi::GROUP, &["v1alpha2", "v1alpha1"]).await {
            return Ok(Some(Resource::traffic_split(&v)));
        }
        if !waited {
            tracing::warn!(
                "the TrafficSplit CRD is not served yet; waiting (install it with `tandem smi install`)"
            );
            waited = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(None),
        }
    }
}

/// The first of `versions` the cluster serves for `group`.
async fn discover(client: &Client, group: &str, versions: &[&str]) -> Option<String> {
    let g = kube::discovery::group(client, group).await.ok()?;
    let served: Vec<String> = g.versions().map(String::from).collect();
    versions
        .iter()
        .find(|v| served.iter().any(|s| s == *v))
        .map(|v| v.to_string())
}

// === watches ===

async fn watch_slices(client: Client, shared: Arc<Shared>) {
    let api: Api<EndpointSlice> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer = vec![];
    while let Some(event) = stream.next().await {
        let at = Instant::now();
        let keys = match event {
            Ok(Event::Init) => {
                buffer.clear();
                continue;
            }
            Ok(Event::InitApply(s)) => {
                buffer.push(s);
                continue;
            }
            Ok(Event::InitDone) => {
                let keys = shared.index().reset_slices(&buffer);
                buffer.clear();
                shared.slices_synced.store(true, Ordering::Release);
                shared.wake.notify_one();
                tracing::info!("endpoint slices synced");
                keys
            }
            Ok(Event::Apply(s)) => shared.index().apply_slice(&s),
            Ok(Event::Delete(s)) => shared.index().delete_slice(&s),
            Err(e) => {
                tracing::warn!(error = %e, "endpoint slice watch failed; retrying");
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
    let mut stream = watcher::watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    let mut buffer = vec![];
    while let Some(event) = stream.next().await {
        let at = Instant::now();
        let keys = match event {
            Ok(Event::Init) => {
                buffer.clear();
                continue;
            }
            Ok(Event::InitApply(o)) => {
                buffer.push(resource::read(&res, o));
                continue;
            }
            Ok(Event::InitDone) => {
                let mut index = shared.index();
                let keys = index.reset_splits(res.kind, std::mem::take(&mut buffer));
                shared.metrics.watched_splits.set(index.len() as i64);
                drop(index);
                if gates_sync {
                    shared.splits_synced.store(true, Ordering::Release);
                    shared.wake.notify_one();
                }
                tracing::info!(
                    kind = res.kind.as_str(),
                    count = keys.len(),
                    "splits synced"
                );
                keys
            }
            Ok(Event::Apply(o)) => {
                let mut index = shared.index();
                let key = index.apply_split(resource::read(&res, o));
                shared.metrics.watched_splits.set(index.len() as i64);
                vec![key]
            }
            Ok(Event::Delete(o)) => {
                let key = resource::read(&res, o).key;
                let mut index = shared.index();
                index.delete_split(&key);
                shared.metrics.watched_splits.set(index.len() as i64);
                shared.metrics.forget(&key);
                continue;
            }
            Err(e) => {
                tracing::warn!(kind = res.kind.as_str(), error = %e, "split watch failed; retrying");
                continue;
            }
        };
        shared.enqueue(keys, at);
    }
}

// === writer ===

struct Writer {
    client: Client,
    shared: Arc<Shared>,
    resources: HashMap<Kind, Resource>,
    recorder: Recorder,
    /// Failback-damping memory, one per group of each split.
    memory: HashMap<Key, Vec<Memory>>,
    /// Consecutive failed writes, for backoff.
    attempts: HashMap<Key, u32>,
    /// The resourceVersion an invalid split was last reported at.
    reported_invalid: HashMap<Key, String>,
    start: Instant,
}

/// What one decision pass concluded for a split.
enum Outcome {
    Nothing,
    Retry { after: Duration },
    Damped { after: Duration },
}

impl Writer {
    async fn run(
        mut self,
        mut triggers: mpsc::UnboundedReceiver<Trigger>,
        mut leadership: watch::Receiver<Leadership>,
        readiness: tandem_admin::Readiness,
        resync_period: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), &'static str> {
        let mut pending: HashMap<Key, Instant> = HashMap::new();
        let mut resync = tokio::time::interval(resync_period);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        loop {
            tokio::select! {
                t = triggers.recv() => match t {
                    Some(t) => add(&mut pending, t),
                    None => return Err("the work queue closed"),
                },
                _ = resync.tick() => self.enqueue_all(&mut pending),
                _ = self.shared.wake.notified() => {}
                res = leadership.changed() => if res.is_err() {
                    return Err("leader election stopped");
                },
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            }
            while let Ok(t) = triggers.try_recv() {
                add(&mut pending, t);
            }
            let synced = self.shared.synced();
            readiness.set(synced);
            let leader = leadership.borrow().is_leader();
            self.shared.metrics.leader.set(i64::from(leader));
            if leader && !was_leader {
                tracing::info!("leading: deciding every split from the current state");
                self.enqueue_all(&mut pending);
            }
            was_leader = leader;
            if !leader {
                // A follower keeps its index warm but never writes.
                pending.clear();
                continue;
            }
            if !synced {
                // Deciding before readiness is known would see every backend down.
                continue;
            }
            for (key, at) in std::mem::take(&mut pending) {
                if !leadership.borrow().is_leader() {
                    break;
                }
                match self.reconcile(&key, at).await {
                    Outcome::Nothing => {}
                    Outcome::Retry { after } | Outcome::Damped { after } => {
                        let queue = self.shared.queue.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let _ = queue.send(Trigger { key, at });
                        });
                    }
                }
            }
        }
    }

    fn enqueue_all(&self, pending: &mut HashMap<Key, Instant>) {
        let now = Instant::now();
        for key in self.shared.index().keys() {
            pending.entry(key).or_insert(now);
        }
    }

    /// Decides one split and writes what changed.
    async fn reconcile(&mut self, key: &Key, at: Instant) -> Outcome {
        let now = self.start.elapsed();
        let (entry, decisions) = {
            let index = self.shared.index();
            let Some(entry) = index.get(key).cloned() else {
                self.memory.remove(key);
                return Outcome::Nothing;
            };
            let memory = self.memory.get(key).cloned().unwrap_or_default();
            let decisions: Result<Vec<Decision>, Invalid> = entry
                .groups
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let m = memory.get(i).copied().unwrap_or_default();
                    failover::decide(g, index.cluster_domain(), &|s| index.is_ready(s), &m, now)
                })
                .collect();
            (entry, decisions)
        };
        let _span = tracing::info_span!("reconcile", split = %key).entered();

        let decisions = match (&entry.unreadable, decisions) {
            (Some(why), _) => return self.report_invalid(&entry, why.clone()).await,
            (None, Err(invalid)) => return self.report_invalid(&entry, invalid.to_string()).await,
            (None, Ok(d)) if d.is_empty() => return Outcome::Nothing,
            (None, Ok(d)) => d,
        };
        self.reported_invalid.remove(key);
        self.memory
            .insert(key.clone(), decisions.iter().map(|d| d.memory).collect());

        let state = combined_state(&decisions);
        let damped = decisions.iter().filter_map(|d| d.requeue_after).min();
        let weights_changed = decisions.iter().any(|d| d.changed);
        let recorded = entry.recorded_state().map(String::from);
        let state_changed = recorded.as_deref() != Some(state.as_str());
        if !weights_changed && !state_changed {
            self.shared.metrics.set_state(key, state);
            return damped.map_or(Outcome::Nothing, |after| Outcome::Damped { after });
        }

        let Some(res) = self.resources.get(&key.kind).cloned() else {
            return Outcome::Nothing;
        };
        let weights: Vec<Vec<u32>> = decisions.iter().map(|d| d.weights.clone()).collect();
        let transition_time = state_changed.then(now_rfc3339);
        let patch = resource::patch(
            &res,
            &entry,
            weights_changed.then_some(weights.as_slice()),
            state,
            transition_time.as_deref(),
        );
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &key.namespace, &res.api);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let written = tokio::time::timeout(
            Duration::from_secs(10),
            api.patch(&key.name, &params, &Patch::Merge(&patch)),
        )
        .await;
        match written {
            Ok(Ok(obj)) => {
                self.attempts.remove(key);
                let active: Vec<String> = decisions
                    .iter()
                    .flat_map(|d| d.active.iter().map(|s| s.to_string()))
                    .collect();
                let entry = resource::read(&res, obj);
                let reference = object_ref(&res, &entry);
                self.shared.index().apply_split(entry);
                if weights_changed {
                    self.shared
                        .metrics
                        .reaction
                        .observe(at.elapsed().as_secs_f64());
                }
                // Recording the state of a split seen for the first time is no transition.
                if state_changed && recorded.is_some() {
                    self.shared.metrics.transition(key, state);
                }
                self.shared.metrics.set_state(key, state);
                tracing::info!(
                    state = state.as_str(),
                    previous = recorded.as_deref().unwrap_or("none"),
                    weights = ?weights,
                    active = ?active,
                    reaction_ms = at.elapsed().as_millis() as u64,
                    "wrote"
                );
                // The Event follows the successful write, never a failed one.
                if let Some(event) =
                    transition_event(recorded.as_deref(), state, weights_changed, &active)
                    && let Err(e) = self.recorder.publish(&event, &reference).await
                {
                    tracing::warn!(error = %e, "publishing the event failed");
                }
                damped.map_or(Outcome::Nothing, |after| Outcome::Damped { after })
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => {
                // The object changed since it was read: read it again, decide again.
                tracing::debug!("conflict; re-reading");
                self.shared.metrics.write_error(key, "conflict");
                if let Ok(Some(obj)) = api.get_opt(&key.name).await {
                    self.shared.index().apply_split(resource::read(&res, obj));
                }
                Outcome::Retry {
                    after: Duration::from_millis(10),
                }
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => {
                self.shared.index().delete_split(key);
                Outcome::Nothing
            }
            Ok(Err(e)) => self.failed(key, &e.to_string(), "api"),
            Err(_) => self.failed(key, "timed out after 10s", "timeout"),
        }
    }

    /// Counts a failed write and retries it with backoff: it is never dropped.
    fn failed(&mut self, key: &Key, error: &str, reason: &str) -> Outcome {
        self.shared.metrics.write_error(key, reason);
        let attempt = self.attempts.entry(key.clone()).or_default();
        *attempt += 1;
        let after = backoff(*attempt);
        tracing::warn!(
            error,
            attempt = *attempt,
            retry_in_ms = after.as_millis() as u64,
            "write failed"
        );
        Outcome::Retry { after }
    }

    /// One Event and one log line per change of an invalid object; nothing is written.
    async fn report_invalid(&mut self, entry: &Entry, why: String) -> Outcome {
        let rv = entry.resource_version().unwrap_or_default().to_string();
        if self.reported_invalid.get(&entry.key) == Some(&rv) {
            return Outcome::Nothing;
        }
        tracing::warn!(reason = %why, "invalid split; leaving it as it is");
        let Some(res) = self.resources.get(&entry.key.kind) else {
            return Outcome::Nothing;
        };
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "InvalidSplit".into(),
            note: Some(truncate(&why, 1000)),
            action: "Validate".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &object_ref(res, entry)).await {
            tracing::warn!(error = %e, "publishing the event failed");
        }
        self.reported_invalid.insert(entry.key.clone(), rv);
        Outcome::Nothing
    }
}

fn add(pending: &mut HashMap<Key, Instant>, t: Trigger) {
    let at = pending.entry(t.key).or_insert(t.at);
    if t.at < *at {
        *at = t.at;
    }
}

/// 100ms, doubling, at most 30s.
fn backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << attempt.saturating_sub(1).min(10));
    Duration::from_millis(ms.min(30_000))
}

/// The worst state among an object's groups.
fn combined_state(decisions: &[Decision]) -> State {
    if decisions.iter().any(|d| d.state == State::NoReadyBackends) {
        State::NoReadyBackends
    } else if decisions.iter().any(|d| d.state == State::Failover) {
        State::Failover
    } else {
        State::Primary
    }
}

/// The Event for a written change, if it is one people should see.
fn transition_event(
    previous: Option<&str>,
    state: State,
    weights_changed: bool,
    active: &[String],
) -> Option<KubeEvent> {
    let (type_, reason, note) = match state {
        State::Failover if weights_changed => (
            EventType::Normal,
            "FailoverToFallback",
            format!(
                "primary has no ready endpoints; traffic now goes to {}",
                active.join(", ")
            ),
        ),
        State::Primary if weights_changed || previous.is_some_and(|p| p != "primary") => (
            EventType::Normal,
            "FailbackToPrimary",
            format!("primary is ready; traffic is back on {}", active.join(", ")),
        ),
        State::NoReadyBackends if previous != Some("no-ready-backends") => (
            EventType::Warning,
            "NoReadyBackends",
            "no backend has ready endpoints; the weights are left as they were".to_string(),
        ),
        _ => return None,
    };
    Some(KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(truncate(&note, 1000)),
        action: "UpdateWeights".into(),
        secondary: None,
    })
}

fn object_ref(res: &Resource, entry: &Entry) -> ObjectReference {
    ObjectReference {
        api_version: Some(res.api.api_version.clone()),
        kind: Some(res.api.kind.clone()),
        name: Some(entry.key.name.clone()),
        namespace: Some(entry.key.namespace.clone()),
        uid: entry.uid.clone(),
        resource_version: entry.resource_version.clone(),
        field_path: None,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(50), Duration::from_secs(30));
    }

    #[test]
    fn events_follow_transitions() {
        let active = vec!["ns/emoji-svc-west".to_string()];
        let e = transition_event(Some("primary"), State::Failover, true, &active).unwrap();
        assert_eq!(e.reason, "FailoverToFallback");
        assert!(e.note.unwrap().contains("emoji-svc-west"));
        let e = transition_event(Some("failover"), State::Primary, true, &active).unwrap();
        assert_eq!(e.reason, "FailbackToPrimary");
        let e = transition_event(Some("failover"), State::NoReadyBackends, false, &[]).unwrap();
        assert_eq!(e.reason, "NoReadyBackends");
        // First sight of a healthy split: state recorded, nothing to announce.
        assert!(transition_event(None, State::Primary, false, &active).is_none());
        // Still no ready backend: no second event.
        assert!(
            transition_event(
                Some("no-ready-backends"),
                State::NoReadyBackends,
                false,
                &[]
            )
            .is_none()
        );
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let s = "é".repeat(600);
        let t = truncate(&s, 1000);
        assert!(t.len() <= 1000 + '…'.len_utf8());
        assert!(t.ends_with('…'));
    }
}

//! The single writer: decides each queued split and writes what changed,
//! only while this replica leads. Every API call it makes is bounded
//! ([`call`]), and it reports its progress for `/live`.
//!
//! Its work is a [`Queue`] with two priorities, so that flips go ahead of
//! state-only writes. A split is [`Priority::Urgent`](tandem_runtime::queue::Priority::Urgent) when its decided
//! weights differ from the written ones (the split is judged when it is
//! queued, and again when it is taken), and [`Priority::Normal`](tandem_runtime::queue::Priority::Normal) otherwise:
//! recording the state annotation, a resync, a repair. New triggers are
//! taken in after each write, so that a flip arriving while the writer works
//! through a backlog (the state of every split after a restart) is written
//! next; and state-only writes are paced ([`STATE_WRITE_GAP`]), so that
//! such a backlog never takes the API server's whole attention.

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter},
};
use tandem_core::failover::{self, Decision, Invalid, State};
use tandem_runtime::queue::Queue;
use tokio::{sync::mpsc, time::Instant};
use tracing::Instrument;

use crate::{
    FIELD_MANAGER,
    call::{CallError, call},
    controller::{Shared, Trigger},
    resource::{self, Entry, Key, Resource},
};

/// The first retry after a failed write; it doubles with each failure.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The first retry after a conflict, which a fresh read usually resolves.
const FIRST_CONFLICT_RETRY: Duration = Duration::from_millis(10);
/// The least time between two state-only writes (at most 200 a second):
/// recording the state of 10,000 splits after a restart takes under a
/// minute, and leaves the API server time for everything else.
pub(crate) const STATE_WRITE_GAP: Duration = Duration::from_millis(5);

pub(crate) struct Writer {
    client: Client,
    shared: Arc<Shared>,
    recorder: Recorder,
    start: Instant,
    /// The splits to decide, and the failures of each in a row.
    pub(crate) queue: Queue<Key>,
    /// No state-only write before this.
    paced_until: Option<Instant>,
    /// The triggers, while [`Writer::run`] runs.
    triggers: Option<mpsc::UnboundedReceiver<Trigger>>,
    /// Triggers taken in while a state-only write was in flight.
    stash: Vec<Trigger>,
    /// When each queued split became urgent, for the reaction metric.
    urgent_at: HashMap<Key, Instant>,
}

/// What one decision pass concluded for a split.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Nothing,
    /// Written, with no new weights: the next state-only write waits.
    WroteState,
    /// A state-only write given up for a flip that came meanwhile.
    Yielded,
    /// The write failed; the split is queued again after this.
    Retry {
        after: Duration,
    },
    Damped {
        after: Duration,
    },
}

impl Writer {
    pub(crate) fn new(client: Client, shared: Arc<Shared>, instance: &str) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(instance.to_string()),
            },
        );
        Self {
            client,
            shared,
            recorder,
            start: Instant::now(),
            queue: Queue::new(),
            paced_until: None,
            triggers: None,
            stash: Vec::new(),
            urgent_at: HashMap::new(),
        }
    }

    /// Decides one split and writes what changed, in a span of its own.
    pub(crate) async fn reconcile(&mut self, key: &Key, at: Instant) -> Outcome {
        let span = tracing::info_span!("reconcile", split = %key);
        self.decide_and_write(key, at).instrument(span).await
    }

    async fn decide_and_write(&mut self, key: &Key, at: Instant) -> Outcome {
        let now = self.start.elapsed();
        let (entry, decisions) = {
            let index = self.shared.index();
            let Some(entry) = index.get(key).cloned() else {
                return Outcome::Nothing;
            };
            let memory = index
                .state(key)
                .map(|s| s.memory.clone())
                .unwrap_or_default();
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

        let decisions = match (&entry.unreadable, decisions) {
            (Some(why), _) => return self.report_invalid(&entry, why.clone()).await,
            (None, Err(invalid)) => return self.report_invalid(&entry, invalid.to_string()).await,
            (None, Ok(d)) if d.is_empty() => return Outcome::Nothing,
            (None, Ok(d)) => d,
        };
        if let Some(s) = self.shared.index().state_mut(key) {
            s.memory = decisions.iter().map(|d| d.memory).collect();
            s.reported_invalid = None;
        }

        let state = combined_state(&decisions);
        let damped = decisions.iter().filter_map(|d| d.requeue_after).min();
        let weights_changed = decisions.iter().any(|d| d.changed);
        let recorded = entry.recorded_state().map(String::from);
        let state_changed = recorded.as_deref() != Some(state.as_str());
        if !weights_changed && !state_changed {
            self.record_state(key, state, false);
            return damped.map_or(Outcome::Nothing, |after| Outcome::Damped { after });
        }

        let Some(res) = self.shared.resource(key.kind) else {
            return Outcome::Nothing;
        };
        let weights: Vec<Vec<u32>> = decisions.iter().map(|d| d.weights.clone()).collect();
        let transition_time = state_changed.then(tandem_util::time::now_rfc3339);
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
        let patch = Patch::Merge(&patch);
        let patching = call("patch", api.patch(&key.name, &params, &patch));
        let written = if weights_changed {
            patching.await
        } else {
            // A flip never waits for a state-only write: this one is given
            // up (if the server applied it, the next try sees a conflict
            // and reads again) and comes back after the flip.
            let urgent = schedule::urgent_arrives(
                &self.shared,
                self.start,
                &mut self.triggers,
                &mut self.stash,
            );
            tokio::select! {
                biased;
                written = patching => written,
                () = urgent => {
                    tracing::debug!("a flip came: the state-only write yields");
                    return Outcome::Yielded;
                }
            }
        };
        match written {
            Ok(obj) => {
                let active: Vec<String> = decisions
                    .iter()
                    .flat_map(|d| d.active.iter().map(|s| s.to_string()))
                    .collect();
                let entry = resource::read(&res, obj);
                let reference = object_ref(&res, &entry);
                {
                    // A split deleted while its write was in flight stays
                    // deleted: the answer does not bring it back.
                    let mut index = self.shared.index();
                    if index.get(key).is_some() {
                        index.apply_split(entry);
                    }
                }
                self.queue.done(key);
                if weights_changed {
                    self.shared
                        .metrics
                        .reaction
                        .observe(at.elapsed().as_secs_f64());
                }
                // Recording the state of a split seen for the first time is no transition.
                self.record_state(key, state, state_changed && recorded.is_some());
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
                {
                    self.publish(&event, &reference).await;
                }
                match damped {
                    Some(after) => Outcome::Damped { after },
                    None if !weights_changed => Outcome::WroteState,
                    None => Outcome::Nothing,
                }
            }
            Err(e) if e.code() == Some(409) => {
                // The object changed since it was read: read it again, decide again.
                let after = self.failed(key, &e, FIRST_CONFLICT_RETRY);
                match call("get", api.get_opt(&key.name)).await {
                    Ok(Some(obj)) => {
                        self.shared.index().apply_split(resource::read(&res, obj));
                    }
                    Ok(None) => self.shared.index().delete_split(key),
                    Err(e) => tracing::warn!(error = %e, "re-reading after a conflict failed"),
                }
                Outcome::Retry { after }
            }
            Err(e) if e.code() == Some(404) => {
                self.shared.index().delete_split(key);
                self.shared.metrics.forget(key);
                self.queue.forget(key);
                Outcome::Nothing
            }
            Err(e) => Outcome::Retry {
                after: self.failed(key, &e, FIRST_RETRY),
            },
        }
    }

    /// Records the split's state (and a transition to it) in the metrics,
    /// only while the split is indexed: one deleted meanwhile, whose series
    /// the watcher forgot, gets none back. The index lock orders this with
    /// the watcher's delete, which forgets the series after it.
    fn record_state(&self, key: &Key, state: State, transition: bool) {
        let index = self.shared.index();
        if index.get(key).is_none() {
            return;
        }
        if transition {
            self.shared.metrics.transition(key, state);
        }
        self.shared.metrics.set_state(key, state);
        drop(index);
    }

    /// Counts a failed write and queues it again after a backoff that
    /// doubles with each failure in a row: it is never dropped.
    fn failed(&mut self, key: &Key, error: &CallError, first: Duration) -> Duration {
        self.shared.metrics.write_error(key, error.reason());
        let after = self.queue.retry_later(key.clone(), Instant::now(), first);
        let attempt = self.queue.failures(key);
        let log = |msg| {
            tracing::warn!(
                %error,
                attempt,
                retry_in_ms = after.as_millis() as u64,
                "{msg}"
            )
        };
        if error.code() == Some(409) {
            // Expected now and then; only repeated conflicts are worth a warning.
            if attempt > 1 {
                log("conflicting writes");
            } else {
                tracing::debug!(attempt, "conflict; re-reading");
            }
        } else {
            log("write failed");
        }
        after
    }

    /// Publishes an Event; a failure is logged, never retried.
    async fn publish(&self, event: &KubeEvent, reference: &ObjectReference) {
        if let Err(e) = call("publish event", self.recorder.publish(event, reference)).await {
            tracing::warn!(error = %e, reason = %event.reason, "publishing the event failed");
        }
    }

    /// One Event and one log line per change of an invalid object; nothing is written.
    async fn report_invalid(&mut self, entry: &Entry, why: String) -> Outcome {
        let rv = entry.resource_version().unwrap_or_default().to_string();
        {
            let index = self.shared.index();
            let reported = index
                .state(&entry.key)
                .and_then(|s| s.reported_invalid.as_ref());
            if reported == Some(&rv) {
                return Outcome::Nothing;
            }
        }
        tracing::warn!(reason = %why, "invalid split; leaving it as it is");
        let Some(res) = self.shared.resource(entry.key.kind) else {
            return Outcome::Nothing;
        };
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "InvalidSplit".into(),
            note: Some(tandem_util::truncate(&why, 1000)),
            action: "Validate".into(),
            secondary: None,
        };
        self.publish(&event, &object_ref(&res, entry)).await;
        if let Some(s) = self.shared.index().state_mut(&entry.key) {
            s.reported_invalid = Some(rv);
        }
        Outcome::Nothing
    }
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
        note: Some(tandem_util::truncate(&note, 1000)),
        action: "UpdateWeights".into(),
        secondary: None,
    })
}

fn object_ref(res: &Resource, entry: &Entry) -> ObjectReference {
    ObjectReference {
        api_version: Some(res.api.api_version.clone()),
        kind: Some(res.api.kind.clone()),
        name: Some(entry.key.name.to_string()),
        namespace: Some(entry.key.namespace.to_string()),
        uid: entry.uid.clone(),
        resource_version: entry.resource_version.clone(),
        field_path: None,
    }
}

mod schedule;
#[cfg(test)]
mod tests;

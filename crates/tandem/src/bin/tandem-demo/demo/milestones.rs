//! Where a move's time goes. Two watches in east note when emoji-svc's
//! EndpointSlices reached the move's end (no ready endpoint after a scale to
//! 0, a ready one after a scale to 1) and when the workshop's TrafficSplit
//! reached the move's weights. Until the first, the time is Kubernetes': the
//! Deployment, the ReplicaSet, the kubelet stopping or starting the pod, its
//! readiness, the EndpointSlice controller. From there to the second it is
//! tandem's failover controller. The traffic's own instant comes from web's
//! proxy (`measure::moved_at`); past the weights, that is the data plane.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client, Resource, runtime::watcher};
use serde::Serialize;
use tandem_api::smi::v1alpha2::TrafficSplit;
use tandem_runtime::{
    Task,
    watch::{Update, folded},
};
use tokio::sync::watch;

use super::measure::Spread;

/// How long the watches may take to list what they watch.
const LISTED: Duration = Duration::from_secs(30);

/// The state a move ends in.
#[derive(Clone, Copy, Debug)]
pub struct Goal {
    /// Whether emoji-svc has a ready endpoint at the end (a failback).
    pub ready: bool,
    /// The split's weights at the end, as `service=weight` pairs.
    pub weights: &'static str,
}

/// When, after the `kubectl scale`, each milestone was seen; `None` when it
/// was not (the state held before the scale, or was never reached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Milestones {
    #[serde(rename = "endpoints_ms", serialize_with = "opt_millis")]
    pub endpoints: Option<Duration>,
    #[serde(rename = "weights_ms", serialize_with = "opt_millis")]
    pub weights: Option<Duration>,
}

fn opt_millis<S: serde::Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_u64(d.as_millis() as u64),
        None => s.serialize_none(),
    }
}

impl Milestones {
    /// "emoji-svc's endpoint ready at 2950 ms, the split's weights at 2990 ms".
    pub fn describe(&self, goal: Goal) -> String {
        let at = |d: Option<Duration>| match d {
            Some(d) => format!(" at {} ms", d.as_millis()),
            None => ": not seen".into(),
        };
        let endpoints = if goal.ready {
            "emoji-svc's endpoint ready"
        } else {
            "emoji-svc's endpoint gone"
        };
        format!(
            "{endpoints}{}, the split's weights{}",
            at(self.endpoints),
            at(self.weights)
        )
    }
}

/// The end of a failover: emoji-svc without a ready endpoint, all weight on west.
pub const FAILOVER: Goal = Goal {
    ready: false,
    weights: "emoji-svc=0 emoji-svc-west=1",
};
/// The end of a failback.
pub const FAILBACK: Goal = Goal {
    ready: true,
    weights: "emoji-svc=1 emoji-svc-west=0",
};

/// The p50 of each milestone and of the traffic's move, over the rounds:
/// "emoji-svc's endpoint ready at 2950 ms, the split's weights at
/// 2990 ms, the traffic at 3100 ms (p50 of 10)". A milestone not seen in
/// some rounds says in how many it was.
pub fn where_it_went(goal: Goal, traffic: &[Duration], steps: &[Milestones]) -> String {
    let p50 = |seen: Vec<Duration>| -> Option<(Duration, usize)> {
        (!seen.is_empty()).then(|| (Spread::of(&seen).p50, seen.len()))
    };
    let endpoints = p50(steps.iter().filter_map(|m| m.endpoints).collect());
    let weights = p50(steps.iter().filter_map(|m| m.weights).collect());
    let p50s = Milestones {
        endpoints: endpoints.map(|(d, _)| d),
        weights: weights.map(|(d, _)| d),
    };
    let mut text = format!(
        "{}, the traffic at {} ms (p50 of {})",
        p50s.describe(goal),
        Spread::of(traffic).p50.as_millis(),
        traffic.len()
    );
    for (what, seen) in [("endpoint", endpoints), ("weights", weights)] {
        let n = seen.map_or(0, |(_, n)| n);
        if n < steps.len() {
            text.push_str(&format!(
                "; the {what} change seen in {n} of {}",
                steps.len()
            ));
        }
    }
    text
}

// === the first instant a condition held ===

/// The first instant a condition held after it had not: a state that held
/// from the start is no milestone of the move.
#[derive(Debug, Default)]
pub struct First {
    seen_false: bool,
    at: Option<Instant>,
}

impl First {
    pub fn observe(&mut self, holds: bool, now: Instant) {
        if !holds {
            self.seen_false = true;
        } else if self.seen_false && self.at.is_none() {
            self.at = Some(now);
        }
    }

    pub fn at(&self) -> Option<Instant> {
        self.at
    }
}

/// A split's weights as the demo compares them: `emoji-svc=1 emoji-svc-west=0`.
pub fn weights(split: &TrafficSplit) -> String {
    split
        .spec
        .backends
        .iter()
        .map(|b| format!("{}={}", b.service, b.weight))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A slice as the endpoints milestone needs it: its name and ready endpoints.
fn slice_ready(slice: EndpointSlice) -> (String, usize) {
    let ready = tandem_api::endpoints::ready_endpoints(&slice);
    (slice.meta().name.clone().unwrap_or_default(), ready)
}

/// Ready endpoints over a service's slices, by slice name.
#[derive(Debug, Default)]
struct Slices(BTreeMap<String, usize>);

impl Slices {
    fn listed(slices: Vec<(String, usize)>) -> Slices {
        Slices(slices.into_iter().collect())
    }

    fn apply(&mut self, (name, ready): (String, usize)) {
        self.0.insert(name, ready);
    }

    fn delete(&mut self, (name, _): (String, usize)) {
        self.0.remove(&name);
    }

    fn ready(&self) -> usize {
        self.0.values().sum()
    }
}

// === the watches ===

/// The two watches of one move, running until [`Recorder::finish`] (or
/// the recorder's drop) stops them.
pub struct Recorder {
    endpoints: Arc<Mutex<First>>,
    weights: Arc<Mutex<First>>,
    _watches: [Task; 2],
}

impl Recorder {
    /// Starts both watches in `namespace` and returns once each has listed
    /// what it watches, so that a change after this is seen as it happens.
    pub async fn start(client: &Client, namespace: &str, goal: Goal) -> Result<Recorder> {
        let endpoints_at = Arc::new(Mutex::new(First::default()));
        let weights_at = Arc::new(Mutex::new(First::default()));
        // Each watch sets its own bit once it has listed: a re-list of one
        // never stands for the other's first list.
        let (listed_tx, mut listed) = watch::channel(0u8);
        let listed_tx = Arc::new(listed_tx);

        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().labels("kubernetes.io/service-name=emoji-svc");
        let (first, done) = (endpoints_at.clone(), listed_tx.clone());
        let slice_watch = Task::spawn(async move {
            let mut state = Slices::default();
            let mut updates = std::pin::pin!(folded(slices, config, slice_ready));
            while let Some(update) = updates.next().await {
                match update {
                    Update::Listed(all) => {
                        state = Slices::listed(all);
                        done.send_modify(|n| *n |= SLICES_LISTED);
                    }
                    Update::Apply(s) => state.apply(s),
                    Update::Delete(s) => state.delete(s),
                    Update::Failed(e) => {
                        tracing::debug!("watching emoji-svc's slices: {e}");
                        continue;
                    }
                }
                let holds = (state.ready() > 0) == goal.ready;
                lock(&first).observe(holds, Instant::now());
            }
        });

        let splits: Api<TrafficSplit> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields("metadata.name=emoji-svc");
        let (first, done) = (weights_at.clone(), listed_tx);
        let split_watch = Task::spawn(async move {
            let mut updates = std::pin::pin!(folded(splits, config, |s| weights(&s)));
            while let Some(update) = updates.next().await {
                let now = match update {
                    Update::Listed(all) => {
                        done.send_modify(|n| *n |= SPLIT_LISTED);
                        all
                    }
                    Update::Apply(w) => vec![w],
                    Update::Delete(_) => continue,
                    Update::Failed(e) => {
                        tracing::debug!("watching the split: {e}");
                        continue;
                    }
                };
                for w in now {
                    lock(&first).observe(w == goal.weights, Instant::now());
                }
            }
        });

        let recorder = Recorder {
            endpoints: endpoints_at,
            weights: weights_at,
            _watches: [slice_watch, split_watch],
        };
        match tokio::time::timeout(
            LISTED,
            listed.wait_for(|n| *n == SLICES_LISTED | SPLIT_LISTED),
        )
        .await
        {
            Ok(Ok(_)) => Ok(recorder),
            Ok(Err(_)) => bail!("the watches of emoji-svc's slices and split ended"),
            Err(_) => bail!(
                "the watches of emoji-svc's slices and split in east did not list them within {}s",
                LISTED.as_secs()
            ),
        }
    }

    /// Stops the watches; each milestone as a time since `scale`.
    pub fn finish(self, scale: Instant) -> Milestones {
        let since = |first: &Mutex<First>| {
            lock(first)
                .at()
                .map(|at| at.saturating_duration_since(scale))
        };
        Milestones {
            endpoints: since(&self.endpoints),
            weights: since(&self.weights),
        }
    }
}

/// The bits of the watches that have listed, in [`Recorder::start`].
const SLICES_LISTED: u8 = 1;
const SPLIT_LISTED: u8 = 2;

fn lock(first: &Mutex<First>) -> std::sync::MutexGuard<'_, First> {
    first.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_milestone_is_the_first_instant_after_the_state_did_not_hold() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut first = First::default();
        first.observe(false, at(0));
        assert_eq!(first.at(), None);
        first.observe(true, at(10));
        first.observe(false, at(20));
        first.observe(true, at(30));
        assert_eq!(first.at(), Some(at(10)), "the first time counts");
    }

    #[test]
    fn a_state_that_held_from_the_start_is_no_milestone() {
        let t0 = Instant::now();
        let mut first = First::default();
        first.observe(true, t0);
        first.observe(true, t0 + Duration::from_millis(5));
        assert_eq!(first.at(), None);
    }

    #[test]
    fn ready_endpoints_add_up_over_slices_and_leave_with_a_deleted_one() {
        let slice = |name: &str, ready: &[Option<bool>]| -> EndpointSlice {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "addressType": "IPv4",
                "endpoints": ready.iter().map(|r| serde_json::json!({
                    "addresses": ["198.18.0.9"],
                    "conditions": {"ready": r},
                })).collect::<Vec<_>>(),
            }))
            .unwrap()
        };
        let mut slices = Slices::listed(vec![slice_ready(slice("a", &[Some(true), Some(false)]))]);
        slices.apply(slice_ready(slice("b", &[None])));
        assert_eq!(slices.ready(), 2, "nil ready counts as ready");
        slices.apply(slice_ready(slice("a", &[Some(false)])));
        assert_eq!(slices.ready(), 1, "a slice's update replaces it");
        slices.delete(slice_ready(slice("b", &[])));
        assert_eq!(slices.ready(), 0);
    }

    #[test]
    fn weights_read_as_the_demo_writes_them() {
        let split: TrafficSplit = serde_json::from_value(serde_json::json!({
            "apiVersion": "split.smi-spec.io/v1alpha2",
            "kind": "TrafficSplit",
            "metadata": {"name": "emoji-svc"},
            "spec": {"service": "emoji-svc", "backends": [
                {"service": "emoji-svc", "weight": 0},
                {"service": "emoji-svc-west", "weight": 1},
            ]},
        }))
        .unwrap();
        assert_eq!(weights(&split), "emoji-svc=0 emoji-svc-west=1");
    }

    #[test]
    fn where_the_time_went_is_the_p50_of_each_and_says_what_was_not_seen() {
        let ms = Duration::from_millis;
        let steps = [
            Milestones {
                endpoints: Some(ms(2900)),
                weights: Some(ms(2950)),
            },
            Milestones {
                endpoints: Some(ms(3100)),
                weights: None,
            },
            Milestones {
                endpoints: Some(ms(3000)),
                weights: Some(ms(3020)),
            },
        ];
        assert_eq!(
            where_it_went(FAILBACK, &[ms(3200), ms(3400), ms(3300)], &steps),
            "emoji-svc's endpoint ready at 3000 ms, the split's weights at 2950 ms, \
             the traffic at 3300 ms (p50 of 3); the weights change seen in 2 of 3"
        );
        assert_eq!(
            where_it_went(FAILOVER, &[], &[]),
            "emoji-svc's endpoint gone: not seen, the split's weights: not seen, the traffic at 0 ms (p50 of 0)"
        );
    }

    #[test]
    fn milestones_are_described_and_serialized_in_ms() {
        let m = Milestones {
            endpoints: Some(Duration::from_millis(2950)),
            weights: None,
        };
        let goal = Goal {
            ready: true,
            weights: "emoji-svc=1 emoji-svc-west=0",
        };
        assert_eq!(
            m.describe(goal),
            "emoji-svc's endpoint ready at 2950 ms, the split's weights: not seen"
        );
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"endpoints_ms":2950,"weights_ms":null}"#
        );
    }
}

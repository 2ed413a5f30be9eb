//! The controller's Prometheus metrics, all under `tandem_failover_`.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tandem_core::failover::State;

use crate::resource::Key;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SplitLabels {
    // Static strings: no allocation per series for what every series repeats.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub reason: String,
}

#[derive(Clone)]
pub struct Metrics {
    /// 1 for the state each split is in (one series per split).
    pub state: Family<SplitLabels, Gauge>,
    pub transitions: Family<TransitionLabels, Counter>,
    /// From the endpoint change observed to the write acknowledged.
    pub reaction: Histogram,
    pub write_errors: Family<ErrorLabels, Counter>,
    pub watched_splits: Gauge,
    pub leader: Gauge,
}

const STATES: [State; 3] = [State::Primary, State::Failover, State::NoReadyBackends];

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            state: Family::default(),
            transitions: Family::default(),
            // 1ms to about 16s.
            reaction: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 15,
            )),
            write_errors: Family::default(),
            watched_splits: Gauge::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "split_state",
            "1 for the failover state each split is in",
            m.state.clone(),
        );
        registry.register(
            "transitions",
            "Failover state transitions written",
            m.transitions.clone(),
        );
        registry.register(
            "reaction_seconds",
            "Time from an endpoint change observed to the weights written",
            m.reaction.clone(),
        );
        registry.register(
            "write_errors",
            "Failed writes of weights or state",
            m.write_errors.clone(),
        );
        registry.register(
            "watched_splits",
            "TrafficSplits and HTTPRoutes under control",
            m.watched_splits.clone(),
        );
        registry.register("leader", "1 while this replica leads", m.leader.clone());
        m
    }

    /// One series per split, for the state it is in: the others are removed,
    /// so that 10,000 splits cost 10,000 series, not 30,000.
    pub fn set_state(&self, key: &Key, state: State) {
        for s in STATES {
            if s != state {
                self.state.remove(&labels(key, s));
            }
        }
        self.state.get_or_create(&labels(key, state)).set(1);
    }

    pub fn forget(&self, key: &Key) {
        for s in STATES {
            self.state.remove(&labels(key, s));
        }
    }

    pub fn transition(&self, key: &Key, to: State) {
        self.transitions
            .get_or_create(&TransitionLabels {
                kind: key.kind.as_str(),
                namespace: key.namespace.to_string(),
                name: key.name.to_string(),
                to: to.as_str(),
            })
            .inc();
    }

    pub fn write_error(&self, key: &Key, reason: &str) {
        self.write_errors
            .get_or_create(&ErrorLabels {
                kind: key.kind.as_str(),
                reason: reason.into(),
            })
            .inc();
    }
}

fn labels(key: &Key, state: State) -> SplitLabels {
    SplitLabels {
        kind: key.kind.as_str(),
        namespace: key.namespace.to_string(),
        name: key.name.to_string(),
        state: state.as_str(),
    }
}

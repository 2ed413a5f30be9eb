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

    /// Removes every series of a deleted split (its state and its
    /// transitions), so that deleted splits cost no memory or scrape.
    pub fn forget(&self, key: &Key) {
        for s in STATES {
            self.state.remove(&labels(key, s));
            self.transitions.remove(&transition_labels(key, s));
        }
    }

    pub fn transition(&self, key: &Key, to: State) {
        self.transitions
            .get_or_create(&transition_labels(key, to))
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

fn transition_labels(key: &Key, to: State) -> TransitionLabels {
    TransitionLabels {
        kind: key.kind.as_str(),
        namespace: key.namespace.to_string(),
        name: key.name.to_string(),
        to: to.as_str(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Kind;

    fn key(name: &str) -> Key {
        Key {
            kind: Kind::TrafficSplit,
            namespace: "emojivoto".into(),
            name: name.into(),
        }
    }

    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn a_forgotten_split_leaves_no_series() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let (gone, kept) = (key("web-gone"), key("web-kept"));
        for k in [&gone, &kept] {
            m.set_state(k, State::Primary);
            m.transition(k, State::Failover);
            m.set_state(k, State::Failover);
            m.transition(k, State::Primary);
            m.set_state(k, State::Primary);
            m.write_error(k, "Timeout");
        }
        let before = encode(&registry);
        assert!(before.contains("name=\"web-gone\""), "{before}");

        m.forget(&gone);

        let after = encode(&registry);
        let leaked: Vec<&str> = after.lines().filter(|l| l.contains("web-gone")).collect();
        assert!(leaked.is_empty(), "series of the deleted split: {leaked:?}");
        // The other split keeps its series.
        for series in ["split_state{", "transitions_total{"] {
            assert!(
                after
                    .lines()
                    .any(|l| l.contains(series) && l.contains("name=\"web-kept\"")),
                "{series} of the kept split:\n{after}"
            );
        }
    }
}

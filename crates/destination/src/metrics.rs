//! The destination service's metrics: subscribers and updates sent, per kind
//! of request.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Kind {
    Get,
    GetProfile,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    kind: Kind,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    subscribers: Family<Labels, Gauge>,
    updates: Family<Labels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "subscribers",
            "Open Get and GetProfile streams",
            m.subscribers.clone(),
        );
        registry.register(
            "updates",
            "Messages sent on Get and GetProfile streams",
            m.updates.clone(),
        );
        m
    }

    /// Counts a stream as open until the guard drops.
    pub fn subscribe(&self, kind: Kind) -> Guard {
        self.subscribers.get_or_create(&Labels { kind }).inc();
        Guard {
            metrics: self.clone(),
            kind,
        }
    }
}

/// An open stream.
pub struct Guard {
    metrics: Metrics,
    kind: Kind,
}

impl Guard {
    pub fn sent(&self) {
        self.metrics
            .updates
            .get_or_create(&Labels { kind: self.kind })
            .inc();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.metrics
            .subscribers
            .get_or_create(&Labels { kind: self.kind })
            .dec();
    }
}

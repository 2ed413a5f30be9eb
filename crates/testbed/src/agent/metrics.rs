//! The agent's Prometheus metrics, all under `tandem_testbed_agent_`.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::allocate::Pool;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    /// `status` or `event`.
    pub op: String,
    pub reason: String,
}

#[derive(Clone, Default)]
pub(crate) struct Metrics {
    pub pool_addresses: Gauge,
    pub assigned: Gauge,
    pub refused: Gauge,
    pub conflicts: Counter,
    pub write_errors: Family<ErrorLabels, Counter>,
    pub image_hints: Counter,
}

impl Metrics {
    pub(crate) fn register(registry: &mut Registry, pool: &Pool) -> Self {
        let m = Self::default();
        m.pool_addresses
            .set(i64::try_from(pool.size()).unwrap_or(i64::MAX));
        registry.register(
            "lb_pool_addresses",
            "Addresses of the LoadBalancer pool that can be handed out",
            m.pool_addresses.clone(),
        );
        registry.register(
            "lb_assigned_addresses",
            "LoadBalancer addresses held by Services",
            m.assigned.clone(),
        );
        registry.register(
            "lb_refused_services",
            "LoadBalancer Services refused an address",
            m.refused.clone(),
        );
        registry.register(
            "lb_restart_conflicts",
            "Addresses two Services showed after a restart (the older kept each)",
            m.conflicts.clone(),
        );
        registry.register(
            "write_errors",
            "Failed writes of Service statuses and Events",
            m.write_errors.clone(),
        );
        registry.register(
            "image_hints",
            "ImageNotLoaded Events emitted",
            m.image_hints.clone(),
        );
        m
    }

    pub(crate) fn write_error(&self, op: &str, reason: &str) {
        self.write_errors
            .get_or_create(&ErrorLabels {
                op: op.into(),
                reason: reason.into(),
            })
            .inc();
    }
}

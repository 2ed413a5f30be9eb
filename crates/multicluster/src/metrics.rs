//! The service mirror's Prometheus metrics, all under `tandem_mirror_`.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

pub const PREFIX: &str = "tandem_mirror";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddressLabels {
    pub cluster: String,
    pub address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub cluster: String,
    pub successful: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub gateway_alive: Family<ClusterLabels, Gauge>,
    pub gateway_address_alive: Family<AddressLabels, Gauge>,
    pub probe_latency: Family<ClusterLabels, Histogram, fn() -> Histogram>,
    pub probes: Family<ProbeLabels, Counter>,
    pub mirrored_services: Family<ClusterLabels, Gauge>,
    pub remote_reachable: Family<ClusterLabels, Gauge>,
    pub writes: Counter,
    pub write_errors: Counter,
    pub leader: Gauge,
}

fn latency_histogram() -> Histogram {
    // 1ms to about 16s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            gateway_alive: Family::default(),
            gateway_address_alive: Family::default(),
            probe_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            probes: Family::default(),
            mirrored_services: Family::default(),
            remote_reachable: Family::default(),
            writes: Counter::default(),
            write_errors: Counter::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "gateway_alive",
            "1 while the linked cluster's gateway passes its probe",
            m.gateway_alive.clone(),
        );
        registry.register(
            "gateway_address_alive",
            "1 while this address of the linked cluster's gateway passes its probe, 0 once it is dead",
            m.gateway_address_alive.clone(),
        );
        registry.register(
            "gateway_probe_latency_seconds",
            "Latency of successful gateway probes",
            m.probe_latency.clone(),
        );
        registry.register(
            "gateway_probes",
            "Gateway probes, by outcome",
            m.probes.clone(),
        );
        registry.register(
            "mirrored_services",
            "Remote services mirrored in this cluster",
            m.mirrored_services.clone(),
        );
        registry.register(
            "remote_reachable",
            "1 while the linked cluster's API server answers",
            m.remote_reachable.clone(),
        );
        registry.register(
            "mirror_writes",
            "Writes of mirror Services and EndpointSlices (applies and deletes)",
            m.writes.clone(),
        );
        registry.register(
            "mirror_write_errors",
            "Failed writes of mirror Services and EndpointSlices",
            m.write_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads (or runs without leader election) and writes, 0 while it stands by",
            m.leader.clone(),
        );
        m
    }

    /// A replica that stops leading: the figures of the linked cluster
    /// belong to the leader, so a standby reports none.
    pub fn stand_by(&self) {
        self.leader.set(0);
        self.gateway_alive.clear();
        self.gateway_address_alive.clear();
        self.mirrored_services.clear();
        self.remote_reachable.clear();
    }

    pub fn cluster(cluster: &str) -> ClusterLabels {
        ClusterLabels {
            cluster: cluster.to_string(),
        }
    }

    /// One gateway address's verdict.
    pub fn address_alive(&self, cluster: &str, address: std::net::IpAddr, alive: bool) {
        self.gateway_address_alive
            .get_or_create(&Self::address(cluster, address))
            .set(i64::from(alive));
    }

    /// A gateway address that is no longer resolved.
    pub fn forget_address(&self, cluster: &str, address: std::net::IpAddr) {
        self.gateway_address_alive
            .remove(&Self::address(cluster, address));
    }

    fn address(cluster: &str, address: std::net::IpAddr) -> AddressLabels {
        AddressLabels {
            cluster: cluster.to_string(),
            address: address.to_string(),
        }
    }

    pub fn probe(&self, cluster: &str, latency: Option<std::time::Duration>) {
        self.probes
            .get_or_create(&ProbeLabels {
                cluster: cluster.to_string(),
                successful: latency.is_some().to_string(),
            })
            .inc();
        if let Some(d) = latency {
            self.probe_latency
                .get_or_create(&Self::cluster(cluster))
                .observe(d.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_carry_the_prefix() {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = Metrics::register(&mut registry);
        m.probe("west", Some(std::time::Duration::from_millis(3)));
        m.probe("west", None);
        m.gateway_alive
            .get_or_create(&Metrics::cluster("west"))
            .set(1);
        m.address_alive("west", "127.20.0.1".parse().unwrap(), true);
        m.address_alive("west", "127.20.0.2".parse().unwrap(), false);
        m.forget_address("west", "127.20.0.2".parse().unwrap());
        m.mirrored_services
            .get_or_create(&Metrics::cluster("west"))
            .set(2);
        m.remote_reachable
            .get_or_create(&Metrics::cluster("west"))
            .set(1);
        m.writes.inc();
        m.write_errors.inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for want in [
            r#"tandem_mirror_gateway_alive{cluster="west"} 1"#,
            r#"tandem_mirror_gateway_address_alive{cluster="west",address="127.20.0.1"} 1"#,
            r#"tandem_mirror_gateway_probe_latency_seconds_count{cluster="west"} 1"#,
            r#"tandem_mirror_gateway_probes_total{cluster="west",successful="true"} 1"#,
            r#"tandem_mirror_gateway_probes_total{cluster="west",successful="false"} 1"#,
            r#"tandem_mirror_mirrored_services{cluster="west"} 2"#,
            r#"tandem_mirror_remote_reachable{cluster="west"} 1"#,
            "tandem_mirror_mirror_writes_total 1",
            "tandem_mirror_mirror_write_errors_total 1",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
        assert!(!text.contains("127.20.0.2"), "a forgotten address goes");
    }
}

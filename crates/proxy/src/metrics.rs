//! The proxy's metrics, with Linkerd's names, labels and buckets, so that
//! `linkerd viz stat`'s PromQL works unchanged.

use std::{collections::BTreeMap, net::SocketAddr};

use http::StatusCode;
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::endpoint::Tls;

/// A label set in the order Linkerd writes it.
pub type Labels = Vec<(String, String)>;

/// `response_latency_ms` bounds (Linkerd's `latency::BOUNDS`).
pub const LATENCY_MS_BUCKETS: [f64; 25] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_MS_BUCKETS)
}

#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<Labels, Counter>,
    pub responses: Family<Labels, Counter>,
    pub latency: Family<Labels, Histogram, fn() -> Histogram>,
    pub tcp_open: Family<Labels, Counter>,
    pub tcp_close: Family<Labels, Counter>,
    pub tcp_open_connections: Family<Labels, Gauge>,
    pub tcp_read_bytes: Family<Labels, Counter>,
    pub tcp_write_bytes: Family<Labels, Counter>,
}

impl Metrics {
    /// Registers every family; prometheus-client appends `_total` to counters.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            tcp_open: Family::default(),
            tcp_close: Family::default(),
            tcp_open_connections: Family::default(),
            tcp_read_bytes: Family::default(),
            tcp_write_bytes: Family::default(),
        };
        registry.register(
            "request",
            "Total count of HTTP requests",
            m.requests.clone(),
        );
        registry.register(
            "response",
            "Total count of HTTP responses",
            m.responses.clone(),
        );
        registry.register(
            "response_latency_ms",
            "Elapsed times between a request's headers being received and its response's headers",
            m.latency.clone(),
        );
        registry.register(
            "tcp_open",
            "Total count of opened connections",
            m.tcp_open.clone(),
        );
        registry.register(
            "tcp_close",
            "Total count of closed connections",
            m.tcp_close.clone(),
        );
        registry.register(
            "tcp_open_connections",
            "Number of currently-open connections",
            m.tcp_open_connections.clone(),
        );
        registry.register(
            "tcp_read_bytes",
            "Total count of bytes read from peers",
            m.tcp_read_bytes.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Total count of bytes written to peers",
            m.tcp_write_bytes.clone(),
        );
        m
    }

    /// Counts an open connection until the guard drops; the counters give
    /// the bytes read and written.
    pub fn tcp(&self, labels: Labels) -> (TcpGuard, Counter, Counter) {
        self.tcp_open.get_or_create(&labels).inc();
        self.tcp_open_connections.get_or_create(&labels).inc();
        let read = self.tcp_read_bytes.get_or_create(&labels).clone();
        let write = self.tcp_write_bytes.get_or_create(&labels).clone();
        (
            TcpGuard {
                metrics: self.clone(),
                labels,
            },
            read,
            write,
        )
    }
}

/// Closes a connection's count on drop.
pub struct TcpGuard {
    metrics: Metrics,
    labels: Labels,
}

impl Drop for TcpGuard {
    fn drop(&mut self) {
        self.metrics.tcp_close.get_or_create(&self.labels).inc();
        self.metrics
            .tcp_open_connections
            .get_or_create(&self.labels)
            .dec();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// The labels of a connection or request: where it goes and how it is secured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub direction: Direction,
    pub authority: Option<String>,
    pub target_addr: SocketAddr,
    pub tls: Tls,
    /// The endpoint's metric labels (outbound), exported with a `dst_` prefix.
    pub dst: BTreeMap<String, String>,
}

impl Target {
    pub fn labels(&self) -> Labels {
        let mut l: Labels = vec![(
            "direction".into(),
            match self.direction {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
            }
            .into(),
        )];
        if let Some(a) = &self.authority {
            l.push(("authority".into(), a.clone()));
        }
        l.push(("target_addr".into(), self.target_addr.to_string()));
        l.push(("target_ip".into(), self.target_addr.ip().to_string()));
        l.push(("target_port".into(), self.target_addr.port().to_string()));
        match &self.tls {
            Tls::Mesh { client_id } => {
                l.push(("tls".into(), "true".into()));
                let key = match self.direction {
                    Direction::Inbound => "client_id",
                    Direction::Outbound => "server_id",
                };
                l.push((key.into(), client_id.to_string()));
            }
            Tls::Plain { reason } => {
                l.push(("tls".into(), "no_identity".into()));
                l.push(("no_tls_reason".into(), reason.as_str().into()));
            }
        }
        for (k, v) in &self.dst {
            l.push((format!("dst_{k}"), v.clone()));
        }
        l
    }

    /// TCP labels add `peer="src"` (the accepted side) or `"dst"`.
    pub fn tcp_labels(&self, peer: Peer) -> Labels {
        let mut l = self.labels();
        l.insert(
            1,
            (
                "peer".into(),
                match peer {
                    Peer::Src => "src",
                    Peer::Dst => "dst",
                }
                .into(),
            ),
        );
        l
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Src,
    Dst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classification {
    Success,
    Failure,
}

/// The gRPC status decides when there is one; otherwise a 5xx is a failure.
pub fn classify(status: StatusCode, grpc_status: Option<i32>) -> Classification {
    match grpc_status {
        Some(0) => Classification::Success,
        Some(_) => Classification::Failure,
        None if status.is_server_error() => Classification::Failure,
        None => Classification::Success,
    }
}

/// A request's labels plus `classification`, `status_code`, `grpc_status`.
pub fn response_labels(request: &Labels, status: StatusCode, grpc_status: Option<i32>) -> Labels {
    let mut l = request.clone();
    let class = match classify(status, grpc_status) {
        Classification::Success => "success",
        Classification::Failure => "failure",
    };
    l.push(("classification".into(), class.into()));
    l.push(("status_code".into(), status.as_u16().to_string()));
    if let Some(g) = grpc_status {
        l.push(("grpc_status".into(), g.to_string()));
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::NoTlsReason;

    fn target() -> Target {
        Target {
            direction: Direction::Outbound,
            authority: Some("web-svc.emojivoto.svc.cluster.local:80".into()),
            target_addr: "10.0.0.7:8080".parse().unwrap(),
            tls: Tls::Plain {
                reason: NoTlsReason::NotProvidedByServiceDiscovery,
            },
            dst: [("service".to_string(), "web-svc".to_string())].into(),
        }
    }

    #[test]
    fn classification_table() {
        let cases = [
            (200, None, Classification::Success),
            (404, None, Classification::Success),
            (503, None, Classification::Failure),
            (200, Some(0), Classification::Success),
            (200, Some(2), Classification::Failure),
            (503, Some(0), Classification::Success),
        ];
        for (status, grpc, want) in cases {
            let got = classify(StatusCode::from_u16(status).unwrap(), grpc);
            assert_eq!(got, want, "{status} {grpc:?}");
        }
    }

    #[test]
    fn exposition_has_linkerds_names_labels_and_buckets() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let req = target().labels();
        m.requests.get_or_create(&req).inc();
        let rsp = response_labels(&req, StatusCode::OK, Some(0));
        m.responses.get_or_create(&rsp).inc();
        m.latency.get_or_create(&req).observe(3.0);
        let (guard, read, _write) = m.tcp(target().tcp_labels(Peer::Dst));
        read.inc_by(5);
        drop(guard);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();

        let labels = "direction=\"outbound\",authority=\"web-svc.emojivoto.svc.cluster.local:80\",\
target_addr=\"10.0.0.7:8080\",target_ip=\"10.0.0.7\",target_port=\"8080\",tls=\"no_identity\",\
no_tls_reason=\"not_provided_by_service_discovery\",dst_service=\"web-svc\"";
        let want = [
            format!("request_total{{{labels}}} 1"),
            format!(
                "response_total{{{labels},classification=\"success\",status_code=\"200\",grpc_status=\"0\"}} 1"
            ),
            format!("response_latency_ms_bucket{{le=\"1.0\",{labels}}} 0"),
            format!("response_latency_ms_bucket{{le=\"3.0\",{labels}}} 1"),
            format!("response_latency_ms_bucket{{le=\"50000.0\",{labels}}} 1"),
            format!("response_latency_ms_bucket{{le=\"+Inf\",{labels}}} 1"),
            "tcp_open_total{direction=\"outbound\",peer=\"dst\",".to_string(),
            "tcp_close_total{direction=\"outbound\",peer=\"dst\",".to_string(),
            "tcp_open_connections{direction=\"outbound\",peer=\"dst\",".to_string(),
            "tcp_read_bytes_total{direction=\"outbound\",peer=\"dst\",".to_string(),
        ];
        for w in &want {
            assert!(text.contains(w.as_str()), "missing {w}\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
        let buckets = text
            .lines()
            .filter(|l| l.starts_with("response_latency_ms_bucket"))
            .count();
        assert_eq!(buckets, 26, "{text}");
    }
}

//! The Prometheus counters of emoji-svc and voting-svc (named as
//! go-grpc-prometheus names emojivoto's), and the `/metrics` server on
//! `PROM_PORT` that every part of the app runs.

use std::net::SocketAddr;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// The labels of one handled call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub grpc_service: String,
    pub grpc_method: String,
    /// `OK`, `Unknown`, ... as go-grpc-prometheus writes the codes.
    pub grpc_code: String,
}

/// `grpc_server_handled_total`: calls answered, by method and code.
#[derive(Clone, Debug, Default)]
pub struct GrpcMetrics {
    handled: Family<GrpcLabels, Counter>,
}

impl GrpcMetrics {
    /// The counters, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "grpc_server_handled",
            "gRPC calls answered, by method and status code",
            m.handled.clone(),
        );
        m
    }

    /// Counts one answered call.
    pub fn handled(&self, service: &str, method: &str, result: &Result<(), tonic::Status>) {
        self.handled
            .get_or_create(&GrpcLabels {
                grpc_service: service.into(),
                grpc_method: method.into(),
                grpc_code: code_name(result),
            })
            .inc();
    }
}

/// go-grpc-prometheus's name of a call's code: `OK`, `Unknown`, `NotFound`.
pub fn code_name(result: &Result<(), tonic::Status>) -> String {
    match result {
        Ok(()) => "OK".into(),
        Err(s) => format!("{:?}", s.code()),
    }
}

/// Serves `/metrics` (and `/live`, `/ready`) of `registry` on `addr` until
/// the task is dropped.
pub async fn serve(registry: Registry, addr: SocketAddr) -> std::io::Result<()> {
    let (admin, ready) = tandem_admin::Admin::new(registry);
    ready.set(true);
    admin.serve(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_as_go_grpc_prometheus() {
        assert_eq!(code_name(&Ok(())), "OK");
        assert_eq!(code_name(&Err(tonic::Status::unknown("ERROR"))), "Unknown");
        assert_eq!(code_name(&Err(tonic::Status::not_found("x"))), "NotFound");
    }
}

//! The crate's one error type.

/// Why `viz` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadArgument(String),
    #[error(
        "viz is not installed in this cluster, or Prometheus is not ready: the API server found no service {ns}/{svc}:{port} to proxy to: {detail}\n  install it with `tandem viz install | kubectl apply -f -`, then wait for `kubectl -n {ns} rollout status deploy/prometheus`",
        ns = crate::prom::NAMESPACE,
        svc = crate::prom::SERVICE,
        port = crate::prom::PORT
    )]
    NotInstalled { detail: String },
    #[error("Prometheus refused the query {query}: {error_type}: {error}")]
    Query {
        query: String,
        error_type: String,
        error: String,
    },
    #[error("Prometheus answered the query {query} with something unexpected: {detail}")]
    BadResponse { query: String, detail: String },
    #[error("{what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
}

//! The seam to the traffic figures: services with RPS and success rate,
//! from Prometheus when viz is installed. The dashboard asks a
//! [`StatsSource`] once per gather; [`NotInstalled`] is the one to use
//! until a PromQL source is wired in.

use futures::future::BoxFuture;
use kube::Client;

use crate::model::ServiceStat;

/// Why there are no figures.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// No Prometheus to ask: the message says what to install.
    #[error("{0}")]
    NotInstalled(String),
    /// Prometheus is there but did not answer the query.
    #[error("{0}")]
    Query(String),
}

/// Where the services' traffic figures come from.
pub trait StatsSource: Send + Sync {
    fn services<'a>(
        &'a self,
        client: &'a Client,
    ) -> BoxFuture<'a, Result<Vec<ServiceStat>, StatsError>>;
}

/// No figures: viz is not installed (or not wired in yet).
pub struct NotInstalled;

impl StatsSource for NotInstalled {
    fn services<'a>(
        &'a self,
        _client: &'a Client,
    ) -> BoxFuture<'a, Result<Vec<ServiceStat>, StatsError>> {
        Box::pin(async {
            Err(StatsError::NotInstalled(
                "viz not installed: run `tandem viz install | kubectl apply -f -` for services' RPS and success rate".into(),
            ))
        })
    }
}

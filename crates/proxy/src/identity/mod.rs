//! The proxy's identity: certify with the control plane's identity service
//! and keep the certificate fresh, as Linkerd's proxy does
//! (`linkerd/proxy/identity-client`).
//!
//! - [`Certifier`] makes one `Identity/Certify` call: a P-256 key and a CSR
//!   made once (CN and the one DNS SAN = the local name), the token read
//!   again from its file, TLS to the service verified as its name.
//! - [`run`] calls it forever: each success is published on the meshtls
//!   [`CredentialsTx`] and renewed at 70% of its remaining life (clamped to
//!   [10 s, 24 h], see [`Schedule`]); each failure is retried after 10 s.
//! - [`Metrics`]: `identity_cert_expiration_timestamp_seconds` and
//!   `identity_cert_refresh_count`, Linkerd's names.

mod client;
mod schedule;
#[cfg(test)]
mod tests;

use std::{future::Future, sync::Arc, time::SystemTime};

use prometheus_client::{metrics::gauge::Gauge, registry::Registry};
use tandem_meshtls::{Credentials, CredentialsTx};

pub use client::{Certifier, Config, Error};
pub use schedule::{MAX_REFRESH, MIN_REFRESH, Schedule};

/// Linkerd's two identity metrics.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    expiration: Gauge,
    refreshes: Gauge,
}

impl Metrics {
    /// Registers the metrics on `registry` (unprefixed, as Linkerd names them).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "identity_cert_expiration_timestamp_seconds",
            "When the proxy's current certificate expires (Unix time)",
            m.expiration.clone(),
        );
        // A gauge that only grows: a prometheus-client Counter would be
        // exported as `..._total`, and Linkerd's series has no suffix.
        registry.register(
            "identity_cert_refresh_count",
            "How many certificates the proxy has obtained",
            m.refreshes.clone(),
        );
        m
    }

    pub fn refreshes(&self) -> i64 {
        self.refreshes.get()
    }

    pub fn expiration(&self) -> i64 {
        self.expiration.get()
    }

    fn certified(&self, not_after: SystemTime) {
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        self.expiration.set(secs);
        self.refreshes.inc();
    }
}

/// Certifies with `certifier` for as long as anyone holds the credentials'
/// receiver.
pub async fn run(certifier: Certifier, tx: CredentialsTx, metrics: Metrics, schedule: Schedule) {
    let certifier = Arc::new(certifier);
    let name = certifier.local_name().clone();
    let attempt = move || {
        let certifier = certifier.clone();
        async move { certifier.certify().await }
    };
    refresh_loop(attempt, tx, metrics, schedule).await;
    tracing::debug!(%name, "no one holds the credentials any more; identity stops");
}

/// The loop of [`run`], with the attempt as a parameter (tests give their own).
pub(crate) async fn refresh_loop<F, Fut>(
    mut attempt: F,
    tx: CredentialsTx,
    metrics: Metrics,
    schedule: Schedule,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Credentials, Error>>,
{
    loop {
        let wait = match attempt().await {
            Ok(creds) => {
                let wait = schedule.refresh_in(SystemTime::now(), creds.not_after);
                metrics.certified(creds.not_after);
                tracing::info!(name = %creds.name, refresh_in = ?wait, "certified");
                tx.send_replace(Some(Arc::new(creds)));
                wait
            }
            Err(e) => {
                let wait = schedule.retry_in();
                tracing::warn!(error = %e, retry_in = ?wait, "certify failed");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tx.closed() => return,
        }
    }
}

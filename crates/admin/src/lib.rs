//! The admin server every tandem process runs: `/live` (the process serves,
//! and passes its liveness check if it has one), `/ready` (it can do its
//! job), `/metrics` (Prometheus text format).

#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio::sync::watch;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    registry: Arc<Mutex<Registry>>,
    ready: watch::Receiver<bool>,
    live: Option<Arc<LivenessCheck>>,
}

/// Asked on every `/live`: `Err(why)` fails the probe, so that the kubelet
/// restarts a process that serves but is stuck.
pub type LivenessCheck = dyn Fn() -> Result<(), String> + Send + Sync;

/// The handle that flips `/ready`.
#[derive(Clone)]
pub struct Readiness(Arc<watch::Sender<bool>>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.send_replace(ready);
    }
}

impl Admin {
    /// A server over `registry`, not ready until told.
    pub fn new(registry: Registry) -> (Self, Readiness) {
        let (tx, rx) = watch::channel(false);
        (
            Self {
                registry: Arc::new(Mutex::new(registry)),
                ready: rx,
                live: None,
            },
            Readiness(Arc::new(tx)),
        )
    }

    /// Makes `/live` fail while `check` does.
    pub fn with_liveness(
        mut self,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.live = Some(Arc::new(check));
        self
    }

    /// The routes, without a socket, so that tests can drive them.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/live", get(live))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
    }

    /// Serves until the task is dropped.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "admin server listening");
        axum::serve(listener, self.router()).await
    }
}

async fn live(State(admin): State<Admin>) -> impl IntoResponse {
    match admin.live.as_deref().map_or(Ok(()), |check| check()) {
        Ok(()) => (StatusCode::OK, "live\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not live: {why}\n"),
        ),
    }
}

async fn ready(State(admin): State<Admin>) -> impl IntoResponse {
    if *admin.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    let mut body = String::new();
    let encoded = match admin.registry.lock() {
        Ok(registry) => encode(&mut body, &registry),
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics registry poisoned\n".to_string(),
            )
                .into_response();
        }
    };
    match encoded {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::gauge::Gauge;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(axum::http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_follows_the_handle_and_metrics_encode() {
        let mut registry = Registry::default();
        let g = Gauge::<i64>::default();
        g.set(7);
        registry.register("answer", "a gauge", g);
        let (admin, readiness) = Admin::new(registry);
        assert_eq!(get(admin.router(), "/live").await.0, StatusCode::OK);
        assert_eq!(
            get(admin.router(), "/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        readiness.set(true);
        assert_eq!(get(admin.router(), "/ready").await.0, StatusCode::OK);
        let (status, body) = get(admin.router(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("answer 7"), "{body}");
        assert_eq!(get(admin.router(), "/nope").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn live_follows_the_liveness_check() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stuck = Arc::new(AtomicBool::new(false));
        let check = stuck.clone();
        let (admin, _) = Admin::new(Registry::default());
        let admin = admin.with_liveness(move || {
            if check.load(Ordering::SeqCst) {
                Err("stuck for 61s".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(get(admin.router(), "/live").await.0, StatusCode::OK);
        stuck.store(true, Ordering::SeqCst);
        let (status, body) = get(admin.router(), "/live").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("stuck for 61s"), "{body}");
    }
}

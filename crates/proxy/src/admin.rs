//! The admin server (4191): `/live`, `/ready` (503 until the proxy holds a
//! certificate, or at once without identity), `/metrics`, and `/shutdown`
//! (POST, from localhost only).

use std::net::SocketAddr;

use axum::{
    Router,
    extract::{ConnectInfo, State},
    http::StatusCode,
    routing::post,
};
use prometheus_client::registry::Registry;
use tandem_admin::{Admin, Readiness};
use tandem_meshtls::CredentialsRx;
use tokio::sync::watch;

/// Ready when identity is disabled, or once credentials are held.
pub fn is_ready(identity_disabled: bool, has_credentials: bool) -> bool {
    identity_disabled || has_credentials
}

/// The admin routes; `shutdown` is flipped by `POST /shutdown`.
pub fn router(admin: &Admin, shutdown: watch::Sender<bool>) -> Router {
    admin.router().merge(
        Router::new()
            .route("/shutdown", post(shutdown_handler))
            .with_state(shutdown),
    )
}

async fn shutdown_handler(
    State(shutdown): State<watch::Sender<bool>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> (StatusCode, &'static str) {
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "shutdown is only allowed from localhost\n",
        );
    }
    tracing::info!("shutdown requested on the admin server");
    shutdown.send_replace(true);
    (StatusCode::OK, "shutdown\n")
}

/// The admin server over `registry`, with `/ready` following `creds`.
pub fn admin(registry: Registry, identity_disabled: bool, mut creds: CredentialsRx) -> Admin {
    let (admin, readiness) = Admin::new(registry);
    let set = move |r: &Readiness, has: bool| r.set(is_ready(identity_disabled, has));
    set(&readiness, creds.borrow_and_update().is_some());
    tokio::spawn(async move {
        while creds.changed().await.is_ok() {
            set(&readiness, creds.borrow_and_update().is_some());
        }
    });
    admin
}

pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(router: Router, method: &str, path: &str, peer: &str) -> (StatusCode, String) {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let rsp = router.oneshot(req).await.unwrap();
        let status = rsp.status();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn readiness_table() {
        assert!(!is_ready(false, false));
        assert!(is_ready(false, true));
        assert!(is_ready(true, false));
    }

    #[tokio::test]
    async fn ready_waits_for_credentials_and_shutdown_is_local_only() {
        let (creds_tx, creds_rx) = tandem_meshtls::credentials_channel();
        let admin = admin(Registry::default(), false, creds_rx);
        let (tx, mut rx) = watch::channel(false);
        let r = router(&admin, tx);
        let local = "127.0.0.1:5000";
        assert_eq!(
            call(r.clone(), "GET", "/live", local).await,
            (StatusCode::OK, "live\n".into())
        );
        assert_eq!(
            call(r.clone(), "GET", "/ready", local).await,
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
        );
        drop(creds_tx); // no credentials ever: stays not ready
        assert_eq!(
            call(r.clone(), "GET", "/ready", local).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            call(r.clone(), "GET", "/metrics", local).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(r.clone(), "GET", "/shutdown", local).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            call(r.clone(), "POST", "/shutdown", "10.0.0.9:5000")
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        assert!(!*rx.borrow());
        assert_eq!(
            call(r.clone(), "POST", "/shutdown", local).await.0,
            StatusCode::OK
        );
        assert!(*rx.borrow_and_update());
    }

    #[tokio::test]
    async fn ready_once_a_certificate_is_held() {
        use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let (creds_tx, creds_rx) = tandem_meshtls::credentials_channel();
        let admin = admin(Registry::default(), false, creds_rx);
        let (tx, _rx) = watch::channel(false);
        let r = router(&admin, tx);
        assert_eq!(
            call(r.clone(), "GET", "/ready", "127.0.0.1:1").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        creds_tx.send_replace(Some(std::sync::Arc::new(tandem_meshtls::Credentials {
            name: "web.emojivoto.serviceaccount.identity.tandem.cluster.local"
                .parse()
                .unwrap(),
            chain: vec![],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![0u8])),
            not_after: std::time::SystemTime::now(),
        })));
        let became_ready = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while call(r.clone(), "GET", "/ready", "127.0.0.1:1").await.0 != StatusCode::OK {
                tokio::task::yield_now().await;
            }
        });
        assert!(became_ready.await.is_ok(), "/ready never turned 200");
    }

    #[tokio::test]
    async fn ready_without_identity() {
        let (_tx, rx) = tandem_meshtls::credentials_channel();
        let admin = admin(Registry::default(), true, rx);
        let (tx, _rx) = watch::channel(false);
        let r = router(&admin, tx);
        assert_eq!(
            call(r, "GET", "/ready", "127.0.0.1:1").await,
            (StatusCode::OK, "ready\n".into())
        );
    }
}

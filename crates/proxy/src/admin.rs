//! The admin server (4191): `/live`, `/ready` (503 until the proxy holds a
//! certificate, and again once that certificate expired without renewal; 200
//! at once without identity), `/metrics`, and `/shutdown` (POST, from
//! localhost only).

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    extract::{ConnectInfo, State},
    http::StatusCode,
    routing::post,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use prometheus_client::registry::Registry;
use tandem_admin::{Admin, Readiness};
use tandem_meshtls::{self as meshtls, ClientAuth, CredentialsRx, Tls};
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::direct::BoxIo;

/// Ready when identity is disabled, or while the certificate held (its
/// notAfter) is still valid at `now`.
pub fn is_ready(identity_disabled: bool, not_after: Option<SystemTime>, now: SystemTime) -> bool {
    identity_disabled || not_after.is_some_and(|t| now < t)
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
pub fn admin(registry: Registry, identity_disabled: bool, creds: CredentialsRx) -> Admin {
    let (admin, readiness) = Admin::new(registry);
    let not_after = creds.borrow().as_ref().map(|c| c.not_after);
    readiness.set(is_ready(identity_disabled, not_after, SystemTime::now()));
    tokio::spawn(follow(readiness, identity_disabled, creds));
    admin
}

/// Sets readiness on each new certificate and when the one held expires.
/// The proxy keeps serving with an expired certificate (as Linkerd's does);
/// only `/ready` and one log line tell that identity is not renewing it.
async fn follow(readiness: Readiness, identity_disabled: bool, mut creds: CredentialsRx) {
    loop {
        let not_after = creds.borrow_and_update().as_ref().map(|c| c.not_after);
        readiness.set(is_ready(identity_disabled, not_after, SystemTime::now()));
        let left = not_after.and_then(|t| t.duration_since(SystemTime::now()).ok());
        let expiry = async {
            match left {
                Some(left) if !identity_disabled => tokio::time::sleep(left).await,
                _ => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        tokio::select! {
            changed = creds.changed() => if changed.is_err() {
                // No more renewals can come; still mark the expiry.
                (&mut expiry).await;
                readiness.set(identity_disabled);
                return;
            },
            _ = &mut expiry => {
                tracing::warn!(
                    "the proxy's certificate expired without renewal (is identity down?); not ready"
                );
                readiness.set(false);
                if creds.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// How long a client of the admin server may take to say whether it speaks TLS.
const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin routes. With mesh TLS, a connection that opens TLS for
/// this proxy's own name is terminated first (as Linkerd's admin server
/// does): a multicluster probe reaches a gateway's `/ready` through its
/// own proxy, over mTLS. Plaintext is served as it is.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Tls>,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(serve_conn(stream, peer, router.clone(), tls.clone()));
    }
}

async fn serve_conn(stream: tokio::net::TcpStream, peer: SocketAddr, router: Router, tls: Tls) {
    let io: BoxIo = match meshtls::detect(stream, DETECT_TIMEOUT).await {
        Ok((meshtls::Detected::Tls { sni: Some(sni) }, io))
            if Some(&sni) == tls.local_name().as_ref() =>
        {
            let Ok(config) = tls.server(ClientAuth::Optional) else {
                return;
            };
            match meshtls::accept(io, config).await {
                Ok(accepted) => Box::new(accepted.io),
                Err(error) => {
                    tracing::debug!(%error, %peer, "admin TLS handshake failed");
                    return;
                }
            }
        }
        Ok((_, io)) => Box::new(io),
        Err(error) => {
            tracing::debug!(%error, %peer, "admin connection said nothing");
            return;
        }
    };
    let svc = router.map_request(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc))
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, %peer, "admin connection ended with an error");
    }
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
        let now = SystemTime::now();
        let (later, earlier) = (
            Some(now + std::time::Duration::from_secs(60)),
            Some(now - std::time::Duration::from_secs(1)),
        );
        let cases = [
            (false, None, false),
            (false, later, true),
            (false, earlier, false),
            (false, Some(now), false),
            (true, None, true),
            (true, earlier, true),
        ];
        for (disabled, not_after, want) in cases {
            assert_eq!(
                is_ready(disabled, not_after, now),
                want,
                "{disabled} {not_after:?}"
            );
        }
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
            not_after: SystemTime::now() + std::time::Duration::from_secs(3600),
        })));
        let became_ready = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while call(r.clone(), "GET", "/ready", "127.0.0.1:1").await.0 != StatusCode::OK {
                tokio::task::yield_now().await;
            }
        });
        assert!(became_ready.await.is_ok(), "/ready never turned 200");
    }

    #[tokio::test]
    async fn not_ready_once_the_certificate_expires_unrenewed() {
        use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let (creds_tx, creds_rx) = tandem_meshtls::credentials_channel();
        let admin = admin(Registry::default(), false, creds_rx);
        let (tx, _rx) = watch::channel(false);
        let r = router(&admin, tx);
        creds_tx.send_replace(Some(std::sync::Arc::new(tandem_meshtls::Credentials {
            name: "web.emojivoto.serviceaccount.identity.tandem.cluster.local"
                .parse()
                .unwrap(),
            chain: vec![],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![0u8])),
            not_after: SystemTime::now() + std::time::Duration::from_millis(300),
        })));
        let wait_for = |want: StatusCode| {
            let r = r.clone();
            tokio::time::timeout(std::time::Duration::from_secs(5), async move {
                while call(r.clone(), "GET", "/ready", "127.0.0.1:1").await.0 != want {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
        };
        assert!(wait_for(StatusCode::OK).await.is_ok(), "never ready");
        assert!(
            wait_for(StatusCode::SERVICE_UNAVAILABLE).await.is_ok(),
            "still ready after the certificate expired"
        );
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

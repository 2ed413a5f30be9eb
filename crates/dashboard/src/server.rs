//! The routes: `/` (the page), `/app.js`, `/style.css` (ours, no CDN), and
//! `/api/state` (everything shown, as JSON). [`router`] has no socket, so
//! tests drive it with `oneshot`.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State as Extract},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::watch;

use crate::model::{ClusterView, State};

const PAGE: &str = include_str!("../assets/page.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

/// What the routes read: the latest view of each cluster.
#[derive(Clone)]
pub struct Views {
    pub refresh_ms: u64,
    pub clusters: Arc<Vec<watch::Receiver<ClusterView>>>,
}

impl Views {
    /// The state as of now.
    pub fn state(&self) -> State {
        State {
            refresh_ms: self.refresh_ms,
            clusters: self.clusters.iter().map(|c| c.borrow().clone()).collect(),
        }
    }
}

pub fn router(views: Views) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/state", get(state))
        .layer(middleware::from_fn(local_only))
        .with_state(views)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

async fn state(Extract(views): Extract<Views>) -> Response {
    match serde_json::to_string(&views.state()) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The dashboard has no login and shows cluster state: it answers only
/// requests addressed to a loopback name, so that a web page elsewhere
/// cannot read it through DNS rebinding.
async fn local_only(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !is_loopback_host(host) {
        return (
            StatusCode::FORBIDDEN,
            format!("the dashboard answers only on localhost, not to Host {host:?}\n"),
        )
            .into_response();
    }
    next.run(req).await
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        },
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::model::{Section, StatsView};

    fn views() -> (Views, watch::Sender<ClusterView>) {
        let (tx, rx) = watch::channel(ClusterView {
            context: "east".into(),
            ..Default::default()
        });
        let views = Views {
            refresh_ms: 1000,
            clusters: Arc::new(vec![rx]),
        };
        (views, tx)
    }

    async fn get(views: &Views, path: &str, host: &str) -> (StatusCode, String, String) {
        let req = axum::http::Request::get(path)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let res = router(views.clone()).oneshot(req).await.unwrap();
        let status = res.status();
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served() {
        let (views, _tx) = views();
        for (path, ct, has) in [
            ("/", "text/html", "/app.js"),
            ("/app.js", "text/javascript", "/api/state"),
            ("/style.css", "text/css", "body"),
        ] {
            let (status, got_ct, body) = get(&views, path, "127.0.0.1:50750").await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(got_ct.starts_with(ct), "{path}: {got_ct}");
            assert!(body.contains(has), "{path}");
        }
        let (status, _, _) = get(&views, "/nothing", "localhost").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_state_is_the_latest_view() {
        let (views, tx) = views();
        let (_, _, body) = get(&views, "/api/state", "localhost:1").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["clusters"][0]["context"], "east");
        assert_eq!(v["clusters"][0]["stats"]["state"], "pending");
        assert_eq!(v["refresh_ms"], 1000);

        tx.send_replace(ClusterView {
            context: "east".into(),
            splits: Section::failed("broken"),
            stats: StatsView::NotInstalled {
                message: "viz not installed".into(),
            },
            ..Default::default()
        });
        let (_, ct, body) = get(&views, "/api/state", "localhost:1").await;
        assert!(ct.starts_with("application/json"), "{ct}");
        let state: State = serde_json::from_str(&body).unwrap();
        assert_eq!(state.clusters[0].splits.error.as_deref(), Some("broken"));
    }

    #[tokio::test]
    async fn other_hosts_are_refused() {
        let (views, _tx) = views();
        let (status, _, body) = get(&views, "/api/state", "evil.example:50750").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("only on localhost"), "{body}");
    }

    #[test]
    fn loopback_hosts() {
        for (host, want) in [
            ("localhost", true),
            ("LOCALHOST:8080", true),
            ("127.0.0.1", true),
            ("127.0.0.1:50750", true),
            ("127.1.2.3:1", true),
            ("[::1]:50750", true),
            ("[::1]", true),
            ("", false),
            ("10.0.0.1:50750", false),
            ("localhost.evil.example", false),
            ("[::1]x", false),
            ("[2001:db8::1]:80", false),
        ] {
            assert_eq!(is_loopback_host(host), want, "{host:?}");
        }
    }
}

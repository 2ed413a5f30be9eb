//! HTTP pieces shared by inbound, outbound and the gateway: the client of
//! one endpoint ([`EndpointClient`]), what a retry needs ([`ReqBody`],
//! [`retry_is_safe`]), the response body that records `response_total` at
//! its end ([`ResponseBody`]), the "undelivered" answer, header helpers, and
//! serving a detected connection.

mod client;
mod record;
mod retry;

pub use client::{
    Connector, ConnectorInner, EndpointClient, TryError, log_tls_failure, stranded_after,
};
pub use record::{ResponseBody, dst_labels, record_error, record_response};
pub use retry::{RETRY_BUFFER, ReqBody, never_delivered, resend_stranded_once, retry_is_safe};
/// An error and its sources on one line (hyper's errors hide the cause,
/// e.g. which TLS check failed, in their sources).
pub use tandem_util::error_chain;

use std::{convert::Infallible, future::Future};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};

use crate::detect::Detected;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub fn boxed<B>(b: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

/// The header with which a server-side proxy says that it answered in
/// place of its application because the request never reached it (the
/// connection to the application failed): a client-side proxy may send the
/// request again to another endpoint, whatever its method.
pub const UNDELIVERED_HEADER: &str = "tandem-proxy-undelivered";

/// The response of a proxy that delivered the request to no application
/// (e.g. its application refused the connection): `status` with
/// `l5d-proxy-error` and [`UNDELIVERED_HEADER`].
pub fn undelivered_response(status: StatusCode, why: &str) -> Response<Body> {
    let mut rsp = error_response(status, why);
    rsp.headers_mut()
        .insert(UNDELIVERED_HEADER, HeaderValue::from_static("true"));
    rsp
}

/// A response from a peer proxy saying that the request never reached its
/// application (see [`UNDELIVERED_HEADER`]).
pub fn is_undelivered<B>(rsp: &Response<B>) -> bool {
    (rsp.status() == StatusCode::SERVICE_UNAVAILABLE || rsp.status() == StatusCode::BAD_GATEWAY)
        && rsp
            .headers()
            .get(UNDELIVERED_HEADER)
            .is_some_and(|v| v == "true")
}

/// A response the proxy makes itself, with `l5d-proxy-error` saying why.
pub fn error_response(status: StatusCode, why: &str) -> Response<Body> {
    let mut rsp = Response::new(boxed(Full::new(Bytes::from(format!("{why}\n")))));
    *rsp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(why) {
        rsp.headers_mut().insert("l5d-proxy-error", v);
    }
    rsp
}

/// Removes the hop-by-hop headers a proxy must not forward.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for name in listed {
        headers.remove(name.as_str());
    }
    for h in [
        header::CONNECTION,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(h);
    }
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

/// The request's authority: the URI's, else the Host header.
pub fn authority_of(parts: &http::request::Parts) -> Option<String> {
    parts.uri.authority().map(|a| a.to_string()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    })
}

/// The absolute URI a client needs, keeping the request's authority.
pub fn absolute_uri(parts: &http::request::Parts, fallback: &str) -> Result<Uri, http::Error> {
    let authority = authority_of(parts).unwrap_or_else(|| fallback.to_string());
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
}

// === serving ===

/// Serves one detected HTTP connection with `handle` until it ends or
/// `shutdown` flips (then gracefully).
pub async fn serve<I, F, Fut>(
    io: I,
    proto: Detected,
    handle: F,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let h = handle.clone();
        async move { Ok::<_, Infallible>(h(req).await) }
    });
    let io = TokioIo::new(io);
    let result = if proto == Detected::H2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = stopped(&mut shutdown) => { conn.as_mut().graceful_shutdown(); conn.await }
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            _ = stopped(&mut shutdown) => { conn.as_mut().graceful_shutdown(); conn.await }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "HTTP connection ended with an error");
    }
}

/// Completes when `shutdown` flips (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn authority_and_absolute_uri() {
        let cases = [
            // (uri, host, authority, absolute)
            (
                "/api/list?x=1",
                Some("web-svc:80"),
                Some("web-svc:80"),
                "http://web-svc:80/api/list?x=1",
            ),
            (
                "http://emoji-svc:8080/emojivoto.v1.EmojiService/ListAll",
                None,
                Some("emoji-svc:8080"),
                "http://emoji-svc:8080/emojivoto.v1.EmojiService/ListAll",
            ),
            ("/", None, None, "http://10.96.0.10:80/"),
        ];
        for (uri, host, authority, absolute) in cases {
            let headers: Vec<_> = host.iter().map(|h| ("host", *h)).collect();
            let p = parts(uri, &headers);
            assert_eq!(authority_of(&p).as_deref(), authority, "{uri}");
            assert_eq!(
                absolute_uri(&p, "10.96.0.10:80").unwrap().to_string(),
                absolute,
                "{uri}"
            );
        }
        let bad = parts("/", &[("host", "a b")]);
        assert!(absolute_uri(&bad, "x:1").is_err());
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("content-type", "text/plain"),
            ("x-kept", "1"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-kept"]);
        let mut grpc = HeaderMap::new();
        grpc.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut grpc);
        assert_eq!(grpc[header::TE], "trailers", "gRPC's te: trailers stays");
    }
}

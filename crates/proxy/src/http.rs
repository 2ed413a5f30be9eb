//! HTTP pieces shared by inbound and outbound: the client of one endpoint,
//! request bodies buffered for retries, the response body that records
//! `response_total` at its end, and serving a detected connection.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use tandem_meshtls::{Tls, transport_header::SessionProtocol};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};

use crate::{
    connect::{self, Conn, ConnectError},
    detect::Detected,
    endpoint::Endpoint,
    io::Counted,
    metrics::{Labels, Metrics, Peer, Target, response_labels},
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Request bodies up to this size are buffered, so that a request whose
/// connection failed can be sent again.
pub const RETRY_BUFFER: u64 = 64 * 1024;

pub fn boxed<B>(b: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
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

/// An error and its sources, `a: b: c` (hyper's errors hide the cause,
/// e.g. which TLS check failed, in their sources).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

// === impl EndpointClient ===

/// Pooled HTTP/1 and HTTP/2 clients whose connections all go to one endpoint.
#[derive(Clone)]
pub struct EndpointClient {
    http1: Client<Connector, Body>,
    h2: Client<Connector, Body>,
}

impl EndpointClient {
    /// A client whose connections are plain TCP (e.g. to the local
    /// application).
    pub fn new(ep: Endpoint, labels: Labels, metrics: Metrics, timeout: Duration) -> Self {
        Self::with_tls(ep, labels, metrics, timeout, None)
    }

    /// A client whose connections follow [`connect::connect`]: mTLS to the
    /// endpoint's identity when `tls` is the proxy's mesh TLS (`None`:
    /// identity disabled).
    pub fn with_tls(
        ep: Endpoint,
        labels: Labels,
        metrics: Metrics,
        timeout: Duration,
        tls: Option<Tls>,
    ) -> Self {
        let connector = |protocol| {
            Connector(Arc::new(ConnectorInner {
                ep: ep.clone(),
                labels: labels.clone(),
                metrics: metrics.clone(),
                timeout,
                tls: tls.clone(),
                protocol,
                tls_failing: AtomicBool::new(false),
            }))
        };
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector(SessionProtocol::Http1));
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector(SessionProtocol::Http2));
        EndpointClient { http1, h2 }
    }

    pub fn request(
        &self,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>> + use<>
    {
        if req.version() == http::Version::HTTP_2 {
            self.h2.request(req)
        } else {
            self.http1.request(req)
        }
    }
}

/// Connects every URI to the one endpoint, through [`connect::connect`].
#[derive(Clone)]
pub struct Connector(Arc<ConnectorInner>);

pub struct ConnectorInner {
    ep: Endpoint,
    labels: Labels,
    metrics: Metrics,
    timeout: Duration,
    tls: Option<Tls>,
    protocol: SessionProtocol,
    /// Set after a TLS failure was logged, so that a peer that keeps
    /// failing is logged once (until it succeeds again).
    tls_failing: AtomicBool,
}

impl ConnectorInner {
    async fn connect(&self) -> Result<Conn, ConnectError> {
        let res = connect::connect(
            &self.ep,
            self.tls.as_ref(),
            Some(self.protocol),
            self.timeout,
        )
        .await;
        match &res {
            Err(error) if error.is_tls() => log_tls_failure(&self.tls_failing, error),
            Ok(_) => self.tls_failing.store(false, Ordering::Relaxed),
            Err(_) => {}
        }
        res
    }
}

/// Logs a TLS failure to an endpoint clearly the first time, quietly after.
pub fn log_tls_failure(failing: &AtomicBool, error: &ConnectError) {
    if failing.swap(true, Ordering::Relaxed) {
        tracing::debug!(%error, "mTLS failed again");
    } else {
        tracing::warn!(%error, "mTLS to an endpoint failed; it counts as a connection failure");
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Counted<Conn>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let stream = inner.connect().await?;
            let (guard, read, write) = inner.metrics.tcp(inner.labels.clone());
            Ok(TokioIo::new(
                Counted::new(stream, read, write).with_guard(guard),
            ))
        })
    }
}

/// The TCP labels of a connection to `ep` (`peer="dst"`).
pub fn dst_labels(target: &Target) -> Labels {
    target.tcp_labels(Peer::Dst)
}

// === request bodies ===

/// A request body: buffered (can be sent again) or streaming (sent once).
pub enum ReqBody {
    Buffered(Bytes),
    Streaming(Option<Incoming>),
}

impl ReqBody {
    /// Buffers `body` when it is known to end within [`RETRY_BUFFER`] bytes.
    pub async fn new(body: Incoming) -> Result<Self, hyper::Error> {
        let small = body.is_end_stream()
            || body
                .size_hint()
                .upper()
                .is_some_and(|upper| upper <= RETRY_BUFFER);
        if small {
            Ok(ReqBody::Buffered(body.collect().await?.to_bytes()))
        } else {
            Ok(ReqBody::Streaming(Some(body)))
        }
    }

    /// The body for one more try, if it can be sent (again).
    pub fn take(&mut self) -> Option<Body> {
        match self {
            ReqBody::Buffered(b) => Some(boxed(Full::new(b.clone()))),
            ReqBody::Streaming(b) => b.take().map(boxed),
        }
    }
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

// === impl ResponseBody ===

/// Forwards a response body and counts `response_total` once, at its end
/// (or when it is dropped), with the `grpc-status` of the headers or
/// trailers.
pub struct ResponseBody {
    inner: Incoming,
    record: Option<Record>,
}

struct Record {
    metrics: Metrics,
    labels: Labels,
    status: StatusCode,
    grpc_status: Option<i32>,
}

impl Record {
    fn done(self) {
        let labels = response_labels(&self.labels, self.status, self.grpc_status);
        self.metrics.responses.get_or_create(&labels).inc();
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Counts the request and wraps the response so its end is counted.
pub fn record_response(
    metrics: &Metrics,
    labels: Labels,
    rsp: Response<Incoming>,
    elapsed: Duration,
) -> Response<Body> {
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64() * 1000.0);
    let (mut parts, inner) = rsp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let record = Record {
        metrics: metrics.clone(),
        labels,
        status: parts.status,
        grpc_status: grpc_status(&parts.headers),
    };
    if inner.is_end_stream() {
        record.done();
        return Response::from_parts(parts, boxed(inner));
    }
    let body = ResponseBody {
        inner,
        record: Some(record),
    };
    Response::from_parts(parts, boxed(body))
}

/// Counts a request the proxy answered itself.
pub fn record_error(metrics: &Metrics, labels: Labels, rsp: &Response<Body>) {
    metrics.requests.get_or_create(&labels).inc();
    let labels = response_labels(&labels, rsp.status(), None);
    metrics.responses.get_or_create(&labels).inc();
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(trailers), Some(r)) = (frame.trailers_ref(), self.record.as_mut())
                    && let Some(g) = grpc_status(trailers)
                {
                    r.grpc_status = Some(g);
                }
                if self.inner.is_end_stream()
                    && let Some(r) = self.record.take()
                {
                    r.done();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(r) = self.record.take() {
                    r.done();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            r.done();
        }
    }
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

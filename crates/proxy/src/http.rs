//! HTTP pieces shared by inbound and outbound: the client of one endpoint,
//! request bodies that can be sent again, the "undelivered" answer, the
//! response body that records
//! `response_total` at its end, and serving a detected connection.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
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

/// Request bodies up to this size are kept while they are sent, so that a
/// request whose connection failed can be sent again.
pub const RETRY_BUFFER: u64 = 64 * 1024;

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

/// Whether a try of a `method` request that failed with `error` before any
/// response may be sent again, to another endpoint: when no peer can have
/// acted on it, or when acting twice is harmless.
///
/// - The connection could not be made (refused, unreachable, timed out, TLS).
/// - The request was never written: the pooled connection closed first
///   (hyper calls it canceled), or the HTTP/2 peer refused the stream
///   (`REFUSED_STREAM`) or shut down gracefully before it (a stream past
///   a `GOAWAY`'s last stream id, with no error code).
/// - The method is idempotent (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE,
///   PUT, DELETE).
///
/// Anything else, e.g. a POST (every gRPC call) whose connection was reset
/// after it was sent, is not retried: the peer may have acted on it.
pub fn retry_is_safe(method: &http::Method, error: &hyper_util::client::legacy::Error) -> bool {
    use http::Method;
    if error.is_connect() || never_sent(error) {
        return true;
    }
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// Whether some error in `error`'s chain says that the request never
/// reached the peer's application (see [`retry_is_safe`]).
fn never_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && h.is_canceled()
        {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR)))
        {
            return true;
        }
        next = e.source();
    }
    false
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

/// A request body that can be sent again: each try streams it from the
/// client while a copy of what passed is kept, up to [`RETRY_BUFFER`]
/// bytes. A later try replays the copy and then goes on streaming. A body
/// longer than the buffer, or one whose client failed, is sent once.
///
/// Nothing waits for the body before the first try (a gRPC request's body
/// has no length and may be long), and a try whose connection failed
/// before it read the body leaves all of it for the next.
pub struct ReqBody<B = Incoming> {
    shared: Arc<Mutex<Replay<B>>>,
    tries: u64,
}

struct Replay<B> {
    /// The rest of the client's body (`None` once it ended).
    source: Option<B>,
    /// The data frames read from `source` so far, while within the buffer.
    chunks: Vec<Bytes>,
    len: u64,
    trailers: Option<HeaderMap>,
    /// Set when the body outgrew the buffer or the client's side failed:
    /// it can no longer be sent again.
    spent: bool,
    /// The try allowed to read; bodies of earlier tries get an error.
    current: u64,
    /// Largest body kept for replay.
    limit: u64,
}

impl<B> ReqBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    pub fn new(body: B) -> Self {
        Self::with_limit(body, RETRY_BUFFER)
    }

    pub fn with_limit(body: B, limit: u64) -> Self {
        let ended = body.is_end_stream();
        ReqBody {
            shared: Arc::new(Mutex::new(Replay {
                source: (!ended).then_some(body),
                chunks: vec![],
                len: 0,
                trailers: None,
                spent: false,
                current: 0,
                limit,
            })),
            tries: 0,
        }
    }

    /// Whether another try could send the whole body again.
    pub fn can_retry(&self) -> bool {
        !self.shared.lock().unwrap().spent
    }

    /// The body for one more try, if it can be sent (again). A body handed
    /// out earlier stops with an error if it is still read.
    pub fn take(&mut self) -> Option<Body> {
        let mut r = self.shared.lock().unwrap();
        if self.tries > 0 && r.spent {
            return None;
        }
        self.tries += 1;
        r.current = self.tries;
        Some(boxed(TryBody {
            shared: self.shared.clone(),
            try_: self.tries,
            next: 0,
            trailers_sent: false,
        }))
    }
}

/// One try's view of a [`ReqBody`].
struct TryBody<B> {
    shared: Arc<Mutex<Replay<B>>>,
    try_: u64,
    /// The next kept chunk to replay.
    next: usize,
    trailers_sent: bool,
}

#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error("the request body went to a later try")]
    Superseded,
    #[error("the request body was longer than the retry buffer and was already sent")]
    Spent,
}

impl<B> hyper::body::Body for TryBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut r = this.shared.lock().unwrap();
        if r.current != this.try_ {
            return Poll::Ready(Some(Err(ReplayError::Superseded.into())));
        }
        if this.next < r.chunks.len() {
            let chunk = r.chunks[this.next].clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.next > r.chunks.len() {
            // The kept copy was dropped under this try: it cannot resume.
            return Poll::Ready(Some(Err(ReplayError::Spent.into())));
        }
        let Some(source) = r.source.as_mut() else {
            return Poll::Ready(match (&r.trailers, this.trailers_sent) {
                (Some(t), false) => {
                    this.trailers_sent = true;
                    Some(Ok(Frame::trailers(t.clone())))
                }
                _ => None,
            });
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                r.source = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                r.spent = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    r.trailers = Some(t.clone());
                    this.trailers_sent = true;
                } else if let Some(d) = frame.data_ref() {
                    let len = d.len() as u64;
                    if !r.spent && r.len + len <= r.limit {
                        r.chunks.push(d.clone());
                        r.len += len;
                        this.next += 1;
                    } else {
                        // Too long to keep: this try is its only one.
                        r.spent = true;
                        r.chunks = vec![];
                        this.next = 0;
                    }
                }
                if r.source.as_ref().is_some_and(|s| s.is_end_stream()) {
                    r.source = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let r = self.shared.lock().unwrap();
        r.current == self.try_
            && r.source.is_none()
            && self.next >= r.chunks.len()
            && (r.trailers.is_none() || self.trailers_sent)
    }

    fn size_hint(&self) -> SizeHint {
        let r = self.shared.lock().unwrap();
        let kept: u64 = r
            .chunks
            .iter()
            .skip(self.next)
            .map(|c| c.len() as u64)
            .sum();
        match &r.source {
            None => SizeHint::with_exact(kept),
            Some(s) => {
                let hint = s.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(kept + hint.lower());
                if let Some(upper) = hint.upper() {
                    out.set_upper(kept + upper);
                }
                out
            }
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

    // === ReqBody ===

    type Sent = Result<Frame<Bytes>, Infallible>;

    /// A client body fed through a channel, so a test decides when each
    /// frame arrives.
    fn client_body(
        limit: u64,
    ) -> (
        tokio::sync::mpsc::Sender<Sent>,
        ReqBody<http_body_util::StreamBody<tokio_stream::wrappers::ReceiverStream<Sent>>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        (tx, ReqBody::with_limit(body, limit))
    }

    async fn send(tx: &tokio::sync::mpsc::Sender<Sent>, data: &'static str) {
        tx.send(Ok(Frame::data(Bytes::from_static(data.as_bytes()))))
            .await
            .unwrap();
    }

    async fn next_data(b: &mut Body) -> Bytes {
        b.frame().await.unwrap().unwrap().into_data().unwrap()
    }

    #[tokio::test]
    async fn a_try_that_read_nothing_leaves_the_whole_body_to_the_next() {
        let (tx, mut body) = client_body(RETRY_BUFFER);
        send(&tx, "ab").await;
        send(&tx, "cd").await;
        drop(tx);
        drop(body.take().unwrap());
        assert!(body.can_retry());
        let all = body.take().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(all, "abcd");
    }

    #[tokio::test]
    async fn a_partly_sent_body_is_replayed_then_streamed_on() {
        let (tx, mut body) = client_body(RETRY_BUFFER);
        send(&tx, "ab").await;
        let mut first = body.take().unwrap();
        assert_eq!(next_data(&mut first).await, "ab");
        send(&tx, "cd").await;
        assert_eq!(next_data(&mut first).await, "cd");
        assert!(body.can_retry(), "4 bytes fit the buffer");

        let mut second = body.take().unwrap();
        assert_eq!(next_data(&mut second).await, "ab");
        assert_eq!(next_data(&mut second).await, "cd");
        send(&tx, "ef").await;
        drop(tx);
        let rest = second.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "ef");
        // The earlier try is cut off rather than sending a part twice.
        let cut = first.frame().await.unwrap();
        assert!(cut.is_err(), "the first try read on: {cut:?}");

        let third = body.take().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(third, "abcdef");
    }

    #[tokio::test]
    async fn a_body_longer_than_the_buffer_is_sent_once() {
        let (tx, mut body) = client_body(4);
        send(&tx, "abc").await;
        send(&tx, "def").await;
        drop(tx);
        let first = body.take().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(first, "abcdef", "the first try gets all of it");
        assert!(!body.can_retry());
        assert!(body.take().is_none());
    }

    #[tokio::test]
    async fn trailers_are_replayed_and_ends_are_known() {
        let (tx, mut body) = client_body(RETRY_BUFFER);
        send(&tx, "x").await;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-timeout", HeaderValue::from_static("1S"));
        tx.send(Ok(Frame::trailers(trailers))).await.unwrap();
        drop(tx);
        for _ in 0..2 {
            let got = body.take().unwrap().collect().await.unwrap();
            assert_eq!(got.trailers().unwrap()["grpc-timeout"], "1S");
            assert_eq!(got.to_bytes(), "x");
        }
        let replay = body.take().unwrap();
        assert_eq!(replay.size_hint().exact(), Some(1));
        assert!(!replay.is_end_stream());

        let mut empty = ReqBody::new(http_body_util::Empty::<Bytes>::new());
        let b = empty.take().unwrap();
        assert!(b.is_end_stream(), "an empty body is known to be empty");
        assert_eq!(b.size_hint().exact(), Some(0));
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

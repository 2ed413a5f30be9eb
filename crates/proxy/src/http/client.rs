//! The client of one endpoint: pooled HTTP/1 and HTTP/2 connections made
//! by [`connect::connect`] (mTLS when the endpoint has an identity), each
//! counted in the TCP metrics.
//!
//! A try is watched for one known way to hang. A request handed to a pooled
//! HTTP/1 connection at the moment its dispatcher ends can be left in the
//! closed connection's queue: hyper queues it after the dispatcher's last
//! look, and the queue is only dropped with the client's handle, which
//! waits for that request's answer. Nothing answers, ever (hyperium/hyper
//! issue 4122 describes the same hole). So when a try's connection has
//! closed and no answer came within [`stranded_after`], the try ends as
//! [`TryError::Stranded`]: never written, safe to send again.

use std::{
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

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{CaptureConnection, Connected, capture_connection},
    },
    rt::{TokioExecutor, TokioIo},
};
use tandem_meshtls::{Tls, transport_header::SessionProtocol};
use tokio::sync::watch;

use super::Body;
use crate::{
    connect::{self, Conn, ConnectError},
    endpoint::Endpoint,
    io::{ConnLife, Counted},
    metrics::{Labels, Metrics},
};

/// How long a try may go unanswered after its connection closed before it
/// counts as stranded, for a client whose connects time out after
/// `connect_timeout`. hyper answers a closed connection's requests at once,
/// or hyper-util sends a canceled request again on another connection,
/// which the watch then follows. That connection is known once its TCP
/// connect and TLS handshake are done, each bounded by `connect_timeout`;
/// one second more covers a busy scheduler. Short beside a client's
/// patience, and only for a request that would otherwise never end.
pub fn stranded_after(connect_timeout: Duration) -> Duration {
    connect_timeout * 2 + Duration::from_secs(1)
}

/// Why a try got no response.
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    /// The client's own error.
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
    /// The connection closed, and the client never answered for the
    /// request: it was never written (see the module's docs).
    #[error("the connection closed without sending the request (no answer {0:?} after)")]
    Stranded(Duration),
}

impl TryError {
    /// Whether the connection could not be made.
    pub fn is_connect(&self) -> bool {
        matches!(self, TryError::Client(e) if e.is_connect())
    }

    /// Whether the try speaks against its endpoint. A stranded one does
    /// not (the endpoint never saw it), so the endpoint may take the next
    /// try too; a service with one endpoint must.
    pub fn blames_endpoint(&self) -> bool {
        !matches!(self, TryError::Stranded(_))
    }
}

// === impl EndpointClient ===

/// Pooled HTTP/1 and HTTP/2 clients whose connections all go to one endpoint.
#[derive(Clone)]
pub struct EndpointClient {
    http1: Client<Connector, Body>,
    h2: Client<Connector, Body>,
    /// See [`stranded_after`].
    grace: Duration,
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
        EndpointClient {
            http1,
            h2,
            grace: stranded_after(timeout),
        }
    }

    /// One try: the response's head, or why there is none.
    pub fn request(
        &self,
        mut req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, TryError>> + use<> {
        let capture = capture_connection(&mut req);
        let answer = if req.version() == http::Version::HTTP_2 {
            self.h2.request(req)
        } else {
            self.http1.request(req)
        };
        watched(answer, capture, self.grace)
    }
}

/// The client's `answer` to a try, or [`TryError::Stranded`] once the
/// connection captured for it has been closed for `grace` without one.
async fn watched(
    answer: impl Future<Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>>,
    capture: CaptureConnection,
    grace: Duration,
) -> Result<Response<Incoming>, TryError> {
    tokio::select! {
        biased;
        res = answer => res.map_err(TryError::Client),
        () = stranded(capture, grace) => {
            tracing::warn!(grace = ?grace, "a request was left unanswered in a closed connection; it counts as never sent");
            Err(TryError::Stranded(grace))
        }
    }
}

/// Ends when the connection that the client chose for a request (the last
/// one, if the client moved it) has been closed for `grace`; pending
/// while it is open, or when there is none.
async fn stranded(mut capture: CaptureConnection, grace: Duration) {
    loop {
        let Some(mut life) = life_of(&*capture.wait_for_connection_metadata().await) else {
            return std::future::pending().await;
        };
        // Nothing is ever sent: `changed` fails when the io is dropped.
        while life.changed().await.is_ok() {}
        tokio::time::sleep(grace).await;
        match life_of(&capture.connection_metadata()) {
            Some(now) if !now.same_channel(&life) => continue,
            _ => return,
        }
    }
}

/// The [`ConnLife`] of a connection, from its metadata.
fn life_of(connected: &Option<Connected>) -> Option<watch::Receiver<()>> {
    let mut extras = http::Extensions::new();
    connected.as_ref()?.get_extras(&mut extras);
    extras.remove::<ConnLife>().map(|l| l.0)
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
                Counted::new(stream, read, write)
                    .with_guard(guard)
                    .with_life(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http_body_util::{BodyExt, Empty};
    use prometheus_client::registry::Registry;
    use tokio::{io::AsyncReadExt, net::TcpListener};

    use super::*;
    use crate::http::never_delivered;

    /// A client of an endpoint that accepts connections and never answers.
    async fn silent_endpoint() -> (EndpointClient, TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::register(&mut Registry::default());
        let client = EndpointClient::new(
            Endpoint::forward(addr),
            vec![],
            metrics,
            Duration::from_secs(5),
        );
        (client, listener, addr)
    }

    fn get(addr: SocketAddr) -> Request<Body> {
        Request::get(format!("http://{addr}/"))
            .body(Empty::new().map_err(|e| match e {}).boxed())
            .unwrap()
    }

    #[tokio::test]
    async fn a_try_its_client_never_answers_ends_stranded_after_its_connection_closed() {
        let (client, listener, addr) = silent_endpoint().await;
        let mut req = get(addr);
        let capture = capture_connection(&mut req);
        // The real try: it goes out on a real connection (and gets hyper's
        // error when that closes). The watched answer never comes, as for a
        // request left in a closed connection's queue.
        let sent = tokio::spawn(client.http1.request(req));
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 64];
        assert!(
            conn.read(&mut head).await.unwrap() > 0,
            "the try sent nothing"
        );
        let watch = tokio::spawn(watched(
            std::future::pending(),
            capture,
            Duration::from_millis(50),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !watch.is_finished(),
            "a try whose connection is open is not stranded"
        );
        drop(conn);
        let error = tokio::time::timeout(Duration::from_secs(10), watch)
            .await
            .expect("the try was not given up after its connection closed")
            .unwrap()
            .unwrap_err();
        assert!(matches!(error, TryError::Stranded(_)), "{error}");
        assert!(never_delivered(&error));
        assert!(
            !error.blames_endpoint(),
            "a stranded try counted against its endpoint"
        );
        assert!(sent.await.unwrap().is_err(), "the closed try was answered");
    }

    #[tokio::test]
    async fn a_connection_closed_under_a_try_is_the_clients_own_error() {
        let (client, listener, addr) = silent_endpoint().await;
        let try_ = tokio::spawn(client.request(get(addr)));
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 64];
        assert!(
            conn.read(&mut head).await.unwrap() > 0,
            "the try sent nothing"
        );
        drop(conn);
        let error = try_.await.unwrap().unwrap_err();
        // Sent, then cut off: hyper says so at once, and the try may have
        // been acted on.
        assert!(matches!(error, TryError::Client(_)), "{error}");
        assert!(!never_delivered(&error), "{error}");
        assert!(error.blames_endpoint(), "{error}");
    }
}

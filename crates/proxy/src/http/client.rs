//! The client of one endpoint: pooled HTTP/1 and HTTP/2 connections made
//! by [`connect::connect`] (mTLS when the endpoint has an identity), each
//! counted in the TCP metrics.

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
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use tandem_meshtls::{Tls, transport_header::SessionProtocol};

use super::Body;
use crate::{
    connect::{self, Conn, ConnectError},
    endpoint::Endpoint,
    io::Counted,
    metrics::{Labels, Metrics},
};

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

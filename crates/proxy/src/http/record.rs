//! The response body that counts `response_total` once, at its end, with
//! the `grpc-status` of its headers or trailers; and the error responses'
//! counts.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};

use super::{Body, boxed, strip_hop_by_hop};
use crate::metrics::{Labels, Metrics, Peer, Target, response_labels};

/// The TCP labels of a connection to `ep` (`peer="dst"`).
pub fn dst_labels(target: &Target) -> Labels {
    target.tcp_labels(Peer::Dst)
}

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

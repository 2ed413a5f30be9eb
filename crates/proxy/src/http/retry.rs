//! What a retry needs: a request body that can be sent again
//! ([`ReqBody`]), whether a failed try may be repeated at all
//! ([`retry_is_safe`]), and one more try for a stranded one
//! ([`resend_stranded_once`]).

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, Request};
use hyper::body::{Frame, Incoming, SizeHint};

use super::{Body, BoxError, TryError, boxed};

/// Request bodies up to this size are kept while they are sent, so that a
/// request whose connection failed can be sent again.
pub const RETRY_BUFFER: u64 = 64 * 1024;

/// Whether a try of a `method` request that failed with `error` before any
/// response may be sent again, to another endpoint: when no peer can have
/// acted on it ([`never_delivered`]), or when acting twice is harmless (the
/// method is idempotent, RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT,
/// DELETE).
///
/// Anything else, e.g. a POST (every gRPC call) whose connection was reset
/// after it was sent, is not retried: the peer may have acted on it.
pub fn retry_is_safe(method: &http::Method, error: &TryError) -> bool {
    use http::Method;
    if never_delivered(error) {
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

/// Whether a try that failed with `error` certainly never reached the
/// peer's application:
///
/// - the connection could not be made (refused, unreachable, timed out, TLS);
/// - or the request was never written: the pooled connection closed first
///   (hyper calls it canceled), or the HTTP/2 peer refused the stream
///   (`REFUSED_STREAM`) or shut down gracefully before it (a stream past a
///   `GOAWAY`'s last stream id, with no error code), or the try was
///   [stranded](TryError::Stranded) in a closed connection's queue.
pub fn never_delivered(error: &TryError) -> bool {
    match error {
        TryError::Stranded(_) => true,
        TryError::Client(e) => e.is_connect() || never_sent(e),
    }
}

/// Whether some error in `error`'s chain says that the request was never
/// written (see [`never_delivered`]).
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

/// Sends a request (`parts` and `body`) with `send`, for a proxy with one
/// endpoint to send it to (the inbound proxy's application): a try left
/// [stranded](TryError::Stranded) in a closed connection was never written,
/// so it goes once more, on another connection, when its body can be sent
/// again. Any other outcome is the one answer.
pub async fn resend_stranded_once<B, R, Fut>(
    mut body: ReqBody<B>,
    parts: &http::request::Parts,
    mut send: impl FnMut(Request<Body>) -> Fut,
) -> Result<R, TryError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
    Fut: Future<Output = Result<R, TryError>>,
{
    let res = send(Request::from_parts(parts.clone(), body.next_try())).await;
    if let Err(TryError::Stranded(_)) = &res
        && let Some(again) = body.take()
    {
        tracing::debug!("a request was stranded in a closed connection; sending it again");
        return send(Request::from_parts(parts.clone(), again)).await;
    }
    res
}

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
        if self.tries > 0 && self.shared.lock().unwrap().spent {
            return None;
        }
        Some(self.next_try())
    }

    /// The body for the next try, whether or not all of it can be sent
    /// (the first try's always can).
    pub fn next_try(&mut self) -> Body {
        let mut r = self.shared.lock().unwrap();
        self.tries += 1;
        r.current = self.tries;
        boxed(TryBody {
            shared: self.shared.clone(),
            try_: self.tries,
            next: 0,
            trailers_sent: false,
        })
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::HeaderValue;
    use http_body_util::BodyExt;
    use hyper::body::Body as _;

    use super::*;

    // === never_sent ===

    /// An error with a source, as hyper's and hyper-util's wrap theirs.
    #[derive(Debug)]
    struct Wrapped(Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn wrapped(e: impl std::error::Error + Send + Sync + 'static) -> Wrapped {
        Wrapped(Box::new(Wrapped(Box::new(e))))
    }

    #[test]
    fn only_a_refused_stream_in_the_chain_says_never_sent() {
        let refused = wrapped(h2::Error::from(h2::Reason::REFUSED_STREAM));
        assert!(never_sent(&refused), "a refused stream, two sources down");
        let reset = wrapped(h2::Error::from(h2::Reason::INTERNAL_ERROR));
        assert!(
            !never_sent(&reset),
            "a stream reset otherwise may have been acted on"
        );
        let cut = wrapped(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!never_sent(&cut), "a connection cut after the request");
    }

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

    // === resend_stranded_once ===

    /// Sends with `outcomes` in turn (`true`: answered, `false`: stranded),
    /// reading each try's whole body; returns the result and the bodies.
    async fn resend_with(limit: u64, outcomes: &[bool]) -> (Result<Bytes, TryError>, Vec<Bytes>) {
        let (tx, body) = client_body(limit);
        send(&tx, "vote").await;
        drop(tx);
        let parts = Request::post("http://app/")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let bodies = Mutex::new(vec![]);
        let mut next = outcomes.iter();
        let res = resend_stranded_once(body, &parts, |req: Request<Body>| {
            let answered = *next.next().expect("more tries than outcomes");
            let bodies = &bodies;
            async move {
                let got = req.into_body().collect().await.unwrap().to_bytes();
                bodies.lock().unwrap().push(got.clone());
                if answered {
                    Ok(got)
                } else {
                    Err(TryError::Stranded(std::time::Duration::from_secs(3)))
                }
            }
        })
        .await;
        (res, bodies.into_inner().unwrap())
    }

    #[tokio::test]
    async fn a_stranded_try_is_sent_once_more_with_its_whole_body() {
        let (res, bodies) = resend_with(RETRY_BUFFER, &[false, true]).await;
        assert_eq!(res.unwrap(), "vote");
        assert_eq!(bodies, ["vote", "vote"]);
    }

    #[tokio::test]
    async fn an_answered_try_is_not_sent_again() {
        let (res, bodies) = resend_with(RETRY_BUFFER, &[true]).await;
        assert_eq!(res.unwrap(), "vote");
        assert_eq!(bodies.len(), 1);
    }

    #[tokio::test]
    async fn a_try_stranded_twice_is_the_answer() {
        let (res, bodies) = resend_with(RETRY_BUFFER, &[false, false]).await;
        assert!(matches!(res, Err(TryError::Stranded(_))), "{res:?}");
        assert_eq!(bodies.len(), 2, "sent twice, not more");
    }

    #[tokio::test]
    async fn a_stranded_try_whose_body_cannot_be_replayed_is_the_answer() {
        // 4 bytes sent with a 2-byte buffer: the body is spent.
        let (res, bodies) = resend_with(2, &[false]).await;
        assert!(matches!(res, Err(TryError::Stranded(_))), "{res:?}");
        assert_eq!(bodies.len(), 1);
    }
}

//! Every API call a controller makes is bounded in time and fails with one
//! typed error that keeps the server's HTTP code, so that a call the network
//! black-holes can never hold a writer, and a caller can tell a conflict
//! from a missing object without matching on strings. A one-shot tool (the
//! testbed's bring-up) makes its calls again while they fail transiently
//! ([`call_retrying`]).

use std::{future::Future, time::Duration};

/// The longest any one API call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times [`call_retrying`] makes a call that keeps failing
/// transiently.
pub const RETRY_ATTEMPTS: u32 = 5;

/// [`call_retrying`]'s first wait; each later one doubles it.
pub const RETRY_FIRST_WAIT: Duration = Duration::from_millis(500);

/// Why an API call failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{what}: timed out after {after:?}")]
    Timeout { what: String, after: Duration },

    #[error("{what}: {}", crate::error_chain(source))]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl CallError {
    /// The HTTP status the API server answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            CallError::Api {
                source: kube::Error::Api(s),
                ..
            } => Some(s.code),
            _ => None,
        }
    }

    /// True when the same call may well succeed if made again: it got no
    /// answer in time, its connection failed (an API server closing an idle
    /// connection as the client reuses it, one restarting), or the server
    /// said it is overloaded or failing (429, 5xx). Not an answer such as
    /// 404, 409 or 422, nor a request that could not be built or decoded.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Timeout { .. } => true,
            CallError::Api { source, .. } => match source {
                kube::Error::Api(s) => s.code == 429 || s.code >= 500,
                kube::Error::HyperError(_) | kube::Error::Service(_) => true,
                _ => false,
            },
        }
    }

    /// A short label for metrics: `timeout`, `conflict` or `api`.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::Timeout { .. } => "timeout",
            CallError::Api { .. } if self.code() == Some(409) => "conflict",
            CallError::Api { .. } => "api",
        }
    }
}

/// Runs one API call, `what` naming it in errors, bounded by [`CALL_TIMEOUT`].
pub async fn call<T>(
    what: impl Into<String>,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(CallError::Api {
            what: what.into(),
            source,
        }),
        Err(_) => Err(CallError::Timeout {
            what: what.into(),
            after: CALL_TIMEOUT,
        }),
    }
}

/// Makes the call that `make` builds, as [`call`] does, up to
/// [`RETRY_ATTEMPTS`] times while it fails transiently
/// ([`CallError::is_transient`]), waiting [`RETRY_FIRST_WAIT`] and then
/// twice as long each time. The last error if none succeeds; any other
/// error at once. Only for calls that are safe to repeat (reads,
/// server-side applies, and creates whose caller takes 409 as done).
pub async fn call_retrying<T, F, Fut>(what: &str, mut make: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 1;
    loop {
        match call(what, make()).await {
            Err(e) if e.is_transient() && attempt < RETRY_ATTEMPTS => {
                tokio::time::sleep(crate::backoff(RETRY_FIRST_WAIT, attempt)).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("answered", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    fn connection_error() -> kube::Error {
        kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client error (SendRequest)",
        )))
    }

    #[test]
    fn transient_errors_are_those_worth_a_second_try() {
        let api = |source| CallError::Api {
            what: "applying".into(),
            source,
        };
        for code in [429, 500, 503, 504] {
            assert!(api(api_error(code)).is_transient(), "{code}");
        }
        for code in [400, 403, 404, 409, 422] {
            assert!(!api(api_error(code)).is_transient(), "{code}");
        }
        assert!(api(connection_error()).is_transient());
        let undecodable = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(!api(kube::Error::SerdeError(undecodable)).is_transient());
        let timeout = CallError::Timeout {
            what: "applying".into(),
            after: CALL_TIMEOUT,
        };
        assert!(timeout.is_transient());
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_tried_again_after_a_growing_wait() {
        let tries = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let res = call_retrying("creating the node", || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0 => Err(connection_error()),
                1 => Err(api_error(503)),
                _ => Ok("created"),
            }
        })
        .await;
        assert_eq!(res.unwrap(), "created");
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert_eq!(started.elapsed(), RETRY_FIRST_WAIT * 3, "0.5 s, then 1 s");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_not_tried_again_and_retries_are_bounded() {
        let tries = AtomicU32::new(0);
        let res: Result<(), _> = call_retrying("creating the node", || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(api_error(409))
        })
        .await;
        assert_eq!(res.unwrap_err().code(), Some(409));
        assert_eq!(tries.load(Ordering::SeqCst), 1);

        let tries = AtomicU32::new(0);
        let res: Result<(), _> = call_retrying("applying the CRD", || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(connection_error())
        })
        .await;
        let e = res.unwrap_err();
        assert_eq!(tries.load(Ordering::SeqCst), RETRY_ATTEMPTS);
        assert!(e.is_transient());
        let text = e.to_string();
        assert!(
            text.starts_with("applying the CRD: ") && text.contains("client error (SendRequest)"),
            "{e}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_times_out() {
        let started = tokio::time::Instant::now();
        let res: Result<(), CallError> = call("reading the Link", std::future::pending()).await;
        let err = res.unwrap_err();
        assert!(
            matches!(&err, CallError::Timeout { after, .. } if *after == CALL_TIMEOUT),
            "{err:?}"
        );
        assert_eq!(started.elapsed(), CALL_TIMEOUT);
        assert_eq!(err.reason(), "timeout");
        assert_eq!(err.code(), None);
        assert!(
            err.to_string().starts_with("reading the Link: timed out"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn api_errors_keep_their_code() {
        let status = kube::core::Status::failure("changed", "Conflict").with_code(409);
        let res: Result<(), CallError> = call("patching the split", async {
            Err(kube::Error::Api(status.boxed()))
        })
        .await;
        let e = res.unwrap_err();
        assert_eq!(e.code(), Some(409));
        assert_eq!(e.reason(), "conflict");
        assert!(e.to_string().starts_with("patching the split: "), "{e}");
    }
}

//! Every API call the controller makes is bounded in time and fails with one
//! typed error, so that a call the network black-holes can never hold the
//! single writer.

use std::{future::Future, time::Duration};

/// The longest any one API call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Backoff never waits longer than this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },

    #[error("{op} failed: {source}")]
    Api {
        op: &'static str,
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

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::Timeout { .. } => "timeout",
            CallError::Api { .. } if self.code() == Some(409) => "conflict",
            CallError::Api { .. } => "api",
        }
    }
}

/// Runs one API call, `op` naming it in errors, bounded by [`CALL_TIMEOUT`].
pub async fn call<T>(
    op: &'static str,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(CallError::Api { op, source }),
        Err(_) => Err(CallError::Timeout {
            op,
            after: CALL_TIMEOUT,
        }),
    }
}

/// `first` for attempt 1, doubling with each further attempt, at most 30s.
pub fn backoff(first: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    first.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let first = Duration::from_millis(100);
        assert_eq!(backoff(first, 0), first);
        assert_eq!(backoff(first, 1), first);
        assert_eq!(backoff(first, 2), Duration::from_millis(200));
        assert_eq!(backoff(first, 5), Duration::from_millis(1600));
        assert_eq!(backoff(first, 50), MAX_BACKOFF);
        assert_eq!(
            backoff(Duration::from_millis(10), 3),
            Duration::from_millis(40)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_times_out() {
        let started = tokio::time::Instant::now();
        let res: Result<(), CallError> = call("get", std::future::pending()).await;
        assert!(
            matches!(res, Err(CallError::Timeout { op: "get", after }) if after == CALL_TIMEOUT),
            "{res:?}"
        );
        assert_eq!(started.elapsed(), CALL_TIMEOUT);
        assert_eq!(res.unwrap_err().reason(), "timeout");
    }

    #[tokio::test]
    async fn api_errors_keep_their_code() {
        let status = kube::core::Status::failure("changed", "Conflict").with_code(409);
        let res: Result<(), CallError> =
            call("patch", async { Err(kube::Error::Api(status.boxed())) }).await;
        let e = res.unwrap_err();
        assert_eq!(e.code(), Some(409));
        assert_eq!(e.reason(), "conflict");
        assert!(e.to_string().starts_with("patch failed"), "{e}");
    }
}

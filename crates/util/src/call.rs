//! Every API call a controller makes is bounded in time and fails with one
//! typed error that keeps the server's HTTP code, so that a call the network
//! black-holes can never hold a writer, and a caller can tell a conflict
//! from a missing object without matching on strings.

use std::{future::Future, time::Duration};

/// The longest any one API call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

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

#[cfg(test)]
mod tests {
    use super::*;

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

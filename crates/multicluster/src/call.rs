//! One API call, bounded: a timeout, or the API's answer with its HTTP code.

use std::{future::Future, time::Duration};

use crate::remote::{error_chain, status_code};

/// Every API call is bounded.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call failed, with what it was doing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("{what}: timed out")]
    Timeout { what: String },
    #[error("{what}: {message}")]
    Failed {
        what: String,
        /// The HTTP status, when the server answered.
        code: Option<u16>,
        message: String,
    },
}

impl CallError {
    /// The HTTP status, when the server answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Timeout { .. } => None,
            Self::Failed { code, .. } => *code,
        }
    }
}

/// Runs `fut` within [`CALL_TIMEOUT`]; `what` says what it does, for the
/// error.
pub async fn call<T>(
    what: impl Into<String>,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CallError::Failed {
            what: what.into(),
            code: status_code(&e),
            message: error_chain(&e),
        }),
        Err(_) => Err(CallError::Timeout { what: what.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_times_out() {
        let err = call(
            "reading the Link",
            std::future::pending::<Result<(), kube::Error>>(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "reading the Link: timed out");
        assert_eq!(err.code(), None);
    }

    #[tokio::test]
    async fn an_api_error_keeps_its_code() {
        let status = kube::core::Status::failure("services \"x\" already exists", "AlreadyExists")
            .with_code(409);
        let err = call("creating the mirror", async {
            Err::<(), _>(kube::Error::Api(Box::new(status)))
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), Some(409));
        assert!(
            err.to_string().starts_with("creating the mirror: "),
            "{err}"
        );
    }
}

//! The TokenReview of a workload's token: one call (two when the token has
//! no audience), judged by a pure function.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::{Api, Client, api::PostParams};
use tandem_identity::certify::CertifyError;

/// How long one TokenReview may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// What a review's status says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Authenticated as this user.
    User(String),
    /// Refused for its audience: Linkerd retries without one, for tokens
    /// minted before audiences were set.
    RetryWithoutAudience,
    /// Not authenticated.
    Refused(String),
}

/// Judges a review's status; `with_audience` says whether it asked for one.
pub(crate) fn judge(status: Option<&TokenReviewStatus>, with_audience: bool) -> Verdict {
    let Some(status) = status else {
        return Verdict::Refused("the TokenReview has no status".into());
    };
    let error = status.error.clone().unwrap_or_default();
    if with_audience && error.contains("token audiences") {
        return Verdict::RetryWithoutAudience;
    }
    if !error.is_empty() {
        return Verdict::Refused(error);
    }
    if status.authenticated != Some(true) {
        return Verdict::Refused("the token is not authenticated".into());
    }
    match status.user.as_ref().and_then(|u| u.username.clone()) {
        Some(user) if !user.is_empty() => Verdict::User(user),
        _ => Verdict::Refused("the TokenReview names no user".into()),
    }
}

/// Reviews `token` for `audience` and returns its user.
pub(crate) async fn review(
    client: &Client,
    token: &str,
    audience: &str,
) -> Result<String, CertifyError> {
    let first = call(client, token, Some(audience)).await?;
    let status = match judge(first.status.as_ref(), true) {
        Verdict::RetryWithoutAudience => call(client, token, None).await?.status,
        _ => first.status,
    };
    match judge(status.as_ref(), false) {
        Verdict::User(user) => Ok(user),
        Verdict::Refused(reason) => Err(CertifyError::TokenRefused { reason }),
        Verdict::RetryWithoutAudience => Err(CertifyError::TokenRefused {
            reason: "the token's audience is refused".into(),
        }),
    }
}

async fn call(
    client: &Client,
    token: &str,
    audience: Option<&str>,
) -> Result<TokenReview, CertifyError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: audience.map(|a| vec![a.to_string()]),
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let fail = |reason: String| CertifyError::Review { reason };
    tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
        .await
        .map_err(|_| fail(format!("no answer within {REVIEW_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(
        authenticated: Option<bool>,
        user: Option<&str>,
        error: Option<&str>,
    ) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated,
            user: user.map(|u| UserInfo {
                username: Some(u.into()),
                ..Default::default()
            }),
            error: error.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn verdicts() {
        let sa = "system:serviceaccount:ns:a";
        let aud = "[invalid bearer token, token audiences [\"api\"] is invalid for the target audiences [\"identity.l5d.io\"]]";
        let refused = |s: &str| Verdict::Refused(s.into());
        let cases = [
            (
                Some(status(Some(true), Some(sa), None)),
                true,
                Verdict::User(sa.into()),
            ),
            (
                Some(status(Some(true), Some(sa), None)),
                false,
                Verdict::User(sa.into()),
            ),
            (
                Some(status(Some(false), None, Some(aud))),
                true,
                Verdict::RetryWithoutAudience,
            ),
            (
                Some(status(Some(false), None, Some(aud))),
                false,
                refused(aud),
            ),
            (
                Some(status(Some(false), None, Some("invalid bearer token"))),
                true,
                refused("invalid bearer token"),
            ),
            (
                Some(status(Some(false), None, None)),
                true,
                refused("the token is not authenticated"),
            ),
            (
                Some(status(None, Some(sa), None)),
                true,
                refused("the token is not authenticated"),
            ),
            (
                Some(status(Some(true), None, None)),
                true,
                refused("the TokenReview names no user"),
            ),
            (
                Some(status(Some(true), Some(""), None)),
                true,
                refused("the TokenReview names no user"),
            ),
            (None, true, refused("the TokenReview has no status")),
        ];
        for (i, (status, with_audience, want)) in cases.into_iter().enumerate() {
            assert_eq!(judge(status.as_ref(), with_audience), want, "case {i}");
        }
    }
}

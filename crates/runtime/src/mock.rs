//! A kube [`Client`] whose requests an in-process handler answers, for the
//! unit tests of the parts of a controller that call the API (its writer):
//! no cluster, no socket. Only with the `mock` feature, which only
//! dev-dependencies turn on.

use std::{convert::Infallible, sync::Arc};

use http::{HeaderValue, Method, Request, Response, StatusCode, header::CONTENT_TYPE};
use kube::{Client, client::Body};
use serde_json::Value;

/// How the API answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status, with this JSON body.
    Json(u16, Value),
    /// No answer ever, as from an API server the network black-holes.
    Hang,
}

impl Reply {
    pub fn json(code: u16, body: Value) -> Self {
        Reply::Json(code, body)
    }
}

/// A client whose every request `handler` answers, from its method, its
/// path (without the query) and its body, if that is JSON.
pub fn client(
    handler: impl Fn(&Method, &str, Option<Value>) -> Reply + Send + Sync + 'static,
) -> Client {
    let handler = Arc::new(handler);
    let service = tower::service_fn(move |req: Request<Body>| {
        let handler = handler.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let json = serde_json::from_slice(&bytes).ok();
            let (code, body) = match handler(&parts.method, parts.uri.path(), json) {
                Reply::Json(code, body) => (code, body),
                Reply::Hang => std::future::pending().await,
            };
            let mut resp = Response::new(Body::from(serde_json::to_vec(&body).unwrap_or_default()));
            *resp.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok::<_, Infallible>(resp)
        }
    });
    Client::new(service, "default")
}

/// A `Status` object as the API server sends with an error: `code` and its
/// `reason` (`NotFound`, `AlreadyExists`, `Conflict`...).
pub fn status(code: u16, reason: &str) -> Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code,
    })
}

//! A kube [`Client`] over an in-process handler, for unit tests of the
//! parts that call the API: no cluster, no socket.

use std::{convert::Infallible, sync::Arc};

use http::{Method, Request, Response};
use kube::{Client, client::Body};
use serde_json::Value;

/// What the API answers to one request.
pub enum Reply {
    /// A status and a JSON body.
    Json(u16, Value),
    /// Never an answer, as when the network black-holes the call.
    Hang,
}

impl Reply {
    pub fn json(code: u16, body: Value) -> Self {
        Reply::Json(code, body)
    }
}

/// A client whose every request `handler` answers from the method, the
/// path and the JSON body.
pub fn client(
    handler: impl Fn(&Method, &str, Option<Value>) -> Reply + Send + Sync + 'static,
) -> Client {
    let handler = Arc::new(handler);
    let service = tower::service_fn(move |req: Request<Body>| {
        let handler = handler.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect_bytes().await.unwrap_or_default();
            let json = serde_json::from_slice(&body).ok();
            match handler(&parts.method, parts.uri.path(), json) {
                Reply::Json(code, v) => {
                    let mut resp =
                        Response::new(Body::from(serde_json::to_vec(&v).unwrap_or_default()));
                    *resp.status_mut() = http::StatusCode::from_u16(code)
                        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(resp)
                }
                Reply::Hang => std::future::pending().await,
            }
        }
    });
    Client::new(service, "default")
}

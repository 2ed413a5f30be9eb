//! One HTTP request through the gateway: its target, the rules, then an
//! endpoint per try (another when a connection failed before a response).

use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use tandem_meshtls::{
    Name,
    gateway::{Ask, Refusal, Target},
};
use tokio::time::Instant;

use super::{Gateway, MAX_TRIES, Reason};
use crate::http::{
    Body, ReqBody, authority_of, error_response, is_undelivered, never_delivered, record_error,
    record_response, retry_is_safe, strip_hop_by_hop, undelivered_response,
};

/// The port of an authority that names none.
const DEFAULT_HTTP_PORT: u16 = 80;

/// The status a refused request gets.
pub fn status_of(r: &Refusal) -> StatusCode {
    match r {
        Refusal::NoName | Refusal::BadAuthority { .. } => StatusCode::BAD_REQUEST,
        Refusal::Loop { .. } => StatusCode::BAD_GATEWAY,
        Refusal::NoClientIdentity
        | Refusal::NotInSuffixes { .. }
        | Refusal::NotAService { .. }
        | Refusal::NotExported { .. } => StatusCode::FORBIDDEN,
    }
}

impl Gateway {
    pub(super) async fn http_request(
        self,
        target: Option<Target>,
        client: Option<Name>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let start = Instant::now();
        let (mut parts, body) = req.into_parts();
        let target = match target {
            Some(t) => Ok(t),
            None => match authority_of(&parts) {
                Some(a) => Target::from_authority(&a, DEFAULT_HTTP_PORT),
                None => Err(Refusal::NoName),
            },
        };
        let forwarded: Vec<&str> = parts
            .headers
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let decision = target.and_then(|target| {
            self.decide(&Ask {
                target,
                client_id: client.as_ref(),
                forwarded: &forwarded,
            })
        });
        let fwd = match decision {
            Ok(f) => f,
            Err(r) => {
                self.refuse(Reason::of_refusal(&r), client.as_ref(), &r);
                return error_response(status_of(&r), &r.to_string());
            }
        };
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove("l5d-client-id");
        let Ok(element) = HeaderValue::from_str(&fwd.forwarded) else {
            return error_response(StatusCode::BAD_REQUEST, "bad Forwarded element");
        };
        parts.headers.append(header::FORWARDED, element);
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let Ok(uri) = Uri::builder()
            .scheme("http")
            .authority(fwd.authority.as_str())
            .path_and_query(path)
            .build()
        else {
            return error_response(StatusCode::BAD_REQUEST, "bad request path");
        };
        parts.uri = uri;
        if parts.version != Version::HTTP_2
            && let Ok(host) = HeaderValue::from_str(&fwd.authority)
        {
            parts.headers.insert(header::HOST, host);
        }
        let mut body = ReqBody::new(body);
        let backends = &self.0.backends;
        let metrics = backends.metrics();
        let mut tried = vec![];
        let mut last_error = format!("no endpoints for {}", fwd.authority);
        let mut last_labels = None;
        // Whether a try may have reached an application.
        let mut delivered_maybe = false;
        for _ in 0..MAX_TRIES {
            let slot = match backends.pick(&fwd.authority, &tried).await {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(error) => {
                    last_error = error.to_string();
                    break;
                }
            };
            let Some(b) = body.take() else { break };
            let labels = slot.target.labels();
            let begun = slot.start();
            match slot
                .client
                .request(Request::from_parts(parts.clone(), b))
                .await
            {
                // The endpoint's application never saw it: another
                // endpoint may take it.
                Ok(rsp) if is_undelivered(&rsp) && body.can_retry() => {
                    slot.done(begun, false);
                    last_error = format!(
                        "endpoint {}: the application refused the connection",
                        slot.ep.addr
                    );
                    tried.push(slot.ep.addr);
                    last_labels = Some(labels);
                }
                Ok(rsp) => {
                    slot.done(begun, true);
                    self.0.metrics.forwarded("http");
                    return record_response(metrics, labels, rsp, start.elapsed());
                }
                Err(error) => {
                    slot.done(begun, false);
                    delivered_maybe |= !never_delivered(&error);
                    last_error = format!("endpoint {} failed: {error}", slot.ep.addr);
                    if error.blames_endpoint() {
                        tried.push(slot.ep.addr);
                    }
                    last_labels = Some(labels);
                    // The endpoint may have acted on it: one answer, not two.
                    if !retry_is_safe(&parts.method, &error) {
                        break;
                    }
                }
            }
        }
        self.refuse(Reason::Unresolved, client.as_ref(), &last_error);
        // No application saw it (no endpoint, or each refused): 503, and
        // the client's proxy may send it to another backend (e.g. its own
        // cluster's, at a failback). Otherwise a bad gateway.
        let rsp = if delivered_maybe {
            error_response(StatusCode::BAD_GATEWAY, &last_error)
        } else {
            undelivered_response(StatusCode::SERVICE_UNAVAILABLE, &last_error)
        };
        if let Some(labels) = last_labels {
            record_error(metrics, labels, &rsp);
        }
        rsp
    }
}

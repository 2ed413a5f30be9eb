//! One outbound HTTP request: an endpoint per try, retried on another (or on
//! another backend) when the try failed before any response in a way that
//! is safe to repeat (see [`retry_is_safe`]), or the peer's proxy answered
//! that its application never got it; bounded, and only while the body can
//! be sent again (see [`ReqBody`]).

use std::{net::SocketAddr, sync::Arc};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::{
    Ctx,
    endpoint::NoTlsReason,
    http::{
        Body, ReqBody, absolute_uri, error_response, is_undelivered, record_error, record_response,
        retry_is_safe, strip_hop_by_hop,
    },
    metrics::{Direction, Target},
    outbound::router::Router,
};

/// Tries per request: the first and two retries.
pub const MAX_TRIES: usize = 3;

pub async fn handle(ctx: Ctx, router: Arc<Router>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let routes = router.routes();
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let fallback_labels = || {
        Target {
            direction: Direction::Outbound,
            authority: routes.authority.clone(),
            target_addr: router.target,
            tls: crate::endpoint::Tls::Plain {
                reason: NoTlsReason::NotProvidedByServiceDiscovery,
            },
            dst: Default::default(),
        }
        .labels()
    };
    let uri = match absolute_uri(&parts, &router.target.to_string()) {
        Ok(u) => u,
        Err(_) => {
            let rsp = error_response(StatusCode::BAD_REQUEST, "bad request authority");
            record_error(&ctx.metrics, fallback_labels(), &rsp);
            return rsp;
        }
    };
    parts.uri = uri;
    let mut body = ReqBody::new(body);
    let mut tried: Vec<SocketAddr> = vec![];
    let mut last_error = "no endpoints".to_string();
    let mut last_labels = None;
    // Whether every try was refused by a peer proxy for its application.
    let mut undelivered_only = true;
    for _ in 0..MAX_TRIES {
        let Some(slot) = routes.pick(&tried) else {
            break;
        };
        let Some(b) = body.take() else { break };
        let mut labels_target = slot.target.clone();
        labels_target.authority = routes
            .authority
            .clone()
            .or_else(|| crate::http::authority_of(&parts));
        let labels = labels_target.labels();
        let req = Request::from_parts(parts.clone(), b);
        let pending = slot.in_flight();
        match slot.client.request(req).await {
            // The peer's application never saw it: another endpoint may
            // take it, if the body can be sent again.
            Ok(rsp) if is_undelivered(&rsp) && body.can_retry() => {
                pending.failed();
                tracing::debug!(endpoint = %slot.ep.addr, "the peer's application refused it; trying another endpoint");
                last_error = format!(
                    "endpoint {}: the application refused the connection",
                    slot.ep.addr
                );
                tried.push(slot.ep.addr);
                last_labels = Some(labels);
            }
            Ok(rsp) => {
                pending.answered();
                return record_response(&ctx.metrics, labels, rsp, start.elapsed());
            }
            Err(error) => {
                pending.failed();
                undelivered_only = false;
                tracing::debug!(endpoint = %slot.ep.addr, %error, "try failed before a response");
                last_error = format!(
                    "endpoint {} failed: {}",
                    slot.ep.addr,
                    crate::http::error_chain(&error)
                );
                if error.blames_endpoint() {
                    tried.push(slot.ep.addr);
                }
                last_labels = Some(labels);
                // The peer may have acted on it: one answer, not two.
                if !retry_is_safe(&parts.method, &error) {
                    break;
                }
            }
        }
    }
    // Nothing to try, or no application to take it, is unavailability
    // (503); tries that failed otherwise, a bad gateway.
    let status = if tried.is_empty() || undelivered_only {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    let rsp = error_response(status, &last_error);
    record_error(
        &ctx.metrics,
        last_labels.unwrap_or_else(fallback_labels),
        &rsp,
    );
    rsp
}

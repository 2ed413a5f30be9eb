//! One outbound HTTP request: an endpoint per try, retried on another when
//! the connection failed before any response (bounded, buffered bodies only).

use std::{net::SocketAddr, sync::Arc};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::{
    Ctx,
    endpoint::NoTlsReason,
    http::{
        Body, ReqBody, absolute_uri, error_response, record_error, record_response,
        strip_hop_by_hop,
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
    let mut body = match ReqBody::new(body).await {
        Ok(b) => b,
        Err(_) => return error_response(StatusCode::BAD_REQUEST, "request body failed"),
    };
    let mut tried: Vec<SocketAddr> = vec![];
    let mut last_error = "no endpoints".to_string();
    let mut last_labels = None;
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
            Ok(rsp) => {
                pending.answered();
                return record_response(&ctx.metrics, labels, rsp, start.elapsed());
            }
            Err(error) => {
                pending.failed();
                tracing::debug!(endpoint = %slot.ep.addr, %error, "try failed before a response");
                last_error = format!(
                    "endpoint {} failed: {}",
                    slot.ep.addr,
                    crate::http::error_chain(&error)
                );
                tried.push(slot.ep.addr);
                last_labels = Some(labels);
            }
        }
    }
    // Nothing to try is unavailability (503); tries that all failed, a bad gateway.
    let status = if tried.is_empty() {
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

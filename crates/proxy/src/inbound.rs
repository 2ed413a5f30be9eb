//! The inbound proxy (4143): connections redirected to the workload, served
//! on `127.0.0.1:<original port>`.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::{net::TcpStream, sync::watch, time::Instant};

use crate::{
    Ctx,
    detect::{Detected, detect},
    endpoint::{self, Endpoint, NoTlsReason, OrigDst, Tls},
    http::{
        Body, EndpointClient, ReqBody, absolute_uri, authority_of, error_response, record_error,
        record_response, strip_hop_by_hop,
    },
    io::Counted,
    metrics::{Direction, Peer, Target},
};

#[derive(Clone)]
pub struct Inbound {
    ctx: Ctx,
    orig_dst: OrigDst,
    local: SocketAddr,
    clients: Arc<Mutex<HashMap<u16, EndpointClient>>>,
}

impl Inbound {
    pub fn new(ctx: Ctx, orig_dst: OrigDst, local: SocketAddr) -> Self {
        Inbound {
            ctx,
            orig_dst,
            local,
            clients: Default::default(),
        }
    }

    fn client(&self, port: u16) -> EndpointClient {
        let mut clients = self.clients.lock().unwrap();
        clients
            .entry(port)
            .or_insert_with(|| {
                let ep = Endpoint::forward(local(port));
                let labels = Target {
                    direction: Direction::Inbound,
                    authority: None,
                    target_addr: ep.addr,
                    tls: Tls::Plain {
                        reason: NoTlsReason::Loopback,
                    },
                    dst: Default::default(),
                }
                .tcp_labels(Peer::Dst);
                EndpointClient::new(
                    ep,
                    labels,
                    self.ctx.metrics.clone(),
                    self.ctx.connect_timeout,
                )
            })
            .clone()
    }

    /// Handles one accepted connection to its end.
    pub async fn handle(self, stream: TcpStream, shutdown: watch::Receiver<bool>) {
        let target = match (self.orig_dst)(&stream) {
            Ok(t) => t,
            Err(error) => {
                tracing::warn!(%error, "no original destination; closing");
                return;
            }
        };
        if target.port() == self.local.port() {
            // Direct connections (the gateway's) need mTLS, which comes later.
            tracing::info!(%target, "direct connection to the inbound port refused");
            return;
        }
        let (stream, tls) = match endpoint::accept(stream).await {
            Ok(a) => a,
            Err(error) => {
                tracing::debug!(%error, "accept failed");
                return;
            }
        };
        let src = Target {
            direction: Direction::Inbound,
            authority: None,
            target_addr: target,
            tls: tls.clone(),
            dst: Default::default(),
        };
        let (guard, read, write) = self.ctx.metrics.tcp(src.tcp_labels(Peer::Src));
        let io = Counted::new(stream, read, write).with_guard(guard);
        let (proto, mut io) = match detect(io, self.ctx.detect_timeout).await {
            Ok(d) => d,
            Err(_) => return,
        };
        match proto {
            Detected::Opaque => {
                let ep = Endpoint::forward(local(target.port()));
                let Ok(stream) = endpoint::connect(&ep, self.ctx.connect_timeout).await else {
                    tracing::info!(port = target.port(), "nothing listens on the target port");
                    return;
                };
                let mut labels = src.clone();
                labels.target_addr = ep.addr;
                let (guard, read, write) = self.ctx.metrics.tcp(labels.tcp_labels(Peer::Dst));
                let mut dst = Counted::new(stream, read, write).with_guard(guard);
                let _ = tokio::io::copy_bidirectional(&mut io, &mut dst).await;
            }
            Detected::Http1 | Detected::H2 => {
                let client = self.client(target.port());
                let metrics_target = src;
                let ctx = self.ctx.clone();
                let handle =
                    move |req| forward(ctx.clone(), client.clone(), metrics_target.clone(), req);
                crate::http::serve(io, proto, handle, shutdown).await
            }
        }
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

async fn forward(
    ctx: Ctx,
    client: EndpointClient,
    mut target: Target,
    req: Request<Incoming>,
) -> Response<Body> {
    let start = Instant::now();
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove("l5d-client-id");
    if let Tls::Mesh { client_id } = &target.tls
        && let Ok(v) = HeaderValue::from_str(client_id.as_str())
    {
        parts.headers.insert("l5d-client-id", v);
    }
    target.authority = authority_of(&parts);
    let labels = target.labels();
    let Ok(uri) = absolute_uri(&parts, &target.target_addr.to_string()) else {
        let rsp = error_response(StatusCode::BAD_REQUEST, "bad request authority");
        record_error(&ctx.metrics, labels, &rsp);
        return rsp;
    };
    parts.uri = uri;
    let Some(body) = ReqBody::Streaming(Some(body)).take() else {
        return error_response(StatusCode::BAD_REQUEST, "request body failed");
    };
    match client.request(Request::from_parts(parts, body)).await {
        Ok(rsp) => record_response(&ctx.metrics, labels, rsp, start.elapsed()),
        Err(error) => {
            let rsp = error_response(
                StatusCode::BAD_GATEWAY,
                &format!("the application did not answer: {error}"),
            );
            record_error(&ctx.metrics, labels, &rsp);
            rsp
        }
    }
}

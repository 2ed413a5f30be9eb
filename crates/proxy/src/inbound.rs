//! The inbound proxy (4143): connections redirected to the workload, served
//! on `127.0.0.1:<original port>`; mTLS terminated for this proxy's own
//! identity (the client's identity goes to the metrics and, on HTTP
//! requests, to `l5d-client-id`); direct connections in [`crate::direct`].

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use tandem_meshtls::{self as meshtls, ClientAuth, Name};
use tokio::{net::TcpStream, sync::watch, time::Instant};

use crate::{
    Ctx,
    detect::{Detected, detect},
    direct::{self, BoxIo, DirectConn, Gateway, Route},
    endpoint::{self, Endpoint, NoTlsReason, OrigDst, Tls},
    http::{
        Body, EndpointClient, ReqBody, absolute_uri, authority_of, error_response, record_error,
        record_response, resend_stranded_once, strip_hop_by_hop, undelivered_response,
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
    gateway: Gateway,
}

impl Inbound {
    pub fn new(ctx: Ctx, orig_dst: OrigDst, local: SocketAddr) -> Self {
        Inbound {
            ctx,
            orig_dst,
            local,
            clients: Default::default(),
            gateway: None,
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

    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// Sends gateway connections (direct, with a target name) to `gateway`.
    pub fn with_gateway(mut self, gateway: Gateway) -> Self {
        self.gateway = gateway;
        self
    }

    /// Handles one accepted connection to its end.
    ///
    /// With identity on, the first bytes decide: TLS for this proxy's own
    /// name is terminated (a client certificate is optional, except on a
    /// direct connection); TLS for another name is forwarded as it is;
    /// plaintext is allowed to the application's ports (Linkerd's default
    /// policy, `all-unauthenticated`). A direct connection (to the inbound
    /// port itself) must be mTLS with a client identity, else it is refused.
    pub async fn handle(self, stream: TcpStream, shutdown: watch::Receiver<bool>) {
        let target = match (self.orig_dst)(&stream) {
            Ok(t) => t,
            Err(error) => {
                tracing::warn!(%error, "no original destination; closing");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let direct = target.port() == self.local.port();
        let plain = Tls::Plain {
            reason: NoTlsReason::NoTlsFromRemote,
        };
        let Some(tls) = self.ctx.tls.clone() else {
            if direct {
                tracing::info!(%target, "direct connection refused: this proxy has identity disabled");
                return;
            }
            return self.serve(Box::new(stream), plain, target, shutdown).await;
        };
        let (detected, io) = match meshtls::detect(stream, self.ctx.detect_timeout).await {
            Ok(d) => d,
            Err(error) => {
                tracing::debug!(%error, "TLS detection failed");
                return;
            }
        };
        let own = tls.local_name();
        match detected {
            meshtls::Detected::Tls { sni: Some(sni) } if Some(&sni) == own.as_ref() => {
                let auth = if direct {
                    ClientAuth::Required
                } else {
                    ClientAuth::Optional
                };
                let accepted = match tls.server(auth) {
                    Ok(config) => {
                        let accept = meshtls::accept(io, config);
                        tokio::time::timeout(self.ctx.detect_timeout, accept).await
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot terminate TLS");
                        return;
                    }
                };
                let accepted = match accepted {
                    Ok(Ok(a)) => a,
                    Ok(Err(error)) => {
                        tracing::info!(%error, %target, direct, "inbound TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%target, "inbound TLS handshake timed out");
                        return;
                    }
                };
                let alpn = accepted.alpn.clone();
                match (accepted.client_id, direct) {
                    (Some(id), true) => {
                        self.direct(Box::new(accepted.io), alpn, id, target, shutdown)
                            .await
                    }
                    (None, true) => {
                        tracing::info!(%target, "direct connection refused: no client identity");
                    }
                    (Some(id), false) => {
                        let tls = Tls::Mesh { client_id: id };
                        self.serve(Box::new(accepted.io), tls, target, shutdown)
                            .await
                    }
                    (None, false) => {
                        self.serve(Box::new(accepted.io), plain, target, shutdown)
                            .await
                    }
                }
            }
            _ if direct => {
                tracing::info!(%target, "direct connection refused: it must be mTLS to this proxy's identity");
            }
            meshtls::Detected::Tls { .. } => {
                // TLS for another name: the application terminates it.
                self.opaque(Box::new(io), &self.target(plain, target)).await
            }
            meshtls::Detected::Plain => self.serve(Box::new(io), plain, target, shutdown).await,
        }
    }

    fn target(&self, tls: Tls, target: SocketAddr) -> Target {
        Target {
            direction: Direction::Inbound,
            authority: None,
            target_addr: target,
            tls,
            dst: Default::default(),
        }
    }

    /// A direct mTLS connection: to a local port by its transport header,
    /// or to the gateway.
    async fn direct(
        self,
        io: BoxIo,
        alpn: Option<Vec<u8>>,
        client_id: Name,
        target: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        let (header, io) = match direct::read_header(io, alpn.as_deref(), self.ctx.detect_timeout)
            .await
        {
            Ok(h) => h,
            Err(error) => {
                tracing::info!(%error, client = %client_id, "direct connection: bad transport header");
                return;
            }
        };
        match direct::route(header.as_ref()) {
            Route::Local { port } => {
                let local_target = SocketAddr::new(target.ip(), port);
                let tls = Tls::Mesh { client_id };
                self.serve(io, tls, local_target, shutdown).await
            }
            Route::Gateway => match self.gateway.clone() {
                Some(gw) => {
                    let conn = DirectConn {
                        io,
                        client_id,
                        header,
                        target,
                        shutdown,
                    };
                    gw.serve(conn).await
                }
                None => tracing::info!(
                    client = %client_id,
                    name = ?header.and_then(|h| h.name),
                    "direct connection for a gateway refused: this proxy is no gateway"
                ),
            },
        }
    }

    /// Serves a connection for the application's `target` port.
    async fn serve(self, io: BoxIo, tls: Tls, target: SocketAddr, shutdown: watch::Receiver<bool>) {
        let src = self.target(tls, target);
        let (proto, io) = match detect(io, self.ctx.detect_timeout).await {
            Ok(d) => d,
            Err(_) => return,
        };
        match proto {
            Detected::Opaque => self.opaque(Box::new(io), &src).await,
            Detected::Http1 | Detected::H2 => {
                let (guard, read, write) = self.ctx.metrics.tcp(src.tcp_labels(Peer::Src));
                let io = Counted::new(io, read, write).with_guard(guard);
                let client = self.client(target.port());
                let ctx = self.ctx.clone();
                let handle = move |req| forward(ctx.clone(), client.clone(), src.clone(), req);
                crate::http::serve(io, proto, handle, shutdown).await
            }
        }
    }

    /// Copies bytes to the application's port, both ways.
    async fn opaque(&self, io: BoxIo, src: &Target) {
        let (guard, read, write) = self.ctx.metrics.tcp(src.tcp_labels(Peer::Src));
        let mut io = Counted::new(io, read, write).with_guard(guard);
        let ep = Endpoint::forward(local(src.target_addr.port()));
        let Ok(stream) = endpoint::connect(&ep, self.ctx.connect_timeout).await else {
            tracing::info!(port = ep.addr.port(), "nothing listens on the target port");
            return;
        };
        let mut labels = src.clone();
        labels.target_addr = ep.addr;
        let (guard, read, write) = self.ctx.metrics.tcp(labels.tcp_labels(Peer::Dst));
        let mut dst = Counted::new(stream, read, write).with_guard(guard);
        let _ = tokio::io::copy_bidirectional(&mut io, &mut dst).await;
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
    let sent = resend_stranded_once(ReqBody::new(body), &parts, |req| client.request(req)).await;
    match sent {
        Ok(rsp) => record_response(&ctx.metrics, labels, rsp, start.elapsed()),
        // Not connected (the application is stopping, or not listening
        // yet), or not written: the application never saw the request, so
        // the client's proxy may send it elsewhere.
        Err(error) if crate::http::never_delivered(&error) => {
            let rsp = undelivered_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "the application {}: {}",
                    if error.is_connect() {
                        "refused the connection"
                    } else {
                        "never got the request"
                    },
                    crate::http::error_chain(&error)
                ),
            );
            record_error(&ctx.metrics, labels, &rsp);
            rsp
        }
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

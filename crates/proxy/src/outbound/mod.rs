//! The outbound proxy (4140): connections redirected from the workload,
//! sent to their original destination's service by profile, split and
//! balancer, or forwarded as they are.

mod http;
mod router;
mod tcp;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{net::TcpStream, sync::watch};

use crate::{
    Ctx,
    detect::{Detected, detect},
    endpoint::{NoTlsReason, OrigDst, Tls},
    io::Counted,
    metrics::{Direction, Peer, Target},
};

pub use router::Router;

#[derive(Clone)]
pub struct Outbound {
    ctx: Ctx,
    orig_dst: OrigDst,
    local: SocketAddr,
    routers: Arc<Mutex<HashMap<SocketAddr, Arc<Router>>>>,
}

impl Outbound {
    pub fn new(ctx: Ctx, orig_dst: OrigDst, local: SocketAddr) -> Self {
        Outbound {
            ctx,
            orig_dst,
            local,
            routers: Default::default(),
        }
    }

    /// The router of `target`, shared by all its connections.
    async fn router(&self, target: SocketAddr) -> Arc<Router> {
        if let Some(r) = self.routers.lock().unwrap().get(&target) {
            return r.clone();
        }
        let r = Arc::new(Router::new(self.ctx.clone(), target).await);
        self.routers
            .lock()
            .unwrap()
            .entry(target)
            .or_insert(r)
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
        if target == self.local {
            tracing::warn!(%target, "connection to the outbound listener itself; closing (loop)");
            return;
        }
        let _ = stream.set_nodelay(true);
        let src = Target {
            direction: Direction::Outbound,
            authority: None,
            target_addr: target,
            tls: Tls::Plain {
                reason: NoTlsReason::Loopback,
            },
            dst: Default::default(),
        };
        let (guard, read, write) = self.ctx.metrics.tcp(src.tcp_labels(Peer::Src));
        let io = Counted::new(stream, read, write).with_guard(guard);
        let (proto, io) = match detect(io, self.ctx.detect_timeout).await {
            Ok(d) => d,
            Err(error) => {
                tracing::debug!(%error, "connection failed during detection");
                return;
            }
        };
        let router = self.router(target).await;
        match proto {
            Detected::Opaque => tcp::forward(&self.ctx, &router, io).await,
            Detected::Http1 | Detected::H2 => {
                let ctx = self.ctx.clone();
                let handle = move |req| http::handle(ctx.clone(), router.clone(), req);
                crate::http::serve(io, proto, handle, shutdown).await
            }
        }
    }
}

//! The outbound proxy (4140): connections redirected from the workload,
//! sent to their original destination's service by profile, split and
//! balancer, or forwarded as they are.

mod http;
mod router;
mod tcp;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tokio::{net::TcpStream, sync::watch, time::Instant};

use crate::{
    Ctx,
    detect::{Detected, detect},
    endpoint::{NoTlsReason, OrigDst, Tls},
    io::Counted,
    metrics::{Direction, Peer, Target},
};

pub use router::Router;

/// The routers of the targets in use, and when each was last asked for.
type Routers = Mutex<HashMap<SocketAddr, (Arc<Router>, Instant)>>;

#[derive(Clone)]
pub struct Outbound {
    ctx: Ctx,
    orig_dst: OrigDst,
    local: SocketAddr,
    routers: Arc<Routers>,
}

impl Outbound {
    /// Routers no connection has used for `idle` are dropped, and with them
    /// their discovery streams.
    pub fn new(ctx: Ctx, orig_dst: OrigDst, local: SocketAddr, idle: Duration) -> Self {
        let routers: Arc<Routers> = Default::default();
        tokio::spawn(sweep(Arc::downgrade(&routers), idle));
        Outbound {
            ctx,
            orig_dst,
            local,
            routers,
        }
    }

    /// The router of `target`, shared by all its connections.
    async fn router(&self, target: SocketAddr) -> Arc<Router> {
        if let Some((r, used)) = self.routers.lock().unwrap().get_mut(&target) {
            *used = Instant::now();
            return r.clone();
        }
        let r = Arc::new(Router::new(self.ctx.clone(), target).await);
        let mut routers = self.routers.lock().unwrap();
        let entry = routers.entry(target).or_insert((r, Instant::now()));
        entry.0.clone()
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

/// Drops the routers that no connection holds and none asked for within
/// `idle`; ends with the outbound proxy.
async fn sweep(routers: Weak<Routers>, idle: Duration) {
    let mut tick = tokio::time::interval((idle / 2).max(Duration::from_millis(10)));
    loop {
        tick.tick().await;
        let Some(routers) = routers.upgrade() else {
            return;
        };
        let now = Instant::now();
        routers.lock().unwrap().retain(|target, (router, used)| {
            let keep = Arc::strong_count(router) > 1 || now.duration_since(*used) < idle;
            if !keep {
                tracing::debug!(%target, "router idle; dropped");
            }
            keep
        });
    }
}

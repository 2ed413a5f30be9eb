//! Opaque outbound TCP: an endpoint by split and balancer (another on a
//! failed connect), then bytes copied both ways.

use std::{net::SocketAddr, sync::atomic::Ordering};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    Ctx, connect,
    http::log_tls_failure,
    io::Counted,
    metrics::Peer,
    outbound::{http::MAX_TRIES, router::Router},
};

pub async fn forward<I>(ctx: &Ctx, router: &Router, mut io: I)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let routes = router.routes();
    let mut tried: Vec<SocketAddr> = vec![];
    for _ in 0..MAX_TRIES {
        let Some(slot) = routes.pick(&tried) else {
            break;
        };
        let conn = connect::connect(&slot.ep, ctx.tls.as_ref(), None, ctx.connect_timeout);
        match conn.await {
            Ok(stream) => {
                slot.tls_failing.store(false, Ordering::Relaxed);
                let (guard, read, write) = ctx.metrics.tcp(slot.target.tcp_labels(Peer::Dst));
                let mut dst = Counted::new(stream, read, write).with_guard(guard);
                if let Err(error) = tokio::io::copy_bidirectional(&mut io, &mut dst).await {
                    tracing::debug!(%error, endpoint = %slot.ep.addr, "opaque connection ended");
                }
                return;
            }
            Err(error) => {
                if error.is_tls() {
                    log_tls_failure(&slot.tls_failing, &error);
                }
                tracing::debug!(%error, endpoint = %slot.ep.addr, "connect failed");
                tried.push(slot.ep.addr);
            }
        }
    }
    tracing::info!(target = %router.target, "no endpoint reachable; closing the connection");
}

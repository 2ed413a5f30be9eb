//! Direct connections: those addressed to the inbound port itself (4143)
//! rather than redirected there, as Linkerd's `inbound/src/direct.rs`.
//!
//! They must be mTLS with a client identity (the inbound path refuses the
//! rest). With ALPN `transport.l5d.io/v1` they start with a transport header:
//! - no `name`: the connection is for this pod's `port` (an opaque-transport
//!   client proxy), served as any inbound connection to that port;
//! - a `name`: the connection is for the multicluster gateway, handed to the
//!   [`GatewayHandler`] (refused when this proxy has none).
//!
//! Without the ALPN the connection goes to the gateway too (which then
//! routes by the HTTP authority).

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use tandem_meshtls::{
    Name, TRANSPORT_ALPN,
    transport_header::{self, Header},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};

/// Any connection's byte stream, boxed.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// A direct mTLS connection for the gateway.
pub struct DirectConn {
    /// The decrypted stream, after the transport header if there was one.
    pub io: BoxIo,
    /// The client's identity (always present: direct connections need one).
    pub client_id: Name,
    /// The transport header, if the client sent one.
    pub header: Option<Header>,
    /// The address the client connected to (this proxy's inbound address).
    pub target: SocketAddr,
    /// Flips to `true` when the proxy shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// Where gateway connections go; the gateway module implements it.
pub trait GatewayHandler: Send + Sync + 'static {
    fn serve(&self, conn: DirectConn) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

pub type Gateway = Option<Arc<dyn GatewayHandler>>;

/// What a direct connection is for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// This pod's port, on loopback.
    Local { port: u16 },
    /// The gateway.
    Gateway,
}

/// The route of a direct connection by its header (pure).
pub fn route(header: Option<&Header>) -> Route {
    match header {
        Some(Header {
            name: None, port, ..
        }) => Route::Local { port: *port },
        _ => Route::Gateway,
    }
}

/// Reads the transport header when ALPN agreed on it.
pub async fn read_header(
    io: BoxIo,
    alpn: Option<&[u8]>,
    timeout: Duration,
) -> Result<(Option<Header>, BoxIo), transport_header::ReadError> {
    if alpn != Some(TRANSPORT_ALPN) {
        return Ok((None, io));
    }
    let (header, io) = transport_header::read(io, timeout).await?;
    Ok((header, Box::new(io)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let name: Name = "emoji-svc.emojivoto.svc.cluster.local".parse().unwrap();
        let header = |name: Option<Name>| Header {
            port: 8080,
            name,
            protocol: None,
        };
        assert_eq!(route(Some(&header(None))), Route::Local { port: 8080 });
        assert_eq!(route(Some(&header(Some(name)))), Route::Gateway);
        assert_eq!(route(None), Route::Gateway);
    }

    #[tokio::test]
    async fn the_header_is_read_only_with_the_alpn() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let header = Header {
            port: 8080,
            name: None,
            protocol: None,
        };
        let mut bytes = transport_header::encode(&header);
        bytes.extend_from_slice(b"rest");
        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(&bytes).await.unwrap();
        drop(a);
        let t = Duration::from_secs(1);
        let (got, mut io) = read_header(Box::new(b), Some(TRANSPORT_ALPN), t)
            .await
            .unwrap();
        assert_eq!(got, Some(header));
        let mut rest = String::new();
        io.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "rest");

        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (got, mut io) = read_header(Box::new(b), Some(b"h2"), t).await.unwrap();
        assert_eq!(got, None);
        let mut first = [0u8; 3];
        io.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"GET");
    }
}

//! Outbound connections to an endpoint, as Linkerd's proxy opens them:
//!
//! 1. An endpoint with an identity, and a proxy with identity on: mTLS with
//!    SNI = that identity, its certificate verified against the anchors.
//! 2. A gateway (`authority_override`): ALPN `transport.l5d.io/v1` and a
//!    transport header `{name, port}` from the override.
//! 3. An opaque endpoint with `opaque_transport.inbound_port`: the connection
//!    goes to that port, with ALPN and a header `{port}` (the original port).
//! 4. Anything else: plain TCP.
//!
//! [`plan`] decides (pure); [`connect`] does it.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tandem_meshtls::{
    HandshakeError, Name, TRANSPORT_ALPN, Tls, TlsError,
    transport_header::{self, Header, SessionProtocol},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

use crate::endpoint::{Endpoint, Protocol};

/// How to reach one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Where the TCP connection goes.
    pub addr: SocketAddr,
    /// The server identity to open mTLS with, if any.
    pub identity: Option<Name>,
    /// The transport header to write once ALPN agreed on it.
    pub header: Option<Header>,
}

/// The connection plan for `ep`; `mesh` says whether this proxy has
/// identity on. `protocol` is what the client will speak (for the header).
pub fn plan(ep: &Endpoint, mesh: bool, protocol: Option<SessionProtocol>) -> Plan {
    let plain = Plan {
        addr: ep.addr,
        identity: None,
        header: None,
    };
    let Some(identity) = ep.identity.clone().filter(|_| mesh) else {
        return plain;
    };
    if let Some(authority) = &ep.authority_override {
        let with_port = authority
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)));
        let (host, port) = with_port.unwrap_or((authority.as_str(), ep.addr.port()));
        // An override that is not a DNS name gets no header: the gateway
        // then routes by the HTTP authority.
        let name: Option<Name> = host.trim_end_matches('.').parse().ok();
        return Plan {
            addr: ep.addr,
            identity: Some(identity),
            header: name.map(|name| Header {
                port,
                name: Some(name),
                protocol,
            }),
        };
    }
    if let (Protocol::Opaque, Some(inbound)) = (ep.hint, ep.opaque_transport) {
        return Plan {
            addr: SocketAddr::new(ep.addr.ip(), inbound),
            identity: Some(identity),
            header: Some(Header {
                port: ep.addr.port(),
                name: None,
                protocol,
            }),
        };
    }
    Plan {
        identity: Some(identity),
        ..plain
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("mTLS to {addr} is not possible: {source}")]
    NoTls {
        addr: SocketAddr,
        #[source]
        source: TlsError,
    },
    #[error("mTLS to {addr} ({identity}) failed: {source}")]
    Handshake {
        addr: SocketAddr,
        identity: Name,
        #[source]
        source: HandshakeError,
    },
    #[error("{addr} did not agree on ALPN transport.l5d.io/v1, so no transport header can be sent")]
    NoTransportAlpn { addr: SocketAddr },
    #[error("writing the transport header to {addr}: {source}")]
    Header {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    /// A TLS failure (wrong identity, untrusted root, ...) rather than an
    /// unreachable address.
    pub fn is_tls(&self) -> bool {
        matches!(
            self,
            ConnectError::Handshake { .. }
                | ConnectError::NoTls { .. }
                | ConnectError::NoTransportAlpn { .. }
        )
    }
}

impl From<ConnectError> for io::Error {
    fn from(e: ConnectError) -> io::Error {
        match e {
            ConnectError::Tcp { source, .. } => source,
            ConnectError::Timeout { .. } => io::Error::new(io::ErrorKind::TimedOut, e),
            e => io::Error::other(e),
        }
    }
}

/// Opens a connection to `ep` by its [`plan`]; `tls` is `None` when
/// identity is disabled.
pub async fn connect(
    ep: &Endpoint,
    tls: Option<&Tls>,
    protocol: Option<SessionProtocol>,
    timeout: Duration,
) -> Result<Conn, ConnectError> {
    let plan = plan(ep, tls.is_some(), protocol);
    let addr = plan.addr;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout { addr, timeout })?
        .map_err(|source| ConnectError::Tcp { addr, source })?;
    let _ = tcp.set_nodelay(true);
    let (Some(identity), Some(tls)) = (plan.identity, tls) else {
        return Ok(Conn::Plain(tcp));
    };
    let config = tls
        .client()
        .map_err(|source| ConnectError::NoTls { addr, source })?;
    let alpn: &[&[u8]] = if plan.header.is_some() {
        &[TRANSPORT_ALPN]
    } else {
        &[]
    };
    let handshake = tandem_meshtls::connect(tcp, config, &identity, alpn);
    let mut io = match tokio::time::timeout(timeout, handshake).await {
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
        Ok(Err(source)) => {
            return Err(ConnectError::Handshake {
                addr,
                identity,
                source,
            });
        }
        Ok(Ok(io)) => io,
    };
    if let Some(header) = plan.header {
        if io.get_ref().1.alpn_protocol() != Some(TRANSPORT_ALPN) {
            return Err(ConnectError::NoTransportAlpn { addr });
        }
        let written = async {
            transport_header::write(&mut io, &header).await?;
            io.flush().await
        };
        written
            .await
            .map_err(|source| ConnectError::Header { addr, source })?;
    }
    Ok(Conn::Tls(Box::new(io)))
}

// === impl Conn ===

/// An outbound connection: plain TCP or mTLS over it.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMOJI: &str = "emoji.emojivoto.serviceaccount.identity.tandem.cluster.local";

    fn ep(identity: bool) -> Endpoint {
        let mut ep = Endpoint::forward("10.1.0.7:8080".parse().unwrap());
        ep.identity = identity.then(|| EMOJI.parse().unwrap());
        ep
    }

    #[test]
    fn plans() {
        let emoji: Name = EMOJI.parse().unwrap();
        let mut gateway = ep(true);
        gateway.addr = "172.18.0.9:4143".parse().unwrap();
        gateway.authority_override = Some("emoji-svc.emojivoto.svc.cluster.local:8080".into());
        let mut gateway_no_port = gateway.clone();
        gateway_no_port.authority_override = Some("emoji-svc.emojivoto.svc.cluster.local".into());
        let mut opaque = ep(true);
        opaque.hint = Protocol::Opaque;
        opaque.opaque_transport = Some(4143);
        let mut opaque_no_port = opaque.clone();
        opaque_no_port.opaque_transport = None;
        let mut opaque_no_id = opaque.clone();
        opaque_no_id.identity = None;
        let svc: Name = "emoji-svc.emojivoto.svc.cluster.local".parse().unwrap();
        let (with_id, no_id) = (ep(true), ep(false));
        let h1 = Some(SessionProtocol::Http1);
        let cases: Vec<(&str, &Endpoint, bool, Plan)> = vec![
            (
                "identity: mTLS to the address",
                &with_id,
                true,
                Plan {
                    addr: ep(true).addr,
                    identity: Some(emoji.clone()),
                    header: None,
                },
            ),
            (
                "no identity: plain",
                &no_id,
                true,
                Plan {
                    addr: ep(false).addr,
                    identity: None,
                    header: None,
                },
            ),
            (
                "identity disabled here: plain",
                &with_id,
                false,
                Plan {
                    addr: ep(true).addr,
                    identity: None,
                    header: None,
                },
            ),
            (
                "gateway: header with the override's name and port",
                &gateway,
                true,
                Plan {
                    addr: gateway.addr,
                    identity: Some(emoji.clone()),
                    header: Some(Header {
                        port: 8080,
                        name: Some(svc.clone()),
                        protocol: h1,
                    }),
                },
            ),
            (
                "gateway override without a port: the endpoint's",
                &gateway_no_port,
                true,
                Plan {
                    addr: gateway.addr,
                    identity: Some(emoji.clone()),
                    header: Some(Header {
                        port: 4143,
                        name: Some(svc),
                        protocol: h1,
                    }),
                },
            ),
            (
                "opaque transport: the inbound port, header with the original port",
                &opaque,
                true,
                Plan {
                    addr: "10.1.0.7:4143".parse().unwrap(),
                    identity: Some(emoji.clone()),
                    header: Some(Header {
                        port: 8080,
                        name: None,
                        protocol: h1,
                    }),
                },
            ),
            (
                "opaque without an inbound port: mTLS to the address",
                &opaque_no_port,
                true,
                Plan {
                    addr: opaque.addr,
                    identity: Some(emoji),
                    header: None,
                },
            ),
            (
                "opaque without identity: plain to the address",
                &opaque_no_id,
                true,
                Plan {
                    addr: opaque.addr,
                    identity: None,
                    header: None,
                },
            ),
        ];
        for (what, ep, mesh, want) in cases {
            assert_eq!(plan(ep, mesh, h1), want, "{what}");
        }
    }
}

//! The targets connections go to and come from, and what their TLS status
//! is. Outbound mTLS is in [`crate::connect`], inbound in [`crate::inbound`].

use std::{collections::BTreeMap, io, net::SocketAddr, sync::Arc, time::Duration};

use tandem_meshtls::Name;
use tokio::net::TcpStream;

/// What the destination service told us about a peer (or, for a forwarded
/// connection, only its address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The peer's mesh identity; the TLS server name once mTLS is on.
    pub identity: Option<Name>,
    /// Set for a gateway: the authority to ask it for.
    pub authority_override: Option<String>,
    pub hint: Protocol,
    /// For an opaque endpoint: the peer proxy's inbound port, where the
    /// connection goes with a transport header (`opaque_transport`).
    pub opaque_transport: Option<u16>,
    /// The endpoint's metric labels, exported as `dst_<key>`.
    pub labels: BTreeMap<String, String>,
}

/// The protocol hint of an endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Unknown,
    H2,
    Opaque,
}

impl Endpoint {
    /// An endpoint known only by its address (a forwarded connection).
    pub fn forward(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            identity: None,
            authority_override: None,
            hint: Protocol::Unknown,
            opaque_transport: None,
            labels: BTreeMap::new(),
        }
    }
}

/// Opens a plain TCP connection to `ep` (the local application; outbound
/// endpoints go through [`crate::connect::connect`]).
pub async fn connect(ep: &Endpoint, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(ep.addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What an inbound connection proved about its client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    Plain { reason: NoTlsReason },
    Mesh { client_id: Name },
}

/// Why a connection is not mTLS, as Linkerd's `no_tls_reason` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoTlsReason {
    /// This proxy runs without identity.
    Disabled,
    /// The client did not offer TLS.
    NoTlsFromRemote,
    /// Discovery gave the endpoint no identity.
    NotProvidedByServiceDiscovery,
    /// The connection stays on this host.
    Loopback,
}

impl NoTlsReason {
    pub fn as_str(self) -> &'static str {
        match self {
            NoTlsReason::Disabled => "disabled",
            NoTlsReason::NoTlsFromRemote => "no_tls_from_remote",
            NoTlsReason::NotProvidedByServiceDiscovery => "not_provided_by_service_discovery",
            NoTlsReason::Loopback => "loopback",
        }
    }
}

/// The outbound TLS status of a connection to `ep`, by
/// [`crate::connect::plan`]'s rule: mTLS when the endpoint has an identity
/// and this proxy has identity on (`mesh`).
pub fn outbound_tls(ep: &Endpoint, mesh: bool) -> Tls {
    match ep.identity.clone().filter(|_| mesh) {
        Some(id) => Tls::Mesh { client_id: id },
        None => client_tls(ep),
    }
}

/// The TLS status of a plaintext connection to `ep`: why it is not mTLS.
pub fn client_tls(ep: &Endpoint) -> Tls {
    let reason = if ep.addr.ip().is_loopback() {
        NoTlsReason::Loopback
    } else if ep.identity.is_none() {
        NoTlsReason::NotProvidedByServiceDiscovery
    } else {
        NoTlsReason::Disabled
    };
    Tls::Plain { reason }
}

/// How a listener learns where an accepted connection was going.
pub type OrigDst = Arc<dyn Fn(&TcpStream) -> io::Result<SocketAddr> + Send + Sync>;

/// The kernel's answer: `SO_ORIGINAL_DST`, set by the iptables REDIRECT of
/// proxy-init.
pub fn so_original_dst() -> OrigDst {
    Arc::new(|stream: &TcpStream| {
        use nix::sys::socket::{getsockopt, sockopt::OriginalDst};
        let sa = getsockopt(stream, OriginalDst).map_err(io::Error::from)?;
        let ip = std::net::Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
        Ok(SocketAddr::from((ip, u16::from_be(sa.sin_port))))
    })
}

/// A fixed target (tests, and connections addressed to the listener itself).
pub fn fixed_orig_dst(addr: SocketAddr) -> OrigDst {
    Arc::new(move |_: &TcpStream| Ok(addr))
}

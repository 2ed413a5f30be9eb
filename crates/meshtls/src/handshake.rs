//! TLS handshakes over any byte stream, with errors that say what went wrong.
//!
//! In TLS 1.3 a client finishes its handshake before the server has checked
//! the client's certificate, so a server's refusal reaches the client on its
//! first read: [`HandshakeError::from_io`] explains such read errors too.

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::{AlertDescription, CertificateError, ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use crate::Name;
use crate::config::{client_id, presented_names};

/// The other side of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Client,
    Server,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Client => "client",
            Peer::Server => "server",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the {peer}'s certificate is for {presented}, expected {expected}")]
    WrongIdentity {
        peer: Peer,
        expected: String,
        presented: String,
    },
    #[error("the {peer}'s certificate is not signed by the trust anchors")]
    Untrusted { peer: Peer },
    #[error("the {peer}'s certificate has expired{}", secs(" (", *.ago, " s ago)"))]
    Expired { peer: Peer, ago: Option<u64> },
    #[error(
        "the {peer}'s certificate is not valid yet{}: is a clock off?",
        secs(" (for another ", *.ahead, " s)")
    )]
    NotYetValid { peer: Peer, ahead: Option<u64> },
    #[error("the {peer}'s certificate was refused: {reason}")]
    BadCertificate {
        peer: Peer,
        reason: CertificateError,
    },
    #[error("the client presented no certificate, and this server requires one")]
    ClientCertRequired,
    #[error("the {peer} refused our certificate ({alert:?}): {hint}")]
    RefusedByPeer {
        peer: Peer,
        alert: AlertDescription,
        hint: &'static str,
    },
    #[error("the {peer} and this proxy have no ALPN protocol in common")]
    NoCommonAlpn { peer: Peer },
    #[error("the {peer} does not speak TLS 1.3 with Linkerd's cipher suite: {source}")]
    NotTls13 {
        peer: Peer,
        #[source]
        source: rustls::Error,
    },
    #[error("{name:?} is not a valid TLS server name")]
    ServerName { name: String },
    #[error("the TLS handshake with the {peer} failed: {source}")]
    Tls {
        peer: Peer,
        #[source]
        source: rustls::Error,
    },
    #[error("the connection to the {peer} failed during the TLS handshake: {source}")]
    Io {
        peer: Peer,
        #[source]
        source: io::Error,
    },
}

fn secs(before: &str, secs: Option<u64>, after: &str) -> String {
    secs.map(|s| format!("{before}{s}{after}"))
        .unwrap_or_default()
}

impl HandshakeError {
    /// Explains an I/O error from a handshake or from a TLS stream's first
    /// reads; `peer` is the other side.
    pub fn from_io(err: io::Error, peer: Peer) -> Self {
        let tls = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned();
        match tls {
            Some(tls) => Self::from_tls(tls, peer),
            None => HandshakeError::Io { peer, source: err },
        }
    }

    /// Explains a rustls error; `peer` is the other side.
    pub fn from_tls(err: rustls::Error, peer: Peer) -> Self {
        use rustls::Error as E;
        match err {
            E::InvalidCertificate(reason) => Self::from_cert(reason, peer),
            E::NoCertificatesPresented => HandshakeError::ClientCertRequired,
            E::NoApplicationProtocol
            | E::AlertReceived(AlertDescription::NoApplicationProtocol) => {
                HandshakeError::NoCommonAlpn { peer }
            }
            source @ (E::InvalidMessage(_)
            | E::PeerIncompatible(_)
            | E::AlertReceived(
                AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure,
            )) => HandshakeError::NotTls13 { peer, source },
            E::AlertReceived(alert) => match refusal_hint(alert, peer) {
                Some(hint) => HandshakeError::RefusedByPeer { peer, alert, hint },
                None => HandshakeError::Tls {
                    peer,
                    source: E::AlertReceived(alert),
                },
            },
            source => HandshakeError::Tls { peer, source },
        }
    }

    fn from_cert(reason: CertificateError, peer: Peer) -> Self {
        use CertificateError as C;
        match reason {
            C::UnknownIssuer | C::BadSignature => HandshakeError::Untrusted { peer },
            C::Expired => HandshakeError::Expired { peer, ago: None },
            C::ExpiredContext { time, not_after } => HandshakeError::Expired {
                peer,
                ago: time.as_secs().checked_sub(not_after.as_secs()),
            },
            C::NotValidYet => HandshakeError::NotYetValid { peer, ahead: None },
            C::NotValidYetContext { time, not_before } => HandshakeError::NotYetValid {
                peer,
                ahead: not_before.as_secs().checked_sub(time.as_secs()),
            },
            C::NotValidForNameContext {
                expected,
                presented,
            } => HandshakeError::WrongIdentity {
                peer,
                expected: expected.to_str().into_owned(),
                presented: presented_names(&presented),
            },
            reason => HandshakeError::BadCertificate { peer, reason },
        }
    }
}

/// What an alert from the peer says about our certificate.
fn refusal_hint(alert: AlertDescription, peer: Peer) -> Option<&'static str> {
    use AlertDescription as A;
    Some(match (alert, peer) {
        (A::UnknownCA, Peer::Client) => "it is not signed by the client's trust anchors",
        (A::UnknownCA, Peer::Server) => "it is not signed by the server's trust anchors",
        (A::CertificateExpired, _) => "it has expired, or the peer's clock is off",
        (A::CertificateRequired, _) => "the server requires a client certificate",
        (A::BadCertificate, Peer::Client) => {
            "the client expected another identity, or cannot read the certificate"
        }
        (A::BadCertificate, Peer::Server) => "the server cannot accept the certificate",
        (A::UnsupportedCertificate, _) => "the certificate's purpose or algorithm is not accepted",
        _ => return None,
    })
}

// === accept and connect ===

/// A server-side TLS connection and what the handshake told about it.
#[derive(Debug)]
pub struct Accepted<I> {
    pub io: server::TlsStream<I>,
    /// The client's identity, when it presented a certificate.
    pub client_id: Option<Name>,
    /// The ALPN protocol both sides agreed on.
    pub alpn: Option<Vec<u8>>,
}

/// Runs the server side of a handshake on `io`.
pub async fn accept<I>(io: I, config: Arc<ServerConfig>) -> Result<Accepted<I>, HandshakeError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let io = TlsAcceptor::from(config)
        .accept(io)
        .await
        .map_err(|e| HandshakeError::from_io(e, Peer::Client))?;
    let (_, conn) = io.get_ref();
    let client_id = client_id(conn);
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    Ok(Accepted {
        io,
        client_id,
        alpn,
    })
}

/// Runs the client side of a handshake on `io` with the server whose
/// identity is `server` (sent as SNI and checked against its certificate),
/// offering the ALPN protocols `alpn` (none when empty). The agreed protocol
/// is `stream.get_ref().1.alpn_protocol()`.
pub async fn connect<I>(
    io: I,
    config: Arc<ClientConfig>,
    server: &Name,
    alpn: &[&[u8]],
) -> Result<client::TlsStream<I>, HandshakeError>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let sni = ServerName::try_from(server.as_str().to_string()).map_err(|_| {
        HandshakeError::ServerName {
            name: server.to_string(),
        }
    })?;
    TlsConnector::from(config)
        .with_alpn(alpn.iter().map(|p| p.to_vec()).collect())
        .connect(sni, io)
        .await
        .map_err(|e| HandshakeError::from_io(e, Peer::Server))
}

#[cfg(test)]
mod tests;

//! The identity service's own TLS: a leaf it signs for itself with the
//! issuer, renewed as it nears its end, and the accepted TLS streams that
//! tonic serves. No client certificate is asked for (proxies have none yet).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
};

use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tandem_identity::{
    certify::{self, CertifyError, LeafIssuer, ParsedCsr},
    time::{Duration, OffsetDateTime},
};
use tandem_meshtls::Name;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::transport::server::Connected;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

// === impl SelfCert ===

/// The service's own key, CSR and current certificate.
pub(crate) struct SelfCert {
    name: Name,
    key_der: Vec<u8>,
    csr: ParsedCsr,
    current: RwLock<Option<Current>>,
}

struct Current {
    key: Arc<CertifiedKey>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    issuer_der: Vec<u8>,
}

impl std::fmt::Debug for SelfCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfCert")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Whether a leaf valid from `not_before` to `not_after` is due for renewal
/// at `now`: past 70% of its life, as the proxies renew theirs.
pub(crate) fn renewal_due(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> bool {
    let life = not_after - not_before;
    now >= not_before + life * 0.7
}

impl SelfCert {
    pub(crate) fn new(name: Name) -> Result<Self, CertifyError> {
        let (key_der, csr_der) = certify::new_key_and_csr(name.as_str())?;
        let csr = certify::check_csr(&csr_der, name.as_str())?;
        Ok(SelfCert {
            name,
            key_der,
            csr,
            current: RwLock::new(None),
        })
    }

    pub(crate) fn name(&self) -> &Name {
        &self.name
    }

    /// Signs a new leaf when there is none, when it is due, or when the
    /// issuer changed. Returns the new leaf's end when it signed one.
    pub(crate) fn renew_if_due(
        &self,
        issuer: &LeafIssuer,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<Option<OffsetDateTime>, CertifyError> {
        let due = match &*self.current.read().unwrap_or_else(|e| e.into_inner()) {
            None => true,
            Some(c) => {
                c.issuer_der != issuer.cert_der() || renewal_due(c.not_before, c.not_after, now)
            }
        };
        if !due {
            return Ok(None);
        }
        let leaf = certify::sign_leaf(issuer, &self.csr, now, lifetime)?;
        let chain = vec![
            CertificateDer::from(leaf.der),
            CertificateDer::from(issuer.cert_der().to_vec()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let signer =
            rustls::crypto::ring::sign::any_ecdsa_type(&key).map_err(|e| CertifyError::Sign {
                reason: format!("loading the service's own key: {e}"),
            })?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Current {
            key: Arc::new(CertifiedKey::new(chain, signer)),
            not_before: now,
            not_after: leaf.not_after,
            issuer_der: issuer.cert_der().to_vec(),
        });
        Ok(Some(leaf.not_after))
    }
}

impl ResolvesServerCert for SelfCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().map(|c| c.key.clone())
    }
}

/// The server's TLS configuration: ring, TLS 1.2 and 1.3, ALPN h2.
pub(crate) fn server_config(cert: Arc<SelfCert>) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

// === incoming ===

/// An accepted TLS stream, as tonic serves it.
pub(crate) struct Conn(TlsStream<TcpStream>);

impl Connected for Conn {
    type ConnectInfo = Option<SocketAddr>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.peer_addr().ok()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts TCP connections and hands on those whose TLS handshake
/// succeeds; each handshake runs in a task of its own, so a slow client
/// holds up no one. It stops when the server stops reading the stream.
pub(crate) fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, conns) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = conns.send(Ok(Conn(tls))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_at_seventy_percent() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let end = t0 + Duration::seconds(100);
        for (at, want) in [
            (0, false),
            (69, false),
            (70, true),
            (100, true),
            (200, true),
        ] {
            assert_eq!(
                renewal_due(t0, end, t0 + Duration::seconds(at)),
                want,
                "{at}"
            );
        }
    }
}

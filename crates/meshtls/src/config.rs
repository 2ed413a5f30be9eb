//! rustls configurations for mesh TLS, as Linkerd 2.12's proxy builds them:
//! TLS 1.3 only, the one suite TLS13_CHACHA20_POLY1305_SHA256, rustls on
//! *ring* (the provider is built into each configuration, never installed as
//! the process default).
//!
//! - A server presents its chain and verifies a client certificate against
//!   the trust anchors ([`ClientAuth`] says whether one is required).
//! - A client presents its chain and verifies the server's certificate
//!   against the anchors for the SNI name, which is the peer's identity.
//! - [`Tls`] caches the three configurations per [`Credentials`] value, so
//!   that a connection costs a clone of an `Arc`, and a renewal (a new value
//!   on the watch channel) rebuilds them once.

use std::sync::{Arc, LazyLock, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, ServerConfig, ServerConnection,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::{Credentials, CredentialsRx, Name, TrustAnchors};

/// ALPN for a connection that starts with a transport header.
pub const TRANSPORT_ALPN: &[u8] = b"transport.l5d.io/v1";
/// ALPN for HTTP/2.
pub const H2_ALPN: &[u8] = b"h2";
/// ALPN for HTTP/1.1.
pub const HTTP1_ALPN: &[u8] = b"http/1.1";

/// Whether a server asks a client for a certificate and insists on one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client may present a certificate (then it must chain to the
    /// anchors) or none: the connection is TLS without a client identity.
    Optional,
    /// A client must present a certificate that chains to the anchors.
    Required,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the trust anchors cannot verify {what} certificates: {source}")]
    Verifier {
        what: &'static str,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("the certificate chain or key of {name} was refused: {source}")]
    Credentials {
        name: Name,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS 1.3 on ring is not available: {0}")]
    Protocol(#[source] rustls::Error),
}

// === configurations ===

static PROVIDER: LazyLock<Arc<CryptoProvider>> = LazyLock::new(|| {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites =
        vec![rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256];
    Arc::new(provider)
});

/// The crypto provider of every mesh configuration: ring, with Linkerd's one
/// TLS 1.3 suite.
pub fn provider() -> Arc<CryptoProvider> {
    PROVIDER.clone()
}

/// A server configuration that presents `creds` and verifies client
/// certificates against `anchors`. It accepts the ALPN protocols
/// `transport.l5d.io/v1`, `h2` and `http/1.1`, preferring them in that order;
/// a client that offers none gets a connection without ALPN.
pub fn server_config(
    creds: &Credentials,
    anchors: &TrustAnchors,
    auth: ClientAuth,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(anchors.roots(), provider());
    let verifier = match auth {
        ClientAuth::Optional => verifier.allow_unauthenticated(),
        ClientAuth::Required => verifier,
    };
    let verifier = verifier.build().map_err(|source| ConfigError::Verifier {
        what: "client",
        source,
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(ConfigError::Protocol)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(creds.chain.clone(), creds.key.clone_key())
        .map_err(|source| ConfigError::Credentials {
            name: creds.name.clone(),
            source,
        })?;
    config.alpn_protocols = vec![
        TRANSPORT_ALPN.to_vec(),
        H2_ALPN.to_vec(),
        HTTP1_ALPN.to_vec(),
    ];
    Ok(Arc::new(config))
}

/// A client configuration that presents `creds` and verifies a server's
/// certificate against `anchors` for the SNI name (the peer's identity).
/// It offers no ALPN by itself: [`crate::connect`] passes the protocols per
/// connection.
pub fn client_config(
    creds: &Credentials,
    anchors: &TrustAnchors,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let webpki = WebPkiServerVerifier::builder_with_provider(anchors.roots(), provider())
        .build()
        .map_err(|source| ConfigError::Verifier {
            what: "server",
            source,
        })?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(ConfigError::Protocol)?
        // Not a weaker check: webpki verifies as always; the wrapper only
        // rewrites the names in its wrong-name error.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NamingVerifier(webpki)))
        .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
        .map_err(|source| ConfigError::Credentials {
            name: creds.name.clone(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// The client's identity: the first DNS SAN of its leaf, if it presented a
/// certificate and that SAN is a valid mesh name.
pub fn client_id(conn: &ServerConnection) -> Option<Name> {
    let leaf = conn.peer_certificates()?.first()?;
    dns_sans(leaf).into_iter().next()?.parse().ok()
}

/// The DNS SANs of a certificate, in order (none if it does not parse).
pub(crate) fn dns_sans(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect()
}

// === impl NamingVerifier ===

pub(crate) fn presented_names(names: &[String]) -> String {
    if names.is_empty() {
        "no DNS name".to_string()
    } else {
        names.join(", ")
    }
}

/// webpki's server verifier, whose NotValidForName error lists the names
/// the certificate holds as plain names (webpki writes them in Rust's debug
/// form, `DnsName("…")`).
#[derive(Debug)]
struct NamingVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NamingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    expected: server_name.to_owned(),
                    presented: dns_sans(end_entity),
                }),
                e => e,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

// === impl Tls ===

/// Why [`Tls`] has no configuration to give.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate yet: identity has not certified this proxy")]
    NoCredentials,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The mesh configurations for the current credentials, rebuilt only when the
/// credentials channel holds a new value. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    creds: CredentialsRx,
    anchors: TrustAnchors,
    cache: Arc<Mutex<Option<Cached>>>,
}

struct Cached {
    creds: Arc<Credentials>,
    optional: Arc<ServerConfig>,
    required: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Tls {
    pub fn new(creds: CredentialsRx, anchors: TrustAnchors) -> Self {
        Tls {
            creds,
            anchors,
            cache: Arc::new(Mutex::new(None)),
        }
    }

    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// The identity the proxy holds now, if any.
    pub fn local_name(&self) -> Option<Name> {
        self.creds.borrow().as_ref().map(|c| c.name.clone())
    }

    /// The server configuration for the current credentials.
    pub fn server(&self, auth: ClientAuth) -> Result<Arc<ServerConfig>, TlsError> {
        self.with_cached(|c| match auth {
            ClientAuth::Optional => c.optional.clone(),
            ClientAuth::Required => c.required.clone(),
        })
    }

    /// The client configuration for the current credentials.
    pub fn client(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.with_cached(|c| c.client.clone())
    }

    fn with_cached<T>(&self, f: impl FnOnce(&Cached) -> T) -> Result<T, TlsError> {
        let creds = self.creds.borrow().clone().ok_or(TlsError::NoCredentials)?;
        // A panic while holding the lock leaves at worst a stale entry, which
        // the pointer check below replaces.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.as_ref() {
            Some(c) if Arc::ptr_eq(&c.creds, &creds) => Ok(f(c)),
            _ => {
                let c = Cached {
                    optional: server_config(&creds, &self.anchors, ClientAuth::Optional)?,
                    required: server_config(&creds, &self.anchors, ClientAuth::Required)?,
                    client: client_config(&creds, &self.anchors)?,
                    creds,
                };
                let out = f(&c);
                *cache = Some(c);
                Ok(out)
            }
        }
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("local_name", &self.local_name())
            .finish_non_exhaustive()
    }
}

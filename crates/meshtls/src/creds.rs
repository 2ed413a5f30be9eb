//! The proxy's credentials and the trust anchors.

use std::{sync::Arc, time::SystemTime};

use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::sync::watch;

use crate::Name;

/// A certified identity: the leaf first, then the intermediates up to (not
/// including) a trust anchor, and the leaf's private key.
#[derive(Debug)]
pub struct Credentials {
    pub name: Name,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
}

/// The current credentials; `None` until identity has certified the proxy.
pub type CredentialsRx = watch::Receiver<Option<Arc<Credentials>>>;
pub type CredentialsTx = watch::Sender<Option<Arc<Credentials>>>;

/// A channel that starts empty.
pub fn credentials_channel() -> (CredentialsTx, CredentialsRx) {
    watch::channel(None)
}

/// The roots every peer's certificate must chain to.
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    roots: Arc<RootCertStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum AnchorsError {
    #[error("the trust anchors are not valid PEM: {0}")]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("the trust anchors hold no certificate")]
    Empty,
    #[error("a trust anchor was refused: {0}")]
    Refused(#[from] rustls::Error),
}

impl TrustAnchors {
    /// Parses a PEM bundle of one or more CA certificates.
    pub fn from_pem(pem: &str) -> Result<Self, AnchorsError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert?)?;
        }
        if roots.is_empty() {
            return Err(AnchorsError::Empty);
        }
        Ok(TrustAnchors {
            roots: Arc::new(roots),
        })
    }

    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }
}

//! One Certify call: the proxy's key and CSR (made once), the token (read
//! again for every call), TLS to the identity service verified as its
//! name, and a check of the answer before it is published.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use hyper_util::rt::TokioIo;
use linkerd2_proxy_api::identity::{
    CertifyRequest, CertifyResponse, identity_client::IdentityClient,
};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::{
    ClientConfig,
    client::{WebPkiServerVerifier, danger::ServerCertVerifier},
    crypto::CryptoProvider,
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tandem_meshtls::{Credentials, Name, TrustAnchors};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// How long one Certify call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and as whom to ask for a certificate.
#[derive(Clone, Debug)]
pub struct Config {
    /// The proxy's own identity (`LINKERD2_PROXY_IDENTITY_LOCAL_NAME`).
    pub local_name: Name,
    /// The ServiceAccount token file, read again for every call
    /// (`LINKERD2_PROXY_IDENTITY_TOKEN_FILE`).
    pub token_file: PathBuf,
    /// The identity service, `host:port` (`LINKERD2_PROXY_IDENTITY_SVC_ADDR`).
    pub svc_addr: String,
    /// The identity service's own identity, checked on its certificate
    /// (`LINKERD2_PROXY_IDENTITY_SVC_NAME`).
    pub svc_name: Name,
    /// The roots (`LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`).
    pub anchors: TrustAnchors,
}

/// Why a Certify attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the token file {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error("making the proxy's key and CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the identity service refused: {0}")]
    Refused(#[from] tonic::Status),
    #[error("the identity service did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the certificate from the identity service is unusable: {0}")]
    BadCertificate(String),
    #[error("the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Makes Certify calls for one identity.
pub struct Certifier {
    config: Config,
    key_der: Vec<u8>,
    csr_der: Vec<u8>,
    client: IdentityClient<Channel>,
    verifier: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Certifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certifier")
            .field("local_name", &self.config.local_name)
            .field("svc_addr", &self.config.svc_addr)
            .finish_non_exhaustive()
    }
}

impl Certifier {
    /// A new ECDSA P-256 key and a CSR whose CN and one DNS SAN are the
    /// local name, and a lazily connecting channel to the identity service.
    pub fn new(config: Config) -> Result<Self, Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![config.local_name.to_string()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, config.local_name.as_str());
        params.distinguished_name = dn;
        let csr_der = params.serialize_request(&key)?.der().to_vec();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(config.anchors.roots())
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let connector = TlsConnector::from(Arc::new(tls));
        let server_name = ServerName::try_from(config.svc_name.to_string())
            .map_err(|e| Error::BadCertificate(format!("the identity service's name: {e}")))?;
        let addr = config.svc_addr.clone();
        let connect = tower::service_fn(move |_: http::Uri| {
            let (connector, server_name, addr) =
                (connector.clone(), server_name.clone(), addr.clone());
            async move {
                let tcp = TcpStream::connect(&addr).await?;
                let _ = tcp.set_nodelay(true);
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        // The URI only fills :authority; the connector decides where to go.
        let channel = Endpoint::from_shared(format!("http://{}", config.svc_name))
            .map_err(|e| Error::BadCertificate(format!("the identity service's name: {e}")))?
            .connect_timeout(Duration::from_secs(10))
            .connect_with_connector_lazy(connect);
        let verifier =
            WebPkiServerVerifier::builder_with_provider(config.anchors.roots(), provider.clone())
                .build()
                .map_err(|e| Error::BadCertificate(format!("the trust anchors: {e}")))?;
        Ok(Certifier {
            key_der: key.serialize_der(),
            csr_der,
            client: IdentityClient::new(channel),
            verifier,
            provider,
            config,
        })
    }

    pub fn local_name(&self) -> &Name {
        &self.config.local_name
    }

    /// One Certify call, and the credentials it gave.
    pub async fn certify(&self) -> Result<Credentials, Error> {
        let path = &self.config.token_file;
        let token = tokio::fs::read(path).await.map_err(|source| Error::Token {
            path: path.clone(),
            source,
        })?;
        let token = token.trim_ascii().to_vec();
        if token.is_empty() {
            return Err(Error::EmptyToken { path: path.clone() });
        }
        let rsp = self
            .call(CertifyRequest {
                identity: self.config.local_name.to_string(),
                token,
                certificate_signing_request: self.csr_der.clone(),
            })
            .await?;
        let not_after = rsp
            .valid_until
            .and_then(|t| SystemTime::try_from(t).ok())
            .ok_or_else(|| Error::BadCertificate("no valid_until".into()))?;
        let mut chain = vec![CertificateDer::from(rsp.leaf_certificate)];
        chain.extend(
            rsp.intermediate_certificates
                .into_iter()
                .map(CertificateDer::from),
        );
        self.check(&chain)?;
        Ok(Credentials {
            name: self.config.local_name.clone(),
            chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            not_after,
        })
    }

    /// One Certify call with any request, on this certifier's channel.
    pub async fn call(&self, req: CertifyRequest) -> Result<CertifyResponse, Error> {
        let mut client = self.client.clone();
        Ok(tokio::time::timeout(CALL_TIMEOUT, client.certify(req))
            .await
            .map_err(|_| Error::Timeout(CALL_TIMEOUT))??
            .into_inner())
    }

    /// The CSR every call sends (DER).
    pub fn csr_der(&self) -> &[u8] {
        &self.csr_der
    }

    /// The leaf holds our key and chains to the anchors for our name, as
    /// every peer will check it.
    pub(super) fn check(&self, chain: &[CertificateDer<'static>]) -> Result<(), Error> {
        let bad = |what: &str, e: rustls::Error| Error::BadCertificate(format!("{what}: {e}"));
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        CertifiedKey::from_der(chain.to_vec(), key, &self.provider)
            .map_err(|e| bad("it is not for the proxy's key", e))?;
        let name = ServerName::try_from(self.config.local_name.to_string())
            .map_err(|e| Error::BadCertificate(e.to_string()))?;
        self.verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map_err(|e| bad("it does not verify for the proxy's name", e))?;
        Ok(())
    }
}

//! What injection needs to know, checked once.

use sha2::{Digest, Sha256};
use tandem_meshtls::{InvalidName, Name, TrustAnchors};

/// The control plane the injected proxies talk to, and the image they run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    control_plane_ns: String,
    trust_domain: String,
    image: String,
    trust_anchors_pem: String,
    version: String,
    cni: bool,
    native_sidecar: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("control-plane namespace {namespace:?} or trust domain {trust_domain:?}: {source}")]
    Names {
        namespace: String,
        trust_domain: String,
        #[source]
        source: InvalidName,
    },
    #[error("the trust anchors: {0}")]
    Anchors(#[from] tandem_meshtls::AnchorsError),
    #[error("the proxy image {0:?} is not an image reference")]
    Image(String),
}

impl Config {
    /// `version` is tandem's version, for `linkerd.io/proxy-version` and
    /// `created-by`; `trust_anchors_pem` one or more CA certificates.
    pub fn new(
        control_plane_ns: &str,
        trust_domain: &str,
        image: &str,
        trust_anchors_pem: &str,
        version: &str,
    ) -> Result<Self, ConfigError> {
        Name::service_account(
            "tandem-identity",
            control_plane_ns,
            control_plane_ns,
            trust_domain,
        )
        .map_err(|source| ConfigError::Names {
            namespace: control_plane_ns.into(),
            trust_domain: trust_domain.into(),
            source,
        })?;
        if control_plane_ns.contains('.') {
            return Err(ConfigError::Names {
                namespace: control_plane_ns.into(),
                trust_domain: trust_domain.into(),
                source: InvalidName {
                    name: control_plane_ns.into(),
                    reason: "a namespace is one DNS label",
                },
            });
        }
        TrustAnchors::from_pem(trust_anchors_pem)?;
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            return Err(ConfigError::Image(image.into()));
        }
        Ok(Config {
            control_plane_ns: control_plane_ns.into(),
            trust_domain: trust_domain.into(),
            image: image.into(),
            trust_anchors_pem: trust_anchors_pem.into(),
            version: version.into(),
            cni: false,
            native_sidecar: false,
        })
    }

    /// CNI mode (`--linkerd-cni-enabled`): the `tandem-cni` plugin installs
    /// the redirect when the pod's sandbox is made, so injection adds no
    /// init container, only the annotation [`crate::PROXY_INIT_ANNOTATION`]
    /// with the arguments the init container would have run.
    pub fn with_cni(mut self, enabled: bool) -> Self {
        self.cni = enabled;
        self
    }

    pub fn cni(&self) -> bool {
        self.cni
    }

    /// Native sidecars by default (Linkerd's `proxy.nativeSidecar`): the
    /// proxy goes into the init containers with `restartPolicy: Always`
    /// (Kubernetes 1.29 and later). A template's
    /// [`crate::NATIVE_SIDECAR_ANNOTATION`] overrides it either way.
    pub fn with_native_sidecar(mut self, enabled: bool) -> Self {
        self.native_sidecar = enabled;
        self
    }

    pub fn native_sidecar(&self) -> bool {
        self.native_sidecar
    }

    pub fn control_plane_ns(&self) -> &str {
        &self.control_plane_ns
    }

    pub fn image(&self) -> &str {
        &self.image
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn trust_anchors_pem(&self) -> &str {
        &self.trust_anchors_pem
    }

    /// Hex SHA-256 of the anchors' PEM text, as `linkerd.io/trust-root-sha256`.
    pub fn trust_root_sha256(&self) -> String {
        Sha256::digest(self.trust_anchors_pem.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The identity of control-plane component `sa` (e.g. `tandem-identity`),
    /// whose ServiceAccount is in the control plane's namespace.
    pub fn component_identity(&self, sa: &str) -> String {
        format!(
            "{sa}.{ns}.serviceaccount.identity.{ns}.{td}",
            ns = self.control_plane_ns,
            td = self.trust_domain
        )
    }

    /// The local name with the downward-API variables kubelet expands.
    pub fn local_name_template(&self) -> String {
        format!(
            "$(_pod_sa).$(_pod_ns).serviceaccount.identity.{}.{}",
            self.control_plane_ns, self.trust_domain
        )
    }

    /// `<svc>.<cp-ns>.svc.cluster.local.:<port>`.
    pub fn service_addr(&self, svc: &str, port: u16) -> String {
        format!("{svc}.{}.svc.cluster.local.:{port}", self.control_plane_ns)
    }
}

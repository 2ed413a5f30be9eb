//! `tandem gateway`'s configuration: flags, or the `LINKERD2_PROXY_*`
//! environment a Linkerd gateway's proxy reads, validated into [`Config`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use tandem_meshtls::{
    Name, TrustAnchors,
    gateway::{DEFAULT_SUFFIX, Suffixes},
};

use crate::{config::parse_duration, identity};

/// The multicluster gateway: mTLS on 4143, forwarding to exported Services.
#[derive(Clone, Debug, clap::Args)]
pub struct GatewayArgs {
    /// Where linked clusters' proxies connect (mTLS only).
    #[arg(
        long,
        env = "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
        default_value = "0.0.0.0:4143"
    )]
    pub listen_addr: String,

    /// The probe and admin server: /live, /ready, /metrics.
    #[arg(
        long,
        env = "LINKERD2_PROXY_ADMIN_LISTEN_ADDR",
        default_value = "0.0.0.0:4191"
    )]
    pub admin_addr: String,

    /// The names the gateway forwards to, comma separated.
    #[arg(
        long,
        env = "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES",
        default_value = DEFAULT_SUFFIX
    )]
    pub gateway_suffixes: String,

    /// The destination service, host:port (required unless --probe-only:
    /// the gateway resolves every target through it).
    #[arg(long, env = "LINKERD2_PROXY_DESTINATION_SVC_ADDR")]
    pub destination_svc_addr: Option<String>,

    /// The context token sent with every lookup.
    #[arg(long, env = "LINKERD2_PROXY_DESTINATION_CONTEXT", default_value = "")]
    pub destination_context: String,

    /// The gateway's own identity, e.g.
    /// `tandem-gateway.tandem-multicluster.serviceaccount.identity.tandem.cluster.local`.
    #[arg(long, env = "LINKERD2_PROXY_IDENTITY_LOCAL_NAME")]
    pub identity_local_name: Option<String>,

    /// The ServiceAccount token (audience identity.l5d.io), read for every Certify call.
    #[arg(long, env = "LINKERD2_PROXY_IDENTITY_TOKEN_FILE")]
    pub identity_token_file: Option<PathBuf>,

    /// The identity service, host:port.
    #[arg(long, env = "LINKERD2_PROXY_IDENTITY_SVC_ADDR")]
    pub identity_svc_addr: Option<String>,

    /// The identity service's own identity.
    #[arg(long, env = "LINKERD2_PROXY_IDENTITY_SVC_NAME")]
    pub identity_svc_name: Option<String>,

    /// The trust anchors (PEM) every client must chain to. Without it,
    /// `tandem gateway` reads them from the control plane's ConfigMap
    /// `tandem-identity-trust-roots`.
    #[arg(
        long,
        env = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
        hide_env_values = true
    )]
    pub identity_trust_anchors: Option<String>,

    /// The control plane's namespace (where the trust anchors' ConfigMap is).
    #[arg(long, env = "TANDEM_CONTROL_PLANE_NAMESPACE", default_value = "tandem")]
    pub control_plane_namespace: String,

    /// How long a client may take for its TLS handshake and first bytes.
    #[arg(
        long,
        env = "LINKERD2_PROXY_DETECT_PROTOCOL_TIMEOUT",
        default_value = "10s"
    )]
    pub detect_protocol_timeout: String,

    /// Serve only /live and /ready (always ready) on --admin-addr and forward
    /// nothing: a stand-in gateway for tests and benchmarks of the service
    /// mirror's probes, which need no mesh.
    #[arg(long)]
    pub probe_only: bool,

    /// How long a connect to a local endpoint may take.
    #[arg(
        long,
        env = "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT",
        default_value = "1s"
    )]
    pub outbound_connect_timeout: String,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub suffixes: Suffixes,
    pub identity: identity::Config,
    pub destination_addr: String,
    pub destination_context: String,
    pub detect_timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag}: {value:?} is not an address (ip:port)")]
    Addr { flag: &'static str, value: String },
    #[error("{flag}: {value:?} is not host:port")]
    HostPort { flag: &'static str, value: String },
    #[error("{flag}: {source}")]
    Name {
        flag: &'static str,
        #[source]
        source: tandem_meshtls::InvalidName,
    },
    #[error("--gateway-suffixes: {0}")]
    Suffixes(#[from] tandem_meshtls::gateway::InvalidSuffix),
    #[error("--identity-trust-anchors: {0}")]
    Anchors(#[from] tandem_meshtls::AnchorsError),
    #[error("{0} is required (unless --probe-only)")]
    Missing(&'static str),
    #[error("no trust anchors: pass --identity-trust-anchors")]
    NoAnchors,
    #[error("{flag}: {value:?} is not a duration (e.g. 10s, 500ms)")]
    Duration { flag: &'static str, value: String },
}

fn host_port(flag: &'static str, value: &str) -> Result<String, ConfigError> {
    let v = value.trim();
    let ok = v
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if ok {
        Ok(v.to_string())
    } else {
        Err(ConfigError::HostPort {
            flag,
            value: value.to_string(),
        })
    }
}

impl GatewayArgs {
    /// Validates with the anchors of `--identity-trust-anchors`.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let pem = self
            .identity_trust_anchors
            .as_deref()
            .ok_or(ConfigError::NoAnchors)?;
        self.validate_with_anchors(pem)
    }

    /// Validates with the anchors `pem` (read from elsewhere).
    pub fn validate_with_anchors(&self, pem: &str) -> Result<Config, ConfigError> {
        let addr = |flag, value: &str| {
            value.trim().parse().map_err(|_| ConfigError::Addr {
                flag,
                value: value.to_string(),
            })
        };
        let name = |flag, value: &str| {
            value
                .trim()
                .parse::<Name>()
                .map_err(|source| ConfigError::Name { flag, source })
        };
        fn required<'a, T: ?Sized>(
            flag: &'static str,
            v: Option<&'a T>,
        ) -> Result<&'a T, ConfigError> {
            v.ok_or(ConfigError::Missing(flag))
        }
        let duration = |flag, value: &str| {
            parse_duration(value).ok_or_else(|| ConfigError::Duration {
                flag,
                value: value.to_string(),
            })
        };
        Ok(Config {
            listen_addr: addr("--listen-addr", &self.listen_addr)?,
            admin_addr: addr("--admin-addr", &self.admin_addr)?,
            suffixes: Suffixes::parse(&self.gateway_suffixes)?,
            identity: identity::Config {
                local_name: name(
                    "--identity-local-name",
                    required("--identity-local-name", self.identity_local_name.as_deref())?,
                )?,
                token_file: required("--identity-token-file", self.identity_token_file.as_deref())?
                    .to_path_buf(),
                svc_addr: host_port(
                    "--identity-svc-addr",
                    required("--identity-svc-addr", self.identity_svc_addr.as_deref())?,
                )?,
                svc_name: name(
                    "--identity-svc-name",
                    required("--identity-svc-name", self.identity_svc_name.as_deref())?,
                )?,
                anchors: TrustAnchors::from_pem(pem)?,
            },
            destination_addr: host_port(
                "--destination-svc-addr",
                required(
                    "--destination-svc-addr",
                    self.destination_svc_addr.as_deref(),
                )?,
            )?,
            destination_context: self.destination_context.clone(),
            detect_timeout: duration("--detect-protocol-timeout", &self.detect_protocol_timeout)?,
            connect_timeout: duration(
                "--outbound-connect-timeout",
                &self.outbound_connect_timeout,
            )?,
        })
    }
}

impl Config {
    /// What the readiness check resolves: the destination service's own
    /// Service, `<host>:<port>` without the root dot. Any answer, even "not
    /// found", shows the destination service reachable.
    pub fn probe_authority(&self) -> String {
        match self.destination_addr.rsplit_once(':') {
            Some((host, port)) => format!("{}:{port}", host.trim_end_matches('.')),
            None => self.destination_addr.clone(),
        }
    }
}

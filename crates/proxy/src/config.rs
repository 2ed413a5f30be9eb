//! The proxy's configuration: Linkerd's `LINKERD2_PROXY_*` environment (or
//! the matching flags), validated once into a typed [`Config`].

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use tandem_meshtls::Name;

/// `tandem proxy`: the sidecar's data path.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Where inbound connections (redirected by proxy-init) are accepted.
    #[arg(
        long,
        env = "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
        default_value = "0.0.0.0:4143"
    )]
    pub inbound_listen_addr: String,

    /// Where outbound connections (redirected by proxy-init) are accepted.
    #[arg(
        long,
        env = "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR",
        default_value = "127.0.0.1:4140"
    )]
    pub outbound_listen_addr: String,

    /// The admin server: /live, /ready, /metrics, /shutdown.
    #[arg(
        long,
        env = "LINKERD2_PROXY_ADMIN_LISTEN_ADDR",
        default_value = "0.0.0.0:4191"
    )]
    pub admin_listen_addr: String,

    /// The destination service, host:port. Without it every connection goes
    /// to its original destination.
    #[arg(long, env = "LINKERD2_PROXY_DESTINATION_SVC_ADDR")]
    pub destination_svc_addr: Option<String>,

    /// The destination service's mesh identity (checked once mTLS is on).
    #[arg(long, env = "LINKERD2_PROXY_DESTINATION_SVC_NAME")]
    pub destination_svc_name: Option<String>,

    /// The context token sent with every lookup, e.g. `{"ns":"emojivoto","nodeName":"n1"}`.
    #[arg(long, env = "LINKERD2_PROXY_DESTINATION_CONTEXT", default_value = "")]
    pub destination_context: String,

    /// The workload's container ports, comma separated.
    #[arg(long, env = "LINKERD2_PROXY_INBOUND_PORTS", default_value = "")]
    pub inbound_ports: String,

    /// Run without identity: ready at once, plaintext only. As in Linkerd,
    /// any value disables identity (`disabled`, `true`), except `false`,
    /// `0`, `no`, `off` and the empty string.
    #[arg(
        long,
        env = "LINKERD2_PROXY_IDENTITY_DISABLED",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "ANY"
    )]
    pub identity_disabled: Option<String>,

    /// Where Linkerd's proxy-identity writes the key and CSR. Accepted for
    /// compatibility; tandem's proxy makes its key in memory and never
    /// writes it to disk.
    #[arg(long, env = "LINKERD2_PROXY_IDENTITY_DIR")]
    pub identity_dir: Option<String>,

    /// The trust anchors, inline PEM.
    #[arg(long, env = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS")]
    pub identity_trust_anchors: Option<String>,

    /// The ServiceAccount token file (audience `identity.l5d.io`), read
    /// again for every Certify call.
    #[arg(long, env = "LINKERD2_PROXY_IDENTITY_TOKEN_FILE")]
    pub identity_token_file: Option<String>,

    /// The identity service, host:port.
    #[arg(long, env = "LINKERD2_PROXY_IDENTITY_SVC_ADDR")]
    pub identity_svc_addr: Option<String>,

    /// The identity service's own mesh identity, checked on its certificate.
    #[arg(long, env = "LINKERD2_PROXY_IDENTITY_SVC_NAME")]
    pub identity_svc_name: Option<String>,

    /// This proxy's identity, `<sa>.<ns>.serviceaccount.identity.<ns>.<domain>`.
    #[arg(long, env = "LINKERD2_PROXY_IDENTITY_LOCAL_NAME")]
    pub identity_local_name: Option<String>,

    /// How long to wait for a client's first bytes before treating the
    /// connection as opaque TCP (e.g. `10s`, `500ms`).
    #[arg(
        long,
        env = "LINKERD2_PROXY_DETECT_PROTOCOL_TIMEOUT",
        default_value = "10s"
    )]
    pub detect_protocol_timeout: String,

    /// How long an outbound connect may take before the endpoint counts as failed.
    #[arg(
        long,
        env = "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT",
        default_value = "1s"
    )]
    pub outbound_connect_timeout: String,

    /// How long a target's router (and its discovery streams) outlives its
    /// last connection.
    #[arg(
        long,
        env = "LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT",
        default_value = "5s"
    )]
    pub outbound_discovery_idle_timeout: String,

    /// Worker threads; 1 runs the proxy on a single-threaded runtime.
    #[arg(long, env = "LINKERD2_PROXY_CORES", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub cores: u16,

    /// The log filter (as RUST_LOG).
    #[arg(
        long = "proxy-log",
        env = "LINKERD2_PROXY_LOG",
        default_value = "warn,tandem=info"
    )]
    pub log: String,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub inbound_addr: SocketAddr,
    pub outbound_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub destination: Option<Destination>,
    pub inbound_ports: BTreeSet<u16>,
    pub identity_disabled: bool,
    /// How to get a certificate; `None` exactly when identity is disabled.
    pub identity: Option<IdentityConfig>,
    pub detect_timeout: Duration,
    pub connect_timeout: Duration,
    pub discovery_idle_timeout: Duration,
    pub log: String,
}

/// Where the destination service is.
#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    /// host:port, resolved when the proxy connects.
    pub addr: String,
    pub name: Option<Name>,
    pub context: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{var}: {value:?} is not an address (ip:port)")]
    Addr { var: &'static str, value: String },
    #[error("LINKERD2_PROXY_DESTINATION_SVC_ADDR: {0:?} is not host:port")]
    DestinationAddr(String),
    #[error("LINKERD2_PROXY_DESTINATION_SVC_NAME: {0:?} is not a DNS-like name")]
    DestinationName(String),
    #[error("LINKERD2_PROXY_INBOUND_PORTS: {0:?} is not a port")]
    Port(String),
    #[error("{var}: {value:?} is not a duration (e.g. 10s, 500ms)")]
    Duration { var: &'static str, value: String },
    #[error(
        "{0} is not set: identity needs it (or set LINKERD2_PROXY_IDENTITY_DISABLED to run plaintext)"
    )]
    IdentityMissing(&'static str),
    #[error("{var}: {value:?} is not a DNS-like name")]
    IdentityName { var: &'static str, value: String },
    #[error("LINKERD2_PROXY_IDENTITY_SVC_ADDR: {0:?} is not host:port")]
    IdentityAddr(String),
    #[error("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: {0}")]
    Anchors(String),
}

/// Where and as whom the proxy gets its certificate (the Certify client's
/// configuration).
pub type IdentityConfig = crate::identity::Config;

fn is_host_port(a: &str) -> bool {
    a.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

impl Args {
    /// The identity settings, all required unless identity is disabled.
    fn identity(&self) -> Result<IdentityConfig, ConfigError> {
        fn get<'a>(v: &'a Option<String>, var: &'static str) -> Result<&'a str, ConfigError> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Err(ConfigError::IdentityMissing(var)),
                Some(v) => Ok(v),
            }
        }
        let name = |v: &Option<String>, var: &'static str| {
            let value = get(v, var)?;
            value.parse().map_err(|_| ConfigError::IdentityName {
                var,
                value: value.to_string(),
            })
        };
        let pem = get(
            &self.identity_trust_anchors,
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
        )?;
        let anchors = tandem_meshtls::TrustAnchors::from_pem(pem)
            .map_err(|e| ConfigError::Anchors(e.to_string()))?;
        let svc_addr = get(&self.identity_svc_addr, "LINKERD2_PROXY_IDENTITY_SVC_ADDR")?;
        if !is_host_port(svc_addr) {
            return Err(ConfigError::IdentityAddr(svc_addr.to_string()));
        }
        Ok(IdentityConfig {
            local_name: name(
                &self.identity_local_name,
                "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
            )?,
            token_file: get(
                &self.identity_token_file,
                "LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
            )?
            .into(),
            svc_addr: svc_addr.to_string(),
            svc_name: name(&self.identity_svc_name, "LINKERD2_PROXY_IDENTITY_SVC_NAME")?,
            anchors,
        })
    }
}

impl Args {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let addr = |var, value: &str| {
            value.parse().map_err(|_| ConfigError::Addr {
                var,
                value: value.to_string(),
            })
        };
        let duration = |var, value: &str| {
            parse_duration(value).ok_or_else(|| ConfigError::Duration {
                var,
                value: value.to_string(),
            })
        };
        let destination = match self.destination_svc_addr.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(a) => {
                if !is_host_port(a) {
                    return Err(ConfigError::DestinationAddr(a.to_string()));
                }
                let name = match self.destination_svc_name.as_deref() {
                    None | Some("") => None,
                    Some(n) => Some(
                        n.parse::<Name>()
                            .map_err(|_| ConfigError::DestinationName(n.to_string()))?,
                    ),
                };
                Some(Destination {
                    addr: a.to_string(),
                    name,
                    context: self.destination_context.clone(),
                })
            }
        };
        let inbound_ports = self
            .inbound_ports
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| ConfigError::Port(p.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let identity_disabled = self.identity_disabled.as_deref().is_some_and(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "false" | "0" | "no" | "off"
            )
        });
        let identity = if identity_disabled {
            None
        } else {
            Some(self.identity()?)
        };
        Ok(Config {
            inbound_addr: addr(
                "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
                &self.inbound_listen_addr,
            )?,
            outbound_addr: addr(
                "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR",
                &self.outbound_listen_addr,
            )?,
            admin_addr: addr("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", &self.admin_listen_addr)?,
            destination,
            inbound_ports,
            identity_disabled,
            identity,
            detect_timeout: duration(
                "LINKERD2_PROXY_DETECT_PROTOCOL_TIMEOUT",
                &self.detect_protocol_timeout,
            )?,
            connect_timeout: duration(
                "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT",
                &self.outbound_connect_timeout,
            )?,
            discovery_idle_timeout: duration(
                "LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT",
                &self.outbound_discovery_idle_timeout,
            )?,
            log: self.log.clone(),
        })
    }
}

/// A Go-style duration (`10s`, `500ms`, `1m30s`: [`tandem_core::Duration`]'s
/// format), or a bare number of milliseconds (`250`), as the proxy's
/// environment variables are written.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().map(Duration::from_millis);
    }
    s.parse::<tandem_core::Duration>()
        .ok()
        .map(tandem_core::Duration::as_std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["proxy"];
        all.extend_from_slice(argv);
        Cli::try_parse_from(all).unwrap().args.validate()
    }

    fn anchors_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    /// The identity flags `tandem inject` sets, with `anchors` as the PEM.
    fn identity_args(anchors: &str) -> Vec<String> {
        [
            ("--identity-dir", "/var/run/tandem/identity/end-entity"),
            ("--identity-trust-anchors", anchors),
            (
                "--identity-token-file",
                "/var/run/secrets/tokens/tandem-identity-token",
            ),
            (
                "--identity-svc-addr",
                "tandem-identity-headless.tandem.svc.cluster.local.:8080",
            ),
            (
                "--identity-svc-name",
                "tandem-identity.tandem.serviceaccount.identity.tandem.cluster.local",
            ),
            (
                "--identity-local-name",
                "web.emojivoto.serviceaccount.identity.tandem.cluster.local",
            ),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
    }

    fn parse_owned(argv: &[String]) -> Result<Config, ConfigError> {
        parse(&argv.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn identity_is_required_unless_disabled() {
        let err = parse(&[]).unwrap_err().to_string();
        assert!(
            err.contains("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS is not set"),
            "{err}"
        );
        assert!(err.contains("LINKERD2_PROXY_IDENTITY_DISABLED"), "{err}");
        let c = parse_owned(&identity_args(&anchors_pem())).unwrap();
        let id = c.identity.unwrap();
        assert_eq!(
            id.local_name.as_str(),
            "web.emojivoto.serviceaccount.identity.tandem.cluster.local"
        );
        assert_eq!(
            id.svc_addr,
            "tandem-identity-headless.tandem.svc.cluster.local.:8080"
        );
        assert!(!c.identity_disabled);
        let c = parse(&["--identity-disabled"]).unwrap();
        assert!(c.identity.is_none());
    }

    #[test]
    fn bad_identity_settings_are_clear_errors() {
        let pem = anchors_pem();
        let cases: &[(&str, &str, &str)] = &[
            (
                "--identity-trust-anchors",
                "not pem",
                "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            ),
            (
                "--identity-svc-addr",
                "nohost",
                "LINKERD2_PROXY_IDENTITY_SVC_ADDR",
            ),
            (
                "--identity-local-name",
                "a b",
                "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
            ),
            (
                "--identity-svc-name",
                "",
                "LINKERD2_PROXY_IDENTITY_SVC_NAME is not set",
            ),
        ];
        for (flag, value, want) in cases {
            let mut argv = identity_args(&pem);
            let i = argv.iter().position(|a| a.starts_with(flag)).unwrap();
            argv[i] = format!("{flag}={value}");
            let err = parse_owned(&argv).unwrap_err().to_string();
            assert!(err.contains(want), "{flag} {value:?}: {err}");
        }
    }

    #[test]
    fn defaults_are_linkerds_ports() {
        let c = parse_owned(&identity_args(&anchors_pem())).unwrap();
        assert_eq!(c.inbound_addr, "0.0.0.0:4143".parse().unwrap());
        assert_eq!(c.outbound_addr, "127.0.0.1:4140".parse().unwrap());
        assert_eq!(c.admin_addr, "0.0.0.0:4191".parse().unwrap());
        assert_eq!(c.destination, None);
        assert!(!c.identity_disabled);
        assert_eq!(c.detect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn cores_are_at_least_one() {
        assert!(Cli::try_parse_from(["proxy", "--cores", "0"]).is_err());
        let cli = Cli::try_parse_from(["proxy", "--cores", "2"]).unwrap();
        assert_eq!(cli.args.cores, 2);
    }

    #[test]
    fn destination_and_ports_validate() {
        let c = parse(&[
            "--destination-svc-addr",
            "tandem-dst-headless.tandem.svc.cluster.local.:8086",
            "--destination-svc-name",
            "tandem-destination.tandem.serviceaccount.identity.tandem.cluster.local",
            "--destination-context",
            r#"{"ns":"emojivoto"}"#,
            "--inbound-ports",
            "8080, 8801",
            "--identity-disabled",
        ])
        .unwrap();
        let d = c.destination.unwrap();
        assert_eq!(d.addr, "tandem-dst-headless.tandem.svc.cluster.local.:8086");
        assert_eq!(d.context, r#"{"ns":"emojivoto"}"#);
        assert!(d.name.is_some());
        assert_eq!(c.inbound_ports, [8080, 8801].into());
        assert!(c.identity_disabled);
        let pem = anchors_pem();
        for (v, want) in [
            ("disabled", true),
            ("true", true),
            ("false", false),
            ("", false),
        ] {
            let mut argv = identity_args(&pem);
            argv.push(format!("--identity-disabled={v}"));
            let c = parse_owned(&argv).unwrap();
            assert_eq!(c.identity_disabled, want, "{v:?}");
            assert_eq!(c.identity.is_none(), want, "{v:?}");
        }
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--inbound-listen-addr", "4143"],
                "LINKERD2_PROXY_INBOUND_LISTEN_ADDR",
            ),
            (&["--destination-svc-addr", "nohost"], "not host:port"),
            (
                &[
                    "--destination-svc-addr",
                    "h:1",
                    "--destination-svc-name",
                    "a b",
                ],
                "DNS-like",
            ),
            (&["--inbound-ports", "80,http"], "\"http\" is not a port"),
            (&["--detect-protocol-timeout", "soon"], "not a duration"),
        ];
        for (argv, want) in cases {
            let mut argv = argv.to_vec();
            argv.push("--identity-disabled");
            let err = parse(&argv).unwrap_err().to_string();
            assert!(err.contains(want), "{argv:?}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10000ms"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 1h "), Some(Duration::from_secs(3600)));
        for bad in ["", "soon", "-5s", "10x", "99999999999999999999"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}

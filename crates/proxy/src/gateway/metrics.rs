//! The gateway's own metrics: `gateway_refused_total{reason}` and
//! `gateway_forwarded_total{protocol}`, next to the proxy's families.

use prometheus_client::{
    encoding::EncodeLabelSet, metrics::counter::Counter, metrics::family::Family,
    registry::Registry,
};
use tandem_meshtls::{HandshakeError, gateway::Refusal};

/// Why the gateway refused a connection or a request (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The gateway holds no certificate yet.
    NoCredentials,
    /// The client presented no certificate.
    NoClientCert,
    /// The client's certificate does not chain to the trust anchors.
    Untrusted,
    /// Another TLS failure (expired, not TLS 1.3, cut off).
    Tls,
    /// The transport header could not be read.
    BadHeader,
    /// Neither a transport header nor an HTTP authority names a target.
    NoTarget,
    NotInSuffixes,
    NotAService,
    NotExported,
    Loop,
    /// The destination service knows no endpoint for the target.
    Unresolved,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoCredentials => "no_credentials",
            Reason::NoClientCert => "no_client_certificate",
            Reason::Untrusted => "untrusted_client",
            Reason::Tls => "tls",
            Reason::BadHeader => "bad_transport_header",
            Reason::NoTarget => "no_target",
            Reason::NotInSuffixes => "not_in_suffixes",
            Reason::NotAService => "not_a_service",
            Reason::NotExported => "not_exported",
            Reason::Loop => "loop",
            Reason::Unresolved => "unresolved",
        }
    }

    pub fn of_refusal(r: &Refusal) -> Self {
        match r {
            Refusal::NoClientIdentity => Reason::NoClientCert,
            Refusal::NoName | Refusal::BadAuthority { .. } => Reason::NoTarget,
            Refusal::NotInSuffixes { .. } => Reason::NotInSuffixes,
            Refusal::NotAService { .. } => Reason::NotAService,
            Refusal::NotExported { .. } => Reason::NotExported,
            Refusal::Loop { .. } => Reason::Loop,
        }
    }

    pub fn of_handshake(e: &HandshakeError) -> Self {
        match e {
            HandshakeError::ClientCertRequired => Reason::NoClientCert,
            HandshakeError::Untrusted { .. } => Reason::Untrusted,
            _ => Reason::Tls,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct GatewayMetrics {
    refused: Family<ReasonLabel, Counter>,
    forwarded: Family<ProtocolLabel, Counter>,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = GatewayMetrics::default();
        registry.register(
            "gateway_refused",
            "Connections and requests the gateway refused, by reason",
            m.refused.clone(),
        );
        registry.register(
            "gateway_forwarded",
            "Connections (tcp) and requests (http) the gateway forwarded",
            m.forwarded.clone(),
        );
        m
    }

    pub fn refused(&self, reason: Reason) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn refused_count(&self, reason: Reason) -> u64 {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .get()
    }

    pub fn forwarded(&self, protocol: &'static str) {
        self.forwarded
            .get_or_create(&ProtocolLabel { protocol })
            .inc();
    }
}

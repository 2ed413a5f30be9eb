//! Mesh TLS for tandem's proxy and gateway.
//!
//! - [`Name`]: a workload's DNS-like identity,
//!   `<sa>.<ns>.serviceaccount.identity.<control-plane-ns>.<trust-domain>`,
//!   as Linkerd names them.
//! - [`Credentials`]: what the proxy holds once identity has certified it
//!   (its leaf, the chain up to the anchors, its key), published on a
//!   `tokio::sync::watch` channel ([`CredentialsRx`]) so that a renewal
//!   reaches every new connection.
//! - [`TrustAnchors`]: the roots every peer must chain to.

#![forbid(unsafe_code)]

mod config;
mod creds;
mod detect;
pub mod gateway;
mod handshake;
mod name;
mod prefixed;
#[cfg(test)]
mod testing;
pub mod transport_header;

pub use config::{
    ClientAuth, ConfigError, H2_ALPN, HTTP1_ALPN, TRANSPORT_ALPN, Tls, TlsError, client_config,
    client_id, provider, server_config,
};
pub use creds::{
    AnchorsError, Credentials, CredentialsRx, CredentialsTx, TrustAnchors, credentials_channel,
};
pub use detect::{DetectError, Detected, MAX_PEEK, detect};
pub use handshake::{Accepted, Ago, HandshakeError, Peer, accept, connect};
pub use name::{InvalidName, Name};
pub use prefixed::PrefixedIo;

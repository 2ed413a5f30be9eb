//! Mesh TLS for tandem's proxy and gateway: who a workload is, how two
//! proxies prove it to each other, and what they say first on a connection.
//!
//! Identities and credentials:
//! - [`Name`]: a workload's DNS-like identity,
//!   `<sa>.<ns>.serviceaccount.identity.<control-plane-ns>.<trust-domain>`,
//!   as Linkerd names them.
//! - [`Credentials`]: what the proxy holds once identity has certified it
//!   (its leaf, the chain up to the anchors, its key), published on a
//!   `tokio::sync::watch` channel ([`CredentialsRx`]) so that a renewal
//!   reaches every new connection.
//! - [`TrustAnchors`]: the roots every peer must chain to.
//!
//! TLS (TLS 1.3 only, rustls on ring, as Linkerd 2.12's proxy):
//! - [`server_config`] / [`client_config`]: the rustls configurations;
//!   [`Tls`] caches them per credentials value.
//! - [`detect`]: peeks at a new connection for a ClientHello and its SNI, so
//!   an inbound proxy terminates TLS for its own name only and passes other
//!   TLS through; [`PrefixedIo`] replays the peeked bytes.
//! - [`accept`] / [`connect`]: the handshakes. The client sends the peer's
//!   identity as SNI and checks it against the server's certificate; the
//!   server learns the client's identity ([`client_id`]). Failures are a
//!   [`HandshakeError`] that names the side and the cause, e.g. "the
//!   server's certificate is for X, expected Y".
//!
//! On the connection:
//! - [`transport_header`]: the header a client writes first when ALPN
//!   agreed on `transport.l5d.io/v1` (opaque ports, gateways).
//! - [`gateway`]: the multicluster gateway's rules (suffixes, exported
//!   Services, `Forwarded` loops), as one pure decision.
//!
//! A sketch of the inbound side:
//!
//! ```no_run
//! # async fn inbound(
//! #     tls: tandem_meshtls::Tls,
//! #     io: tokio::net::TcpStream,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tandem_meshtls::{ClientAuth, Detected, accept, detect};
//!
//! let (detected, io) = detect(io, Duration::from_secs(10)).await?;
//! match detected {
//!     Detected::Tls { sni: Some(sni) } if Some(&sni) == tls.local_name().as_ref() => {
//!         let accepted = accept(io, tls.server(ClientAuth::Optional)?).await?;
//!         // Serve accepted.io; label metrics with accepted.client_id.
//!     }
//!     // Another name's TLS, or plaintext: forward the bytes as they are.
//!     _ => {}
//! }
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod config;
mod creds;
mod detect;
pub mod gateway;
mod handshake;
mod name;
mod prefixed;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport_header;

pub use config::{
    ClientAuth, ConfigError, H2_ALPN, HTTP1_ALPN, TRANSPORT_ALPN, Tls, TlsError, client_config,
    client_id, provider, server_config,
};
pub use creds::{
    AnchorsError, Credentials, CredentialsRx, CredentialsTx, TrustAnchors, credentials_channel,
};
pub use detect::{DetectError, Detected, MAX_PEEK, detect};
pub use handshake::{Accepted, HandshakeError, Peer, accept, connect};
pub use name::{InvalidName, Name};
pub use prefixed::PrefixedIo;

//! An emojivoto-compatible demo app: the same gRPC API (package
//! `emojivoto.v1`), HTTP API, environment, ports and deliberate
//! `:doughnut:` failure as Buoyant's emojivoto, written in Rust so that the
//! testbed can build its image.
//!
//! - [`emoji`]: the emoji table; [`emoji_svc`] serves it over gRPC.
//! - [`voting`]: the vote counts, the doughnut rule, and VotingService.
//! - [`web`]: the HTTP API and page over both services.
//! - [`bot`]: vote-bot, which counts its results by outcome.
//! - [`metrics`]: the `/metrics` of each part; [`cli`]: the command line.
//! - [`MANIFEST`]: the Kubernetes manifest, shaped like emojivoto's.

#![forbid(unsafe_code)]

pub mod bot;
pub mod cli;
pub mod emoji;
pub mod emoji_svc;
mod manifest;
pub mod metrics;
pub mod voting;
pub mod web;

use std::sync::Arc;

pub use self::{
    cli::main,
    manifest::{IMAGE_REPOSITORY, MANIFEST, NAMESPACE, image, manifest},
};

/// The generated gRPC code of `proto/*.proto` (package `emojivoto.v1`).
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("emojivoto.v1");
}

/// Serves emoji-svc's gRPC on `listener` until the task is dropped.
pub async fn serve_emoji(
    listener: tokio::net::TcpListener,
    metrics: metrics::GrpcMetrics,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(emoji_svc::EmojiServer::service(metrics))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await
}

/// Serves voting-svc's gRPC on `listener` until the task is dropped.
pub async fn serve_voting(
    listener: tokio::net::TcpListener,
    ballot: Arc<voting::Ballot>,
    metrics: metrics::GrpcMetrics,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(voting::VotingServer::new(ballot, metrics))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await
}

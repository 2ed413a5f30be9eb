//! `tandem identity`: the control plane's identity service.
//!
//! It holds the cluster's issuer and trust anchors and re-checks them
//! periodically; `/ready` on the admin port is true only while the issuer
//! is valid and signed by an anchor, and `/metrics` carries its expiry.
//! It serves Linkerd's `Identity/Certify` over TLS on `--grpc-addr`
//! ([`service`]), with a leaf it signs for itself ([`tls`]); it reviews each
//! workload token with the API server ([`review`]) and reports every issued
//! leaf as an Event on the ServiceAccount ([`events`]).

mod events;
mod review;
mod service;
mod tls;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, Result};
use clap::Args;
use linkerd2_proxy_api::identity::identity_server::IdentityServer;
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use tandem_admin::{Admin, Readiness};
use tandem_api::Duration;
use tandem_identity::certify::{LeafIssuer, TOKEN_AUDIENCE};
use tandem_meshtls::Name;

use crate::kube_client::ClusterArgs;

#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// The trust anchors (PEM bundle).
    #[arg(long, value_name = "FILE")]
    trust_anchors_file: PathBuf,
    /// The directory holding the issuer's crt.pem and key.pem (the mounted Secret).
    #[arg(long, value_name = "DIR")]
    issuer_dir: PathBuf,
    /// The cluster's DNS domain, also the identities' trust domain
    /// (`<sa>.<ns>.serviceaccount.identity.<control-plane-ns>.<domain>`).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The namespace of the control plane, part of every identity.
    #[arg(long, default_value = tandem_install::core::DEFAULT_NAMESPACE)]
    control_plane_namespace: String,
    /// Where to serve /live, /ready and /metrics.
    #[arg(long, default_value = "0.0.0.0:9990")]
    admin_addr: SocketAddr,
    /// Where to serve Identity/Certify (gRPC over TLS).
    #[arg(long, default_value = "0.0.0.0:8080")]
    grpc_addr: SocketAddr,
    /// How long an issued leaf certificate lives (plus 20 s of clock skew on
    /// both ends; never past the issuer's end).
    #[arg(long, default_value = "24h", value_parser = Duration::parse_period)]
    issuance_lifetime: Duration,
    /// The audience the workloads' tokens must carry.
    #[arg(long, default_value = TOKEN_AUDIENCE)]
    token_audience: String,
    /// How often to re-read and re-check the certificates (they are mounted
    /// files, so a rotated Secret is picked up).
    /// Above zero: zero would panic in `tokio::time::interval`.
    #[arg(long, default_value = "60s", value_parser = Duration::parse_period)]
    check_period: Duration,
}

struct Metrics {
    valid: Gauge,
    expiry: Gauge,
}

/// What the periodic check updates.
struct Checked {
    metrics: Metrics,
    readiness: Readiness,
    shared: Arc<service::Shared>,
    own: Arc<tls::SelfCert>,
    lifetime: tandem_identity::time::Duration,
}

pub async fn run(cluster: &ClusterArgs, args: IdentityArgs) -> Result<ExitCode> {
    let client = cluster.client().await.context("the TokenReview client")?;
    let lifetime = tandem_identity::time::Duration::try_from(std::time::Duration::from(
        args.issuance_lifetime,
    ))
    .context("--issuance-lifetime is out of range")?;
    let own_name = Name::service_account(
        tandem_install::core::IDENTITY,
        &args.control_plane_namespace,
        &args.control_plane_namespace,
        &args.cluster_domain,
    )
    .context("--control-plane-namespace and --cluster-domain must make a DNS name")?;

    let mut registry = Registry::with_prefix("tandem_identity");
    let metrics = Metrics {
        valid: Gauge::default(),
        expiry: Gauge::default(),
    };
    registry.register(
        "issuer_valid",
        "1 while the issuer is valid and signed by a trust anchor",
        metrics.valid.clone(),
    );
    registry.register(
        "issuer_expiry_timestamp_seconds",
        "When the issuer certificate expires (Unix time)",
        metrics.expiry.clone(),
    );
    let certify_metrics = service::Metrics::register(&mut registry);
    let events_dropped = Counter::default();
    registry.register(
        "events_dropped",
        "IssuedLeafCertificate Events not written (queue full or the write failed)",
        events_dropped.clone(),
    );
    let (admin, readiness) = Admin::new(registry);
    let mut server = tokio::spawn(admin.serve(args.admin_addr));

    let own = Arc::new(tls::SelfCert::new(own_name).context("the service's own key")?);
    let checked = Checked {
        metrics,
        readiness,
        shared: Arc::default(),
        own: own.clone(),
        lifetime,
    };
    // Load the issuer before serving, so the first handshakes find a certificate.
    check(&args, &checked);

    let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "tandem-identity".into());
    let certifier = service::Certifier {
        shared: checked.shared.clone(),
        client: client.clone(),
        config: service::Config {
            control_plane_ns: args.control_plane_namespace.clone(),
            trust_domain: args.cluster_domain.clone(),
            audience: args.token_audience.clone(),
            lifetime,
        },
        events: events::spawn(client, instance, events_dropped),
        metrics: certify_metrics,
    };
    let listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding --grpc-addr {}", args.grpc_addr))?;
    let incoming = tls::incoming(listener, tls::server_config(own)?);
    let mut grpc = tokio::spawn(
        tonic::transport::Server::builder()
            // A call is one or two TokenReviews: bound how long and how many
            // one client may have in flight.
            .timeout(std::time::Duration::from_secs(30))
            .concurrency_limit_per_connection(16)
            .add_service(IdentityServer::new(certifier))
            .serve_with_incoming(incoming),
    );
    tracing::info!(grpc = %args.grpc_addr, admin = %args.admin_addr, "serving");

    let mut tick = tokio::time::interval(args.check_period.into());
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => check(&args, &checked),
            res = tokio::signal::ctrl_c() => {
                res.context("waiting for a signal")?;
                tracing::info!("shutting down");
                break;
            }
            res = &mut server => {
                let reason = match res {
                    Ok(Ok(())) => "it returned".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                anyhow::bail!("the admin server on {} stopped: {reason}", args.admin_addr);
            }
            res = &mut grpc => {
                let reason = match res {
                    Ok(Ok(())) => "it returned".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                anyhow::bail!("the gRPC server on {} stopped: {reason}", args.grpc_addr);
            }
        }
    }
    server.abort();
    grpc.abort();
    Ok(ExitCode::SUCCESS)
}

/// Re-reads the certificates; loads the issuer if valid (else none), sets
/// readiness, and renews the service's own leaf when due.
fn check(args: &IdentityArgs, c: &Checked) {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let now = time::OffsetDateTime::now_utc();
    let result = (|| -> Result<LeafIssuer> {
        let anchors = read(args.trust_anchors_file.clone())?;
        let cert = read(args.issuer_dir.join("crt.pem"))?;
        let key = read(args.issuer_dir.join("key.pem"))?;
        Ok(LeafIssuer::from_pem(&anchors, &cert, &key, now)?)
    })();
    match result {
        Ok(issuer) => {
            let expiry = issuer.not_after().unix_timestamp();
            c.metrics.valid.set(1);
            c.metrics.expiry.set(expiry);
            match c.own.renew_if_due(&issuer, now, c.lifetime) {
                Ok(Some(until)) => tracing::info!(
                    name = %c.own.name(),
                    until = %tandem_identity::fmt_time(until),
                    "signed the service's own certificate"
                ),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "cannot sign the service's own certificate"),
            }
            c.shared.set(Some(Arc::new(issuer)));
            c.readiness.set(true);
            tracing::info!(expiry, cluster_domain = %args.cluster_domain, "issuer is valid");
        }
        Err(e) => {
            c.shared.set(None);
            c.metrics.valid.set(0);
            c.readiness.set(false);
            tracing::error!(error = %format!("{e:#}"), "issuer is not usable; not ready, and Certify answers Unavailable");
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: IdentityArgs,
    }

    fn parse(period: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([
            "identity",
            "--trust-anchors-file=ca.crt",
            "--issuer-dir=issuer",
            "--check-period",
            period,
        ])
    }

    #[test]
    fn a_zero_check_period_is_refused_not_panicked_on() {
        let err = parse("0s").unwrap_err().to_string();
        assert!(err.contains("must be longer than zero"), "{err}");
        let err = parse("1x").unwrap_err().to_string();
        assert!(err.contains(r#"invalid duration "1x""#), "{err}");
        let ok = parse("60s").unwrap();
        assert_eq!(ok.args.check_period, Duration::from_secs(60));
    }
}

//! `tandem identity`: the control plane's identity process.
//!
//! For now it holds the cluster's issuer and trust anchors, checks them
//! periodically, and reports on its admin port: `/ready` is true only while
//! the issuer is valid and signed by an anchor, and `/metrics` carries the
//! issuer's expiry. Issuing workload certificates comes with the data plane.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::Args;
use prometheus_client::{metrics::gauge::Gauge, registry::Registry};
use tandem_admin::{Admin, Readiness};
use tandem_api::Duration;

#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// The trust anchors (PEM bundle).
    #[arg(long, value_name = "FILE")]
    trust_anchors_file: PathBuf,
    /// The directory holding the issuer's crt.pem and key.pem (the mounted Secret).
    #[arg(long, value_name = "DIR")]
    issuer_dir: PathBuf,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Where to serve /live, /ready and /metrics.
    #[arg(long, default_value = "0.0.0.0:9990")]
    admin_addr: SocketAddr,
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

pub async fn run(args: IdentityArgs) -> Result<ExitCode> {
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
    let (admin, readiness) = Admin::new(registry);
    let mut server = tokio::spawn(admin.serve(args.admin_addr));

    let mut tick = tokio::time::interval(args.check_period.into());
    loop {
        tokio::select! {
            _ = tick.tick() => check(&args, &metrics, &readiness),
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
        }
    }
    server.abort();
    Ok(ExitCode::SUCCESS)
}

fn check(args: &IdentityArgs, metrics: &Metrics, readiness: &Readiness) {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let result = (|| -> Result<i64> {
        let anchors = read(args.trust_anchors_file.clone())?;
        let cert = read(args.issuer_dir.join("crt.pem"))?;
        let key = read(args.issuer_dir.join("key.pem"))?;
        let summary = tandem_identity::validate_issuer(
            &anchors,
            &cert,
            &key,
            time::OffsetDateTime::now_utc(),
        )?;
        Ok(summary.not_after.unix_timestamp())
    })();
    match result {
        Ok(expiry) => {
            metrics.valid.set(1);
            metrics.expiry.set(expiry);
            readiness.set(true);
            tracing::info!(expiry, cluster_domain = %args.cluster_domain, "issuer is valid");
        }
        Err(e) => {
            metrics.valid.set(0);
            readiness.set(false);
            tracing::error!(error = %format!("{e:#}"), "issuer is not usable");
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

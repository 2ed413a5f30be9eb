//! `tandem`: automatic failover of Kubernetes services across clusters.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

mod certificate;
mod output;
mod testbed;

/// Automatic failover of Kubernetes services across clusters.
///
/// tandem runs the multicluster failover workshop's path (certificates,
/// install, check, link, mirror, fail over) with one binary, and starts real
/// Kubernetes control planes on this machine to try it on.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, propagate_version = true)]
struct Cli {
    /// Log filter for diagnostics on stderr (as RUST_LOG: info, debug, tandem=trace, ...).
    #[arg(
        long,
        global = true,
        env = "TANDEM_LOG",
        default_value = "warn,kube_client::client::builder=off"
    )]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, inspect and verify certificates (the workshop's `step certificate`).
    #[command(subcommand)]
    Certificate(certificate::CertificateCommand),
    /// Real Kubernetes clusters as local processes, for trying tandem and for its tests.
    #[command(subcommand)]
    Testbed(testbed::TestbedCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Certificate(cmd) => certificate::run(cmd),
            Command::Testbed(cmd) => testbed::run(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

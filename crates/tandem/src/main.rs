//! `tandem`: automatic failover of Kubernetes services across clusters.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

mod certificate;
mod check;
mod demo;
mod failover;
mod identity;
mod install;
mod kube_client;
mod multicluster;
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

    #[command(flatten)]
    cluster: kube_client::ClusterArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the identity process of the control plane (what `install` deploys).
    Identity(identity::IdentityArgs),
    /// Run the workshop end to end on a local testbed: certificates, install,
    /// link, mirror, and a failover and failback that are checked and timed.
    Demo(demo::DemoArgs),
    /// Check a cluster before install (--pre), or check an install.
    Check(check::CheckArgs),
    /// Print the control plane's manifests (or, with --crds, the CRDs) for `kubectl apply -f -`.
    Install(install::InstallArgs),
    /// Print the control plane's objects for `kubectl delete -f -`.
    Uninstall(install::UninstallArgs),
    /// The SMI TrafficSplit CRD (the workshop's `linkerd smi install`).
    #[command(subcommand)]
    Smi(install::SmiCommand),
    /// The failover extension: install it, run the controller, see its state.
    #[command(subcommand)]
    Failover(FailoverCommand),
    /// Create, inspect and verify certificates (the workshop's `step certificate`).
    #[command(subcommand)]
    Certificate(certificate::CertificateCommand),
    /// Link clusters and mirror their exported services (the workshop's `linkerd multicluster`).
    #[command(subcommand)]
    Multicluster(multicluster::MulticlusterCommand),
    /// Run the multicluster gateway (what `multicluster install` deploys).
    Gateway(multicluster::GatewayArgs),
    /// Real Kubernetes clusters as local processes, for trying tandem and for its tests.
    #[command(subcommand)]
    Testbed(testbed::TestbedCommand),
}

#[derive(Debug, Subcommand)]
enum FailoverCommand {
    /// Run the failover controller (in a cluster, or from a workstation with --context).
    Run(failover::RunArgs),
    /// List each controlled split: its state, its active backends, when it last changed.
    Status(failover::StatusArgs),
    /// Print the failover controller's manifests for `kubectl apply -f -`.
    Install(install::FailoverInstallArgs),
    /// Print the failover controller's objects for `kubectl delete -f -`.
    Uninstall(install::FailoverUninstallArgs),
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
            Command::Check(args) => check::run(&cli.cluster, args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Identity(args) => identity::run(args).await,
            Command::Install(args) => install::install(args),
            Command::Uninstall(args) => install::uninstall(args),
            Command::Smi(cmd) => install::smi(cmd),
            Command::Failover(FailoverCommand::Install(args)) => install::failover_install(args),
            Command::Failover(FailoverCommand::Run(args)) => {
                failover::run(&cli.cluster, args).await
            }
            Command::Failover(FailoverCommand::Status(args)) => {
                failover::status(&cli.cluster, args).await
            }
            Command::Failover(FailoverCommand::Uninstall(args)) => {
                install::failover_uninstall(args)
            }
            Command::Testbed(cmd) => testbed::run(&cli.cluster, cmd).await,
            Command::Multicluster(cmd) => multicluster::run(&cli.cluster, cmd).await,
            Command::Gateway(args) => multicluster::gateway(args).await,
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

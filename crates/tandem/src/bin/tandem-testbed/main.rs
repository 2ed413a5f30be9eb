//! `tandem-testbed`, what `tandem testbed` runs: real Kubernetes clusters as
//! local processes, for trying tandem and for its tests. A development tool:
//! the tandem image does not carry it.

#![forbid(unsafe_code)]

use clap::Parser;
use tandem::{entry, kube_client::ClusterArgs};

mod commands;

/// Real Kubernetes clusters as local processes, for trying tandem and for its tests.
#[derive(Debug, Parser)]
#[command(name = "tandem testbed", bin_name = "tandem testbed", version)]
struct Cli {
    /// Log filter for diagnostics on stderr (as RUST_LOG: info, debug, tandem=trace, ...).
    #[arg(long, global = true, env = "TANDEM_LOG", default_value = entry::DEFAULT_LOG)]
    log: String,

    #[command(flatten)]
    cluster: ClusterArgs,

    #[command(subcommand)]
    command: commands::TestbedCommand,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    entry::run(&cli.log, || commands::run(&cli.cluster, cli.command))
}

//! `tandem-bench`: benchmarks of tandem on a running testbed cluster.
//! `bench/failover.sh` starts a private testbed and runs it; see BENCHMARKS.md.

#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

mod controller;
mod failover;
mod objects;
mod stats;

/// Benchmarks of tandem on a running testbed cluster.
#[derive(Debug, Parser)]
#[command(name = "tandem-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The failover controller: reaction time to readiness flips, and memory.
    ///
    /// Creates services, their EndpointSlices and TrafficSplits in a
    /// namespace, starts `tandem failover run` against them, flips primaries
    /// unready and ready again one at a time, then adds splits and reads the
    /// controller's RSS. Progress goes to stderr; the summary to stdout, its
    /// last line being the summary as JSON.
    Failover(failover::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Failover(args) => failover::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the controller's log goes when no file is given.
fn default_log() -> PathBuf {
    std::env::temp_dir().join(format!(
        "tandem-bench-controller-{}.log",
        std::process::id()
    ))
}

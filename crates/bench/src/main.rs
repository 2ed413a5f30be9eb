//! `tandem-bench`: benchmarks of tandem on a running testbed.
//! `bench/failover.sh` and `bench/mirror.sh` start a private testbed and run
//! it; see BENCHMARKS.md.

#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

mod api;
mod churn;
mod cli;
mod controller;
mod destination;
mod failover;
mod flips;
mod mirror;
mod objects;
mod proxy;
mod proxy_weights;
mod report;
mod restart;
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
    /// The service mirror: time to mirror many exported Services, reaction
    /// time to remote readiness flips, and memory.
    ///
    /// Installs tandem and multicluster in two clusters and links them with
    /// the CLI, creates Services in the remote cluster, starts `tandem
    /// gateway` and `tandem multicluster mirror`, exports every Service at
    /// once, then flips remote endpoints unready and ready again one at a
    /// time. Progress goes to stderr; the summary to stdout, its last line
    /// being the summary as JSON.
    Mirror(mirror::Args),
    /// The destination service: time from a TrafficSplit weight change to a
    /// GetProfile subscriber seeing it, with many profiles subscribed.
    Destination(destination::Args),
    /// The sidecar proxy: the latency a client and a server proxy add to
    /// HTTP/1.1 requests at a fixed rate, against the app reached directly,
    /// and the proxies' RSS idle and under that load. Needs the namespaces
    /// and redirects that `bench/proxy.sh` sets up; run it there.
    Proxy(proxy::Args),
    /// The app `bench/proxy.sh` measures against: `ok` on every `--listen`.
    ProxyApp(proxy::AppArgs),
    /// The sidecar proxy and the destination service together: time from a
    /// TrafficSplit weight change to a running `tandem proxy` sending
    /// requests by the new weights. Needs the namespace and redirects that
    /// `bench/proxy-weights.sh` sets up; run it there.
    ProxyWeights(proxy_weights::Args),
    /// Pooled HTTP/1 connections closed by the server just as they are
    /// reused: how many requests hyper-util's client alone and the proxy's
    /// endpoint client answer, fail, or leave hung.
    /// Needs nothing but loopback.
    Churn(churn::Args),
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
        let bench = async move {
            match cli.command {
                Command::Failover(args) => failover::run(args).await,
                Command::Mirror(args) => mirror::run(args).await,
                Command::Destination(args) => destination::run(args).await,
                Command::Proxy(args) => proxy::run(args).await,
                Command::ProxyApp(args) => proxy::app(args).await,
                Command::ProxyWeights(args) => proxy_weights::run(args).await,
                Command::Churn(args) => churn::run(args).await,
            }
        };
        // On SIGINT or SIGTERM the benchmark is dropped, which kills the
        // processes it started (each by its pid).
        tokio::select! {
            r = bench => r,
            s = interrupted() => Err(s),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", tandem_util::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGINT or SIGTERM; the error says which.
/// A signal that cannot be listened to never comes.
async fn interrupted() -> anyhow::Error {
    use tokio::signal::unix::{SignalKind, signal};
    let int = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = int => anyhow::anyhow!("interrupted (SIGINT)"),
        _ = term => anyhow::anyhow!("terminated (SIGTERM)"),
    }
}

/// Where the controller's log goes when no file is given.
fn default_log() -> PathBuf {
    std::env::temp_dir().join(format!(
        "tandem-bench-controller-{}.log",
        std::process::id()
    ))
}

/// Prints a benchmark's summary as one JSON line on stdout (the last line
/// the scripts show), and writes the same line to `file` if one is given
/// (`--json FILE`).
pub(crate) fn emit_json(
    summary: &serde_json::Value,
    file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let line = serde_json::to_string(summary)?;
    if let Some(path) = file {
        std::fs::write(path, format!("{line}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{line}");
    Ok(())
}

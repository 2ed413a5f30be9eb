//! The `emojivoto` command: one binary, a subcommand per part of the app,
//! configured by emojivoto's environment variables.

use std::{
    net::{IpAddr, SocketAddr},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::{bot, metrics};

/// An emojivoto-compatible demo app: vote for your favourite emoji.
///
/// emoji-svc and voting-svc speak gRPC (package emojivoto.v1), web serves
/// the page and the HTTP API over them, and vote-bot votes steadily. Voting
/// for :doughnut: fails, on purpose, as in emojivoto.
#[derive(Debug, Parser)]
#[command(name = "emojivoto", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The emoji service: ListAll and FindByShortcode over gRPC.
    EmojiSvc(GrpcArgs),
    /// The voting service: one Vote<Name> per emoji, and Results.
    VotingSvc(VotingArgs),
    /// The web front end: /api/list, /api/vote, /api/leaderboard and the page.
    Web(WebArgs),
    /// Votes through web at a steady rate, counting results on /metrics.
    VoteBot(BotArgs),
}

#[derive(Debug, Args)]
struct Listen {
    /// The address the servers listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0")]
    listen_addr: IpAddr,
}

#[derive(Debug, Args)]
struct Drain {
    /// After SIGTERM, go on serving this many seconds before exiting: the
    /// pod's endpoints are being removed meanwhile, so callers (and their
    /// proxies) stop sending before the app stops answering, and no
    /// request is cut off. Keep it under the pod's grace period (30 s).
    #[arg(long, env = "SHUTDOWN_DRAIN_SECONDS", default_value_t = 5.0, value_parser = seconds)]
    shutdown_drain_seconds: f64,
}

#[derive(Debug, Args)]
struct GrpcArgs {
    /// The gRPC port.
    #[arg(long, env = "GRPC_PORT", default_value_t = 8080)]
    grpc_port: u16,
    /// The port of Prometheus' /metrics.
    #[arg(long, env = "PROM_PORT", default_value_t = 8801)]
    prom_port: u16,
    #[command(flatten)]
    listen: Listen,
    #[command(flatten)]
    drain: Drain,
}

#[derive(Debug, Args)]
struct VotingArgs {
    #[command(flatten)]
    grpc: GrpcArgs,
    /// The share (0 to 1) of :doughnut: votes that fail; 1 fails them all,
    /// as emojivoto v11.
    #[arg(long, env = "FAILURE_RATE", default_value_t = 1.0, value_parser = share)]
    failure_rate: f64,
}

#[derive(Debug, Args)]
struct WebArgs {
    /// The HTTP port.
    #[arg(long, env = "WEB_PORT", default_value_t = 8080)]
    web_port: u16,
    /// emoji-svc's host:port.
    #[arg(
        long,
        env = "EMOJISVC_HOST",
        default_value = "emoji-svc.emojivoto:8080"
    )]
    emojisvc_host: String,
    /// voting-svc's host:port.
    #[arg(
        long,
        env = "VOTINGSVC_HOST",
        default_value = "voting-svc.emojivoto:8080"
    )]
    votingsvc_host: String,
    #[command(flatten)]
    listen: Listen,
    #[command(flatten)]
    drain: Drain,
}

#[derive(Debug, Args)]
struct BotArgs {
    /// web's host:port.
    #[arg(long, env = "WEB_HOST", default_value = "web-svc.emojivoto:80")]
    web_host: String,
    /// Votes a second (each after a GET /api/list), e.g. 0.5 or 100.
    #[arg(long, env = "REQUEST_RATE", default_value_t = 1.0, value_parser = rate)]
    request_rate: f64,
    /// The longest a request may take, in seconds, before it counts as failed.
    #[arg(long, env = "REQUEST_TIMEOUT_SECONDS", default_value_t = 5.0, value_parser = rate)]
    request_timeout_seconds: f64,
    /// Wait (uncounted) until web lists the emojis before voting, so that
    /// the pods' start-up order counts no failures.
    #[arg(long, env = "WAIT_FOR_WEB", default_value_t = true, action = clap::ArgAction::Set)]
    wait_for_web: bool,
    /// The port of Prometheus' /metrics (votebot_requests_total).
    #[arg(long, env = "PROM_PORT", default_value_t = 8801)]
    prom_port: u16,
    #[command(flatten)]
    listen: Listen,
}

/// A number in [0, 1].
fn share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a number from 0 to 1")),
    }
}

/// A finite number of seconds, 0 or more.
fn seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=3600.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 3600")),
    }
}

/// A finite number above 0.
fn rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 1e6 => Ok(x),
        _ => Err(format!("{s:?} is not a number above 0 (and at most 1e6)")),
    }
}

/// Runs the command line; what the `emojivoto` binary's `main` calls.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let drain = cli.command.drain();
    let served = runtime.block_on(async {
        tokio::select! {
            served = run(cli) => served,
            stop = async {
                stopped().await?;
                if !drain.is_zero() {
                    tracing::info!(?drain, "draining: serving on until the endpoints are gone");
                    tokio::time::sleep(drain).await;
                }
                Ok(())
            } => stop,
        }
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// How long the servers go on serving after SIGTERM; vote-bot serves
    /// no one and stops at once.
    fn drain(&self) -> Duration {
        let drain = match self {
            Command::EmojiSvc(a) => &a.drain,
            Command::VotingSvc(a) => &a.grpc.drain,
            Command::Web(a) => &a.drain,
            Command::VoteBot(_) => return Duration::ZERO,
        };
        Duration::from_secs_f64(drain.shutdown_drain_seconds)
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    match cli.command {
        Command::EmojiSvc(a) => {
            let m = metrics::GrpcMetrics::register(&mut registry);
            let (grpc, prom) = grpc_listeners(&a).await?;
            let serve = crate::serve_emoji(grpc, m);
            with_metrics(registry, prom, async { Ok(serve.await?) }).await
        }
        Command::VotingSvc(a) => {
            let m = metrics::GrpcMetrics::register(&mut registry);
            let (grpc, prom) = grpc_listeners(&a.grpc).await?;
            let ballot = Arc::new(crate::voting::Ballot::new(a.failure_rate));
            let serve = crate::serve_voting(grpc, ballot, m);
            with_metrics(registry, prom, async { Ok(serve.await?) }).await
        }
        Command::Web(a) => {
            let listener = bind(a.listen.listen_addr, a.web_port).await?;
            let backends = crate::web::Backends::new(
                crate::web::client::channel(&a.emojisvc_host)
                    .with_context(|| format!("EMOJISVC_HOST {:?}", a.emojisvc_host))?,
                crate::web::client::channel(&a.votingsvc_host)
                    .with_context(|| format!("VOTINGSVC_HOST {:?}", a.votingsvc_host))?,
            );
            tracing::info!(port = a.web_port, "web serving");
            Ok(axum::serve(listener, crate::web::router(backends)).await?)
        }
        Command::VoteBot(a) => {
            let m = bot::BotMetrics::register(&mut registry);
            let prom = SocketAddr::new(a.listen.listen_addr, a.prom_port);
            let config = bot::BotConfig {
                web_host: a.web_host,
                rate: a.request_rate,
                timeout: Duration::from_secs_f64(a.request_timeout_seconds),
                wait_for_web: a.wait_for_web,
            };
            tokio::select! {
                served = metrics::serve(registry, prom) => {
                    served.with_context(|| format!("serving /metrics on {prom}"))
                }
                () = bot::run(config, m) => Ok(()),
            }
        }
    }
}

/// Waits for SIGTERM or SIGINT: as a container's PID 1 the process gets no
/// default handling, and would hold its pod for the whole grace period.
async fn stopped() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping");
    Ok(())
}

async fn grpc_listeners(a: &GrpcArgs) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let grpc = bind(a.listen.listen_addr, a.grpc_port).await?;
    tracing::info!(port = a.grpc_port, "gRPC serving");
    Ok((grpc, SocketAddr::new(a.listen.listen_addr, a.prom_port)))
}

async fn bind(ip: IpAddr, port: u16) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))
}

/// Runs `server` beside the `/metrics` server; either ending ends both.
async fn with_metrics(
    registry: Registry,
    prom: SocketAddr,
    server: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::select! {
        served = metrics::serve(registry, prom) => {
            served.with_context(|| format!("serving /metrics on {prom}"))
        }
        served = server => served,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rates_and_shares_are_checked() {
        assert_eq!(rate("2.5"), Ok(2.5));
        assert_eq!(rate("100"), Ok(100.0));
        for bad in ["0", "-1", "nan", "inf", "x", ""] {
            assert!(rate(bad).is_err(), "{bad:?}");
        }
        assert_eq!(seconds("0"), Ok(0.0));
        assert_eq!(seconds("2.5"), Ok(2.5));
        for bad in ["-1", "nan", "3601", "x"] {
            assert!(seconds(bad).is_err(), "{bad:?}");
        }
        assert_eq!(share("0"), Ok(0.0));
        assert_eq!(share("1"), Ok(1.0));
        for bad in ["1.5", "-0.1", "x"] {
            assert!(share(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_servers_drain_after_sigterm_and_vote_bot_does_not() {
        let drain = |args: &[&str]| {
            Cli::try_parse_from(args)
                .unwrap_or_else(|e| panic!("{args:?}: {e}"))
                .command
                .drain()
        };
        assert_eq!(drain(&["emojivoto", "emoji-svc"]), Duration::from_secs(5));
        assert_eq!(
            drain(&["emojivoto", "voting-svc", "--shutdown-drain-seconds", "0.5"]),
            Duration::from_millis(500)
        );
        assert_eq!(
            drain(&["emojivoto", "web", "--shutdown-drain-seconds", "0"]),
            Duration::ZERO
        );
        assert_eq!(drain(&["emojivoto", "vote-bot"]), Duration::ZERO);
    }

    #[test]
    fn emojivotos_environment_names_are_read() {
        let help = Cli::command()
            .find_subcommand_mut("vote-bot")
            .unwrap()
            .render_long_help()
            .to_string();
        for name in ["WEB_HOST", "REQUEST_RATE", "PROM_PORT"] {
            assert!(help.contains(name), "{name} not in:\n{help}");
        }
        let parsed = Cli::try_parse_from(["emojivoto", "vote-bot", "--request-rate", "0"]);
        assert!(parsed.is_err(), "a rate of 0 is refused");
    }
}

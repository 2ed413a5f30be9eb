//! The entry point every tandem binary shares: logging, the runtime, and
//! how an error ends the process.

use std::{future::Future, io::IsTerminal, process::ExitCode};

/// The default `--log` filter.
pub const DEFAULT_LOG: &str = "warn,kube_client::client::builder=off";

/// Sets up logging on stderr (colours only on a terminal, so that log files
/// stay plain text), runs `body` on a multi-threaded runtime, and prints its
/// error, if any, as `error: ...` with its causes.
pub fn run<F, Fut>(log: &str, body: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    run_with_workers(log, None, body)
}

/// As [`run`], on `workers` threads: `Some(1)` is a single-threaded
/// runtime (the proxy's default, as `LINKERD2_PROXY_CORES`), `None` one
/// worker per core.
pub fn run_with_workers<F, Fut>(log: &str, workers: Option<usize>, body: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body()) {
        Ok(code) => code,
        Err(e) => {
            // Each cause once: many (kube's among them) repeat their source's
            // text in their own, which `{:#}` would print again.
            eprintln!("error: {}", tandem_util::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

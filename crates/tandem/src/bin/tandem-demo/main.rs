//! `tandem-demo`, what `tandem demo` runs: the workshop end to end on a
//! local testbed. A development tool: the tandem image does not carry it.

#![forbid(unsafe_code)]

use clap::Parser;
use tandem::entry;

mod demo;

/// Run the workshop end to end on a local testbed: certificates, install,
/// link, mirror, and a failover and failback that are checked and timed.
#[derive(Debug, Parser)]
#[command(name = "tandem demo", bin_name = "tandem demo", version)]
struct Cli {
    /// Log filter for diagnostics on stderr (as RUST_LOG: info, debug, tandem=trace, ...).
    #[arg(long, env = "TANDEM_LOG", default_value = entry::DEFAULT_LOG)]
    log: String,

    #[command(flatten)]
    demo: demo::DemoArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    entry::run(&cli.log, || demo::run(cli.demo))
}

//! `tandem check`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::{kube_client::ClusterArgs, output::Format};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Check that the cluster is ready for `tandem install`, instead of checking an install.
    #[arg(long)]
    pre: bool,
    /// The control plane's namespace.
    #[arg(
        long,
        visible_alias = "linkerd-namespace",
        short = 'L',
        default_value = tandem_install::core::DEFAULT_NAMESPACE
    )]
    control_plane_namespace: String,
    /// Also check the data plane, as `linkerd check --proxy`: the proxies
    /// are ready, at the CLI's version and carry the current trust anchors,
    /// and settings are labels or annotations as they must be.
    #[arg(long, conflicts_with = "pre")]
    proxy: bool,
    /// With --proxy: the namespace whose proxies to check. Default: every
    /// namespace.
    #[arg(short, long, requires = "proxy")]
    namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// How long to keep retrying checks that time may fix (replicas still
    /// starting) before reporting them failed: 0s, 30s, 5m.
    #[arg(long, default_value = "60s")]
    wait: tandem_api::Duration,
}

/// Exits non-zero when any check fails; warnings do not fail it.
pub async fn run(cluster: &ClusterArgs, args: CheckArgs) -> Result<ExitCode> {
    let options = tandem_check::Options {
        pre: args.pre,
        namespace: args.control_plane_namespace,
        proxy: args.proxy.then_some(args.namespace),
    };
    let deadline = std::time::Instant::now() + args.wait.as_std();
    let mut waiting = false;
    let report = loop {
        let client = cluster
            .client()
            .await
            .map_err(|e| tandem_util::error_chain(e.as_ref()));
        let report = tandem_check::run(client, options.clone()).await;
        if !report.only_retryable_failures() || std::time::Instant::now() >= deadline {
            break report;
        }
        if !waiting {
            eprintln!(
                "waiting for the {} to become available (up to {})...",
                if options.proxy.is_some() {
                    "control plane and the proxies"
                } else {
                    "control plane"
                },
                args.wait
            );
            waiting = true;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    match args.output {
        Format::Table => print!("{}", tandem_check::render_table(&report)),
        Format::Json => println!("{}", tandem_check::render_json(&report)),
    }
    Ok(if report.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

//! `tandem testbed`: start, inspect and stop the local clusters.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tandem_testbed::{
    Component, Config, DEFAULT_BASE_PORT, Progress, StderrProgress, Testbed, Toolchain, UpOutcome,
};

use crate::output::{self, Format};

#[derive(Debug, Subcommand)]
pub enum TestbedCommand {
    /// Start the clusters (building the Kubernetes binaries first if needed).
    ///
    /// Each cluster runs etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler and a kwok fake node, all on 127.0.0.1. Pods get IPs
    /// from 127.(10+i).0.0/16. One kubeconfig holds a context per cluster;
    /// the `export KUBECONFIG=...` line is printed on stdout, so
    /// `eval "$(tandem testbed up)"` works. Running it again on a running
    /// testbed only prints that line.
    Up(UpArgs),
    /// Stop every process of the testbed and check that none is left. Cluster
    /// data is kept for the next `up` unless --purge is given.
    Down(DownArgs),
    /// List each cluster's components, their health and memory.
    Status(StatusArgs),
    /// Print the `export KUBECONFIG=...` line of a running testbed.
    Env(DirArgs),
    /// Build the Kubernetes binaries from Go modules (if needed) and print their directory.
    Build,
    /// Stop one component of one cluster, as an outage drill.
    Stop(ComponentArgs),
    /// Start a stopped component again and wait until it is healthy.
    Start(ComponentArgs),
}

#[derive(Debug, Args)]
pub struct DirArgs {
    /// The testbed's directory: state, certificates, etcd data and logs.
    #[arg(long, env = "TANDEM_TESTBED_DIR", default_value_os_t = tandem_testbed::default_dir())]
    dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Cluster names, comma-separated; each becomes a kubeconfig context.
    #[arg(long, value_delimiter = ',', default_value = "east,west")]
    clusters: Vec<String>,
    /// The first port; each cluster takes 10 ports from here, in order. Keep
    /// the range below the ephemeral ports (32768 and up on Linux), where an
    /// outgoing connection could take a testbed port first.
    #[arg(long, env = "TANDEM_TESTBED_BASE_PORT", default_value_t = DEFAULT_BASE_PORT)]
    base_port: u16,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Also delete the directory: certificates, etcd data, logs.
    #[arg(long)]
    purge: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Only these clusters (comma-separated).
    #[arg(long, value_delimiter = ',')]
    cluster: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Args)]
pub struct ComponentArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// The cluster, as named at `up`.
    #[arg(long)]
    cluster: String,
    /// etcd, kube-apiserver, kube-controller-manager, kube-scheduler or kwok.
    #[arg(value_parser = parse_component)]
    component: Component,
}

fn parse_component(s: &str) -> Result<Component, String> {
    Component::parse(s).ok_or_else(|| {
        let names: Vec<_> = Component::ALL.iter().map(|c| c.name()).collect();
        format!(
            "unknown component {s:?}; expected one of {}",
            names.join(", ")
        )
    })
}

pub async fn run(cmd: TestbedCommand) -> Result<ExitCode> {
    match cmd {
        TestbedCommand::Up(args) => up(args).await,
        TestbedCommand::Down(args) => down(args).await,
        TestbedCommand::Status(args) => status(args).await,
        TestbedCommand::Env(args) => {
            let tb = Testbed::open(&args.dir)?;
            println!("{}", export_line(&tb));
            Ok(ExitCode::SUCCESS)
        }
        TestbedCommand::Build => {
            let tc = build_toolchain().await?;
            println!("{}", tc.bin_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        TestbedCommand::Stop(args) => {
            let tb = Testbed::open(&args.dir.dir)?;
            tb.stop_component(&args.cluster, args.component)?;
            eprintln!("{}: stopped {}", args.cluster, args.component);
            Ok(ExitCode::SUCCESS)
        }
        TestbedCommand::Start(args) => {
            let tb = Testbed::open(&args.dir.dir)?;
            tb.start_component(&args.cluster, args.component).await?;
            eprintln!("{}: {} is healthy", args.cluster, args.component);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn export_line(tb: &Testbed) -> String {
    format!("export KUBECONFIG={}", tb.kubeconfig_path().display())
}

/// Builds on a blocking thread, so that Ctrl-C is still heard.
async fn build_toolchain() -> Result<Toolchain> {
    let progress = Arc::new(StderrProgress::default());
    let build = tokio::task::spawn_blocking(move || Toolchain::ensure(progress.as_ref()));
    tokio::select! {
        res = build => Ok(res.context("the build thread failed")??),
        _ = tokio::signal::ctrl_c() => bail!("interrupted; the partial build is discarded"),
    }
}

async fn up(args: UpArgs) -> Result<ExitCode> {
    let config = Config::new(args.dir.dir.clone(), args.base_port, args.clusters)?;
    build_toolchain().await?;
    let progress = StderrProgress::default();
    progress.step(&format!(
        "starting clusters {} in {}",
        config.clusters.join(", "),
        config.dir.display()
    ));
    let dir = config.dir.clone();
    let result = tokio::select! {
        res = Testbed::up(config, &progress) => res,
        _ = tokio::signal::ctrl_c() => {
            progress.step("interrupted: stopping what was started");
            // `up` released its lock when it was dropped.
            let _ = Testbed::down(&dir, false, &progress);
            return Err(tandem_testbed::Error::Interrupted.into());
        }
    };
    let (tb, outcome) = result?;
    match outcome {
        UpOutcome::Started => progress.step(&format!(
            "clusters {} are up (Kubernetes {}); contexts: {}",
            tb.config.clusters.join(", "),
            tb.state.kube_version,
            tb.config.clusters.join(", ")
        )),
        UpOutcome::AlreadyRunning => {}
    }
    println!("{}", export_line(&tb));
    Ok(ExitCode::SUCCESS)
}

async fn down(args: DownArgs) -> Result<ExitCode> {
    let dir = args.dir.dir;
    let progress = StderrProgress::default();
    let stopped = Testbed::down(&dir, args.purge, &progress)?;
    let left = tandem_testbed::leftover_processes(&dir);
    if !left.is_empty() {
        bail!("processes of the testbed are still running after down: {left:?}; stop them by pid");
    }
    progress.step(&format!(
        "stopped {} process(es); none of the testbed is left running{}",
        stopped.len(),
        if args.purge {
            "; directory removed"
        } else {
            ""
        }
    ));
    Ok(ExitCode::SUCCESS)
}

async fn status(args: StatusArgs) -> Result<ExitCode> {
    let tb = Testbed::open(&args.dir.dir)?;
    for name in &args.cluster {
        tb.config.layout(name)?;
    }
    let mut status = tb.status().await;
    if !args.cluster.is_empty() {
        status.clusters.retain(|c| args.cluster.contains(&c.name));
    }
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Format::Table => {
            let rows: Vec<Vec<String>> = status
                .clusters
                .iter()
                .flat_map(|c| {
                    c.components.iter().map(move |s| {
                        vec![
                            c.name.clone(),
                            s.component.to_string(),
                            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                            match (&s.error, s.healthy) {
                                (_, true) => "healthy".to_string(),
                                (Some(e), false) => format!("unhealthy: {}", first_line(e)),
                                (None, false) => "unhealthy".to_string(),
                            },
                            s.rss_bytes.map(output::mib).unwrap_or_else(|| "-".into()),
                            s.endpoint.clone(),
                        ]
                    })
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &["CLUSTER", "COMPONENT", "PID", "HEALTH", "RSS", "ENDPOINT"],
                    &rows
                )
            );
            println!(
                "\nKubernetes {}, total RSS {}\n{}",
                status.kube_version,
                output::mib(status.rss_bytes()),
                export_line(&tb)
            );
        }
    }
    Ok(if status.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

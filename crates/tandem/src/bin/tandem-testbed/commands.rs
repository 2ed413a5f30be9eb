//! The commands of `tandem testbed`: start, inspect and stop the local
//! clusters, load images, and the agent the testbed runs.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tandem_testbed::{
    Component, Config, DEFAULT_BASE_PORT, Nodes, Progress, StderrProgress, Testbed, Toolchain,
    UpOutcome,
};

use tandem::{
    kube_client::ClusterArgs,
    output::{self, Format},
};

#[derive(Debug, Subcommand)]
pub enum TestbedCommand {
    /// Start the clusters (building the Kubernetes binaries first if needed).
    ///
    /// Each cluster runs etcd, kube-apiserver, kube-controller-manager and
    /// kube-scheduler as local processes. With real nodes (the default; needs
    /// root) each cluster also gets a node: a network namespace with
    /// containerd, kubelet and kube-proxy, CoreDNS, a LoadBalancer address
    /// pool, and a tainted kwok node for benchmarks; every address is in
    /// 198.18.0.0/15. With `--nodes fake` there is only the kwok node, and
    /// pods are records on 127.(10+i).0.0/16 that never run.
    ///
    /// One kubeconfig holds a context per cluster; the `export
    /// KUBECONFIG=...` line is printed on stdout, so `eval "$(tandem testbed
    /// up)"` works. Running it again on a running testbed only prints that
    /// line.
    Up(UpArgs),
    /// Stop every process of the testbed and check that none is left. Cluster
    /// data is kept for the next `up` unless --purge is given.
    Down(DownArgs),
    /// List each cluster's components, their health and memory.
    Status(StatusArgs),
    /// Print the `export KUBECONFIG=...` line of a running testbed.
    Env(DirArgs),
    /// Build the testbed's binaries from Go modules (if needed): the control
    /// plane, the dev tools and a real node's (kubelet, kube-proxy, containerd,
    /// CNI plugins, CoreDNS, pause). Prints the one directory that holds them.
    Build,
    /// Stop one component of one cluster, as an outage drill.
    Stop(ComponentArgs),
    /// Start a stopped component again and wait until it is healthy.
    Start(ComponentArgs),
    /// Load an image into the nodes' containerd; nodes never pull.
    ///
    /// ARCHIVE is an OCI image layout archive (a tar with oci-layout,
    /// index.json and blobs/) whose index names the image with the
    /// annotation io.containerd.image.name. With --binary PATH --as REF, one
    /// Linux binary becomes the image REF instead: the binary at /NAME as
    /// its entrypoint, with the shared libraries it links, if any. Pods then
    /// use the image with `imagePullPolicy: IfNotPresent` or `Never`.
    Load(LoadArgs),
    /// Run one cluster's testbed agent: LoadBalancer addresses from a pool,
    /// and hints for images the nodes lack. The testbed starts it.
    #[command(hide = true)]
    Agent(AgentArgs),
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// The image archive to load.
    #[arg(required_unless_present = "binary", conflicts_with = "binary")]
    archive: Option<PathBuf>,
    /// A binary to load as an image (with --as).
    #[arg(long, requires = "reference")]
    binary: Option<PathBuf>,
    /// The image reference for --binary, such as example.com/tool:1.0.
    #[arg(long = "as", value_name = "REF", id = "reference")]
    reference: Option<String>,
    /// Only these clusters (comma-separated); default: every cluster.
    #[arg(long, value_delimiter = ',')]
    cluster: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The cluster's LoadBalancer address pool, such as 198.18.64.0/24.
    #[arg(long, value_name = "CIDR")]
    lb_pool: tandem_testbed::agent::Pool,
    /// The port of /healthz, /live, /ready and /metrics, on 127.0.0.1.
    #[arg(long, value_name = "PORT")]
    health_port: u16,
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
    /// `real`: pods run on a kubelet in a network namespace per cluster
    /// (needs root). `fake`: a kwok node only, for tests and benchmarks of
    /// the control plane with thousands of pods.
    #[arg(long, env = "TANDEM_TESTBED_NODES", value_enum, default_value_t = NodesArg::Real)]
    nodes: NodesArg,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum NodesArg {
    Real,
    Fake,
}

impl From<NodesArg> for Nodes {
    fn from(n: NodesArg) -> Self {
        match n {
            NodesArg::Real => Nodes::Real,
            NodesArg::Fake => Nodes::Fake,
        }
    }
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

pub async fn run(cluster: &ClusterArgs, cmd: TestbedCommand) -> Result<ExitCode> {
    match cmd {
        TestbedCommand::Agent(args) => agent(cluster, args).await,
        TestbedCommand::Up(args) => up(args).await,
        TestbedCommand::Down(args) => down(args).await,
        TestbedCommand::Status(args) => status(args).await,
        TestbedCommand::Env(args) => {
            let tb = Testbed::open(&args.dir)?;
            println!("{}", export_line(&tb));
            Ok(ExitCode::SUCCESS)
        }
        TestbedCommand::Build => {
            // Every group: the control plane and dev tools, and a real node's
            // binaries. `up` builds only what its clusters need.
            let progress = Arc::new(StderrProgress::default());
            let build = tokio::task::spawn_blocking(move || {
                Toolchain::ensure_groups(progress.as_ref(), &tandem_testbed::toolchain::Group::ALL)
            });
            let tc = tokio::select! {
                res = build => res.context("the build thread failed")??,
                _ = tokio::signal::ctrl_c() => bail!("interrupted; the partial build is discarded"),
            };
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
        TestbedCommand::Load(args) => load(args),
    }
}

fn load(args: LoadArgs) -> Result<ExitCode> {
    use tandem_testbed::image;
    let tb = Testbed::open(&args.dir.dir)?;
    let archive = match (&args.archive, &args.binary, &args.reference) {
        (Some(archive), _, _) => archive.clone(),
        (None, Some(binary), Some(reference)) => {
            let spec = image::binary_image(binary, reference)?;
            let built = image::ensure_archive(&spec)?;
            eprintln!(
                "built image {} from {} ({})",
                built.id.reference,
                binary.display(),
                built.path.display()
            );
            built.path
        }
        _ => bail!("give an ARCHIVE, or --binary PATH --as REF"),
    };
    let loaded = tb.load(&archive, &args.cluster)?;
    let clusters = if args.cluster.is_empty() {
        tb.config.clusters.clone()
    } else {
        args.cluster.clone()
    };
    for reference in &loaded {
        println!("{reference}");
    }
    eprintln!(
        "loaded {} into the nodes of {}; use it with imagePullPolicy: IfNotPresent or Never",
        loaded.join(", "),
        clusters.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn export_line(tb: &Testbed) -> String {
    format!("export KUBECONFIG={}", tb.kubeconfig_path().display())
}

/// Builds on a blocking thread, so that Ctrl-C is still heard.
async fn build_toolchain(groups: &'static [tandem_testbed::toolchain::Group]) -> Result<Toolchain> {
    let progress = Arc::new(StderrProgress::default());
    let build =
        tokio::task::spawn_blocking(move || Toolchain::ensure_groups(progress.as_ref(), groups));
    tokio::select! {
        res = build => Ok(res.context("the build thread failed")??),
        _ = tokio::signal::ctrl_c() => bail!("interrupted; the partial build is discarded"),
    }
}

async fn up(args: UpArgs) -> Result<ExitCode> {
    let config = Config::new(
        args.dir.dir.clone(),
        args.base_port,
        args.clusters,
        args.nodes.into(),
    )?;
    if config.nodes == Nodes::Real {
        // Before a long build: say at once what is missing.
        tandem_testbed::node::check_prerequisites()?;
    }
    build_toolchain(tandem_testbed::groups(config.nodes)).await?;
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

/// The agent writes Service statuses, so it never guesses the cluster.
async fn agent(cluster: &ClusterArgs, args: AgentArgs) -> Result<ExitCode> {
    if cluster.kubeconfig.is_none() || cluster.context.is_none() {
        bail!("`tandem testbed agent` needs --kubeconfig and --context");
    }
    let client = cluster.client().await?;
    let config = tandem_testbed::agent::AgentConfig::new(args.lb_pool, args.health_port);
    tandem_testbed::agent::run(client, config, tandem::signal::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

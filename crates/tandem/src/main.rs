//! `tandem`: automatic failover of Kubernetes services across clusters.

#![forbid(unsafe_code)]

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand};
use tandem::{entry, kube_client, output};

mod certificate;
mod check;
mod cni;
mod cni_install;
mod dashboard;
mod destination;
mod failover;
mod identity;
mod inject;
mod install;
mod leader;
mod multicluster;
mod proxy;
mod proxy_await;
mod proxy_init;
mod viz;

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
        default_value = entry::DEFAULT_LOG
    )]
    log: String,

    #[command(flatten)]
    cluster: kube_client::ClusterArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Metrics of the mesh: Prometheus (`viz install`) and the traffic of
    /// resources (`viz stat`), as `linkerd viz`.
    #[command(subcommand)]
    Viz(viz::VizCommand),
    /// Run the identity process of the control plane (what `install` deploys).
    Identity(identity::IdentityArgs),
    /// Run the destination service of the data plane (Linkerd's Destination API).
    Destination(destination::DestinationArgs),
    /// Run the workshop end to end on a local testbed: certificates, install,
    /// link, mirror, and a failover and failback that are checked and timed.
    /// (The development tool `tandem-demo`; `tandem demo --help` for its flags.)
    #[command(disable_help_flag = true)]
    Demo(DevToolArgs),
    /// Check a cluster before install (--pre), or check an install.
    Check(check::CheckArgs),
    /// Print the control plane's manifests (or, with --crds, the CRDs) for `kubectl apply -f -`.
    Install(install::InstallArgs),
    /// Print the control plane's objects for `kubectl delete -f -`.
    Uninstall(install::UninstallArgs),
    /// Print the CNI plugin's installer (a DaemonSet) for `kubectl apply -f -`,
    /// as `linkerd install-cni`: pods are then redirected by the plugin
    /// instead of an init container.
    InstallCni(install::InstallCniArgs),
    /// Install the tandem-cni plugin on this node and keep it installed
    /// until SIGTERM (what the tandem-cni DaemonSet runs).
    CniInstall(cni_install::CniInstallArgs),
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
    Gateway(tandem_proxy::gateway::GatewayArgs),
    /// Add the proxy to the workloads of a manifest (as `linkerd inject`),
    /// for `kubectl apply -f -`.
    Inject(inject::InjectArgs),
    /// Redirect the pod's TCP traffic through its proxy with iptables (the
    /// injected init container).
    ProxyInit(proxy_init::ProxyInitArgs),
    /// Wait until the proxy is ready (the injected proxy's postStart hook,
    /// so that the application starts after it).
    ProxyAwait(proxy_await::ProxyAwaitArgs),
    /// Run the sidecar proxy (what injection adds to a pod). Its log filter
    /// is `--proxy-log` / LINKERD2_PROXY_LOG, not `--log`.
    Proxy(Box<tandem_proxy::Args>),
    /// Real Kubernetes clusters as local processes, for trying tandem and for
    /// its tests. (The development tool `tandem-testbed`; `tandem testbed
    /// --help` for its commands.)
    #[command(disable_help_flag = true)]
    Testbed(DevToolArgs),
}

/// Everything after `tandem testbed` or `tandem demo`, passed on as it is.
#[derive(Debug, Args)]
struct DevToolArgs {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

/// `tandem testbed ...` as `tandem-testbed ...`, with the global flags this
/// process parsed handed on. Returns only if the tool cannot be run.
fn dev_tool(
    cluster: &kube_client::ClusterArgs,
    log: &str,
    tool: &str,
    rest: Vec<OsString>,
) -> anyhow::Result<std::process::ExitCode> {
    let mut args: Vec<OsString> = vec![];
    if let Some(k) = &cluster.kubeconfig {
        args.extend(["--kubeconfig".into(), k.clone().into_os_string()]);
    }
    if let Some(c) = &cluster.context {
        args.extend(["--context".into(), c.into()]);
    }
    args.extend(["--log".into(), log.into()]);
    args.extend(rest);
    match tandem::dev_tools::exec(tool, &args)? {}
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
    if cni::invoked_as_plugin() {
        return cni::main();
    }
    let cli = Cli::parse();
    let log = cli.log.clone();
    let (filter, workers) = match &cli.command {
        Command::Proxy(args) => (args.log.clone(), Some(usize::from(args.cores))),
        _ => (cli.log.clone(), None),
    };
    entry::run_with_workers(&filter, workers, || async move {
        match cli.command {
            Command::Certificate(cmd) => certificate::run(cmd),
            Command::Check(args) => check::run(&cli.cluster, args).await,
            Command::Identity(args) => identity::run(&cli.cluster, args).await,
            Command::Destination(args) => destination::run(&cli.cluster, args).await,
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
            Command::Viz(cmd) => viz::run(&cli.cluster, cmd).await,
            Command::Multicluster(cmd) => multicluster::run(&cli.cluster, cmd).await,
            Command::Gateway(args) => tandem::gateway::run(&cli.cluster, args).await,
            Command::Inject(args) => inject::run(&cli.cluster, args).await,
            Command::ProxyInit(args) => proxy_init::run(args),
            Command::ProxyAwait(args) => proxy_await::run(args).await,
            Command::Proxy(args) => proxy::run(*args).await,
            Command::Testbed(a) => dev_tool(&cli.cluster, &log, "tandem-testbed", a.args),
            Command::Demo(a) => dev_tool(&cli.cluster, &log, "tandem-demo", a.args),
            Command::InstallCni(args) => install::install_cni(args),
            Command::CniInstall(args) => cni_install::run(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// `viz dashboard` takes `--context` several times (duplicates once);
    /// the global flag, before the subcommand, names one cluster.
    #[test]
    fn the_dashboard_takes_several_contexts() {
        let contexts = |argv: &[&str]| {
            let cli = Cli::try_parse_from(argv).unwrap();
            let Command::Viz(viz::VizCommand::Dashboard(args)) = &cli.command else {
                panic!("{cli:?}")
            };
            dashboard::contexts(&cli.cluster, args).unwrap()
        };
        let some = |names: &[&str]| -> Vec<Option<String>> {
            names.iter().map(|n| Some(n.to_string())).collect()
        };
        let many = ["tandem", "viz", "dashboard", "--context", "east"];
        let many: Vec<&str> = many
            .into_iter()
            .chain(["--context", "west", "--context", "east"])
            .collect();
        assert_eq!(contexts(&many), some(&["east", "west"]));
        assert_eq!(
            contexts(&["tandem", "--context", "east", "viz", "dashboard"]),
            some(&["east"])
        );
        let err =
            Cli::try_parse_from(["tandem", "viz", "dashboard", "--refresh", "0s"]).unwrap_err();
        assert!(err.to_string().contains("longer than zero"), "{err}");
    }
}

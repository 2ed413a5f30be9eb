//! `tandem viz install` and `tandem viz stat`: the workshop's `linkerd viz`.
//! The logic is in the tandem-viz crate; this is its command line.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use tandem_viz::{
    install::VizOptions,
    query::{Kind, Resource, StatRequest, Window},
    render::{self, NO_TRAFFIC, TableOptions},
};

use crate::kube_client::ClusterArgs;

#[derive(Debug, Subcommand)]
pub enum VizCommand {
    /// Print the viz extension's manifests (Prometheus in `tandem-viz`,
    /// scraping every injected proxy) for `kubectl apply -f -`.
    Install(InstallArgs),
    /// Print the viz extension's objects for `kubectl delete -f -`.
    Uninstall,
    /// Show the traffic of resources from the proxies' metrics, as `linkerd
    /// viz stat`: success rate, requests per second, latency percentiles
    /// and open TCP connections over a time window.
    ///
    /// Prometheus is asked through the API server's service proxy, so this
    /// works from a workstation. Rows of `svc` are named by the destination
    /// service the proxies sent to (after a failover, the mirror, e.g.
    /// `emoji-svc-west`).
    Stat(StatArgs),
    /// Serve a page, on localhost, of each cluster's TrafficSplits (live
    /// weights, failover state), gateways (alive, latency) and services'
    /// traffic; it refreshes by itself. `/api/state` is the same as JSON.
    Dashboard(crate::dashboard::DashboardArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Change a setting, KEY=VALUE (repeatable). Keys: prometheus.image,
    /// prometheus.scrapeInterval, prometheus.retention, linkerdNamespace,
    /// grafana.url (recorded as an annotation only: tandem ships no
    /// Grafana). Unknown keys are ignored with a warning.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// How `viz stat` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum StatFormat {
    #[default]
    Table,
    /// The table with TCP byte rates.
    Wide,
    Json,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// The resource type: deploy, svc, po, ts or ns (or KIND/NAME).
    #[arg(value_name = "TYPE")]
    kind: String,
    /// One resource of that type.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// The namespace.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// Every namespace (adds a NAMESPACE column). Not with --namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Only the traffic sent by this resource, KIND/NAME (e.g. deploy/web).
    #[arg(long, value_name = "RESOURCE", conflicts_with = "to")]
    from: Option<String>,
    /// The namespace of --from's resource (default: --namespace).
    #[arg(long, value_name = "NAMESPACE", requires = "from")]
    from_namespace: Option<String>,
    /// Only the traffic the rows send to this resource, KIND/NAME (e.g.
    /// svc/emoji-svc-west): who calls it. For deploy, po and ns.
    #[arg(long, value_name = "RESOURCE")]
    to: Option<String>,
    /// The namespace of --to's resource (default: --namespace).
    #[arg(long, value_name = "NAMESPACE", requires = "to")]
    to_namespace: Option<String>,
    /// Also list the resources without a meshed pod.
    #[arg(long)]
    unmeshed: bool,
    /// The time window of the figures: 30s, 1m, 1h...
    #[arg(short = 't', long = "time-window", default_value = "1m")]
    window: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = StatFormat::Table)]
    output: StatFormat,
    /// The cluster's DNS domain (for svc's authorities).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
}

impl StatArgs {
    /// The typed request, or why the arguments make none.
    fn request(&self) -> Result<StatRequest, tandem_viz::Error> {
        let mut target: Resource = self.kind.parse()?;
        if let Some(n) = &self.name {
            if target.name.is_some() {
                return Err(tandem_viz::Error::BadArgument(format!(
                    "give the name once: {} or {} {n}",
                    self.kind,
                    target.kind.name()
                )));
            }
            target.name = Some(n.clone());
        }
        let peer = |r: &Option<String>, ns: &Option<String>| -> Result<_, tandem_viz::Error> {
            let Some(r) = r else { return Ok(None) };
            let mut peer: Resource = r.parse()?;
            peer.namespace = ns.clone();
            Ok(Some(peer))
        };
        let request = StatRequest {
            kind: target.kind,
            namespace: (!self.all_namespaces).then(|| self.namespace.clone()),
            name: target.name,
            from: peer(&self.from, &self.from_namespace)?,
            to: peer(&self.to, &self.to_namespace)?,
            window: self.window.parse::<Window>()?,
            cluster_domain: self.cluster_domain.clone(),
            unmeshed: self.unmeshed,
        };
        request.check()?;
        Ok(request)
    }
}

pub async fn run(cluster: &ClusterArgs, cmd: VizCommand) -> Result<ExitCode> {
    match cmd {
        VizCommand::Install(args) => {
            let mut o = VizOptions::default();
            for w in o.set(&args.set)? {
                eprintln!("warning: {w}");
            }
            crate::install::print_objects(&tandem_viz::install::render(&o))
        }
        VizCommand::Uninstall => crate::install::print_objects(&tandem_install::for_deletion(
            &tandem_viz::install::render(&VizOptions::default()),
        )),
        VizCommand::Stat(args) => stat(cluster, args).await,
        VizCommand::Dashboard(args) => crate::dashboard::run(cluster, args).await,
    }
}

async fn stat(cluster: &ClusterArgs, args: StatArgs) -> Result<ExitCode> {
    let request = args.request()?;
    let client = cluster.client().await?;
    let rows = tandem_viz::stat(&client, &request).await?;
    match args.output {
        StatFormat::Json => print!("{}", render::json(&rows, request.window)),
        f => {
            if rows.is_empty() {
                eprintln!("{NO_TRAFFIC}");
            } else {
                print!(
                    "{}",
                    render::table(
                        &rows,
                        request.window,
                        TableOptions {
                            all_namespaces: args.all_namespaces && request.kind != Kind::Namespace,
                            wide: f == StatFormat::Wide,
                        },
                    )
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        stat: StatArgs,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("stat").chain(args.iter().copied()))
    }

    fn request(args: &[&str]) -> Result<StatRequest, String> {
        let cli = parse(args).map_err(|e| e.to_string())?;
        cli.stat.request().map_err(|e| e.to_string())
    }

    #[test]
    fn the_flags_make_the_request() {
        let r = request(&[
            "-n",
            "emojivoto",
            "svc",
            "--from",
            "deploy/vote-bot",
            "-t",
            "30s",
        ])
        .unwrap();
        assert_eq!(r.kind, Kind::Service);
        assert_eq!(r.namespace.as_deref(), Some("emojivoto"));
        assert_eq!(r.name, None);
        assert_eq!(
            r.from,
            Some(Resource {
                kind: Kind::Deployment,
                name: Some("vote-bot".into()),
                namespace: None,
            })
        );
        assert_eq!(r.to, None);
        assert!(!r.unmeshed);

        let to = request(&[
            "-n",
            "emojivoto",
            "deploy",
            "--to",
            "svc/emoji-svc-west",
            "--to-namespace",
            "other",
            "--unmeshed",
        ])
        .unwrap();
        assert_eq!(
            to.to,
            Some(Resource {
                kind: Kind::Service,
                name: Some("emoji-svc-west".into()),
                namespace: Some("other".into()),
            })
        );
        assert!(to.unmeshed);
        let from = request(&["po", "--from", "deploy/web", "--from-namespace", "x"]).unwrap();
        assert_eq!(from.from.and_then(|f| f.namespace).as_deref(), Some("x"));
        assert_eq!(r.window, "30s".parse::<Window>().unwrap());

        let all = request(&["-A", "deploy"]).unwrap();
        assert_eq!((all.kind, all.namespace), (Kind::Deployment, None));
        for args in [&["deploy/web"][..], &["deploy", "web"]] {
            let one = request(args).unwrap();
            assert_eq!(one.name.as_deref(), Some("web"), "{args:?}");
            assert_eq!(one.namespace.as_deref(), Some("default"), "{args:?}");
        }
        assert_eq!(request(&["po"]).unwrap().kind, Kind::Pod);
        assert_eq!(request(&["ns", "emojivoto"]).unwrap().kind, Kind::Namespace);
        assert_eq!(request(&["ts/emoji-svc"]).unwrap().kind, Kind::TrafficSplit);
        let wide = parse(&["-o", "wide", "deploy"]).unwrap();
        assert_eq!(wide.stat.output, StatFormat::Wide);
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let twice = request(&["deploy/web", "web"]).unwrap_err();
        assert!(twice.contains("give the name once"), "{twice}");
        for args in [
            &["-A", "-n", "x", "deploy"][..],
            &["deploy", "--from", "deploy/a", "--to", "deploy/b"],
        ] {
            let both = request(args).unwrap_err();
            assert!(both.contains("cannot be used with"), "{args:?}: {both}");
        }
        let alone = request(&["deploy", "--to-namespace", "x"]).unwrap_err();
        assert!(alone.contains("--to"), "{alone}");
        let svc_to = request(&["svc", "--to", "deploy/web"]).unwrap_err();
        assert!(svc_to.contains("use --from"), "{svc_to}");
        for (args, what) in [
            (&["cronjob"][..], "cronjob"),
            (&["deploy", "--from", "nothing/x"], "nothing"),
            (&["deploy", "-t", "soon"], "soon"),
            (&["deploy", "-o", "yaml"], "yaml"),
        ] {
            let e = request(args).unwrap_err();
            assert!(e.contains(what), "{args:?}: {e}");
        }
    }
}

//! `tandem viz dashboard`: the page of each cluster's splits, gateways and
//! traffic (crate `tandem-dashboard`), served on loopback.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use anyhow::{Context, Result};
use clap::Args;
use futures::future::BoxFuture;
use kube::{Client, config::Kubeconfig};
use tandem_api::Duration as GoDuration;
use tandem_dashboard::{
    Cluster, Dashboard,
    model::ServiceStat,
    stats::{StatsError, StatsSource},
};
use tandem_viz::query::{Kind, StatRequest};

use crate::kube_client::ClusterArgs;

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// A cluster to show, by kubeconfig context; repeat it for several.
    /// Default: the current context.
    #[arg(long = "context", id = "context", value_name = "CTX")]
    contexts: Vec<String>,
    /// Where to serve the page: a loopback address (port 0 picks one).
    #[arg(long, env = "TANDEM_DASHBOARD_ADDR", default_value = "127.0.0.1:50750")]
    addr: SocketAddr,
    /// How often the clusters are read and the page asks again (above zero).
    #[arg(long, default_value = "1s", value_parser = GoDuration::parse_period)]
    refresh: GoDuration,
    /// Open the page in a browser (where there is none, say so).
    #[arg(long)]
    open: bool,
}

/// The contexts to show: those named, else the global `--context`, else
/// the kubeconfig's current one (`None`: in a cluster, without one).
pub(crate) fn contexts(cluster: &ClusterArgs, args: &DashboardArgs) -> Result<Vec<Option<String>>> {
    if !args.contexts.is_empty() {
        let mut seen = std::collections::BTreeSet::new();
        return Ok(args
            .contexts
            .iter()
            .filter(|c| seen.insert(c.as_str()))
            .map(|c| Some(c.clone()))
            .collect());
    }
    if let Some(c) = &cluster.context {
        return Ok(vec![Some(c.clone())]);
    }
    let kubeconfig = match &cluster.kubeconfig {
        Some(path) => Some(
            Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?,
        ),
        None => Kubeconfig::read().ok(),
    };
    Ok(vec![kubeconfig.and_then(|k| k.current_context)])
}

pub async fn run(cluster: &ClusterArgs, args: DashboardArgs) -> Result<ExitCode> {
    let mut clusters = vec![];
    for context in contexts(cluster, &args)? {
        let which = ClusterArgs {
            kubeconfig: cluster.kubeconfig.clone(),
            context: context.clone(),
        };
        let name = context.unwrap_or_else(|| "in-cluster".into());
        let client = which
            .client()
            .await
            .with_context(|| format!("a client for context {name}"))?;
        clusters.push(Cluster {
            context: name,
            client,
        });
    }
    let dashboard = Dashboard::bind(args.addr).await?;
    let url = format!("http://{}/", dashboard.addr());
    println!("tandem dashboard: {url}");
    if args.open {
        println!("(--open: tandem does not start a browser from here; open {url} yourself)");
    }
    let names: Vec<&str> = clusters.iter().map(|c| c.context.as_str()).collect();
    tracing::info!(%url, clusters = ?names, "serving the dashboard");
    dashboard
        .serve(
            clusters,
            args.refresh.into(),
            Arc::new(VizStats),
            tandem::signal::shutdown_signal(),
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// Every service's traffic over the last minute, from viz's Prometheus: what
/// `viz stat -A svc` shows (rows named by the destination service), less
/// the services without traffic.
struct VizStats;

impl StatsSource for VizStats {
    fn services<'a>(
        &'a self,
        client: &'a Client,
    ) -> BoxFuture<'a, Result<Vec<ServiceStat>, StatsError>> {
        Box::pin(async move {
            let request = StatRequest::new(Kind::Service);
            let rows = tandem_viz::stat(client, &request)
                .await
                .map_err(|e| match e {
                    tandem_viz::Error::NotInstalled { .. } => {
                        StatsError::NotInstalled(e.to_string())
                    }
                    e => StatsError::Query(e.to_string()),
                })?;
            Ok(rows
                .into_iter()
                .filter_map(|r| {
                    let t = r.traffic.filter(|t| t.total() > 0.0)?;
                    Some(ServiceStat {
                        namespace: r.key.namespace,
                        service: r.key.name,
                        rps: t.total() / request.window.seconds(),
                        success_rate: t.success_rate(),
                    })
                })
                .collect())
        })
    }
}

//! `tandem failover run` and `tandem failover status`.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use clap::Args;
use kube::{
    Api,
    api::{DynamicObject, ListParams},
};
use serde::Serialize;
use tandem_api::Duration as GoDuration;
use tandem_failover::resource::{self, Resource};

use crate::{kube_client::ClusterArgs, output::Format};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The label selector of the TrafficSplits and HTTPRoutes to control.
    #[arg(long, env = "TANDEM_FAILOVER_SELECTOR", default_value = tandem_install::failover::DEFAULT_SELECTOR)]
    selector: String,
    /// Where to serve /live, /ready and /metrics.
    #[arg(
        long,
        env = "TANDEM_FAILOVER_ADMIN_ADDR",
        default_value = "127.0.0.1:9990"
    )]
    admin_addr: SocketAddr,
    /// The cluster's DNS domain, for backends written as FQDNs.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// How often to decide every split again, repairing drift (above zero).
    #[arg(long, default_value = "60s", value_parser = GoDuration::parse_period)]
    resync_period: GoDuration,
    /// The namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = tandem_install::failover::DEFAULT_NAMESPACE)]
    lease_namespace: String,
    #[command(flatten)]
    leader: crate::leader::LeaderArgs,
}

pub async fn run(cluster: &ClusterArgs, args: RunArgs) -> Result<ExitCode> {
    let client = cluster.client().await?;
    let identity = args.leader.identity();
    let lease = args.leader.params(
        &args.lease_namespace,
        tandem_install::failover::LEASE,
        tandem_failover::FIELD_MANAGER,
    );
    let settings = tandem_failover::Settings {
        selector: args.selector,
        cluster_domain: args.cluster_domain,
        resync_period: args.resync_period.into(),
        admin_addr: Some(args.admin_addr),
        lease,
        instance: identity.clone(),
    };
    tracing::info!(%identity, admin = %args.admin_addr, "starting the failover controller");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    tandem_failover::run(client, settings, stopped)
        .await
        .map_err(with_lease_hint)?;
    // Give the elector a moment to release the Lease, so a standby takes over at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(ExitCode::SUCCESS)
}

pub use tandem::signal::shutdown_signal;

/// The hints of a failed leader election, for the failover controller.
fn with_lease_hint(e: anyhow::Error) -> anyhow::Error {
    crate::leader::with_hint(e, "the failover controller", "tandem failover install")
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this namespace. Default: all namespaces.
    #[arg(short, long)]
    namespace: Option<String>,
    /// The label selector of the controlled splits.
    #[arg(long, default_value = tandem_install::failover::DEFAULT_SELECTOR)]
    selector: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Serialize)]
struct Row {
    kind: &'static str,
    namespace: String,
    name: String,
    state: String,
    active: Vec<String>,
    backends: Vec<(String, u32)>,
    last_transition_time: Option<String>,
}

pub async fn status(cluster: &ClusterArgs, args: StatusArgs) -> Result<ExitCode> {
    let client = cluster.client().await?;
    let mut rows = vec![];
    let mut kinds = vec![];
    for (group, versions, make) in [
        (
            tandem_api::smi::GROUP,
            &["v1alpha2", "v1alpha1"][..],
            Resource::traffic_split as fn(&str) -> Resource,
        ),
        (
            "gateway.networking.k8s.io",
            &["v1"][..],
            Resource::http_route,
        ),
    ] {
        let Ok(g) = kube::discovery::group(&client, group).await else {
            continue;
        };
        let Some(v) = versions.iter().find(|v| g.versions().any(|s| s == **v)) else {
            continue;
        };
        kinds.push(make(v));
    }
    if kinds.is_empty() {
        anyhow::bail!(
            "this cluster serves neither TrafficSplits nor HTTPRoutes: install them with `tandem smi install`"
        );
    }
    for res in kinds {
        let api: Api<DynamicObject> = match &args.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &res.api),
            None => Api::all_with(client.clone(), &res.api),
        };
        let list = api
            .list(&ListParams::default().labels(&args.selector))
            .await
            .with_context(|| format!("listing {}s", res.kind.as_str()))?;
        for obj in list.items {
            let entry = resource::read(&res, obj);
            let backends: Vec<(String, u32)> = entry
                .groups
                .iter()
                .flat_map(|g| g.backends.iter().map(|b| (b.service.clone(), b.weight)))
                .collect();
            rows.push(Row {
                kind: res.kind.as_str(),
                namespace: entry.key.namespace.to_string(),
                name: entry.key.name.to_string(),
                state: entry
                    .state
                    .clone()
                    .unwrap_or_else(|| match &entry.unreadable {
                        Some(_) => "invalid".into(),
                        None => "unknown".into(),
                    }),
                active: backends
                    .iter()
                    .filter(|(_, w)| *w > 0)
                    .map(|(s, _)| s.clone())
                    .collect(),
                backends,
                last_transition_time: entry.last_transition_time.clone(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.namespace, &a.name, a.kind).cmp(&(&b.namespace, &b.name, b.kind)));
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.namespace.clone(),
                        r.name.clone(),
                        r.kind.to_string(),
                        r.state.clone(),
                        if r.active.is_empty() {
                            "-".into()
                        } else {
                            r.active.join(",")
                        },
                        r.last_transition_time.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print!(
                "{}",
                crate::output::table(
                    &[
                        "NAMESPACE",
                        "NAME",
                        "KIND",
                        "STATE",
                        "ACTIVE",
                        "LAST TRANSITION"
                    ],
                    &table
                )
            );
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
        run: RunArgs,
    }

    #[test]
    fn a_zero_resync_period_is_refused_at_parsing() {
        let err = Cli::try_parse_from(["failover", "--resync-period", "0s"]).unwrap_err();
        assert!(
            err.to_string().contains("must be longer than zero"),
            "{err}"
        );
        let ok = Cli::try_parse_from(["failover", "--resync-period", "30s"]).unwrap();
        assert_eq!(ok.run.resync_period, GoDuration::from_secs(30));
    }
}

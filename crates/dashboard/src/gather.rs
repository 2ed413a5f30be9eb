//! Reads each cluster, every refresh period, into a [`ClusterView`] on a
//! watch channel: the page reads the latest view, so any number of open
//! pages costs the API servers nothing more. Every call has a timeout; a
//! failed list shows as its section's error, a bad object as an error row.

use std::{future::Future, sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Event, jiff::Timestamp};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, ListParams},
};
use tandem_api::multicluster::Link;
use tandem_failover::{
    discovery::{Discovered, discover},
    resource::Resource,
};
use tokio::sync::watch;

use crate::{
    model::{self, ClusterView, Section, SplitView, StatsView},
    stats::{StatsError, StatsSource},
};

/// The longest one API call (or the stats query) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often Prometheus is asked, at most: its figures are rates over a
/// minute of scrapes, and one ask is several queries.
pub const STATS_PERIOD: Duration = Duration::from_secs(5);

/// A cluster to show: its kubeconfig context and a client for it.
#[derive(Clone)]
pub struct Cluster {
    pub context: String,
    pub client: Client,
}

/// Gathers `cluster` every `refresh` into `tx`, until every receiver is gone.
pub async fn run(
    cluster: Cluster,
    refresh: Duration,
    stats: Arc<dyn StatsSource>,
    tx: watch::Sender<ClusterView>,
) {
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asked: Option<(tokio::time::Instant, StatsView)> = None;
    loop {
        tick.tick().await;
        let ask = asked
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= STATS_PERIOD);
        let mut view = gather(&cluster, ask.then_some(stats.as_ref())).await;
        match &asked {
            Some((_, last)) if !ask => view.stats = last.clone(),
            _ => asked = Some((tokio::time::Instant::now(), view.stats.clone())),
        }
        if tx.send(view).is_err() {
            return;
        }
    }
}

/// One look at a cluster; at its traffic too, given a source.
pub async fn gather(cluster: &Cluster, stats: Option<&dyn StatsSource>) -> ClusterView {
    let client = &cluster.client;
    let stats = async {
        match stats {
            Some(s) => service_stats(client, s).await,
            None => StatsView::Pending,
        }
    };
    let (splits, gateways, stats) = tokio::join!(splits(client), gateways(client), stats);
    ClusterView {
        context: cluster.context.clone(),
        updated_at: Some(Timestamp::now().to_string()),
        splits,
        gateways,
        stats,
    }
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer within {}s",
            CALL_TIMEOUT.as_secs()
        )),
    }
}

// === splits ===

async fn splits(client: &Client) -> Section<SplitView> {
    let found = tokio::time::timeout(
        CALL_TIMEOUT,
        discover(client, tandem_api::smi::GROUP, &["v1alpha2", "v1alpha1"]),
    )
    .await;
    let version = match found {
        Ok(Discovered::Served(v)) => v,
        Ok(Discovered::NotServed) => {
            return Section::failed(
                "TrafficSplits are not served here: `tandem smi install | kubectl apply -f -`",
            );
        }
        Ok(Discovered::Failed(e)) => return Section::failed(format!("API discovery: {e}")),
        Err(_) => return Section::failed("API discovery: no answer"),
    };
    let res = Resource::traffic_split(&version);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &res.api);
    let list = match timed("listing TrafficSplits", api.list(&ListParams::default())).await {
        Ok(l) => l,
        Err(e) => return Section::failed(e),
    };
    let events: Api<Event> = Api::all(client.clone());
    let mut events = match timed(
        "listing the TrafficSplits' Events",
        events.list(&ListParams::default().fields("involvedObject.kind=TrafficSplit")),
    )
    .await
    {
        Ok(l) => model::events_by_object(l.items),
        Err(e) => {
            tracing::warn!(error = %e, "no Events to show");
            Default::default()
        }
    };
    let mut rows: Vec<SplitView> = list
        .items
        .into_iter()
        .map(|obj| {
            let key = (
                obj.metadata.namespace.clone().unwrap_or_default(),
                obj.metadata.name.clone().unwrap_or_default(),
            );
            let evs = events.remove(&key).unwrap_or_default();
            model::split_view(&res, obj, evs)
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Section { error: None, rows }
}

// === gateways ===

async fn gateways(client: &Client) -> Section<model::GatewayView> {
    let res = ApiResource::erase::<Link>(&());
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &res);
    match tokio::time::timeout(CALL_TIMEOUT, api.list(&ListParams::default())).await {
        Ok(Ok(list)) => {
            let mut rows: Vec<_> = list.items.into_iter().map(model::gateway_view).collect();
            rows.sort_by(|a, b| (&a.namespace, &a.link).cmp(&(&b.namespace, &b.link)));
            Section { error: None, rows }
        }
        Ok(Err(kube::Error::Api(e))) if e.code == 404 => Section::failed(
            "Links are not served here: `tandem multicluster install | kubectl apply -f -`",
        ),
        Ok(Err(e)) => Section::failed(format!("listing Links: {e}")),
        Err(_) => Section::failed("listing Links: no answer"),
    }
}

// === stats ===

async fn service_stats(client: &Client, stats: &dyn StatsSource) -> StatsView {
    match tokio::time::timeout(CALL_TIMEOUT, stats.services(client)).await {
        Ok(Ok(rows)) => StatsView::Ok { rows },
        Ok(Err(StatsError::NotInstalled(message))) => StatsView::NotInstalled { message },
        Ok(Err(e @ StatsError::Query(_))) => StatsView::Error {
            message: e.to_string(),
        },
        Err(_) => StatsView::Error {
            message: "Prometheus: no answer".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::NotInstalled;

    /// A cluster that does not answer: each section says why, and the
    /// gather still returns (within the calls' timeouts).
    #[tokio::test]
    async fn a_cluster_that_does_not_answer_shows_why() {
        // A port that was free a moment ago: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        let cluster = Cluster {
            context: "gone".into(),
            client: Client::try_from(config).unwrap(),
        };
        let view = gather(&cluster, Some(&NotInstalled)).await;
        assert_eq!(view.context, "gone");
        assert!(view.updated_at.is_some());
        let splits = view.splits.error.unwrap_or_default();
        assert!(splits.contains("API discovery"), "{splits}");
        let links = view.gateways.error.unwrap_or_default();
        assert!(links.contains("listing Links"), "{links}");
        assert!(
            matches!(view.stats, StatsView::NotInstalled { .. }),
            "{:?}",
            view.stats
        );
        let quiet = gather(&cluster, None).await;
        assert_eq!(quiet.stats, StatsView::Pending, "stats not asked");
    }
}

//! One `viz stat`: the queries asked, the resources listed, joined into
//! rows. The only I/O of the crate besides [`crate::prom::query`].

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Pod, Service},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{Api, Client, api::ListParams};
use tandem_api::smi::v1alpha1::TrafficSplit;
use tandem_inject::PROXY_CONTAINER;

use crate::{
    Error, prom,
    query::{self, Kind, StatRequest, Window},
    stats::{self, Answers, Key, Owner, PodInfo, Row, SplitLeaf},
};

/// The rows of one request: Prometheus' figures for every resource with
/// traffic, and the resources of the kind listed from the API (so that a
/// resource without traffic shows as `-`), with MESHED.
pub async fn stat(client: &Client, r: &StatRequest) -> Result<Vec<Row>, Error> {
    r.check()?;
    if r.kind == Kind::TrafficSplit {
        return split_stats(client, r).await;
    }
    let traffic = traffic(client, r).await?;
    let listed = list(client, r).await?;
    let mut rows = stats::rows(r.kind, &listed.keys, &listed.meshed, traffic, r.unmeshed);
    for row in &mut rows {
        row.status = listed.status.get(&row.key).cloned();
    }
    Ok(rows)
}

/// `ts`: for each split (of the namespace, or the one named), the traffic
/// sent to its apex service, one row per backend service it reached
/// (`dst_service`), and a `-` row for each backend it did not.
async fn split_stats(client: &Client, r: &StatRequest) -> Result<Vec<Row>, Error> {
    let api: Api<TrafficSplit> = scoped(client, r.namespace.as_deref());
    let splits = api
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing trafficsplits".into()))?;
    let mut rows = vec![];
    for ts in &splits.items {
        if r.name
            .as_ref()
            .is_some_and(|n| Some(n) != ts.metadata.name.as_ref())
        {
            continue;
        }
        let ns = ts.metadata.namespace.clone().unwrap_or_default();
        let apex = StatRequest {
            namespace: Some(ns.clone()),
            name: Some(ts.spec.service.clone()),
            ..r.clone()
        };
        let listed: Vec<Key> = ts
            .spec
            .backends
            .iter()
            .map(|b| Key {
                namespace: ns.clone(),
                name: b.service.clone(),
            })
            .collect();
        let traffic = traffic(client, &apex).await?;
        let split = ts.metadata.name.clone().unwrap_or_default();
        for mut row in stats::rows(
            Kind::TrafficSplit,
            &listed,
            &BTreeMap::new(),
            traffic,
            false,
        ) {
            let weight = ts
                .spec
                .backends
                .iter()
                .find(|b| b.service == row.key.name)
                .map_or_else(|| "-".into(), |b| weight_text(&b.weight));
            row.split = Some(SplitLeaf {
                split: split.clone(),
                apex: ts.spec.service.clone(),
                weight,
            });
            rows.push(row);
        }
    }
    Ok(rows)
}

/// A weight as the split writes it: `1`, `500m`.
fn weight_text(w: &IntOrString) -> String {
    match w {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// Prometheus' figures for the request, by resource.
async fn traffic(client: &Client, r: &StatRequest) -> Result<BTreeMap<Key, stats::Traffic>, Error> {
    let q = query::build(r);
    // One query after another, through one API server connection: seven
    // small answers, whose moments differ by well under the scrape interval.
    let answers = Answers {
        requests: prom::query(client, &q.requests).await?,
        latency: [
            prom::query(client, &q.latency[0]).await?,
            prom::query(client, &q.latency[1]).await?,
            prom::query(client, &q.latency[2]).await?,
        ],
        tcp_connections: prom::query(client, &q.tcp_connections).await?,
        tcp_read: prom::query(client, &q.tcp_read).await?,
        tcp_write: prom::query(client, &q.tcp_write).await?,
    };
    Ok(stats::traffic(&q, &answers))
}

/// The stats of the services of namespace `ns` over `window`, each row
/// named by the destination service (what `viz stat -n NS svc` prints).
pub async fn service_stats(client: &Client, ns: &str, window: Window) -> Result<Vec<Row>, Error> {
    stat(
        client,
        &StatRequest {
            namespace: Some(ns.into()),
            window,
            ..StatRequest::new(Kind::Service)
        },
    )
    .await
}

fn kube_err(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { what, source }
}

/// The resources of a request's kind listed from the API.
#[derive(Default)]
struct Listed {
    keys: Vec<Key>,
    /// MESHED, for the kinds with it.
    meshed: BTreeMap<Key, stats::Meshed>,
    /// STATUS, for pods.
    status: BTreeMap<Key, String>,
}

/// The resources of the request's kind, and MESHED for the kinds with it.
async fn list(client: &Client, r: &StatRequest) -> Result<Listed, Error> {
    let ns = match r.kind {
        Kind::Namespace => None,
        _ => r.namespace.as_deref(),
    };
    let api = |kind: &str| format!("listing {kind}");
    let keep = |key: &Key| r.name.as_ref().is_none_or(|n| *n == key.name);
    let key_of = |meta: &kube::api::ObjectMeta| Key {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    };
    let lp = ListParams::default();
    match r.kind {
        Kind::Service | Kind::TrafficSplit => {
            let svcs: Api<Service> = scoped(client, ns);
            let list = svcs.list(&lp).await.map_err(kube_err(api("services")))?;
            let keys = list
                .items
                .iter()
                .map(|s| key_of(&s.metadata))
                .filter(keep)
                .collect();
            Ok(Listed {
                keys,
                ..Listed::default()
            })
        }
        kind => {
            let pods: Api<Pod> = scoped(client, ns);
            let pods = pods.list(&lp).await.map_err(kube_err(api("pods")))?.items;
            let status = match kind {
                Kind::Pod => pods
                    .iter()
                    .map(|p| (key_of(&p.metadata), stats::pod_status(p)))
                    .collect(),
                _ => BTreeMap::new(),
            };
            let pods: Vec<PodInfo> = pods.iter().map(pod_info).collect();
            let owners: Vec<Owner> = match kind {
                Kind::Deployment => {
                    let deploys: Api<Deployment> = scoped(client, ns);
                    deploys
                        .list(&lp)
                        .await
                        .map_err(kube_err(api("deployments")))?
                        .items
                        .iter()
                        .map(|d| Owner {
                            key: key_of(&d.metadata),
                            selector: d
                                .spec
                                .as_ref()
                                .and_then(|s| s.selector.match_labels.clone())
                                .unwrap_or_default(),
                        })
                        .collect()
                }
                Kind::Namespace => {
                    let nss: Api<Namespace> = Api::all(client.clone());
                    nss.list(&lp)
                        .await
                        .map_err(kube_err(api("namespaces")))?
                        .items
                        .iter()
                        .map(|n| {
                            let name = n.metadata.name.clone().unwrap_or_default();
                            Owner {
                                key: Key {
                                    namespace: name.clone(),
                                    name,
                                },
                                selector: BTreeMap::new(),
                            }
                        })
                        .collect()
                }
                _ => vec![],
            };
            let meshed = stats::meshed_counts(kind, &owners, &pods);
            let keys: Vec<Key> = match kind {
                Kind::Pod => meshed.keys().cloned().collect(),
                _ => owners.into_iter().map(|o| o.key).collect(),
            };
            Ok(Listed {
                keys: keys.into_iter().filter(|k| keep(k)).collect(),
                meshed,
                status,
            })
        }
    }
}

fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn pod_info(p: &Pod) -> PodInfo {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    PodInfo {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        labels: p.metadata.labels.clone().unwrap_or_default(),
        meshed: p
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == PROXY_CONTAINER)),
        live: !matches!(phase, Some("Succeeded" | "Failed")),
    }
}

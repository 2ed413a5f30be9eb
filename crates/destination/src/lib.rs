//! tandem's destination service: Linkerd's Destination API (`Get`,
//! `GetProfile`) answered from the cluster's Services, EndpointSlices, Pods,
//! TrafficSplits and HTTPRoutes, in the shape of linkerd2's policy
//! controller:
//!
//! - [`objects`] folds each watched object to what the index keeps (pure);
//! - [`index`] is the synchronous index: changes in, one `watch` channel
//!   per subscription out;
//! - [`decide`] holds its decisions as pure functions (an address of a
//!   pod or a gateway, the split an apex uses, its overrides);
//! - [`grpc`] serves the channels as gRPC streams;
//! - [`run`] wires the watches, the index, the server and the admin port.
//!
//! The server speaks plain gRPC (no TLS) for now.

#![forbid(unsafe_code)]

pub mod decide;
pub mod grpc;
pub mod index;
pub mod metrics;
pub mod objects;
mod store;

#[cfg(test)]
mod tests;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::watcher,
};
use linkerd2_proxy_api::destination::destination_server::DestinationServer;
use prometheus_client::registry::Registry;
use tandem_runtime::{
    Task,
    watch::{Update, spawn_folded},
};
use tokio::sync::mpsc;

use crate::{
    index::{Change, Event, Index},
    objects::{PodInfo, ServiceInfo, SliceInfo, SplitInfo, SplitKind},
};

/// How to run the destination service.
#[derive(Clone, Debug)]
pub struct Settings {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub index: index::Config,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the gRPC server on {addr} failed")]
    Grpc {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the admin server on {addr} failed")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the index's watches stopped")]
    WatchesStopped,
}

/// The HTTPRoute version read (Gateway API v1).
pub const HTTP_ROUTE_VERSION: &str = "v1";

/// What a watch sends to the index's loop.
#[derive(Debug)]
enum Msg {
    Services(Update<ServiceInfo>),
    Slices(Update<SliceInfo>),
    Pods(Update<PodInfo>),
    Splits(SplitKind, Update<SplitInfo>),
}

/// Runs the destination service until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut registry = Registry::with_prefix("tandem_destination");
    let metrics = metrics::Metrics::register(&mut registry);
    let (admin, readiness) = tandem_admin::Admin::new(registry);
    let admin_addr = settings.admin_addr;
    let mut admin = tokio::spawn(admin.serve(admin_addr));

    let domain = settings.index.cluster_domain.clone();
    let index = Arc::new(Mutex::new(Index::new(settings.index.clone())));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _watches = watches(client, &domain, tx);

    let server = grpc::Server::new(index.clone(), metrics, domain);
    let grpc_addr = settings.grpc_addr;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DestinationServer::new(server))
            .serve_with_shutdown(grpc_addr, async {
                let _ = stop_rx.await;
            }),
    );
    tracing::info!(grpc = %grpc_addr, admin = %admin_addr, "serving the Destination API");

    // Ready once every watch has listed (a kind the cluster does not serve
    // counts as listed: it has nothing to index).
    let mut listed = [false; 5];
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { return Err(Error::WatchesStopped) };
                let (slot, change) = change(msg);
                if let Some(change) = change {
                    index.lock().unwrap_or_else(|e| e.into_inner()).apply(change);
                }
                if let Some(slot) = slot && !listed[slot] {
                    listed[slot] = true;
                    if listed.iter().all(|l| *l) {
                        tracing::info!("every watch has listed; ready");
                        readiness.set(true);
                    }
                }
            }
            res = &mut grpc => {
                let _ = stop_tx.send(());
                return match res {
                    Ok(Err(source)) => Err(Error::Grpc { addr: grpc_addr, source }),
                    _ => Ok(()),
                };
            }
            res = &mut admin => {
                let source = match res {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => std::io::Error::other("it returned"),
                    Err(e) => std::io::Error::other(e),
                };
                return Err(Error::Admin { addr: admin_addr, source });
            }
            () = &mut shutdown => {
                tracing::info!("shutting down");
                let _ = stop_tx.send(());
                let _ = grpc.await;
                admin.abort();
                return Ok(());
            }
        }
    }
}

fn watches(client: Client, domain: &str, tx: mpsc::UnboundedSender<Msg>) -> Vec<Task> {
    let cfg = watcher::Config::default;
    let route = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        HTTP_ROUTE_VERSION,
        "HTTPRoute",
    ));
    let (d1, d2) = (domain.to_string(), domain.to_string());
    vec![
        spawn_folded(
            Api::<Service>::all(client.clone()),
            cfg(),
            objects::service,
            tx.clone(),
            Msg::Services,
        ),
        spawn_folded(
            Api::<EndpointSlice>::all(client.clone()),
            cfg(),
            objects::slice,
            tx.clone(),
            Msg::Slices,
        ),
        spawn_folded(
            Api::<Pod>::all(client.clone()),
            cfg(),
            objects::pod,
            tx.clone(),
            Msg::Pods,
        ),
        spawn_folded(
            Api::<tandem_api::smi::v1alpha1::TrafficSplit>::all(client.clone()),
            cfg(),
            move |ts| objects::traffic_split(ts, &d1),
            tx.clone(),
            |u| Msg::Splits(SplitKind::TrafficSplit, u),
        ),
        spawn_folded(
            Api::<DynamicObject>::all_with(client, &route),
            cfg(),
            move |r| objects::http_route(r, &d2),
            tx,
            |u| Msg::Splits(SplitKind::HttpRoute, u),
        ),
    ]
}

/// A watch's message as a change of the index, and the watch's readiness
/// slot when it has listed (or found its kind not served).
fn change(msg: Msg) -> (Option<usize>, Option<Change>) {
    fn event<T>(slot: usize, what: &str, u: Update<T>) -> (Option<usize>, Option<Event<T>>) {
        match u {
            Update::Listed(all) => (Some(slot), Some(Event::Reset(all))),
            Update::Apply(t) => (None, Some(Event::Apply(t))),
            Update::Delete(t) => (None, Some(Event::Delete(t))),
            Update::Failed(e) if e.code == Some(404) => {
                tracing::debug!(what, "not served by this cluster; nothing to index");
                (Some(slot), None)
            }
            Update::Failed(e) => {
                tracing::warn!(what, error = %e, "watch failed; retrying");
                (None, None)
            }
        }
    }
    match msg {
        Msg::Services(u) => {
            let (s, e) = event(0, "services", u);
            (s, e.map(Change::Services))
        }
        Msg::Slices(u) => {
            let (s, e) = event(1, "endpointslices", u);
            (s, e.map(Change::Slices))
        }
        Msg::Pods(u) => {
            let (s, e) = event(2, "pods", u);
            (s, e.map(Change::Pods))
        }
        Msg::Splits(kind, u) => {
            let (slot, what) = match kind {
                SplitKind::TrafficSplit => (3, "trafficsplits"),
                SplitKind::HttpRoute => (4, "httproutes"),
            };
            let (s, e) = event(slot, what, u);
            (s, e.map(|e| Change::Splits(kind, e)))
        }
    }
}

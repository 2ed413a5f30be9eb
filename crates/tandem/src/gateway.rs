//! `tandem gateway`: the multicluster gateway process. It certifies with
//! identity as a proxy does, follows the exported Services with a watch,
//! serves mTLS on 4143 (`tandem_proxy::gateway`) and the probe on 4191.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{Api, Client, runtime::watcher};
use prometheus_client::registry::Registry;
use tandem_install::core::{TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY};
use tandem_meshtls::{Tls, gateway::Gateway as Rules};
use tandem_proxy::{
    discover::Resolver,
    gateway::{
        Backends, Exports, Gateway, GatewayArgs, GatewayMetrics, ServiceRef, is_exported, readiness,
    },
    identity::{self, Certifier, Schedule},
    metrics::Metrics,
};
use tandem_runtime::watch::{Update, folded};
use tokio::{net::TcpListener, sync::watch};

use crate::kube_client::ClusterArgs;

/// How often `/ready` asks whether the destination service answers.
const READY_CHECK: Duration = Duration::from_secs(5);

/// A Service as the export index keeps it.
pub fn export_of(svc: Service) -> (ServiceRef, bool) {
    let exported = svc.metadata.labels.as_ref().is_some_and(is_exported);
    let key = ServiceRef {
        namespace: svc.metadata.namespace.unwrap_or_default(),
        name: svc.metadata.name.unwrap_or_default(),
    };
    (key, exported)
}

/// Keeps `exports` in line with the cluster's Services until the watch's
/// stream ends (it retries by itself with backoff).
pub async fn follow_exports(client: Client, exports: Exports) {
    let api: Api<Service> = Api::all(client);
    let updates = folded(api, watcher::Config::default(), export_of);
    futures::pin_mut!(updates);
    while let Some(update) = updates.next().await {
        match update {
            Update::Listed(all) => {
                exports.reset(all);
                tracing::info!(exported = exports.len(), "Services listed");
            }
            Update::Apply((svc, exported)) => exports.apply(svc, exported),
            Update::Delete((svc, _)) => exports.delete(&svc),
            Update::Failed(error) if error.is_expired() => {}
            Update::Failed(error) => tracing::warn!(%error, "the Service watch failed; retrying"),
        }
    }
}

/// The trust anchors from the control plane's ConfigMap.
async fn anchors(client: Client, namespace: &str) -> Result<String> {
    let what = format!("ConfigMap {namespace}/{TRUST_ROOTS_CONFIGMAP}");
    let cms: Api<ConfigMap> = Api::namespaced(client, namespace);
    let cm = cms.get(TRUST_ROOTS_CONFIGMAP).await.with_context(|| {
        format!("reading the trust anchors from {what} (or pass --identity-trust-anchors)")
    })?;
    cm.data
        .and_then(|mut d| d.remove(TRUST_ROOTS_KEY))
        .with_context(|| format!("{what} has no key {TRUST_ROOTS_KEY}"))
}

pub async fn run(cluster: &ClusterArgs, args: GatewayArgs) -> Result<ExitCode> {
    if args.probe_only {
        return probe_only(&args.admin_addr).await;
    }
    let client = cluster.client().await?;
    let config = match &args.identity_trust_anchors {
        Some(_) => args.validate()?,
        None => {
            let pem = anchors(client.clone(), &args.control_plane_namespace).await?;
            args.validate_with_anchors(&pem)?
        }
    };
    let mut registry = Registry::default();
    let metrics = GatewayMetrics::register(&mut registry);
    let proxy_metrics = Metrics::register(&mut registry);
    let identity_metrics = identity::Metrics::register(&mut registry);

    let (creds_tx, creds_rx) = tandem_meshtls::credentials_channel();
    let certifier = Certifier::new(config.identity.clone()).context("the identity client")?;
    tokio::spawn(identity::run(
        certifier,
        creds_tx,
        identity_metrics,
        Schedule::default(),
    ));

    let resolver = Resolver::new(&config.destination_addr, config.destination_context.clone())
        .with_context(|| format!("the destination service {}", config.destination_addr))?;
    let exports = Exports::default();
    tokio::spawn(follow_exports(client, exports.clone()));

    let (admin, ready) = tandem_admin::Admin::new(registry);
    tokio::spawn(readiness(
        ready,
        creds_rx.clone(),
        resolver.clone(),
        config.probe_authority(),
        READY_CHECK,
    ));
    let tls = Tls::new(creds_rx, config.identity.anchors.clone());
    let gateway = Gateway::new(
        Rules {
            identity: config.identity.local_name.clone(),
            suffixes: config.suffixes.clone(),
        },
        tls.clone(),
        exports,
        Backends::new(Some(resolver), proxy_metrics, config.connect_timeout).with_tls(tls),
        metrics,
        config.detect_timeout,
    );
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("listening on {}", config.listen_addr))?;
    tracing::info!(
        listen = %config.listen_addr,
        admin = %config.admin_addr,
        identity = %gateway.identity(),
        suffixes = %config.suffixes,
        "gateway starting"
    );
    let (stop, stop_rx) = watch::channel(false);
    let admin_addr: SocketAddr = config.admin_addr;
    let server = admin.serve(admin_addr);
    tokio::pin!(server);
    loop {
        tokio::select! {
            res = &mut server => {
                res.with_context(|| format!("serving the gateway probe on {admin_addr}"))?;
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => { tokio::spawn(gateway.clone().handle(s, stop_rx.clone())); }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = crate::signal::shutdown_signal() => break,
        }
    }
    stop.send_replace(true);
    Ok(ExitCode::SUCCESS)
}

/// `--probe-only`: /live and /ready (always ready), nothing forwarded.
async fn probe_only(admin_addr: &str) -> Result<ExitCode> {
    let addr: SocketAddr = admin_addr
        .parse()
        .with_context(|| format!("--admin-addr: {admin_addr:?} is not an address (ip:port)"))?;
    let (admin, ready) = tandem_admin::Admin::new(Registry::default());
    ready.set(true);
    tokio::select! {
        res = admin.serve(addr) => {
            res.with_context(|| format!("serving the gateway probe on {addr}"))?;
        }
        _ = crate::signal::shutdown_signal() => {}
    }
    Ok(ExitCode::SUCCESS)
}

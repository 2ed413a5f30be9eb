//! The Link, as users make it: certificates, installs and `link` through
//! the CLI; and the waits around it (the remote-access token, the extra
//! service range, the mirror in sync).

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::json;
use tokio::time::{Instant, sleep, timeout};

use super::{Args, GATEWAY_ALIVE, LINK_FINALIZER, MC_NAMESPACE, PROBES, TOKEN_SECRET};
use crate::{
    api::{FIELD_MANAGER, REQUEST_TIMEOUT},
    cli::Cli,
    controller::Controller,
    report::Progress,
    stats,
};

/// Certificates, then the CRDs, the core control plane and multicluster in
/// both clusters.
pub(super) async fn install(p: &Progress, cli: &Cli<'_>, args: &Args) -> Result<()> {
    let cert = |extra: &[&str]| {
        let mut all = vec!["certificate", "create"];
        all.extend(extra);
        all.extend(["--no-password", "--insecure", "--force"]);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let root = cert(&[
        "root.linkerd.cluster.local",
        "root.crt",
        "root.key",
        "--profile",
        "root-ca",
    ]);
    cli.tandem(None, &root.iter().map(String::as_str).collect::<Vec<_>>())
        .await?;
    let clusters = [args.local_context.as_str(), args.remote_context.as_str()];
    for c in clusters {
        let crt = format!("{c}-issuer.crt");
        let key = format!("{c}-issuer.key");
        let issuer = cert(&[
            "identity.linkerd.cluster.local",
            &crt,
            &key,
            "--profile",
            "intermediate-ca",
            "--ca",
            "root.crt",
            "--ca-key",
            "root.key",
            "--not-after",
            "8760h",
        ]);
        cli.tandem(None, &issuer.iter().map(String::as_str).collect::<Vec<_>>())
            .await?;
    }
    p.say(format_args!(
        "certificates: a root and an issuer per cluster in {}",
        cli.dir.display()
    ));
    for c in clusters {
        cli.pipe(c, &["install", "--crds"], c).await?;
        let crt = format!("{c}-issuer.crt");
        let key = format!("{c}-issuer.key");
        cli.pipe(
            c,
            &[
                "install",
                "--identity-trust-anchors-file",
                "root.crt",
                "--identity-issuer-certificate-file",
                &crt,
                "--identity-issuer-key-file",
                &key,
            ],
            c,
        )
        .await?;
        cli.pipe(c, &["multicluster", "install"], c).await?;
        p.say(format_args!(
            "installed in {c}: the CRDs, the control plane, multicluster"
        ));
    }
    Ok(())
}

/// Waits until kube-controller-manager has filled in the remote-access token.
pub(super) async fn wait_token(remote: &Client, context: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(remote.clone(), MC_NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = timeout(REQUEST_TIMEOUT, api.get_opt(TOKEN_SECRET)).await;
        if let Ok(Ok(Some(s))) = &got
            && s.data
                .as_ref()
                .and_then(|d| d.get("token"))
                .is_some_and(|t| !t.0.is_empty())
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "Secret {MC_NAMESPACE}/{TOKEN_SECRET} in {context} had no token 60 s after `tandem multicluster install` (is kube-controller-manager running?); last answer: {}",
                match got {
                    Ok(Ok(Some(_))) => "no token yet".to_string(),
                    Ok(Ok(None)) => "no such Secret".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_string(),
                }
            );
        }
        sleep(Duration::from_millis(250)).await;
    }
}

/// The API server URL of a context, as the kubeconfig has it.
pub(super) async fn kube_url(kubeconfig: &Path, context: &str) -> Result<String> {
    let config = tandem_util::client::config_from_file(kubeconfig, Some(context)).await?;
    Ok(config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string())
}

/// An extra service range for the benchmark's Services.
const BENCH_SERVICE_CIDR: &str = "198.19.160.0/20";

/// Adds [`BENCH_SERVICE_CIDR`] as a ServiceCIDR and waits until it is ready.
pub(super) async fn widen_service_range(client: &Client) -> Result<()> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "networking.k8s.io",
        "v1",
        "ServiceCIDR",
    ));
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let object = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "ServiceCIDR",
        "metadata": {"name": "tandem-bench"},
        "spec": {"cidrs": [BENCH_SERVICE_CIDR]},
    });
    timeout(
        REQUEST_TIMEOUT,
        api.patch(
            "tandem-bench",
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&object),
        ),
    )
    .await
    .context("timed out")??;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = timeout(REQUEST_TIMEOUT, api.get("tandem-bench"))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|o| o.data["status"]["conditions"].as_array().cloned())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the ServiceCIDR {BENCH_SERVICE_CIDR} is not ready after 30 s");
        }
        sleep(Duration::from_millis(200)).await;
    }
}

pub(super) fn link_api() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "multicluster.tandem.io",
        "v1alpha1",
        "Link",
    ))
}

/// Waits until the mirror holds the Link's finalizer (before that it writes
/// no mirror) and has seen the gateway's probe pass.
pub(super) async fn wait_synced(
    local: &Client,
    mirror: &mut Controller,
    cluster: &str,
) -> Result<()> {
    let links: Api<DynamicObject> = Api::namespaced_with(local.clone(), MC_NAMESPACE, &link_api());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        mirror.check_running()?;
        let finalizer = match timeout(REQUEST_TIMEOUT, links.get_opt(cluster)).await {
            Ok(Ok(Some(l))) => l
                .metadata
                .finalizers
                .is_some_and(|f| f.iter().any(|f| f == LINK_FINALIZER)),
            _ => false,
        };
        let metrics = mirror.metrics().await.unwrap_or_default();
        let probed = stats::series_total(
            &metrics,
            PROBES,
            &[("cluster", cluster), ("successful", "true")],
        ) >= 1.0;
        let alive = stats::series_total(&metrics, GATEWAY_ALIVE, &[("cluster", cluster)]) >= 1.0;
        if finalizer && probed && alive {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "60 s after it was ready, the service mirror still lacked: {}",
                [
                    (!finalizer).then_some("the Link's finalizer"),
                    (!probed).then_some("a passing gateway probe"),
                    (!alive).then_some("the gateway alive"),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ")
            );
        }
        sleep(Duration::from_millis(200)).await;
    }
}

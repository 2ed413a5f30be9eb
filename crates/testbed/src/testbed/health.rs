//! Health: probing a component's health URL, waiting until it or a
//! cluster condition holds, and the status report.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use kube::Client;

use super::{
    Testbed,
    state::{ClusterStatus, ComponentStatus, Status},
};
use crate::{
    ClusterLayout, Component, Error, Nodes, Toolchain, component,
    node::kubelet_start,
    process::{self, ProcessId},
    toolchain,
};

impl Testbed {
    pub async fn status(&self) -> Status {
        let mut clusters = vec![];
        for l in self.config.layouts() {
            let base = admin_config(&self.kubeconfig_path(), &l.name).await;
            let mut components = vec![];
            for c in Component::started(l.nodes) {
                let id = process::read_pid_file(&l.pid_path(c));
                let running = id.is_some_and(|id| id.is_alive());
                let endpoint = component::health_url(&l, c);
                let health = match (&base, running) {
                    (_, false) => Err("not running".to_string()),
                    (Ok(base), true) => probe(base, &endpoint).await,
                    (Err(e), true) => Err(e.to_string()),
                };
                components.push(ComponentStatus {
                    component: c,
                    pid: id.filter(|id| id.is_alive()).map(|id| id.pid),
                    running,
                    healthy: health.is_ok(),
                    endpoint,
                    rss_bytes: id.filter(|id| id.is_alive()).and_then(|id| id.rss_bytes()),
                    error: health.err(),
                });
            }
            clusters.push(ClusterStatus {
                context: l.name.clone(),
                server: l.apiserver_url(),
                nodes: l.nodes,
                node_ip: l.node_ip().to_string(),
                pod_cidr: l.pod_cidr(),
                service_cidr: l.service_cidr(),
                lb_pool: (l.nodes == Nodes::Real).then(|| l.lb_pool()),
                name: l.name,
                components,
            });
        }
        Status {
            dir: self.config.dir.clone(),
            kubeconfig: self.kubeconfig_path(),
            kube_version: self.state.kube_version.clone(),
            clusters,
        }
    }
}

/// How long `down` waits after SIGTERM before SIGKILL. kube-apiserver with
/// real nodes shuts its controllers down and stops listening at once, then
/// lingers (seen with 1.34); its data is in etcd, which stops after it.
pub(super) fn stop_grace(c: Component) -> Duration {
    match c {
        Component::KubeApiserver => Duration::from_secs(3),
        _ => Duration::from_secs(10),
    }
}

fn startup_timeout(c: Component) -> Duration {
    match c {
        // The apiserver installs its bootstrap objects before /readyz passes;
        // on a loaded 2-core machine that can take a while.
        Component::KubeApiserver => Duration::from_secs(120),
        _ => Duration::from_secs(60),
    }
}

pub(super) fn cluster_err(cluster: &str, e: impl std::fmt::Display) -> Error {
    Error::Cluster {
        cluster: cluster.to_string(),
        detail: e.to_string(),
    }
}

/// The admin's client configuration for `cluster` (or the current context).
pub(super) async fn admin_config(kubeconfig: &Path, cluster: &str) -> Result<kube::Config, Error> {
    let context = (!cluster.is_empty()).then_some(cluster);
    let mut config = tandem_util::client::config_from_file(kubeconfig, context)
        .await
        .map_err(|e| cluster_err(cluster, e))?;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    Ok(config)
}

/// GETs a health URL with the cluster's CA and admin certificate; a
/// `unix://` URL only has to accept a connection.
pub(super) async fn probe(base: &kube::Config, url: &str) -> Result<(), String> {
    if let Some(path) = url.strip_prefix("unix://") {
        return match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::UnixStream::connect(path),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{path}: {e}")),
            Err(_) => Err(format!("{path}: timed out")),
        };
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let mut config = base.clone();
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    config.cluster_url = format!("{}://{authority}", uri.scheme_str().unwrap_or("https"))
        .parse()
        .map_err(|e| format!("{url}: {e}"))?;
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let req = http::Request::get(uri.path())
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Starts component `c` and waits until it is healthy; returns when it was
/// started. Kubelets start one at a time on this machine (see
/// [`kubelet_start`]).
pub(super) async fn start_healthy(
    l: &ClusterLayout,
    tc: &Toolchain,
    c: Component,
    base: &kube::Config,
) -> Result<SystemTime, Error> {
    let _one_at_a_time = match c {
        Component::Kubelet => Some(kubelet_start::lock().await?),
        _ => None,
    };
    let since = SystemTime::now();
    let id = component::spec(l, tc, c).spawn()?;
    wait_healthy(l, c, id, since, base, startup_timeout(c)).await?;
    Ok(since)
}

/// Waits until component `c`, started as process `id` at `since`, is
/// healthy. A kubelet also has to be past its device plugin registry's
/// start: its /healthz answers before that step, which can still make it
/// exit.
async fn wait_healthy(
    l: &ClusterLayout,
    c: Component,
    id: ProcessId,
    since: SystemTime,
    base: &kube::Config,
    timeout: Duration,
) -> Result<(), Error> {
    let url = component::health_url(l, c);
    let deadline = Instant::now() + timeout;
    let failed = |detail: String| Error::ComponentFailed {
        cluster: l.name.clone(),
        component: c.to_string(),
        detail,
        log: l.log_path(c),
        log_tail: toolchain::tail(&l.log_path(c), 20),
    };
    loop {
        if !id.is_alive() {
            return Err(failed(format!("process {} exited", id.pid)));
        }
        let mut last = probe(base, &url).await;
        if last.is_ok() && c == Component::Kubelet {
            last = kubelet_start::registry_listening(
                Path::new(kubelet_start::DEVICE_PLUGIN_SOCKET),
                since,
            );
        }
        if last.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "{url} still failing after {}s: {}",
                timeout.as_secs(),
                last.unwrap_err()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) async fn wait_until<F, Fut>(
    cluster: &str,
    what: &str,
    timeout: Duration,
    mut f: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, kube::Error>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match f().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!(" (last error: {e})"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::Cluster {
        cluster: cluster.to_string(),
        detail: format!(
            "timed out after {}s waiting for {what}{last}",
            timeout.as_secs()
        ),
    })
}

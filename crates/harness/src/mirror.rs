//! The two-cluster Link fixture of the service mirror's tests: east mirrors
//! west, linked the way `tandem multicluster link` links them (a read-only
//! ServiceAccount token in a kubeconfig Secret, and a Link), with the
//! library's `run_mirror` in the test's process and the gateway's probe
//! served by the test.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Secret, Service, ServiceAccount},
        discovery::v1::EndpointSlice,
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    config::Kubeconfig,
};
use serde_json::{Value, json};
use tandem_api::multicluster::{CRD_NAME, Link, link_crd};
use tandem_multicluster::{MirrorSettings, run_mirror};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::watch,
    task::JoinHandle,
};

use crate::{Env, eventually};

mod fixture;
pub use fixture::Mirrored;

pub const MANAGER: &str = "tandem-test-mirror";
/// The read-only access the linked cluster grants (what `multicluster
/// install` gives the remote-access account).
pub const REMOTE_ROLE: &str = "tandem-test-mirror-remote-access";
/// Each test's own export label, matched by its Link's selector.
pub const RUN_LABEL: &str = "test.tandem.io/mirror-run";
/// A deadline, not a measure of speed.
pub const SETTLE: Duration = Duration::from_secs(60);

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("tandem_multicluster=info")
        .try_init();
}

pub fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// The Link CRD in `client`'s cluster, Established.
pub async fn install_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(CRD_NAME, &apply_params(), &Patch::Apply(link_crd()))
        .await
        .expect("the Link CRD is applied");
    eventually("the Link CRD is established", SETTLE, || {
        let api = api.clone();
        async move {
            let crd = api.get(CRD_NAME).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established
                .then_some(())
                .ok_or("not established".to_string())
        }
    })
    .await;
}

// === the linked cluster's side ===

/// What `tandem multicluster link` prints, built by hand: a token of a
/// read-only ServiceAccount of `ns` in west, in a kubeconfig for west.
pub async fn remote_kubeconfig(env: &Env, west: &Client, ns: &str) -> (String, Cleanup) {
    let roles: Api<ClusterRole> = Api::all(west.clone());
    roles
        .patch(
            REMOTE_ROLE,
            &apply_params(),
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": REMOTE_ROLE},
                "rules": [
                    {"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
                ],
            })),
        )
        .await
        .expect("the remote-access ClusterRole");
    let sas: Api<ServiceAccount> = Api::namespaced(west.clone(), ns);
    sas.patch(
        "mirror-remote-access",
        &apply_params(),
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "mirror-remote-access", "namespace": ns},
        })),
    )
    .await
    .expect("the remote-access ServiceAccount");
    let binding = format!("tandem-test-mirror-{ns}");
    let bindings: Api<ClusterRoleBinding> = Api::all(west.clone());
    bindings
        .patch(
            &binding,
            &apply_params(),
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": binding},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": REMOTE_ROLE},
                "subjects": [{"kind": "ServiceAccount", "name": "mirror-remote-access", "namespace": ns}],
            })),
        )
        .await
        .expect("the remote-access ClusterRoleBinding");
    let cleanup = Cleanup {
        env: env.clone(),
        cluster: "west",
        args: vec![
            "delete".into(),
            "clusterrolebinding".into(),
            binding,
            "--ignore-not-found".into(),
            "--wait=false".into(),
        ],
    };
    let token = sas
        .create_token_request(
            "mirror-remote-access",
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(3600),
                    bound_object_ref: None,
                },
                ..Default::default()
            },
        )
        .await
        .expect("a token")
        .status
        .expect("the token request's status")
        .token;
    (kubeconfig_for(env, "west", &token), cleanup)
}

/// A kubeconfig for `cluster` of the testbed, authenticating with `token`.
pub fn kubeconfig_for(env: &Env, cluster: &str, token: &str) -> String {
    let kc = Kubeconfig::read_from(&env.kubeconfig).expect("the testbed kubeconfig");
    let context = kc
        .contexts
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.context.as_ref())
        .expect("a context per cluster");
    let c = kc
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .expect("the context's cluster");
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": c.server,
            "certificate-authority-data": c.certificate_authority_data,
        }}],
        "users": [{"name": "remote-access", "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "remote-access"}}],
        "current-context": cluster,
    })
    .to_string()
}

/// A Deployment and an exported Service of that name in west.
pub async fn export(west: &Client, ns: &str, name: &str, run: &str, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(west.clone(), ns);
    deployments
        .patch(
            name,
            &apply_params(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "emoji:v1", "ports": [{"containerPort": 8080}]}]},
                    },
                },
            })),
        )
        .await
        .expect("the Deployment");
    let services: Api<Service> = Api::namespaced(west.clone(), ns);
    services
        .patch(
            name,
            &apply_params(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {
                    "name": name, "namespace": ns,
                    "labels": {"mirror.linkerd.io/exported": "true", RUN_LABEL: run, "app": name},
                    "annotations": {"example.com/note": "from west"},
                },
                "spec": {
                    "selector": {"app": name},
                    "ports": [{"name": "grpc", "port": 8080, "targetPort": 8080}],
                },
            })),
        )
        .await
        .expect("the Service");
}

pub async fn scale(west: &Client, ns: &str, name: &str, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(west.clone(), ns);
    deployments
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("scaled");
}

// === the gateway's probe, served by the test ===

/// An HTTP server on `ip` that answers every request with `status`.
pub struct ProbeServer {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    pub task: JoinHandle<()>,
}

impl ProbeServer {
    pub async fn start(ip: &str) -> Self {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap_or_else(|e| panic!("binding the probe server on {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let s = status.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let code = s.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = conn.read(&mut buf).await;
                    let reason = if code == 200 { "OK" } else { "Unavailable" };
                    let _ = conn
                        .write_all(
                            format!("HTTP/1.1 {code} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .as_bytes(),
                        )
                        .await;
                });
            }
        });
        Self { addr, status, task }
    }

    pub fn answer(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === the local side ===

/// The credentials Secret and the Link, in east.
#[allow(clippy::too_many_arguments)]
pub async fn create_link(
    east: &Client,
    ns: &str,
    name: &str,
    kubeconfig: &str,
    gateway: &str,
    probe_port: u16,
    run: &str,
    extra_spec: Value,
) {
    let secret = format!("cluster-credentials-west-{name}");
    let secrets: Api<Secret> = Api::namespaced(east.clone(), ns);
    secrets
        .patch(
            &secret,
            &apply_params(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret",
                "type": "mirror.linkerd.io/remote-kubeconfig",
                "metadata": {"name": secret, "namespace": ns},
                "stringData": {"kubeconfig": kubeconfig},
            })),
        )
        .await
        .expect("the credentials Secret");
    let mut spec = json!({
        "targetClusterName": "west",
        "clusterCredentialsSecret": secret,
        "gatewayAddress": gateway,
        "gatewayPort": 4143,
        "gatewayIdentity": "gateway.tandem-multicluster.serviceaccount.identity.tandem.cluster.local",
        "probeSpec": {"path": "/ready", "port": probe_port, "period": "500ms", "timeout": "300ms", "failureThreshold": 2},
        "selector": {"matchLabels": {"mirror.linkerd.io/exported": "true", RUN_LABEL: run}},
    });
    for (k, v) in extra_spec.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let links: Api<Link> = Api::namespaced(east.clone(), ns);
    links
        .patch(
            name,
            &apply_params(),
            &Patch::Apply(json!({
                "apiVersion": "multicluster.tandem.io/v1alpha1", "kind": "Link",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            })),
        )
        .await
        .expect("the Link");
}

/// The client a mirror runs with, as the CLI builds it from a kubeconfig
/// (the harness's clients time out idle reads after 5s, which a
/// long-running watcher must not).
pub async fn mirror_client(env: &Env, cluster: &str) -> Client {
    tandem_util::client::from_file(&env.kubeconfig, Some(cluster))
        .await
        .unwrap_or_else(|e| panic!("the mirror's client for {cluster}: {e}"))
}

/// A service mirror running in this process; stopped when dropped.
pub struct Mirror {
    pub stop: watch::Sender<bool>,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Mirror {
    pub async fn start(env: &Env, ns: &str, link: &str) -> Self {
        Self::start_with(env, ns, link, false).await
    }

    pub async fn start_with(env: &Env, ns: &str, link: &str, create_namespaces: bool) -> Self {
        Self::start_settings(
            env,
            MirrorSettings {
                create_namespaces,
                ..Self::settings(ns, link)
            },
        )
        .await
    }

    /// The settings the tests' mirrors run with.
    pub fn settings(ns: &str, link: &str) -> MirrorSettings {
        MirrorSettings {
            link_namespace: ns.to_string(),
            link_name: link.to_string(),
            admin_addr: None,
            dns_refresh: Duration::from_secs(30),
            status_interval: Duration::from_millis(500),
            ..MirrorSettings::default()
        }
    }

    /// A mirror in east with these settings.
    pub async fn start_settings(env: &Env, settings: MirrorSettings) -> Self {
        let east = mirror_client(env, "east").await;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run_mirror(east, settings, stopped));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops it and checks it ended cleanly.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let task = self.task.take().unwrap();
        let res = tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("the mirror stops within 15s")
            .expect("the mirror task did not panic");
        res.expect("the mirror ended without an error");
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Runs a kubectl command when dropped (cleanup that must happen even when
/// a test fails: cluster-wide objects, a Link's finalizer).
pub struct Cleanup {
    pub env: Env,
    pub cluster: &'static str,
    pub args: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = crate::run(self.env.kubectl(self.cluster).args(&self.args));
    }
}

/// East linked to west: the Link CRD in east, west's remote-access account
/// and its kubeconfig, a probe server on `probe_ip` standing for west's
/// gateway, and the Link `link` in `ns` selecting the test's run. What most
/// mirror tests start from. Dropped, it lets the Link go and removes the
/// account's binding in west.
pub struct LinkedPair {
    // Dropped in this order: the Link, the probe, then west's binding.
    _release: Cleanup,
    pub probe: ProbeServer,
    pub kubeconfig: String,
    _binding: Cleanup,
}

pub async fn link_pair(
    env: &Env,
    east: &Client,
    west: &Client,
    ns: &str,
    link: &str,
    probe_ip: &str,
) -> LinkedPair {
    install_crd(east).await;
    let (kubeconfig, binding) = remote_kubeconfig(env, west, ns).await;
    let probe = ProbeServer::start(probe_ip).await;
    create_link(
        east,
        ns,
        link,
        &kubeconfig,
        probe_ip,
        probe.addr.port(),
        ns,
        json!({}),
    )
    .await;
    LinkedPair {
        _release: release_link(env, ns, link),
        probe,
        kubeconfig,
        _binding: binding,
    }
}

/// Lets a Link go even if its mirror no longer runs (a failed test).
pub fn release_link(env: &Env, ns: &str, link: &str) -> Cleanup {
    Cleanup {
        env: env.clone(),
        cluster: "east",
        args: [
            "-n",
            ns,
            "patch",
            "links.multicluster.tandem.io",
            link,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]
        .map(String::from)
        .to_vec(),
    }
}

// === reading east ===

/// Waits until the Service `name` (a mirror) exists, and returns it.
pub async fn appears(services: &Api<Service>, name: &str) -> Service {
    eventually(&format!("{name} appears in east"), SETTLE, || async {
        services
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not yet".to_string())
    })
    .await
}

/// The mirror slice's (addresses, ready flags, ports), or why not.
pub async fn mirror_endpoints(
    east: &Client,
    ns: &str,
    mirror: &str,
) -> Result<(Vec<String>, Vec<bool>, Vec<(String, i32)>), String> {
    let slices: Api<EndpointSlice> = Api::namespaced(east.clone(), ns);
    let slice = slices
        .get_opt(&format!("{mirror}-gateway"))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no slice for {mirror}"))?;
    let addresses = slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.clone())
        .collect();
    let ready = slice
        .endpoints
        .iter()
        .map(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .collect();
    let ports = slice
        .ports
        .unwrap_or_default()
        .iter()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port.unwrap_or(0)))
        .collect();
    Ok((addresses, ready, ports))
}

/// Waits until the mirror's endpoints are all `ready` (and there are some).
pub async fn wait_ready(
    east: &Client,
    ns: &str,
    mirror: &str,
    ready: bool,
    within: Duration,
    what: &str,
) {
    eventually(what, within, || async {
        let (addrs, flags, _) = mirror_endpoints(east, ns, mirror).await?;
        if !addrs.is_empty() && flags.iter().all(|r| *r == ready) {
            Ok(())
        } else {
            Err(format!("addresses {addrs:?}, ready {flags:?}"))
        }
    })
    .await
}

/// A condition of the Link as (status, reason, message), or why not.
pub async fn link_condition(
    east: &Client,
    ns: &str,
    link: &str,
    type_: &str,
) -> Result<(String, String, String), String> {
    let links: Api<Link> = Api::namespaced(east.clone(), ns);
    let l = links.get(link).await.map_err(|e| e.to_string())?;
    let status = l.status.ok_or("no status yet")?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .ok_or_else(|| format!("no {type_} condition in {:?}", status.conditions))
}

pub async fn wait_condition(
    east: &Client,
    ns: &str,
    link: &str,
    type_: &str,
    status: &str,
    reason: &str,
    within: Duration,
) -> String {
    eventually(
        &format!("Link {link}: {type_}={status} ({reason})"),
        within,
        || async {
            let (s, r, m) = link_condition(east, ns, link, type_).await?;
            if s == status && r == reason {
                Ok(m)
            } else {
                Err(format!("{type_}={s} ({r}): {m}"))
            }
        },
    )
    .await
}

pub async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(what, SETTLE, || async {
        match api.get_opt(name).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

//! The service mirror against real kube-apiservers: the library's
//! `run_mirror` in this process, with the LOCAL cluster east and the linked
//! cluster west, linked the way `tandem multicluster link` links them (a
//! read-only ServiceAccount token in a kubeconfig Secret, and a Link).
//!
//! Each test exports its Services with a label of its own in its Link's
//! selector, and uses gateway IPs of its own (127.20.19.x, where the test
//! serves the gateway's probe), so tests running at once never see each
//! other's Services.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
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
        core::v1::{Namespace, Secret, Service, ServiceAccount},
        discovery::v1::EndpointSlice,
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};
use tandem_api::multicluster::{CRD_NAME, Link, link_crd};
use tandem_harness::{Env, PrivateTestbed, TestNamespace, eventually};
use tandem_multicluster::{MirrorSettings, run_mirror};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::watch,
    task::JoinHandle,
};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

const MANAGER: &str = "tandem-test-mirror";
/// The read-only access the linked cluster grants (what `multicluster
/// install` gives the remote-access account).
const REMOTE_ROLE: &str = "tandem-test-mirror-remote-access";
/// Each test's own export label, matched by its Link's selector.
const RUN_LABEL: &str = "test.tandem.io/mirror-run";
/// A deadline, not a measure of speed.
const SETTLE: Duration = Duration::from_secs(60);

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("tandem_multicluster=info")
        .try_init();
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// The Link CRD in `client`'s cluster, Established.
async fn install_crd(client: &Client) {
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
async fn remote_kubeconfig(env: &Env, west: &Client, ns: &str) -> (String, Cleanup) {
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
fn kubeconfig_for(env: &Env, cluster: &str, token: &str) -> String {
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
async fn export(west: &Client, ns: &str, name: &str, run: &str, replicas: i32) {
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

async fn scale(west: &Client, ns: &str, name: &str, replicas: i32) {
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
struct ProbeServer {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    task: JoinHandle<()>,
}

impl ProbeServer {
    async fn start(ip: &str) -> Self {
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

    fn answer(&self, code: u16) {
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
async fn create_link(
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
async fn mirror_client(env: &Env, cluster: &str) -> Client {
    let kc = Kubeconfig::read_from(&env.kubeconfig).expect("the testbed kubeconfig");
    let opts = KubeConfigOptions {
        context: Some(cluster.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .expect("a client config");
    Client::try_from(config).expect("a client")
}

/// A service mirror running in this process; stopped when dropped.
struct Mirror {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Mirror {
    async fn start(env: &Env, ns: &str, link: &str) -> Self {
        Self::start_with(env, ns, link, false).await
    }

    async fn start_with(env: &Env, ns: &str, link: &str, create_namespaces: bool) -> Self {
        let east = mirror_client(env, "east").await;
        let (stop, stopped) = watch::channel(false);
        let settings = MirrorSettings {
            link_namespace: ns.to_string(),
            link_name: link.to_string(),
            admin_addr: None,
            create_namespaces,
            dns_refresh: Duration::from_secs(30),
            status_interval: Duration::from_millis(500),
            ..MirrorSettings::default()
        };
        let task = tokio::spawn(run_mirror(east, settings, stopped));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops it and checks it ended cleanly.
    async fn shutdown(mut self) {
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
struct Cleanup {
    env: Env,
    cluster: &'static str,
    args: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = tandem_harness::run(self.env.kubectl(self.cluster).args(&self.args));
    }
}

/// Lets a Link go even if its mirror no longer runs (a failed test).
fn release_link(env: &Env, ns: &str, link: &str) -> Cleanup {
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

/// The mirror slice's (addresses, ready flags, ports), or why not.
async fn mirror_endpoints(
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
async fn wait_ready(
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
async fn link_condition(
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

async fn wait_condition(
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

async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str)
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

// === tests ===

/// The whole life of a mirror: export, readiness both ways, the gateway's
/// probe, remote changes, unexport, and the Link's deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_follows_its_remote_service_and_gateway() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("mirror-life", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    install_crd(&east).await;
    let (kubeconfig, _binding) = remote_kubeconfig(&env, &west, n).await;
    let probe = ProbeServer::start("127.20.19.1").await;
    let link = "life-west";
    create_link(
        &east,
        n,
        link,
        &kubeconfig,
        "127.20.19.1",
        probe.addr.port(),
        n,
        json!({}),
    )
    .await;
    let _release = release_link(&env, n, link);
    let mirror = Mirror::start(&env, n, link).await;

    export(&west, n, "emoji", n, 1).await;

    // The mirror appears with the ports, labels and annotations.
    let services: Api<Service> = Api::namespaced(east.clone(), n);
    let svc = eventually("emoji-west appears in east", SETTLE, || async {
        services
            .get_opt("emoji-west")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not yet".to_string())
    })
    .await;
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("mirror.linkerd.io/mirrored-service")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        labels
            .get("mirror.linkerd.io/cluster-name")
            .map(String::as_str),
        Some("west")
    );
    assert_eq!(labels.get("app").map(String::as_str), Some("emoji"));
    assert!(
        !labels.contains_key("mirror.linkerd.io/exported"),
        "mirror.linkerd.io/* is not copied"
    );
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("mirror.linkerd.io/remote-svc-fq-name"),
        Some(&format!("emoji.{n}.svc.cluster.local"))
    );
    assert_eq!(
        annotations.get("example.com/note").map(String::as_str),
        Some("from west")
    );
    let spec = svc.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(spec.selector.is_none());
    let ports: Vec<(Option<String>, i32)> = spec
        .ports
        .unwrap()
        .iter()
        .map(|p| (p.name.clone(), p.port))
        .collect();
    assert_eq!(ports, [(Some("grpc".to_string()), 8080)]);

    // Ready endpoints at the gateway IP, every port mapped to the gateway port.
    wait_ready(
        &east,
        n,
        "emoji-west",
        true,
        SETTLE,
        "the mirror's endpoints become ready",
    )
    .await;
    let (addrs, _, ports) = mirror_endpoints(&east, n, "emoji-west").await.unwrap();
    assert_eq!(addrs, ["127.20.19.1"]);
    assert_eq!(ports, [("grpc".to_string(), 4143)]);

    // The west Service loses its ready endpoints: the mirror follows fast.
    scale(&west, n, "emoji", 0).await;
    let west_slices: Api<EndpointSlice> = Api::namespaced(west.clone(), n);
    eventually("west's emoji has no ready endpoint", SETTLE, || async {
        let list = west_slices
            .list(&kube::api::ListParams::default().labels("kubernetes.io/service-name=emoji"))
            .await
            .map_err(|e| e.to_string())?;
        let ready = list
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .filter(|e| {
                let c = e.conditions.as_ref();
                c.and_then(|c| c.ready).unwrap_or(true)
                    && !c.and_then(|c| c.terminating).unwrap_or(false)
            })
            .count();
        (ready == 0).then_some(()).ok_or(format!("{ready} ready"))
    })
    .await;
    // A deadline, not a speed bound: bench/mirror.sh measures how fast.
    wait_ready(
        &east,
        n,
        "emoji-west",
        false,
        SETTLE,
        "the mirror turns not-ready after west",
    )
    .await;
    let (addrs, _, _) = mirror_endpoints(&east, n, "emoji-west").await.unwrap();
    assert_eq!(addrs, ["127.20.19.1"], "the endpoints stay, not-ready");

    scale(&west, n, "emoji", 1).await;
    wait_ready(
        &east,
        n,
        "emoji-west",
        true,
        SETTLE,
        "the mirror is ready again",
    )
    .await;

    // The gateway fails its probe: not-ready after the threshold; then back.
    probe.answer(500);
    wait_ready(
        &east,
        n,
        "emoji-west",
        false,
        Duration::from_secs(10),
        "a dead gateway turns the mirror not-ready",
    )
    .await;
    wait_condition(
        &east,
        n,
        link,
        "Ready",
        "True",
        "Mirroring",
        Duration::from_secs(10),
    )
    .await;
    probe.answer(200);
    wait_ready(
        &east,
        n,
        "emoji-west",
        true,
        Duration::from_secs(10),
        "a live gateway again",
    )
    .await;

    // The Link's status tells what runs.
    let links: Api<Link> = Api::namespaced(east.clone(), n);
    eventually(
        "the Link's status shows the mirror and the gateway",
        Duration::from_secs(15),
        || async {
            let l = links.get(link).await.map_err(|e| e.to_string())?;
            let s = l.status.ok_or("no status")?;
            let g = s.gateway.clone().ok_or("no gateway status")?;
            let reachable = s
                .conditions
                .iter()
                .any(|c| c.type_ == "RemoteReachable" && c.status == "True");
            // Counts, and the failures only: none here.
            let mirrored = s.failed_services == 0
                && s.pending_services == 0
                && s.failures.is_empty()
                && s.more_failures == 0;
            if s.mirrored_services == 1
                && g.alive == Some(true)
                && g.addresses == ["127.20.19.1"]
                && g.probes.len() == 1
                && g.probes[0].alive == Some(true)
                && g.latency_ms_p50.is_some()
                && reachable
                && mirrored
                && s.last_heartbeat_time.is_some()
                && l.metadata
                    .finalizers
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f == "multicluster.tandem.io/mirrors")
            {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;

    // Someone edits or deletes what the mirror wrote: it is written again.
    let slices: Api<EndpointSlice> = Api::namespaced(east.clone(), n);
    slices
        .delete("emoji-west-gateway", &DeleteParams::default())
        .await
        .unwrap();
    services
        .patch(
            "emoji-west",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": null}}})),
        )
        .await
        .unwrap();
    wait_ready(
        &east,
        n,
        "emoji-west",
        true,
        Duration::from_secs(10),
        "a deleted mirror slice comes back",
    )
    .await;
    eventually(
        "an edited mirror is repaired",
        Duration::from_secs(10),
        || async {
            let svc = services
                .get("emoji-west")
                .await
                .map_err(|e| e.to_string())?;
            let app = svc.metadata.labels.unwrap_or_default().get("app").cloned();
            (app.as_deref() == Some("emoji"))
                .then_some(())
                .ok_or(format!("app={app:?}"))
        },
    )
    .await;

    // Remote changes propagate: a label and a port.
    let west_services: Api<Service> = Api::namespaced(west.clone(), n);
    west_services
        .patch(
            "emoji",
            &apply_params(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {
                    "name": "emoji", "namespace": n,
                    "labels": {"mirror.linkerd.io/exported": "true", RUN_LABEL: n, "app": "emoji", "tier": "backend"},
                },
                "spec": {
                    "selector": {"app": "emoji"},
                    "ports": [{"name": "grpc", "port": 8080, "targetPort": 8080}, {"name": "http", "port": 8081, "targetPort": 8081}],
                },
            })),
        )
        .await
        .unwrap();
    eventually("the mirror gets the new label and port", SETTLE, || async {
        let svc = services
            .get("emoji-west")
            .await
            .map_err(|e| e.to_string())?;
        let tier = svc.metadata.labels.unwrap_or_default().get("tier").cloned();
        let note = svc
            .metadata
            .annotations
            .unwrap_or_default()
            .get("example.com/note")
            .cloned();
        let ports = svc.spec.unwrap().ports.unwrap_or_default().len();
        let (_, _, slice_ports) = mirror_endpoints(&east, n, "emoji-west").await?;
        if tier.as_deref() == Some("backend")
            && note.is_none()
            && ports == 2
            && slice_ports == [("grpc".to_string(), 4143), ("http".to_string(), 4143)]
        {
            Ok(())
        } else {
            Err(format!(
                "tier {tier:?}, note {note:?}, {ports} ports, slice ports {slice_ports:?}"
            ))
        }
    })
    .await;

    // No longer exported: the mirror goes.
    west_services
        .patch(
            "emoji",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"mirror.linkerd.io/exported": null}}})),
        )
        .await
        .unwrap();
    wait_gone(
        &services,
        "emoji-west",
        "the unexported Service's mirror is deleted",
    )
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(east.clone(), n);
    wait_gone(&slices, "emoji-west-gateway", "its slice too").await;

    // Exported again, then the Link goes: its mirrors go with it.
    west_services
        .patch(
            "emoji",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"mirror.linkerd.io/exported": "true"}}})),
        )
        .await
        .unwrap();
    export(&west, n, "web", n, 1).await;
    wait_ready(
        &east,
        n,
        "emoji-west",
        true,
        SETTLE,
        "emoji is mirrored again",
    )
    .await;
    wait_ready(&east, n, "web-west", true, SETTLE, "web is mirrored").await;
    links.delete(link, &DeleteParams::default()).await.unwrap();
    wait_gone(
        &links,
        link,
        "the deleted Link goes, once its mirrors are gone",
    )
    .await;
    for m in ["emoji-west", "web-west"] {
        assert!(
            services.get_opt(m).await.unwrap().is_none(),
            "{m} is deleted with the Link"
        );
        assert!(
            slices
                .get_opt(&format!("{m}-gateway"))
                .await
                .unwrap()
                .is_none()
        );
    }
    mirror.shutdown().await;
}

/// Bad input gets a condition on its Link and never stops the rest: a
/// broken kubeconfig, an invalid token, a malformed spec, an unresolvable
/// gateway, a Service whose namespace is missing here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_links_get_conditions_while_a_good_one_keeps_working() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("mirror-bad", &["east", "west"]);
    let n = ns.name.as_str();
    // A namespace only west has, at first.
    let west_only: TestNamespace = env.namespace("mirror-only-west", &["west"]);
    let w = west_only.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    install_crd(&east).await;
    let (kubeconfig, _binding) = remote_kubeconfig(&env, &west, n).await;
    let probe = ProbeServer::start("127.20.19.2").await;
    let port = probe.addr.port();

    let good = "good-west";
    let bad = [
        (
            "broken-kubeconfig",
            "apiVersion: v1\nkind: Config\nclusters: [{{{".to_string(),
            json!({}),
        ),
        (
            "invalid-token",
            kubeconfig_for(&env, "west", "not-a-token"),
            json!({}),
        ),
        (
            "bad-spec",
            kubeconfig.clone(),
            json!({"probeSpec": {"period": "soon", "port": port}}),
        ),
        (
            "no-gateway",
            kubeconfig.clone(),
            json!({"gatewayAddress": "gw.tandem.invalid", "selector": {"matchLabels": {RUN_LABEL: "none"}}}),
        ),
    ];
    create_link(
        &east,
        n,
        good,
        &kubeconfig,
        "127.20.19.2",
        port,
        n,
        json!({}),
    )
    .await;
    let mut releases = vec![release_link(&env, n, good)];
    let mut mirrors = vec![Mirror::start(&env, n, good).await];
    for (name, kc, extra) in &bad {
        create_link(&east, n, name, kc, "127.20.19.3", port, n, extra.clone()).await;
        releases.push(release_link(&env, n, name));
        mirrors.push(Mirror::start(&env, n, name).await);
    }
    let _east_ns = Cleanup {
        env: env.clone(),
        cluster: "east",
        args: [
            "delete",
            "namespace",
            w,
            "--ignore-not-found",
            "--wait=false",
        ]
        .map(String::from)
        .to_vec(),
    };

    export(&west, n, "web", n, 1).await;
    export(&west, w, "web", n, 1).await;

    // A mirror that may create namespaces, for a Service of its own.
    let created: TestNamespace = env.namespace("mirror-create", &["west"]);
    let c = created.name.as_str();
    let _created_east = Cleanup {
        env: env.clone(),
        cluster: "east",
        args: [
            "delete",
            "namespace",
            c,
            "--ignore-not-found",
            "--wait=false",
        ]
        .map(String::from)
        .to_vec(),
    };
    let creates_run = format!("{n}-create");
    create_link(
        &east,
        n,
        "creates",
        &kubeconfig,
        "127.20.19.2",
        port,
        &creates_run,
        json!({}),
    )
    .await;
    releases.push(release_link(&env, n, "creates"));
    mirrors.push(Mirror::start_with(&env, n, "creates", true).await);
    export(&west, c, "api", &creates_run, 1).await;
    wait_ready(
        &east,
        c,
        "api-west",
        true,
        SETTLE,
        "the mirror creates its namespace",
    )
    .await;

    let m = wait_condition(
        &east,
        n,
        "broken-kubeconfig",
        "Ready",
        "False",
        "InvalidCredentials",
        SETTLE,
    )
    .await;
    assert!(m.contains("broken kubeconfig"), "{m}");
    wait_condition(
        &east,
        n,
        "broken-kubeconfig",
        "RemoteReachable",
        "False",
        "InvalidCredentials",
        SETTLE,
    )
    .await;
    let m = wait_condition(
        &east,
        n,
        "invalid-token",
        "RemoteReachable",
        "False",
        "Unauthorized",
        SETTLE,
    )
    .await;
    assert!(m.contains("cluster west"), "{m}");
    wait_condition(
        &east,
        n,
        "invalid-token",
        "Ready",
        "False",
        "RemoteUnreachable",
        SETTLE,
    )
    .await;
    let m = wait_condition(
        &east,
        n,
        "bad-spec",
        "Ready",
        "False",
        "InvalidLink",
        SETTLE,
    )
    .await;
    assert!(m.contains("probeSpec.period \"soon\""), "{m}");
    let m = wait_condition(
        &east,
        n,
        "no-gateway",
        "GatewayResolved",
        "False",
        "Unresolvable",
        SETTLE,
    )
    .await;
    assert!(m.contains("gw.tandem.invalid"), "{m}");
    wait_condition(
        &east,
        n,
        "no-gateway",
        "Ready",
        "False",
        "GatewayUnresolved",
        SETTLE,
    )
    .await;

    // The good Link mirrors what it can, and says what it cannot.
    wait_ready(
        &east,
        n,
        "web-west",
        true,
        SETTLE,
        "the good Link's mirror is ready",
    )
    .await;
    wait_condition(&east, n, good, "Ready", "True", "Mirroring", SETTLE).await;
    let links: Api<Link> = Api::namespaced(east.clone(), n);
    eventually("the missing namespace is reported", SETTLE, || async {
        let l = links.get(good).await.map_err(|e| e.to_string())?;
        let s = l.status.unwrap_or_default();
        let failures: Vec<(&str, &str)> = s
            .failures
            .iter()
            .map(|f| (f.remote_ref.namespace.as_str(), f.reason.as_str()))
            .collect();
        match (s.mirrored_services, s.failed_services, failures.as_slice()) {
            (1, 1, [(ns, "MissingNamespace")]) if *ns == w => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // The namespace appears: the mirror follows.
    let namespaces: Api<Namespace> = Api::all(east.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": w}})).unwrap(),
        )
        .await
        .unwrap();
    wait_ready(
        &east,
        w,
        "web-west",
        true,
        SETTLE,
        "the mirror lands in the new namespace",
    )
    .await;
    eventually("both are mirrored", SETTLE, || async {
        let l = links.get(good).await.map_err(|e| e.to_string())?;
        let counts = l
            .status
            .as_ref()
            .map(|s| (s.mirrored_services, s.failed_services, s.failures.len()));
        (counts == Some((2, 0, 0)))
            .then_some(())
            .ok_or(format!("{counts:?}"))
    })
    .await;

    // Every Link can be deleted, broken or not.
    for name in [
        good,
        "broken-kubeconfig",
        "invalid-token",
        "bad-spec",
        "no-gateway",
    ] {
        links.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in [
        good,
        "broken-kubeconfig",
        "invalid-token",
        "bad-spec",
        "no-gateway",
    ] {
        wait_gone(&links, name, &format!("Link {name} is deleted")).await;
    }
    let services: Api<Service> = Api::namespaced(east.clone(), w);
    assert!(services.get_opt("web-west").await.unwrap().is_none());
    for m in mirrors {
        m.shutdown().await;
    }
    drop(releases);
}

/// West's API server stops: the mirrors stay exactly as they were, the Link
/// says the remote is unreachable, and all recovers when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_leaves_the_mirrors_alone() {
    init_logs();
    // Base port 20440: apart from the shared testbed (27440) and the other
    // tests' own (22440, 22540, 23440, 24440, 28440-31440).
    let tb = PrivateTestbed::start(tandem_bin(), &["east", "west"], 20440);
    let env = &tb.env;
    let ns = env.namespace("mirror-outage", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    install_crd(&east).await;
    let (kubeconfig, _binding) = remote_kubeconfig(env, &west, n).await;
    let probe = ProbeServer::start("127.20.19.4").await;
    let link = "outage-west";
    create_link(
        &east,
        n,
        link,
        &kubeconfig,
        "127.20.19.4",
        probe.addr.port(),
        n,
        json!({}),
    )
    .await;
    let _release = release_link(env, n, link);
    let mirror = Mirror::start(env, n, link).await;
    export(&west, n, "emoji", n, 1).await;
    wait_ready(&east, n, "emoji-west", true, SETTLE, "the mirror is ready").await;
    wait_condition(
        &east,
        n,
        link,
        "RemoteReachable",
        "True",
        "Reachable",
        SETTLE,
    )
    .await;

    let stop = tandem_harness::run(
        env.tandem()
            .args([
                "testbed",
                "stop",
                "kube-apiserver",
                "--cluster",
                "west",
                "--dir",
            ])
            .arg(&env.dir),
    );
    assert!(
        stop.status.success(),
        "stopping west's apiserver: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let m = wait_condition(
        &east,
        n,
        link,
        "RemoteReachable",
        "False",
        "Unreachable",
        SETTLE,
    )
    .await;
    assert!(m.contains("cluster west"), "{m}");
    wait_condition(
        &east,
        n,
        link,
        "Ready",
        "False",
        "RemoteUnreachable",
        SETTLE,
    )
    .await;

    // For a while: the mirror and its ready endpoints stay.
    let services: Api<Service> = Api::namespaced(east.clone(), n);
    for _ in 0..10 {
        assert!(
            services.get_opt("emoji-west").await.unwrap().is_some(),
            "the mirror stays during the outage"
        );
        let (addrs, ready, _) = mirror_endpoints(&east, n, "emoji-west").await.unwrap();
        assert_eq!(
            (addrs, ready),
            (vec!["127.20.19.4".to_string()], vec![true]),
            "the endpoints stay as they were"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let start = tandem_harness::run(
        env.tandem()
            .args([
                "testbed",
                "start",
                "kube-apiserver",
                "--cluster",
                "west",
                "--dir",
            ])
            .arg(&env.dir),
    );
    assert!(
        start.status.success(),
        "starting west's apiserver: {}",
        String::from_utf8_lossy(&start.stderr)
    );
    wait_condition(
        &east,
        n,
        link,
        "RemoteReachable",
        "True",
        "Reachable",
        Duration::from_secs(90),
    )
    .await;
    wait_condition(
        &east,
        n,
        link,
        "Ready",
        "True",
        "Mirroring",
        Duration::from_secs(90),
    )
    .await;
    assert!(
        services.get_opt("emoji-west").await.unwrap().is_some(),
        "the mirror is still there"
    );

    // And the mirror works again: west's readiness goes through.
    scale(&west, n, "emoji", 0).await;
    wait_ready(
        &east,
        n,
        "emoji-west",
        false,
        SETTLE,
        "readiness flows again after the outage",
    )
    .await;

    let links: Api<Link> = Api::namespaced(east.clone(), n);
    links.delete(link, &DeleteParams::default()).await.unwrap();
    wait_gone(&links, link, "the Link is deleted").await;
    mirror.shutdown().await;
}

// === safety: tests on private testbeds (ports 12540-12749) ===

/// The mirror slice's ready flags every `every`, for `how_long`: every
/// distinct value seen (an absent slice is `None`).
async fn sample_ready(
    east: &Client,
    ns: &str,
    mirror: &str,
    how_long: Duration,
) -> Vec<Option<Vec<bool>>> {
    let start = std::time::Instant::now();
    let mut seen: Vec<Option<Vec<bool>>> = vec![];
    while start.elapsed() < how_long {
        let now = match mirror_endpoints(east, ns, mirror).await {
            Ok((_, ready, _)) => Some(ready),
            Err(_) => None,
        };
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    seen
}

/// Waits until west's Service has a ready endpoint.
async fn wait_remote_ready(west: &Client, ns: &str, svc: &str) {
    let slices: Api<EndpointSlice> = Api::namespaced(west.clone(), ns);
    eventually(
        &format!("west's {svc} has a ready endpoint"),
        SETTLE,
        || async {
            let list = slices
                .list(
                    &kube::api::ListParams::default()
                        .labels(&format!("kubernetes.io/service-name={svc}")),
                )
                .await
                .map_err(|e| e.to_string())?;
            let ready = list
                .items
                .iter()
                .flat_map(|s| &s.endpoints)
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .count();
            (ready > 0).then_some(()).ok_or("none ready".to_string())
        },
    )
    .await;
}

/// A mirror that starts (or restarts) while the gateway fails its probe
/// never writes ready endpoints, though the remote Service is ready: the
/// gateway is unknown until its probes tell, and nothing is written while
/// it is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_starting_with_a_dead_gateway_never_turns_ready() {
    init_logs();
    let tb = PrivateTestbed::start(tandem_bin(), &["east", "west"], 12540);
    let env = &tb.env;
    let ns = env.namespace("mirror-dead-gw", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    install_crd(&east).await;
    let (kubeconfig, _binding) = remote_kubeconfig(env, &west, n).await;
    let probe = ProbeServer::start("127.20.19.5").await;
    probe.answer(500);
    let link = "dead-west";
    create_link(
        &east,
        n,
        link,
        &kubeconfig,
        "127.20.19.5",
        probe.addr.port(),
        n,
        json!({}),
    )
    .await;
    let _release = release_link(env, n, link);
    export(&west, n, "emoji", n, 1).await;
    wait_remote_ready(&west, n, "emoji").await;

    // The first start: the slice appears not-ready once the gateway is
    // known dead (2 failures of 500ms probes), and never ready before.
    let mirror = Mirror::start(env, n, link).await;
    let services: Api<Service> = Api::namespaced(east.clone(), n);
    eventually("emoji-west appears in east", SETTLE, || async {
        services
            .get_opt("emoji-west")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not yet".to_string())
    })
    .await;
    let seen = sample_ready(&east, n, "emoji-west", Duration::from_secs(5)).await;
    assert!(
        !seen.iter().flatten().flatten().any(|r| *r),
        "the mirror's endpoints were ready with a dead gateway: {seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&Some(vec![false])),
        "written not-ready once the gateway is known dead: {seen:?}"
    );

    // A restart with the gateway still dead: still never ready.
    mirror.shutdown().await;
    let mirror = Mirror::start(env, n, link).await;
    let seen = sample_ready(&east, n, "emoji-west", Duration::from_secs(5)).await;
    assert_eq!(
        seen,
        [Some(vec![false])],
        "a restarted mirror turned its endpoints ready with a dead gateway"
    );
    wait_condition(&east, n, link, "Ready", "True", "Mirroring", SETTLE).await;
    let links: Api<Link> = Api::namespaced(east.clone(), n);
    let gateway = links
        .get(link)
        .await
        .unwrap()
        .status
        .unwrap()
        .gateway
        .unwrap();
    assert_eq!(gateway.alive, Some(false), "{gateway:?}");
    assert!(
        gateway.probes[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("500")),
        "each address's probe result is in the status: {gateway:?}"
    );

    // The gateway comes back: ready at once.
    probe.answer(200);
    wait_ready(&east, n, "emoji-west", true, SETTLE, "a live gateway again").await;
    links.delete(link, &DeleteParams::default()).await.unwrap();
    wait_gone(&links, link, "the Link is deleted").await;
    mirror.shutdown().await;
}

/// A user's own Service that happens to be named like a mirror
/// (`foo-west`), made before `foo` is exported from west, is left exactly as
/// it is, also by the Link's finalizer; the Link's status and an Event say
/// why. The other mirrors go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_service_named_like_a_mirror_is_left_alone() {
    init_logs();
    let tb = PrivateTestbed::start(tandem_bin(), &["east", "west"], 12640);
    let env = &tb.env;
    let ns = env.namespace("mirror-collision", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    install_crd(&east).await;
    let (kubeconfig, _binding) = remote_kubeconfig(env, &west, n).await;
    let probe = ProbeServer::start("127.20.19.6").await;

    // The user's Service, first.
    let services: Api<Service> = Api::namespaced(east.clone(), n);
    let mine: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "foo-west", "namespace": n, "labels": {"app": "mine"}, "annotations": {"owner": "me"}},
        "spec": {"selector": {"app": "mine"}, "ports": [{"name": "mine", "port": 9999}]},
    }))
    .unwrap();
    let mine = services
        .create(&PostParams::default(), &mine)
        .await
        .expect("the user's Service");

    let link = "collide-west";
    create_link(
        &east,
        n,
        link,
        &kubeconfig,
        "127.20.19.6",
        probe.addr.port(),
        n,
        json!({}),
    )
    .await;
    let _release = release_link(env, n, link);
    let mirror = Mirror::start(env, n, link).await;
    export(&west, n, "foo", n, 1).await;
    export(&west, n, "bar", n, 1).await;

    // The other mirror works; foo's is refused, and the status says why.
    wait_ready(&east, n, "bar-west", true, SETTLE, "bar is mirrored").await;
    let links: Api<Link> = Api::namespaced(east.clone(), n);
    let message = eventually("the Link's status names the taken name", SETTLE, || async {
        let l = links.get(link).await.map_err(|e| e.to_string())?;
        let foo = l
            .status
            .as_ref()
            .and_then(|s| s.failures.iter().find(|f| f.remote_ref.name == "foo"))
            .ok_or("no failure for foo yet")?;
        if foo.reason == "NameTaken" {
            Ok(foo.message.clone())
        } else {
            Err(format!("{}: {}", foo.reason, foo.message))
        }
    })
    .await;
    assert!(
        message.contains(&format!(
            "a Service {n}/foo-west exists and is not a mirror of this Link"
        )),
        "{message}"
    );
    // And an Event on the Link.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(east.clone(), n);
    let note = eventually("an Event on the Link says why", SETTLE, || async {
        let list = events
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("MirrorNameTaken")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(link)
            })
            .and_then(|e| e.note)
            .ok_or("no MirrorNameTaken Event".to_string())
    })
    .await;
    assert!(note.contains("foo-west"), "{note}");

    // Untouched: same object, same version, no mirror label, no slice.
    let check_untouched = |what: &'static str| {
        let services = services.clone();
        let mine = mine.clone();
        async move {
            let now = services
                .get("foo-west")
                .await
                .expect("the user's Service is there");
            assert_eq!(now.metadata.uid, mine.metadata.uid, "{what}: replaced");
            assert_eq!(
                now.metadata.resource_version, mine.metadata.resource_version,
                "{what}: the user's Service was written: {:?}",
                now.metadata
            );
        }
    };
    check_untouched("while mirroring").await;
    let slices: Api<EndpointSlice> = Api::namespaced(east.clone(), n);
    assert!(slices.get_opt("foo-west-gateway").await.unwrap().is_none());

    // The Link goes: its mirrors with it, the user's Service stays.
    links.delete(link, &DeleteParams::default()).await.unwrap();
    wait_gone(&links, link, "the Link is deleted").await;
    assert!(services.get_opt("bar-west").await.unwrap().is_none());
    check_untouched("after the Link's finalizer").await;
    mirror.shutdown().await;
}

/// A request to etcd's JSON gateway: `POST /v3/<path>` with `body`.
async fn etcd(port: u16, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connecting to etcd on {port}: {e}"));
    conn.write_all(
        format!(
            "POST /v3/{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    let (head, rest) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "etcd {path}: {out}");
    // The gateway may answer chunked: take the JSON object.
    let start = rest.find('{').expect("a JSON body");
    let end = rest.rfind('}').expect("a JSON body");
    serde_json::from_str(&rest[start..=end]).unwrap_or_else(|e| panic!("etcd {path}: {e}: {rest}"))
}

/// A mirror slice deleted while the mirror's local watches were down comes
/// back: the re-list shows it gone (there is no Delete event for it), and
/// the mirror writes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_slice_deleted_while_the_local_watch_was_down_comes_back() {
    use base64::Engine;
    init_logs();
    const BASE: u16 = 12740;
    let tb = PrivateTestbed::start(tandem_bin(), &["east", "west"], BASE);
    let env = &tb.env;
    let ns = env.namespace("mirror-repair", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    install_crd(&east).await;
    let (kubeconfig, _binding) = remote_kubeconfig(env, &west, n).await;
    let probe = ProbeServer::start("127.20.19.7").await;
    let link = "repair-west";
    create_link(
        &east,
        n,
        link,
        &kubeconfig,
        "127.20.19.7",
        probe.addr.port(),
        n,
        json!({}),
    )
    .await;
    let _release = release_link(env, n, link);
    // No periodic resync during the test: only the re-list may repair.
    let east_client = mirror_client(env, "east").await;
    let (stop, stopped) = watch::channel(false);
    let settings = MirrorSettings {
        link_namespace: n.to_string(),
        link_name: link.to_string(),
        status_interval: Duration::from_millis(500),
        resync_period: Duration::from_secs(3600),
        ..MirrorSettings::default()
    };
    let mirror = Mirror {
        stop,
        task: Some(tokio::spawn(run_mirror(east_client, settings, stopped))),
    };
    export(&west, n, "emoji", n, 1).await;
    wait_ready(&east, n, "emoji-west", true, SETTLE, "the mirror is ready").await;

    // East's API server stops; the slice is deleted behind its back (in
    // etcd), then it starts again, with the mirror's watches far behind.
    let testbed = |verb: &str| {
        let out = tandem_harness::run(
            env.tandem()
                .args([
                    "testbed",
                    verb,
                    "kube-apiserver",
                    "--cluster",
                    "east",
                    "--dir",
                ])
                .arg(&env.dir),
        );
        assert!(
            out.status.success(),
            "{verb} east's apiserver: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    testbed("stop");
    let b64 = base64::engine::general_purpose::STANDARD;
    let etcd_port = BASE + 1;
    let keys = etcd(
        etcd_port,
        "kv/range",
        &json!({"key": b64.encode("/registry/"), "range_end": b64.encode("/registry0"), "keys_only": true}),
    )
    .await;
    let suffix = format!("/{n}/emoji-west-gateway");
    let key = keys["kvs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| kv["key"].as_str())
        .filter_map(|k| String::from_utf8(b64.decode(k).ok()?).ok())
        .find(|k| k.contains("endpointslices") && k.ends_with(&suffix))
        .unwrap_or_else(|| panic!("the mirror slice in etcd: {keys}"));
    let deleted = etcd(
        etcd_port,
        "kv/deleterange",
        &json!({"key": b64.encode(&key)}),
    )
    .await;
    assert_eq!(deleted["deleted"], "1", "{deleted}");
    testbed("start");

    let slices: Api<EndpointSlice> = Api::namespaced(east.clone(), n);
    eventually("east's API server answers", SETTLE, || async {
        slices
            .list(&Default::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    wait_ready(
        &east,
        n,
        "emoji-west",
        true,
        Duration::from_secs(90),
        "the deleted mirror slice comes back after the re-list",
    )
    .await;

    let links: Api<Link> = Api::namespaced(east.clone(), n);
    links.delete(link, &DeleteParams::default()).await.unwrap();
    wait_gone(&links, link, "the Link is deleted").await;
    mirror.shutdown().await;
}

//! Fixtures of the data plane's acceptance tests on real nodes.
//!
//! - [`control_plane`] installs tandem's control plane (identity and
//!   destination) once per real cluster, with certificates made as the
//!   workshop makes them; later test files reuse it.
//! - [`backend`], [`apex`], [`client_pod`] and [`traffic_split`] are the
//!   workloads; [`inject`] meshes them with the real `tandem inject`.
//! - [`PodNetns`] enters a pod's network namespace from the test process,
//!   and [`Load`] sends requests from there at a fixed rate: the pod's own
//!   proxy-init rules send them through the pod's proxy.

mod load;
mod multicluster;
mod split;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Mutex, OnceLock},
};

pub use self::{
    load::{Load, LoadSpec, Outcome, PodNetns, Sample, container_pids, count_by},
    multicluster::{Multicluster, gateway_identity},
    split::{RoutedSplit, routed_split},
};
use crate::{Env, TestNamespace, run, run_ok, workshop_certificates};

/// The toolbox image: busybox, with `httpd`.
pub const TOOLBOX: &str = "ghcr.io/tandem-io/toolbox:latest";

/// The control plane's namespace, as `tandem install` defaults it.
pub const CONTROL_PLANE_NS: &str = "tandem";

/// The port backends listen on, and the port of their Services.
pub const BACKEND_PORT: u16 = 8080;
pub const SERVICE_PORT: u16 = 80;

// === control plane ===

/// Clusters whose control plane this test process has seen ready.
static INSTALLED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

/// Makes sure tandem's control plane runs in `cluster` with identity and
/// destination Ready. Idempotent: a control plane already installed and
/// ready (by an earlier test file of this run), whose pods started after
/// the `tandem` binary (the image's content) was built, is reused as it is;
/// otherwise the workshop's certificates are made with `tandem certificate
/// create` and `tandem install` is applied. On failure, the control
/// plane's pods and logs are printed.
pub fn control_plane(env: &Env, cluster: &str) {
    let done = INSTALLED.get_or_init(Default::default);
    // Held across the install: the tests of one file share one install.
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    if done.iter().any(|c| c == cluster) {
        return;
    }
    if !(control_plane_ready(env, cluster) && control_plane_current(env, cluster)) {
        install(env, cluster);
    }
    for deploy in [IDENTITY, DESTINATION] {
        if let Err(e) = rollout(env, cluster, CONTROL_PLANE_NS, deploy) {
            dump_control_plane(env, cluster);
            panic!("{deploy} in {cluster} is not ready: {e}");
        }
    }
    done.push(cluster.to_string());
}

const IDENTITY: &str = "tandem-identity";
const DESTINATION: &str = "tandem-destination";

/// Identity and destination both have an available replica, and the
/// TrafficSplit CRD is there.
fn control_plane_ready(env: &Env, cluster: &str) -> bool {
    let available = |deploy: &str| {
        let out = run(env.kubectl(cluster).args([
            "-n",
            CONTROL_PLANE_NS,
            "get",
            "deploy",
            deploy,
            "-o",
            "jsonpath={.status.availableReplicas}",
        ]));
        out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .is_ok_and(|n| n >= 1)
    };
    let crd = run(env
        .kubectl(cluster)
        .args(["get", "crd", "trafficsplits.split.smi-spec.io"]))
    .status
    .success();
    crd && available(IDENTITY) && available(DESTINATION)
}

/// The control plane's pods all started after the `tandem` binary was
/// built: they run the image `tandem testbed up` loaded from it, and the
/// manifests this `tandem install` prints.
fn control_plane_current(env: &Env, cluster: &str) -> bool {
    let Ok(built) = std::fs::metadata(&env.tandem).and_then(|m| m.modified()) else {
        return false;
    };
    let built = built
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // RFC 3339 in UTC compares as text.
    let built = run_ok(
        std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ", "-d"])
            .arg(format!("@{built}")),
    );
    let pods = run_ok(env.kubectl(cluster).args([
        "-n",
        CONTROL_PLANE_NS,
        "get",
        "pods",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.startTime} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]));
    // Pods on their way out (after a restart) do not count.
    let started: Vec<&str> = pods
        .lines()
        .filter(|l| l.starts_with(IDENTITY) || l.starts_with(DESTINATION))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 2)
        .map(|f| f[1])
        .collect();
    !started.is_empty() && started.iter().all(|t| *t >= built.trim())
}

fn install(env: &Env, cluster: &str) {
    let certs = tempfile::tempdir().expect("a temporary directory");
    workshop_certificates(&env.tandem, certs.path(), &[cluster]);
    install_with(env, cluster, certs.path());
}

/// Applies tandem's CRDs, SMI and control plane to `cluster` with the
/// workshop's certificates in `certs` (`root.crt`, `<cluster>-issuer.*`),
/// then restarts identity and destination: a control plane left from an
/// earlier install reads its new issuer and anchors only when it starts
/// again. It does not wait for them.
pub(crate) fn install_with(env: &Env, cluster: &str, certs: &std::path::Path) {
    let file = |name: &str| certs.join(name).display().to_string();
    env.apply_tandem(cluster, &["install", "--crds", "--context", cluster]);
    env.apply_tandem(cluster, &["smi", "install", "--context", cluster]);
    env.apply_tandem(
        cluster,
        &[
            "install",
            "--context",
            cluster,
            "--identity-trust-anchors-file",
            &file("root.crt"),
            "--identity-issuer-certificate-file",
            &file(&format!("{cluster}-issuer.crt")),
            "--identity-issuer-key-file",
            &file(&format!("{cluster}-issuer.key")),
        ],
    );
    for deploy in [IDENTITY, DESTINATION] {
        restart(env, cluster, CONTROL_PLANE_NS, deploy);
    }
}

/// `kubectl rollout restart deploy/DEPLOY` in namespace `ns`.
pub(crate) fn restart(env: &Env, cluster: &str, ns: &str, deploy: &str) {
    run_ok(env.kubectl(cluster).args([
        "-n",
        ns,
        "rollout",
        "restart",
        &format!("deploy/{deploy}"),
    ]));
}

/// Waits up to 2 minutes for `deploy/DEPLOY`'s rollout in namespace `ns`;
/// `Err` with kubectl's message if it does not finish.
pub(crate) fn rollout(env: &Env, cluster: &str, ns: &str, deploy: &str) -> Result<(), String> {
    let out = run(env.kubectl(cluster).args([
        "-n",
        ns,
        "rollout",
        "status",
        &format!("deploy/{deploy}"),
        "--timeout=120s",
    ]));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Prints the control plane's pods, their events and their logs.
pub fn dump_control_plane(env: &Env, cluster: &str) {
    let show = |args: &[&str]| {
        let out = run(env
            .kubectl(cluster)
            .args(["-n", CONTROL_PLANE_NS])
            .args(args));
        eprintln!(
            "===== {cluster}: kubectl -n {CONTROL_PLANE_NS} {} =====\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    env.dump_nodes(cluster);
    show(&["get", "pods", "-o", "wide"]);
    show(&["describe", "pods"]);
    for deploy in [IDENTITY, DESTINATION] {
        show(&[
            "logs",
            &format!("deploy/{deploy}"),
            "--all-containers",
            "--tail=100",
        ]);
    }
}

// === injection ===

/// How injected proxies get their identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyIdentity {
    /// As `tandem inject` renders it: a certificate from `tandem identity`
    /// in the cluster before `/ready` turns 200.
    FromCluster,
    /// `LINKERD2_PROXY_IDENTITY_DISABLED` added: ready at once, plaintext.
    Disabled,
}

/// The identity of the routing tests' proxies: certified by the cluster's
/// `tandem identity`, so the split and failover run over mTLS as users run
/// them.
pub const ROUTING_IDENTITY: ProxyIdentity = ProxyIdentity::FromCluster;

/// `tandem inject` of `manifest` (trust anchors read from the cluster, as a
/// user runs it); with [`ProxyIdentity::Disabled`], the proxy's environment
/// gets `LINKERD2_PROXY_IDENTITY_DISABLED=true`.
pub fn inject(env: &Env, cluster: &str, manifest: &str, identity: ProxyIdentity) -> String {
    inject_with(env, cluster, manifest, identity, &[])
}

/// [`inject`] in CNI mode (`--linkerd-cni-enabled`): no init container.
pub fn inject_cni(env: &Env, cluster: &str, manifest: &str, identity: ProxyIdentity) -> String {
    inject_with(env, cluster, manifest, identity, &["--linkerd-cni-enabled"])
}

/// [`inject`] with `--native-sidecar`: the proxy is an init container that
/// keeps running.
pub fn inject_native(env: &Env, cluster: &str, manifest: &str, identity: ProxyIdentity) -> String {
    inject_with(env, cluster, manifest, identity, &["--native-sidecar"])
}

fn inject_with(
    env: &Env,
    cluster: &str,
    manifest: &str,
    identity: ProxyIdentity,
    flags: &[&str],
) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("workload.yaml");
    std::fs::write(&file, manifest).expect("the manifest is written");
    let injected = run_ok(
        env.tandem()
            .args(["inject", "--context", cluster])
            .args(flags)
            .arg(&file),
    );
    match identity {
        ProxyIdentity::FromCluster => injected,
        ProxyIdentity::Disabled => disable_identity(&injected),
    }
}

/// `LINKERD2_PROXY_IDENTITY_DISABLED=true` in every proxy of an injected
/// manifest.
fn disable_identity(injected: &str) -> String {
    with_proxy_env(injected, "LINKERD2_PROXY_IDENTITY_DISABLED", "true")
}

/// Adds `name=value` to the environment of every proxy container of an
/// injected manifest (beside `LINKERD2_PROXY_LOG`).
pub fn with_proxy_env(injected: &str, name: &str, value: &str) -> String {
    let mut out = String::with_capacity(injected.len() + 200);
    let mut found = false;
    for line in injected.lines() {
        if line.trim() == "- name: LINKERD2_PROXY_LOG" {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!(
                "{indent}- name: {name}\n{indent}  value: \"{value}\"\n"
            ));
            found = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        found,
        "no proxy environment in the injected manifest:\n{injected}"
    );
    out
}

/// [`inject`] for a [`backend`]: its proxy waits up to 3 s (not 1 s) to
/// connect to busybox `httpd`. httpd listens with a backlog of 9; when the
/// shared machine stalls the node for a moment at 100 requests/s, its accept
/// queue overflows and the kernel drops SYNs (`ListenOverflows` counts
/// them), resending them after its initial 1 s timeout, which a 1 s connect
/// timeout turns into a 502 of the backend's own proxy. The routing under
/// test is the client's proxy's, which keeps its defaults.
pub fn inject_backend(env: &Env, cluster: &str, manifest: &str, identity: ProxyIdentity) -> String {
    with_proxy_env(
        &inject(env, cluster, manifest, identity),
        "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT",
        "3s",
    )
}

// === workloads ===

/// A meshed [`backend`] `name` of one replica that runs as ServiceAccount
/// `name`, so its mesh identity is `name.<ns>.serviceaccount.identity...`:
/// the account, then the injected Deployment and its Service.
pub fn apply_meshed_backend(env: &Env, ns: &TestNamespace, cluster: &str, name: &str) {
    ns.apply(cluster, &service_account(name));
    ns.apply(
        cluster,
        &inject_backend(
            env,
            cluster,
            &with_service_account(&backend(name, 1, true), name),
            ProxyIdentity::FromCluster,
        ),
    );
}

/// A Deployment `name` of busybox `httpd` on [`BACKEND_PORT`] answering
/// `GET /` with its pod name, labelled `role: backend`, and its Service on
/// [`SERVICE_PORT`]. With `declare_port` false the container lists no port:
/// the proxy must still carry its traffic.
pub fn backend(name: &str, replicas: u32, declare_port: bool) -> String {
    let ports = if declare_port {
        format!("\n        ports: [{{containerPort: {BACKEND_PORT}}}]")
    } else {
        String::new()
    };
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}, role: backend}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {TOOLBOX}
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p {BACKEND_PORT} -h /tmp/www"]{ports}
        readinessProbe:
          httpGet: {{path: /, port: {BACKEND_PORT}}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: {SERVICE_PORT}, targetPort: {BACKEND_PORT}}}
"#
    )
}

/// The apex Service `name`: it selects every backend, so that traffic not
/// split by the TrafficSplit would reach all of them.
pub fn apex(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{role: backend}}
  ports:
  - {{name: http, port: {SERVICE_PORT}, targetPort: {BACKEND_PORT}}}
"#
    )
}

/// A TrafficSplit (`split.smi-spec.io/v1alpha2`) of `apex` over weighted
/// backends.
pub fn traffic_split(apex: &str, backends: &[(&str, u32)]) -> String {
    let backends: String = backends
        .iter()
        .map(|(svc, w)| format!("\n  - {{service: {svc}, weight: {w}}}"))
        .collect();
    format!(
        r#"
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: {apex}
spec:
  service: {apex}
  backends:{backends}
"#
    )
}

/// A pod of the toolbox that sleeps: the meshed client, whose network
/// namespace the load generator enters.
pub fn client_pod(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {TOOLBOX}
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
    )
}

/// `manifest` (of [`backend`] or [`client_pod`]) with its pods running as
/// ServiceAccount `account`, so that they get that mesh identity.
pub fn with_service_account(manifest: &str, account: &str) -> String {
    let mut out = String::with_capacity(manifest.len() + 40);
    for line in manifest.lines() {
        if line
            .trim_start()
            .starts_with("terminationGracePeriodSeconds:")
        {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!("{indent}serviceAccountName: {account}\n"));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A ServiceAccount.
pub fn service_account(name: &str) -> String {
    format!("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n")
}

// === waiting ===

/// Waits for `kubectl wait --for=condition=Ready pod/NAME`.
pub fn wait_pod_ready(ns: &TestNamespace, cluster: &str, pod: &str) {
    ns.kubectl(
        cluster,
        &[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=120s",
        ],
    );
}

/// Waits for a Deployment's rollout.
pub fn wait_rollout(ns: &TestNamespace, cluster: &str, deploy: &str) {
    ns.kubectl(
        cluster,
        &[
            "rollout",
            "status",
            &format!("deploy/{deploy}"),
            "--timeout=120s",
        ],
    );
}

/// A Service's ClusterIP and port, the target of a load (the host has no
/// cluster DNS).
pub fn service_addr(ns: &TestNamespace, cluster: &str, svc: &str) -> SocketAddr {
    let ip = ns.kubectl(
        cluster,
        &["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"],
    );
    let ip: IpAddr = ip
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("ClusterIP of {svc}: {ip:?}: {e}"));
    (ip, SERVICE_PORT).into()
}

/// GETs `/` of `svc` from inside `client`'s pod until a backend answers 200
/// with its pod name, which starts with `backend` (busybox [`backend`]s
/// answer so); within 60 s. Returns that pod's name.
pub async fn answer_through_mesh(client: &PodNetns, svc: SocketAddr, backend: &str) -> String {
    let prefix = format!("{backend}-");
    let body = crate::eventually(
        &format!("{backend} answering through the mesh"),
        std::time::Duration::from_secs(60),
        || {
            let got = client.get(svc, "/");
            let prefix = prefix.clone();
            async move {
                match got {
                    Ok(r) if r.status == 200 && r.body.starts_with(&prefix) => Ok(r.body),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    body.trim().to_string()
}

/// The metrics text of the proxy in `pod`'s network namespace (its admin
/// port, 4191), or a panic naming `whose` proxy it was.
#[track_caller]
pub fn proxy_metrics(pod: &PodNetns, whose: &str) -> String {
    let admin = SocketAddr::from(([127, 0, 0, 1], 4191));
    pod.get(admin, "/metrics")
        .unwrap_or_else(|e| panic!("the metrics of {whose}'s proxy: {e}"))
        .body
}

/// Asserts that `client`'s proxy counted an outbound 200 from Service
/// `service`'s pod `pod`: the request went through the client's proxy.
#[track_caller]
pub fn assert_outbound_counted(client: &PodNetns, service: &str, pod: &str) {
    let metrics = proxy_metrics(client, "the client");
    let outbound = metric_sum(
        &metrics,
        "response_total",
        &[
            ("direction", "outbound"),
            ("dst_service", service),
            ("dst_pod", pod),
            ("status_code", "200"),
        ],
    );
    assert!(
        outbound >= 1.0,
        "the client's proxy counted no outbound 200 from {service} ({pod}):\n{metrics}"
    );
}

/// The 200s that `server`'s proxy answered inbound over mTLS to the mesh
/// identity `client_id`, with the metrics text they were read from.
pub fn mtls_inbound_from(server: &PodNetns, client_id: &str) -> (f64, String) {
    let metrics = proxy_metrics(server, "the server");
    let count = metric_sum(
        &metrics,
        "response_total",
        &[
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", client_id),
            ("status_code", "200"),
        ],
    );
    (count, metrics)
}

/// The CNI directories of `cluster`'s node (its /etc/cni/net.d and
/// /opt/cni/bin), for `tandem install-cni`.
pub struct CniDirs {
    pub net_dir: std::path::PathBuf,
    pub bin_dir: std::path::PathBuf,
}

pub fn cni_dirs(env: &Env, cluster: &str) -> CniDirs {
    let tb = tandem_testbed::Testbed::open(&env.dir).expect("the real testbed is recorded");
    let layout = tb
        .config
        .layout(cluster)
        .unwrap_or_else(|e| panic!("cluster {cluster} of the testbed: {e}"));
    let files = tandem_testbed::node::files::NodeFiles::new(&layout);
    CniDirs {
        net_dir: files.cni_conf_dir(),
        bin_dir: files.cni_bin_dir(),
    }
}

/// The network namespace of pod `pod`, entered from the host.
pub fn pod_netns(env: &Env, ns: &TestNamespace, cluster: &str, pod: &str) -> PodNetns {
    let uid = ns.kubectl(
        cluster,
        &["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"],
    );
    let tb = tandem_testbed::Testbed::open(&env.dir).expect("the real testbed is recorded");
    let layout = tb
        .config
        .layout(cluster)
        .unwrap_or_else(|e| panic!("cluster {cluster} of the testbed: {e}"));
    PodNetns::of_pod(&layout.cgroup_root(), uid.trim())
        .unwrap_or_else(|e| panic!("the network namespace of pod {pod}: {e}"))
}

/// The sum of a metric's samples in a Prometheus text exposition, over the
/// series that carry every one of `labels` (`("tls", "true")`).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (series, value) = rest.rsplit_once(' ')?;
            if !(series.is_empty() || series.starts_with('{')) {
                return None; // another metric whose name starts the same
            }
            let has = |(k, v): &(&str, &str)| series.contains(&format!("{k}=\"{v}\""));
            labels.iter().all(has).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_cover_the_matching_series_only() {
        let text = "# TYPE response_total counter\n\
response_total{direction=\"inbound\",target_port=\"8080\",status_code=\"200\"} 3\n\
response_total{direction=\"inbound\",target_port=\"8080\",status_code=\"502\"} 1\n\
response_total{direction=\"outbound\",target_port=\"80\",status_code=\"200\"} 5\n\
response_total_other{direction=\"inbound\"} 7\n";
        let sum = |labels: &[(&str, &str)]| metric_sum(text, "response_total", labels);
        assert_eq!(sum(&[("direction", "inbound")]), 4.0);
        assert_eq!(
            sum(&[("direction", "inbound"), ("status_code", "200")]),
            3.0
        );
        assert_eq!(sum(&[]), 9.0);
        assert_eq!(sum(&[("tls", "true")]), 0.0);
        assert_eq!(metric_sum(text, "request_total", &[]), 0.0);
    }

    #[test]
    fn identity_is_disabled_in_the_proxy_env_only() {
        let injected = "spec:\n  containers:\n  - env:\n    - name: LINKERD2_PROXY_LOG\n      value: warn\n    - name: LINKERD2_PROXY_LOG_FORMAT\n";
        let out = disable_identity(injected);
        assert_eq!(
            out,
            "spec:\n  containers:\n  - env:\n    - name: LINKERD2_PROXY_IDENTITY_DISABLED\n      value: \"true\"\n    - name: LINKERD2_PROXY_LOG\n      value: warn\n    - name: LINKERD2_PROXY_LOG_FORMAT\n"
        );
    }

    #[test]
    #[should_panic(expected = "no proxy environment")]
    fn a_manifest_without_a_proxy_is_refused() {
        disable_identity("kind: Service\n");
    }

    #[test]
    fn pods_get_the_service_account() {
        let b = with_service_account(&backend("b1", 1, true), "server");
        assert!(b.contains("    spec:\n      serviceAccountName: server\n      terminationGracePeriodSeconds: 1\n"), "{b}");
        let c = with_service_account(&client_pod("c"), "client");
        assert!(
            c.contains("spec:\n  serviceAccountName: client\n  terminationGracePeriodSeconds: 1\n"),
            "{c}"
        );
    }

    #[test]
    fn a_split_lists_its_weights() {
        let s = traffic_split("apex", &[("b1", 3), ("b2", 1)]);
        assert!(s.contains("service: apex"), "{s}");
        assert!(
            s.contains("- {service: b1, weight: 3}\n  - {service: b2, weight: 1}"),
            "{s}"
        );
    }
}

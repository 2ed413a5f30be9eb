//! Real nodes: pods that run on a kubelet in each cluster's network
//! namespace, with containerd, kube-proxy, CoreDNS and the testbed's
//! LoadBalancer addresses. These tests need root and the node prerequisites;
//! without them they fail and say what is missing.

use std::{path::Path, time::Duration};

use tandem_harness::{Env, TestNamespace, dataplane::container_pids, eventually, run, run_ok};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

fn env() -> Env {
    Env::real(tandem_bin())
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn tandem_image() -> String {
    format!("ghcr.io/tandem-io/tandem:{VERSION}")
}

/// A Deployment of the tandem image running `tandem gateway`, whose `/ready`
/// on 4191 the kubelet probes, and its Service.
fn gateway_app(name: &str, replicas: u32) -> String {
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
      labels: {{app: {name}}}
    spec:
      containers:
      - name: gateway
        image: {image}
        imagePullPolicy: Never
        args: ["gateway", "--probe-only", "--admin-addr", "0.0.0.0:4191"]
        ports:
        - {{name: admin, containerPort: 4191}}
        readinessProbe:
          httpGet: {{path: /ready, port: 4191}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: admin, port: 4191, targetPort: 4191}}
"#,
        image = tandem_image()
    )
}

/// A toolbox pod that sleeps, for running commands inside the cluster.
fn toolbox(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: toolbox
    image: ghcr.io/tandem-io/toolbox:latest
    imagePullPolicy: Never
    command: ["sh", "-c", "echo toolbox is up; exec sleep 3600"]
"#
    )
}

fn wait_ready(ns: &TestNamespace, cluster: &str, what: &str) {
    ns.kubectl(
        cluster,
        &["wait", "--for=condition=Ready", what, "--timeout=90s"],
    );
}

fn wait_rollout(ns: &TestNamespace, cluster: &str, deploy: &str) {
    ns.kubectl(
        cluster,
        &[
            "rollout",
            "status",
            &format!("deploy/{deploy}"),
            "--timeout=90s",
        ],
    );
}

/// `kubectl exec POD -- sh -c SCRIPT` in the toolbox; returns its output
/// and whether it succeeded.
fn sh(env: &Env, ns: &TestNamespace, cluster: &str, pod: &str, script: &str) -> (bool, String) {
    let out = run(env
        .kubectl(cluster)
        .args(["exec", "-n", &ns.name, pod, "--", "sh", "-c", script]));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_tandem_image_runs_behind_a_readiness_probe_and_answers_by_service_and_dns() {
    let env = env();
    let ns = env.namespace("nodes-app", &["east"]);
    ns.apply("east", &gateway_app("gw", 2));
    ns.apply("east", &toolbox("tb"));
    wait_rollout(&ns, "east", "gw");
    wait_ready(&ns, "east", "pod/tb");

    // Both replicas are ready endpoints, on the cluster's pod range.
    let addrs = eventually("2 ready endpoints", Duration::from_secs(30), || async {
        let a = ns.ready_addresses("east", "gw");
        if a.len() == 2 {
            Ok(a)
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await;
    for a in &addrs {
        assert!(a.starts_with("198.19."), "{a} is a pod address of east");
    }

    // logs and exec reach the kubelet through the apiserver.
    let pod = ns.kubectl(
        "east",
        &[
            "get",
            "pods",
            "-l",
            "app=gw",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let logs = ns.kubectl("east", &["logs", "tb"]);
    assert_eq!(logs.trim(), "toolbox is up");
    let version = ns.kubectl("east", &["exec", &pod, "--", "/tandem", "--version"]);
    assert!(version.contains(VERSION), "{version}");

    // By ClusterIP, by short DNS name and by full name.
    let cluster_ip = ns.kubectl(
        "east",
        &["get", "svc", "gw", "-o", "jsonpath={.spec.clusterIP}"],
    );
    for host in [
        cluster_ip.clone(),
        format!("gw.{}", ns.name),
        format!("gw.{}.svc.cluster.local", ns.name),
    ] {
        let (ok, out) = sh(
            &env,
            &ns,
            "east",
            "tb",
            &format!("timeout 5 wget -q -O - http://{host}:4191/ready"),
        );
        assert!(ok, "GET http://{host}:4191/ready from a pod: {out}");
    }
    // Names outside the cluster fail at once, inside the cluster: CoreDNS
    // never forwards to the host's resolver.
    let (ok, out) = sh(&env, &ns, "east", "tb", "nslookup example.com");
    assert!(!ok || out.contains("NXDOMAIN"), "{out}");
}

#[tokio::test]
async fn a_pods_projected_token_is_its_account_and_rbac_holds() {
    let env = env();
    let ns = env.namespace("nodes-api", &["east"]);
    ns.apply(
        "east",
        r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: reader
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: read-configmaps
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: reader
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-configmaps}
subjects:
- {kind: ServiceAccount, name: reader}
"#,
    );
    let pod = toolbox("api").replace(
        "spec:\n  terminationGracePeriodSeconds",
        "spec:\n  serviceAccountName: reader\n  terminationGracePeriodSeconds",
    );
    ns.apply("east", &pod);
    wait_ready(&ns, "east", "pod/api");
    // The kubelet projected the ServiceAccount's token into the pod. It is
    // used from here, by kubectl with nothing but the API server's address,
    // its CA and the token. (The toolbox's busybox wget can no longer do it:
    // the API server ends its TLS 1.2 handshake with alert 40, as it does for
    // any client that offers only SHA-1 signatures; Go 1.25 stopped accepting
    // those, and Kubernetes 1.37 builds with `godebug default=go1.26`.) Pods
    // reaching the API by its Service, over TLS, are in the in-cluster
    // control plane's tests.
    let (ok, token) = sh(
        &env,
        &ns,
        "east",
        "api",
        "cat /var/run/secrets/kubernetes.io/serviceaccount/token",
    );
    assert!(
        ok && token.split('.').count() == 3,
        "the projected token: {token}"
    );
    let view = |path: &str| {
        run_ok(env.kubectl("east").args([
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            &format!("jsonpath={{.clusters[0].cluster.{path}}}"),
        ]))
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("reader.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: east\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: reader\n  user:\n    token: {}\ncontexts:\n- name: reader\n  context: {{cluster: east, user: reader, namespace: {}}}\ncurrent-context: reader\n",
            view("server"),
            view("certificate-authority-data"),
            token.trim(),
            ns.name,
        ),
    )
    .unwrap();
    let as_reader = |what: &str| {
        run(std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", what, "-o", "name"]))
    };
    let out = as_reader("configmaps");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("configmap/"),
        "list configmaps: {out:?}"
    );
    let out = as_reader("secrets");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("Forbidden")
            && err.contains(&format!("system:serviceaccount:{}:reader", ns.name)),
        "list secrets must be forbidden to the pod's account: {out:?}"
    );
}

#[tokio::test]
async fn the_kubelet_restarts_a_killed_container_and_endpoints_follow_scaling() {
    let env = env();
    let ns = env.namespace("nodes-restart", &["east"]);
    ns.apply("east", &gateway_app("gw", 1));
    wait_rollout(&ns, "east", "gw");
    let pod = ns.kubectl(
        "east",
        &[
            "get",
            "pods",
            "-l",
            "app=gw",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let uid = ns.kubectl(
        "east",
        &["get", "pod", &pod, "-o", "jsonpath={.metadata.uid}"],
    );
    let tb = tandem_testbed::Testbed::open(&env.dir).unwrap();
    let east = tb.config.layout("east").unwrap();
    // The pod's own processes (the pause container is one of them): kill
    // them all from the host, as an OOM or a crash would.
    let pids = container_pids(&east.cgroup_root(), &uid.replace('-', "_"));
    let pids = if pids.is_empty() {
        container_pids(&east.cgroup_root(), &uid)
    } else {
        pids
    };
    assert!(!pids.is_empty(), "the pod's processes are in its cgroup");
    let gateway: Vec<u32> = pids
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("gateway"))
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(gateway.len(), 1, "one gateway process: {gateway:?}");
    run_ok(std::process::Command::new("kill").args(["-9", &gateway[0].to_string()]));
    eventually("restartCount to go up", Duration::from_secs(60), || async {
        let n = ns.kubectl(
            "east",
            &[
                "get",
                "pod",
                &pod,
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount}",
            ],
        );
        (n.trim().parse::<u32>().unwrap_or(0) >= 1)
            .then_some(())
            .ok_or(format!("restartCount {n}"))
    })
    .await;
    wait_ready(&ns, "east", &format!("pod/{pod}"));

    ns.kubectl("east", &["scale", "deploy/gw", "--replicas=0"]);
    eventually(
        "no endpoints at 0 replicas",
        Duration::from_secs(60),
        || async {
            let a = ns.ready_addresses("east", "gw");
            a.is_empty().then_some(()).ok_or(format!("{a:?}"))
        },
    )
    .await;
    ns.kubectl("east", &["scale", "deploy/gw", "--replicas=2"]);
    eventually(
        "2 ready endpoints again",
        Duration::from_secs(90),
        || async {
            let a = ns.ready_addresses("east", "gw");
            (a.len() == 2).then_some(()).ok_or(format!("{a:?}"))
        },
    )
    .await;
}

#[tokio::test]
async fn a_load_balancer_address_is_reached_from_the_other_cluster_and_the_host() {
    let env = env();
    let ns = env.namespace("nodes-lb", &["east", "west"]);
    ns.apply(
        "east",
        &gateway_app("gw", 1).replace(
            "  selector: {app: gw}\n  ports:",
            "  type: LoadBalancer\n  selector: {app: gw}\n  ports:",
        ),
    );
    ns.apply("west", &toolbox("tb"));
    wait_rollout(&ns, "east", "gw");
    wait_ready(&ns, "west", "pod/tb");
    let ip = eventually(
        "a LoadBalancer address",
        Duration::from_secs(30),
        || async {
            let ip = ns.kubectl(
                "east",
                &[
                    "get",
                    "svc",
                    "gw",
                    "-o",
                    "jsonpath={.status.loadBalancer.ingress[0].ip}",
                ],
            );
            let ip = ip.trim().to_string();
            if ip.is_empty() {
                Err("no ingress yet".to_string())
            } else {
                Ok(ip)
            }
        },
    )
    .await;
    let tb = tandem_testbed::Testbed::open(&env.dir).unwrap();
    let pool = tb.config.layout("east").unwrap().lb_pool();
    let prefix = pool.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "{ip} is in east's pool {pool}");

    let (ok, out) = sh(
        &env,
        &ns,
        "west",
        "tb",
        &format!("timeout 5 wget -q -O - http://{ip}:4191/ready"),
    );
    assert!(ok, "from a pod in west to {ip}: {out}");
    let from_host = tandem_harness::http_get_addr(&format!("{ip}:4191"), "/ready");
    assert_eq!(
        from_host.map(|(code, _)| code),
        Some(200),
        "from the host to {ip}"
    );
}

#[tokio::test]
async fn nothing_leaves_the_machine_and_the_host_does_not_forward() {
    let env = env();
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "0",
        "the host's ip_forward stays 0 with real nodes up"
    );
    let ns = env.namespace("nodes-egress", &["east"]);
    ns.apply("east", &toolbox("tb"));
    wait_ready(&ns, "east", "pod/tb");
    // A pod resolving names outside the cluster: CoreDNS must answer
    // itself, and nothing may go to the host's resolver. (No test sends to
    // an address outside 198.18.0.0/15: this workplace forbids it.)
    let counter = EgressCounter::start();
    for script in [
        "nslookup example.com",
        "timeout 5 wget -q -O - http://example.com/",
    ] {
        let (ok, out) = sh(&env, &ns, "east", "tb", script);
        assert!(!ok || out.contains("NXDOMAIN"), "{script} must fail: {out}");
    }
    let leaked = counter.stop();
    assert_eq!(leaked, 0, "packets from the testbed's ranges left the host");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "0"
    );
}

/// Counts, with nftables rules in the host's namespace, the packets with a
/// source in 198.18.0.0/15 that leave through any interface other than the
/// testbed's bridges and loopback, and any packet the host forwards out of a
/// bridge (frames bridged between two nodes stay on the bridge).
struct EgressCounter {
    table: String,
}

impl EgressCounter {
    fn start() -> Self {
        let table = format!("tandem_egress_{}", std::process::id());
        let rules = format!(
            "table inet {table} {{
  chain egress {{ type filter hook postrouting priority 0; policy accept;
    oifname != \"lo\" oifname != \"tandem*\" ip saddr 198.18.0.0/15 counter
  }}
  chain forwarded {{ type filter hook forward priority 0; policy accept;
    oifname != \"tandem*\" counter
  }}
}}"
        );
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft runs (apt-get install nftables)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft accepted the counters");
        Self { table }
    }

    fn stop(self) -> u64 {
        let out =
            run_ok(std::process::Command::new("nft").args(["list", "table", "inet", &self.table]));
        run_ok(std::process::Command::new("nft").args(["delete", "table", "inet", &self.table]));
        out.split("packets ")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

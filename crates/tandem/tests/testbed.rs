//! The testbed, tested as users use it: through `tandem testbed`, kubectl and
//! kube-rs, against real kube-apiservers.

use std::{net::Ipv4Addr, path::Path, process::Command, time::Duration};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec},
    core::v1::{ConfigMap, Secret, ServiceAccount},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use tandem_harness::{Env, eventually, run, run_ok};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

fn env() -> Env {
    Env::shared(tandem_bin())
}

#[tokio::test]
async fn each_context_reaches_its_own_cluster() {
    let env = env();
    let ns = env.namespace("isolation", &["east", "west"]);
    ns.kubectl(
        "east",
        &["create", "configmap", "only-in-east", "--from-literal=k=v"],
    );

    let east: Api<ConfigMap> = Api::namespaced(env.client("east").await, &ns.name);
    let west: Api<ConfigMap> = Api::namespaced(env.client("west").await, &ns.name);
    assert!(east.get_opt("only-in-east").await.unwrap().is_some());
    assert!(west.get_opt("only-in-east").await.unwrap().is_none());

    // The contexts point at different apiservers with different CAs.
    let servers = run_ok(env.kubectl("east").args([
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[*].cluster.server}",
    ]));
    let servers: Vec<&str> = servers.split_whitespace().collect();
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert_ne!(servers[0], servers[1]);
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: web:latest
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"#;

/// The ready endpoints of a Service, from its EndpointSlices.
async fn ready_endpoints(slices: &Api<EndpointSlice>, svc: &str) -> Result<Vec<String>, String> {
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| {
            let c = e.conditions.as_ref();
            c.and_then(|c| c.ready).unwrap_or(false)
                && !c.and_then(|c| c.terminating).unwrap_or(false)
        })
        .flat_map(|e| e.addresses.clone())
        .collect())
}

#[tokio::test]
async fn endpoint_slices_follow_scaling_with_loopback_pod_ips() {
    let env = env();
    let ns = env.namespace("slices", &["east"]);
    ns.apply("east", WEB);
    let slices: Api<EndpointSlice> = Api::namespaced(env.client("east").await, &ns.name);

    let count = |want: usize| {
        let slices = slices.clone();
        move || {
            let slices = slices.clone();
            async move {
                let ready = ready_endpoints(&slices, "web").await?;
                if ready.len() == want {
                    Ok(ready)
                } else {
                    Err(format!("{} ready: {ready:?}", ready.len()))
                }
            }
        }
    };

    let ready = eventually("2 ready endpoints", Duration::from_secs(10), count(2)).await;
    for ip in &ready {
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert!(ip.is_loopback(), "{ip} is a loopback address");
        assert_eq!(
            ip.octets()[1],
            10,
            "{ip} is in east's pod range 127.10.0.0/16"
        );
    }
    assert_ne!(ready[0], ready[1], "each pod has its own IP");

    ns.kubectl("east", &["scale", "deployment/web", "--replicas=0"]);
    eventually("no ready endpoints", Duration::from_secs(10), count(0)).await;

    ns.kubectl("east", &["scale", "deployment/web", "--replicas=2"]);
    eventually("2 ready endpoints again", Duration::from_secs(10), count(2)).await;
}

#[tokio::test]
async fn service_account_tokens_authenticate_and_obey_rbac() {
    let env = env();
    let ns = env.namespace("tokens", &["west"]);
    ns.kubectl("west", &["create", "serviceaccount", "reader"]);
    ns.kubectl(
        "west",
        &[
            "create",
            "role",
            "read-configmaps",
            "--verb=get,list",
            "--resource=configmaps",
        ],
    );
    ns.kubectl(
        "west",
        &[
            "create",
            "rolebinding",
            "reader",
            "--role=read-configmaps",
            &format!("--serviceaccount={}:reader", ns.name),
        ],
    );

    let admin = env.client("west").await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns.name);
    let tr = sas
        .create_token_request(
            "reader",
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    expiration_seconds: Some(600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("TokenRequest is served");
    let token = tr.status.expect("token issued").token;

    // TokenReview agrees on who the token is.
    let reviews: Api<TokenReview> = Api::all(admin.clone());
    let review = reviews
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let status = review.status.unwrap();
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(
        status.user.unwrap().username.as_deref(),
        Some(format!("system:serviceaccount:{}:reader", ns.name).as_str())
    );

    // A client with only the token: the granted verb works, others are denied.
    let admin_config = admin_config(&env.kubeconfig, "west").await;
    let mut config = admin_config.clone();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let as_reader = Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(as_reader.clone(), &ns.name);
    cms.list(&ListParams::default())
        .await
        .expect("the granted verb is allowed");
    let secrets: Api<Secret> = Api::namespaced(as_reader.clone(), &ns.name);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("listing secrets must be forbidden, got {other:?}"),
    }
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("nope".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match cms.create(&PostParams::default(), &cm).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("creating a configmap must be forbidden, got {other:?}"),
    }

    // A made-up token is rejected outright.
    let mut bogus = admin_config;
    bogus.auth_info = kube::config::AuthInfo {
        token: Some("not-a-token".to_string().into()),
        ..Default::default()
    };
    let anon: Api<ConfigMap> = Api::namespaced(Client::try_from(bogus).unwrap(), &ns.name);
    match anon.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 401, "{s:?}"),
        other => panic!("a bogus token must be unauthorized, got {other:?}"),
    }
}

#[tokio::test]
async fn status_lists_every_component_as_healthy() {
    let env = env();
    let out = run_ok(
        env.tandem()
            .args(["testbed", "status", "-o", "json", "--dir"])
            .arg(&env.dir),
    );
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let clusters = status["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    for c in clusters {
        let comps = c["components"].as_array().unwrap();
        let names: Vec<&str> = comps
            .iter()
            .map(|s| s["component"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kwok"
            ]
        );
        for s in comps {
            assert_eq!(s["healthy"], true, "{s}");
            assert!(s["pid"].as_u64().is_some(), "{s}");
            assert!(s["rss_bytes"].as_u64().unwrap() > 1 << 20, "{s}");
        }
    }
    let table = run_ok(
        env.tandem()
            .args(["testbed", "status", "--dir"])
            .arg(&env.dir),
    );
    assert!(
        table.contains("CLUSTER") && table.contains("kube-apiserver"),
        "{table}"
    );
    assert!(table.contains("export KUBECONFIG="), "{table}");
}

#[tokio::test]
async fn status_of_an_unknown_cluster_is_refused() {
    let env = env();
    let out = run(env
        .tandem()
        .args(["testbed", "status", "--cluster", "north", "--dir"])
        .arg(&env.dir));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown cluster \"north\"") && err.contains("east, west"),
        "{err}"
    );
}

/// The configuration a user's client gets for `cluster` from `kubeconfig`.
async fn admin_config(kubeconfig: &Path, cluster: &str) -> kube::Config {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    kube::Config::from_custom_kubeconfig(
        kc,
        &kube::config::KubeConfigOptions {
            context: Some(cluster.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn admin_client(kubeconfig: &Path, cluster: &str) -> Client {
    Client::try_from(admin_config(kubeconfig, cluster).await).unwrap()
}

/// `tandem testbed ...` on `dir`; the testbeds of this file have fake nodes
/// (real nodes have their own test file).
fn tandem(args: &[&str], dir: &Path) -> std::process::Output {
    run(Command::new(tandem_bin())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("TANDEM_TESTBED_NODES", "fake"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A testbed of its own (one cluster, other ports), so that stopping it
/// disturbs no other test.
#[tokio::test]
async fn a_restart_keeps_objects_and_down_leaves_no_process() {
    env(); // the binaries are built once, by the shared testbed
    let dir = tempfile::tempdir().unwrap();
    let base = "28440";
    let up = |dir: &Path| {
        tandem(
            &["testbed", "up", "--clusters", "solo", "--base-port", base],
            dir,
        )
    };

    let out = up(dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kubeconfig = dir.path().join("kubeconfig");
    assert_eq!(
        stdout.trim(),
        format!("export KUBECONFIG={}", kubeconfig.display())
    );

    let cms: Api<ConfigMap> = Api::namespaced(admin_client(&kubeconfig, "solo").await, "default");
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("survives".into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();

    // Up again while running: nothing new is started.
    let again = up(dir.path());
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already running"),
        "{}",
        stderr(&again)
    );

    let down = tandem(&["testbed", "down"], dir.path());
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(
        tandem_testbed::leftover_processes(dir.path()).is_empty(),
        "no testbed process is left after down"
    );
    let status = tandem(&["testbed", "status"], dir.path());
    assert!(
        !status.status.success(),
        "status of a stopped testbed fails"
    );

    let out = up(dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let cms: Api<ConfigMap> = Api::namespaced(admin_client(&kubeconfig, "solo").await, "default");
    let kept = cms
        .get("survives")
        .await
        .expect("the object survived the restart");
    assert_eq!(kept.data.unwrap()["k"], "v");

    // One component stopped and started again, as outage drills do.
    let stop = tandem(
        &["testbed", "stop", "kube-apiserver", "--cluster", "solo"],
        dir.path(),
    );
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert!(cms.get("survives").await.is_err(), "the apiserver is down");
    let start = tandem(
        &["testbed", "start", "kube-apiserver", "--cluster", "solo"],
        dir.path(),
    );
    assert!(start.status.success(), "{}", stderr(&start));
    let cms: Api<ConfigMap> = Api::namespaced(admin_client(&kubeconfig, "solo").await, "default");
    cms.get("survives").await.expect("the apiserver is back");

    let down = tandem(&["testbed", "down", "--purge"], dir.path());
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(tandem_testbed::leftover_processes(dir.path()).is_empty());
    assert!(!dir.path().exists(), "--purge removes the directory");
}

#[test]
fn invalid_cluster_names_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    for (clusters, want) in [
        ("East", "is not valid"),
        ("east,east", "given twice"),
        ("a_b", "is not valid"),
    ] {
        let out = tandem(&["testbed", "up", "--clusters", clusters], dir.path());
        assert!(!out.status.success());
        assert!(stderr(&out).contains(want), "{clusters}: {}", stderr(&out));
    }
    assert!(!dir.path().join("testbed.json").exists());
}

#[test]
fn a_port_in_use_is_named_and_nothing_is_left_running() {
    env(); // binaries built
    let listener = std::net::TcpListener::bind("127.0.0.1:29441").expect("port 29441 is free");
    let dir = tempfile::tempdir().unwrap();
    // solo's etcd would take base+1 = 29441.
    let out = tandem(
        &[
            "testbed",
            "up",
            "--clusters",
            "solo",
            "--base-port",
            "29440",
        ],
        dir.path(),
    );
    drop(listener);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("port 29441") && err.contains("etcd") && err.contains("--base-port"),
        "{err}"
    );
    assert!(tandem_testbed::leftover_processes(dir.path()).is_empty());
    assert!(
        !dir.path().join("testbed.json").exists(),
        "nothing was recorded"
    );
}

#[test]
fn a_missing_go_toolchain_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty_cache = tempfile::tempdir().unwrap();
    let empty_path = tempfile::tempdir().unwrap();
    let out = run(Command::new(tandem_bin())
        .args([
            "testbed",
            "up",
            "--clusters",
            "solo",
            "--base-port",
            "30440",
            "--dir",
        ])
        .arg(dir.path())
        .env("TANDEM_CACHE", empty_cache.path())
        .env("PATH", empty_path.path())
        .env("TANDEM_TESTBED_NODES", "fake")
        .env_remove("TANDEM_GO")
        .env_remove("TANDEM_TESTBED_BIN"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Go toolchain was not found"), "{err}");
    assert!(err.contains("TANDEM_GO"), "the fix is named: {err}");
    assert!(!dir.path().join("testbed.json").exists());
    assert!(tandem_testbed::leftover_processes(dir.path()).is_empty());
}

#[test]
fn a_stale_dir_from_a_crash_names_the_fix() {
    env(); // binaries built
    let dir = tempfile::tempdir().unwrap();
    // Start a one-cluster testbed, then "crash" it: kill one process hard, as
    // an OOM kill or a reboot would, leaving its pid file behind.
    let out = tandem(
        &[
            "testbed",
            "up",
            "--clusters",
            "solo",
            "--base-port",
            "31440",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pid_file = dir.path().join("clusters/solo/run/kube-scheduler.pid");
    let pid = tandem_testbed::process::read_pid_file(&pid_file).expect("pid file");
    run_ok(Command::new("kill").args(["-9", &pid.pid.to_string()]));
    for _ in 0..50 {
        if !pid.is_alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = tandem(
        &[
            "testbed",
            "up",
            "--clusters",
            "solo",
            "--base-port",
            "31440",
        ],
        dir.path(),
    );
    assert!(!out.status.success(), "up refuses a stale dir");
    let err = stderr(&out);
    assert!(err.contains("did not stop cleanly"), "{err}");
    assert!(err.contains("solo/kube-scheduler"), "{err}");
    assert!(
        err.contains("tandem testbed down"),
        "the fix is named: {err}"
    );

    let down = tandem(&["testbed", "down", "--purge"], dir.path());
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(tandem_testbed::leftover_processes(dir.path()).is_empty());
}

/// Without a node Lease, kube-controller-manager marks the fake node
/// NotReady after its grace period, and every pod on it unready: tests that
/// run longer than that would see endpoints vanish.
#[tokio::test]
async fn each_node_renews_its_lease() {
    use k8s_openapi::api::coordination::v1::Lease;
    let env = env();
    for ctx in ["east", "west"] {
        let leases: Api<Lease> = Api::namespaced(env.client(ctx).await, "kube-node-lease");
        let name = format!("{ctx}-node-0");
        let first = eventually(
            &format!("the Lease of {name}"),
            Duration::from_secs(20),
            || {
                let leases = leases.clone();
                let name = name.clone();
                async move {
                    let lease = leases.get_opt(&name).await.map_err(|e| e.to_string())?;
                    lease
                        .and_then(|l| l.spec?.renew_time)
                        .ok_or_else(|| "no renewed Lease yet".to_string())
                }
            },
        )
        .await;
        eventually(
            &format!("{name} renews its Lease"),
            Duration::from_secs(30),
            || {
                let leases = leases.clone();
                let name = name.clone();
                let first = first.clone();
                async move {
                    let renewed = leases
                        .get(&name)
                        .await
                        .map_err(|e| e.to_string())?
                        .spec
                        .and_then(|s| s.renew_time);
                    if renewed.as_ref().is_some_and(|r| r.0 > first.0) {
                        Ok(())
                    } else {
                        Err(format!("renewTime still {renewed:?}"))
                    }
                }
            },
        )
        .await;
    }
}

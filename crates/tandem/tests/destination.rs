//! `tandem destination` against real kube-apiservers: a Service with an
//! EndpointSlice written by hand (the fake nodes' pods make no ready
//! endpoints), a meshed Pod behind it, a TrafficSplit 3:1, and a tonic
//! client asking Get and GetProfile as the proxy does (by name and by
//! ClusterIP), then following the changes.

use std::{net::SocketAddr, path::Path, time::Duration};

use linkerd2_proxy_api::destination::{
    DestinationProfile, GetDestination, Update, destination_client::DestinationClient, update,
};
use tandem_harness::{Env, Process, TestNamespace, http::free_addr};
use tonic::Streaming;

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Deadline for a change to reach a subscriber: an expected outcome, not a
/// speed measure (the benchmark measures that).
const ARRIVES: Duration = Duration::from_secs(15);

/// The gateway identity the service mirror writes on a mirror's slice.
const GATEWAY: &str =
    "tandem-gateway.tandem-multicluster.serviceaccount.identity.tandem.cluster.local";

/// `emoji-svc` with a meshed pod, its mirror `emoji-svc-west` (as the
/// service mirror writes it: gateway IP, port 4143), and a split 3:1.
fn manifest(ns: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: emoji}}
---
apiVersion: v1
kind: Service
metadata: {{name: emoji-svc}}
spec:
  ports: [{{name: grpc, port: 8080}}]
---
apiVersion: v1
kind: Service
metadata:
  name: emoji-svc-west
  labels: {{mirror.linkerd.io/mirrored-service: "true", mirror.linkerd.io/cluster-name: west}}
  annotations: {{mirror.linkerd.io/remote-svc-fq-name: emoji-svc.{ns}.svc.cluster.local}}
spec:
  ports: [{{name: grpc, port: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: emoji-svc-west-1
  labels: {{kubernetes.io/service-name: emoji-svc-west}}
  annotations: {{mirror.linkerd.io/remote-gateway-identity: {GATEWAY}}}
addressType: IPv4
ports: [{{name: grpc, port: 4143, protocol: TCP}}]
endpoints:
- addresses: [172.18.0.5]
  conditions: {{ready: true}}
---
apiVersion: v1
kind: Pod
metadata:
  name: emoji-1
  labels: {{linkerd.io/control-plane-ns: tandem, pod-template-hash: 5d8f}}
  ownerReferences: []
spec:
  serviceAccountName: emoji
  containers: [{{name: app, image: emoji:v1}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: emoji-svc-1
  labels: {{kubernetes.io/service-name: emoji-svc}}
addressType: IPv4
ports: [{{name: grpc, port: 8080, protocol: TCP}}]
endpoints:
- addresses: [10.244.1.1]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: emoji-1, namespace: {ns}}}
- addresses: [10.244.1.2]
  conditions: {{ready: true}}
- addresses: [10.244.1.3]
  conditions: {{ready: false}}
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {{name: emoji-split}}
spec:
  service: emoji-svc
  backends:
  - {{service: emoji-svc, weight: 3}}
  - {{service: emoji-svc-west, weight: 1}}
"#
    )
}

struct Dest {
    process: Process,
    client: DestinationClient<tonic::transport::Channel>,
}

async fn start(env: &Env) -> Dest {
    let grpc = free_addr().expect("a free port").to_string();
    let mut process = Process::start(
        env,
        "destination",
        &["--context", "east", "destination", "--grpc-addr", &grpc],
    );
    process.wait_ready(Duration::from_secs(60));
    let client = DestinationClient::connect(format!("http://{grpc}"))
        .await
        .unwrap_or_else(|e| panic!("connecting to {grpc}: {e}\n{}", process.log_text()));
    Dest { process, client }
}

fn req(path: &str) -> GetDestination {
    GetDestination {
        scheme: "k8s".into(),
        path: path.into(),
        context_token: r#"{"ns":"test","nodeName":"node-1"}"#.into(),
    }
}

async fn next<T: std::fmt::Debug>(stream: &mut Streaming<T>, what: &str) -> T {
    match tokio::time::timeout(ARRIVES, stream.message()).await {
        Ok(Ok(Some(m))) => m,
        Ok(other) => panic!("{what}: the stream ended: {other:?}"),
        Err(_) => panic!("{what}: nothing within {ARRIVES:?}"),
    }
}

fn overrides(p: &DestinationProfile) -> Vec<(String, u32)> {
    p.dst_overrides
        .iter()
        .map(|o| (o.authority.clone(), o.weight))
        .collect()
}

/// Reads profiles until one has `want` as its overrides.
async fn wait_overrides(stream: &mut Streaming<DestinationProfile>, want: &[(String, u32)]) {
    let deadline = tokio::time::Instant::now() + ARRIVES;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let p = match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(p))) => p,
            other => panic!("waiting for overrides {want:?}: {other:?}"),
        };
        if overrides(&p) == want {
            return;
        }
    }
}

fn addrs(u: &Update) -> Vec<SocketAddr> {
    let tcp = |a: &linkerd2_proxy_api::net::TcpAddress| {
        let ip: std::net::IpAddr = a.ip.unwrap().try_into().unwrap();
        SocketAddr::new(ip, a.port as u16)
    };
    let mut out: Vec<SocketAddr> = match u.update.as_ref() {
        Some(update::Update::Add(set)) => set
            .addrs
            .iter()
            .map(|a| tcp(a.addr.as_ref().unwrap()))
            .collect(),
        Some(update::Update::Remove(set)) => set.addrs.iter().map(tcp).collect(),
        _ => vec![],
    };
    out.sort();
    out
}

fn cluster_ip(ns: &TestNamespace, svc: &str) -> String {
    ns.kubectl(
        "east",
        &["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"],
    )
}

#[tokio::test]
async fn get_and_get_profile_follow_the_cluster() {
    let env = tandem_harness::failover::env(tandem_bin());
    let ns = env.namespace("destination", &["east"]);
    ns.apply("east", &manifest(&ns.name));
    let mut dest = start(&env).await;
    let fqdn = |svc: &str| format!("{svc}.{}.svc.cluster.local", ns.name);
    let authority = |svc: &str| format!("{}:8080", fqdn(svc));

    // Get: the ready endpoints, the meshed one with its identity and hint.
    let mut get = dest
        .client
        .get(req(&authority("emoji-svc")))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut get, "the first Get update").await;
    let Some(update::Update::Add(set)) = first.update.as_ref() else {
        panic!("the first update is no add: {first:?}");
    };
    assert_eq!(
        addrs(&first),
        [
            "10.244.1.1:8080".parse().unwrap(),
            "10.244.1.2:8080".parse().unwrap()
        ]
    );
    assert_eq!(set.metric_labels["service"], "emoji-svc");
    assert_eq!(set.metric_labels["namespace"], ns.name);
    let meshed = set
        .addrs
        .iter()
        .find(|a| a.metric_labels.get("pod").map(String::as_str) == Some("emoji-1"));
    let meshed = meshed.unwrap_or_else(|| panic!("no address of pod emoji-1: {set:?}"));
    assert!(set.addrs.iter().all(|a| a.weight == 10_000), "{set:?}");
    let id = meshed
        .tls_identity
        .as_ref()
        .and_then(|t| t.server_name.as_ref())
        .map(|n| n.name.clone());
    assert_eq!(
        id,
        Some(format!(
            "emoji.{}.serviceaccount.identity.tandem.cluster.local",
            ns.name
        ))
    );
    assert!(meshed.protocol_hint.is_some(), "{meshed:?}");

    // GetProfile by name and by ClusterIP: the split as overrides.
    let want = |a: u32, b: u32| {
        vec![
            (authority("emoji-svc"), a),
            (authority("emoji-svc-west"), b),
        ]
    };
    let mut by_name = dest
        .client
        .get_profile(req(&authority("emoji-svc")))
        .await
        .unwrap()
        .into_inner();
    let p = next(&mut by_name, "the profile by name").await;
    assert_eq!(p.fully_qualified_name, fqdn("emoji-svc"));
    assert_eq!(overrides(&p), want(30_000, 10_000));
    let ip = cluster_ip(&ns, "emoji-svc");
    let mut by_ip = dest
        .client
        .get_profile(req(&format!("{ip}:8080")))
        .await
        .unwrap()
        .into_inner();
    let p = next(&mut by_ip, "the profile by ClusterIP").await;
    assert_eq!(
        p.fully_qualified_name,
        fqdn("emoji-svc"),
        "{ip} maps to its Service"
    );
    assert_eq!(overrides(&p), want(30_000, 10_000));

    // A weight change reaches both subscribers.
    ns.kubectl(
        "east",
        &["patch", "ts", "emoji-split", "--type=merge", "-p",
          r#"{"spec":{"backends":[{"service":"emoji-svc","weight":0},{"service":"emoji-svc-west","weight":1}]}}"#],
    );
    wait_overrides(&mut by_name, &want(0, 10_000)).await;
    wait_overrides(&mut by_ip, &want(0, 10_000)).await;

    // An endpoint goes: a remove of just it.
    ns.kubectl(
        "east",
        &[
            "patch",
            "endpointslice",
            "emoji-svc-1",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/endpoints/1"}]"#,
        ],
    );
    let u = next(&mut get, "the remove").await;
    assert!(matches!(u.update, Some(update::Update::Remove(_))), "{u:?}");
    assert_eq!(
        addrs(&u),
        ["10.244.1.2:8080".parse::<SocketAddr>().unwrap()]
    );

    // An unknown Service: no_endpoints{exists: false}, then it appears.
    let mut unknown = dest
        .client
        .get(req(&authority("later-svc")))
        .await
        .unwrap()
        .into_inner();
    let u = next(&mut unknown, "the unknown service").await;
    assert!(
        matches!(u.update, Some(update::Update::NoEndpoints(ref n)) if !n.exists),
        "{u:?}"
    );
    ns.apply(
        "east",
        "apiVersion: v1\nkind: Service\nmetadata: {name: later-svc}\nspec:\n  ports: [{name: grpc, port: 8080}]\n",
    );
    let u = next(&mut unknown, "the service that appears").await;
    assert!(
        matches!(u.update, Some(update::Update::NoEndpoints(ref n)) if n.exists),
        "{u:?}"
    );

    // An HTTPRoute whose parent is a Service splits it too.
    let mut web = dest
        .client
        .get_profile(req(&authority("web-svc")))
        .await
        .unwrap()
        .into_inner();
    let p = next(&mut web, "the profile of web-svc").await;
    assert!(p.dst_overrides.is_empty(), "no route yet: {p:?}");
    ns.apply(
        "east",
        r#"apiVersion: v1
kind: Service
metadata: {name: web-svc}
spec:
  ports: [{name: grpc, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-route}
spec:
  parentRefs: [{group: "", kind: Service, name: web-svc, port: 8080}]
  rules:
  - backendRefs:
    - {name: emoji-svc, port: 8080, weight: 1}
    - {name: emoji-svc-west, port: 8080, weight: 2}
"#,
    );
    wait_overrides(
        &mut web,
        &[
            (authority("emoji-svc"), 10_000),
            (authority("emoji-svc-west"), 20_000),
        ],
    )
    .await;
    drop(web);

    // The mirror: the gateway's address, identity and the remote authority.
    let mut west = dest
        .client
        .get(req(&authority("emoji-svc-west")))
        .await
        .unwrap()
        .into_inner();
    let u = next(&mut west, "the mirror's endpoints").await;
    assert_eq!(
        addrs(&u),
        ["172.18.0.5:4143".parse::<SocketAddr>().unwrap()]
    );
    let Some(update::Update::Add(set)) = u.update.as_ref() else {
        panic!("no add: {u:?}");
    };
    let gw = &set.addrs[0];
    assert_eq!(
        gw.authority_override
            .as_ref()
            .map(|a| a.authority_override.as_str()),
        Some(authority("emoji-svc").as_str()),
        "the remote Service's name and port"
    );
    assert_eq!(
        gw.tls_identity
            .as_ref()
            .and_then(|t| t.server_name.as_ref())
            .map(|n| n.name.as_str()),
        Some(GATEWAY)
    );
    assert_eq!(gw.metric_labels["target_cluster"], "west");
    drop(west);

    // A bad path is refused, and the server goes on serving.
    let err = dest.client.get(req("example.com:80")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    // The metrics count the open streams and what they were sent.
    let metric = |m: &str| {
        dest.process
            .metric(m)
            .unwrap_or_else(|| panic!("no {m} in /metrics"))
    };
    // web-svc's stream was dropped above: the server sees it go soon.
    eventually_metric(
        &dest.process,
        r#"tandem_destination_subscribers{kind="GetProfile"}"#,
        2.0,
    )
    .await;
    // The mirror's stream was dropped above: the server sees it go soon.
    eventually_metric(
        &dest.process,
        r#"tandem_destination_subscribers{kind="Get"}"#,
        2.0,
    )
    .await;
    assert!(metric(r#"tandem_destination_updates_total{kind="GetProfile"}"#) >= 4.0);
    drop(by_ip);
    eventually_metric(
        &dest.process,
        r#"tandem_destination_subscribers{kind="GetProfile"}"#,
        1.0,
    )
    .await;
}

/// Waits until a metric reads `want` (a closed stream is noticed by the
/// server a moment after the client goes).
async fn eventually_metric(p: &Process, name: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + ARRIVES;
    loop {
        let got = p.metric(name);
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is {got:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

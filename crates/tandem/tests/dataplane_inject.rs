//! A pod injected with `tandem inject` on a real node: its init container
//! installs the redirect rules in the pod's network namespace, its proxy
//! turns Ready, and an app that declares no port is still reached, through
//! the proxies (all TCP is redirected).

use std::path::Path;

use tandem_harness::{
    Env,
    dataplane::{self, ROUTING_IDENTITY, metric_sum},
};

const CLUSTER: &str = "east";

#[tokio::test]
async fn an_injected_pod_gets_its_rules_a_ready_proxy_and_an_undeclared_port_works() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    dataplane::control_plane(&env, CLUSTER);
    let ns = env.namespace("dp-inject", &[CLUSTER]);
    let mesh = |m: &str| dataplane::inject(&env, CLUSTER, m, ROUTING_IDENTITY);
    let backend = |m: &str| dataplane::inject_backend(&env, CLUSTER, m, ROUTING_IDENTITY);
    // `quiet` lists no container port: tandem inject gives its proxy no
    // inbound port, and the rules still send its traffic to the proxy.
    ns.apply(CLUSTER, &backend(&dataplane::backend("quiet", 1, false)));
    ns.apply(CLUSTER, &mesh(&dataplane::client_pod("client")));
    dataplane::wait_rollout(&ns, CLUSTER, "quiet");
    dataplane::wait_pod_ready(&ns, CLUSTER, "client");

    // The init container ran to completion and left proxy-init's rules in
    // the pod's own namespace.
    let init = ns.kubectl(
        CLUSTER,
        &[
            "get",
            "pod",
            "client",
            "-o",
            "jsonpath={.status.initContainerStatuses[0].name}={.status.initContainerStatuses[0].state.terminated.exitCode}",
        ],
    );
    assert_eq!(init, "tandem-init=0");
    let client = dataplane::pod_netns(&env, &ns, CLUSTER, "client");
    let rules = client.nat_rules();
    let ours: Vec<&str> = rules
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains("PROXY_INIT_"))
        .collect();
    assert_eq!(ours.len(), 8, "proxy-init's 8 rules, each once:\n{rules}");
    for want in [
        "-A PREROUTING -m comment --comment \"proxy-init/install-proxy-init-prerouting/",
        "--to-ports 4143",
        "-m owner --uid-owner 2102",
        "--to-ports 4140",
        "--dports 4190,4191,4567,4568",
    ] {
        assert!(
            rules.contains(want),
            "no {want:?} in the pod's rules:\n{rules}"
        );
    }
    let host_rules =
        tandem_harness::run_ok(std::process::Command::new("iptables-nft-save").args(["-t", "nat"]));
    assert!(
        !host_rules.contains("PROXY_INIT_"),
        "proxy-init's rules leaked into the host's namespace"
    );

    // The proxy is Ready: the kubelet's probe, and /ready from inside the pod.
    let ready = ns.kubectl(
        CLUSTER,
        &[
            "get",
            "pod",
            "client",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name==\"tandem-proxy\")].ready}",
        ],
    );
    assert_eq!(ready, "true", "the proxy container is Ready");
    let admin = "127.0.0.1:4191".parse().unwrap();
    let answer = client
        .get(admin, "/ready")
        .expect("the proxy's admin port answers");
    assert_eq!((answer.status, answer.body.as_str()), (200, "ready\n"));

    // The undeclared port, through the client's proxy and quiet's proxy.
    let svc = dataplane::service_addr(&ns, CLUSTER, "quiet");
    let pod = dataplane::answer_through_mesh(&client, svc, "quiet").await;
    let server = dataplane::pod_netns(&env, &ns, CLUSTER, &pod);
    let metrics = dataplane::proxy_metrics(&server, "the server");
    // The kubelet's probes pass through the inbound proxy too, with the
    // pod's address as authority: ours carried the Service's.
    let inbound = metric_sum(
        &metrics,
        "response_total",
        &[
            ("direction", "inbound"),
            ("authority", &svc.to_string()),
            ("target_port", "8080"),
            ("status_code", "200"),
        ],
    );
    assert!(
        inbound >= 1.0,
        "the server's proxy counted no inbound 200 for {svc} on 8080:\n{metrics}"
    );
    dataplane::assert_outbound_counted(&client, "quiet", &pod);
}

//! mTLS between two injected pods on a real node: each proxy gets its
//! certificate from `tandem identity` in the cluster before it turns Ready;
//! the server's proxy counts the client's request inbound with `tls="true"`
//! and the client's identity; a plaintext connection from a pod outside the
//! mesh to the server's inbound port 4143 is refused.

use std::{net::SocketAddr, path::Path};

use tandem_harness::{
    Env,
    dataplane::{self, ProxyIdentity, metric_sum},
};

const CLUSTER: &str = "east";

#[tokio::test]
async fn two_meshed_pods_talk_mtls_and_plaintext_to_4143_is_refused() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    dataplane::control_plane(&env, CLUSTER);
    let ns = env.namespace("dp-mtls", &[CLUSTER]);
    let mesh = |m: &str| dataplane::inject(&env, CLUSTER, m, ProxyIdentity::FromCluster);
    dataplane::apply_meshed_backend(&env, &ns, CLUSTER, "server");
    ns.apply(CLUSTER, &dataplane::service_account("client"));
    ns.apply(
        CLUSTER,
        &mesh(&dataplane::with_service_account(
            &dataplane::client_pod("client"),
            "client",
        )),
    );
    // Outside the mesh: no proxy, no rules.
    ns.apply(CLUSTER, &dataplane::client_pod("plain"));
    // Ready means each proxy holds a certificate from tandem identity.
    dataplane::wait_rollout(&ns, CLUSTER, "server");
    dataplane::wait_pod_ready(&ns, CLUSTER, "client");
    dataplane::wait_pod_ready(&ns, CLUSTER, "plain");

    let id = |sa: &str| {
        format!(
            "{sa}.{}.serviceaccount.identity.tandem.cluster.local",
            ns.name
        )
    };
    let client = dataplane::pod_netns(&env, &ns, CLUSTER, "client");
    let metrics = dataplane::proxy_metrics(&client, "the client");
    assert!(
        metric_sum(&metrics, "identity_cert_refresh_count", &[]) >= 1.0,
        "the client's proxy was certified:\n{metrics}"
    );

    let svc = dataplane::service_addr(&ns, CLUSTER, "server");
    let pod = dataplane::answer_through_mesh(&client, svc, "server").await;
    let server = dataplane::pod_netns(&env, &ns, CLUSTER, &pod);
    let client_id = id("client");
    let (meshed, metrics) = dataplane::mtls_inbound_from(&server, &client_id);
    assert!(
        meshed >= 1.0,
        "the server's proxy counted no mTLS request from {client_id}:\n{metrics}"
    );
    let metrics = dataplane::proxy_metrics(&client, "the client");
    let server_id = id("server");
    let outbound = metric_sum(
        &metrics,
        "response_total",
        &[
            ("direction", "outbound"),
            ("tls", "true"),
            ("server_id", &server_id),
            ("status_code", "200"),
        ],
    );
    assert!(
        outbound >= 1.0,
        "the client's proxy counted no mTLS request to {server_id}:\n{metrics}"
    );

    // From outside the mesh, plaintext straight to the server's 4143.
    let pod_ip = ns.kubectl(
        CLUSTER,
        &["get", "pod", &pod, "-o", "jsonpath={.status.podIP}"],
    );
    let direct: SocketAddr = format!("{}:4143", pod_ip.trim()).parse().unwrap();
    let plain = dataplane::pod_netns(&env, &ns, CLUSTER, "plain");
    let got = plain.get(direct, "/");
    assert!(
        !matches!(&got, Ok(r) if r.status == 200 || r.body.starts_with("server-")),
        "a plaintext request to {direct} was served: {got:?}"
    );
}

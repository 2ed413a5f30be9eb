//! Across clusters on real nodes: an injected pod in east calls
//! `hello-west`, the mirror of west's exported `hello`. Its proxy sends the
//! request over mTLS to west's gateway (verified as the gateway's identity),
//! and the gateway forwards it over mTLS to west's meshed backend. With west
//! reinstalled on a trust root of its own, east's proxy refuses the gateway
//! and the call fails.

use std::{net::SocketAddr, path::Path, time::Duration};

use tandem_harness::{
    Env, TestNamespace,
    dataplane::{self, Multicluster, PodNetns, ProxyIdentity, gateway_identity, metric_sum},
    eventually, run_ok,
};

const CLUSTERS: [&str; 2] = ["east", "west"];

/// `GET /` of `svc` from the client pod: `Ok(body)` when a `hello` pod of
/// west answered.
fn call(client: &PodNetns, svc: SocketAddr) -> Result<String, String> {
    match client.get(svc, "/") {
        Ok(r) if r.status == 200 && r.body.starts_with("hello-") => Ok(r.body.trim().to_string()),
        other => Err(format!("{other:?}")),
    }
}

/// West's meshed `hello`, injected with the trust anchors west has now.
fn hello(env: &Env, ns: &TestNamespace) {
    dataplane::apply_meshed_backend(env, ns, "west", "hello");
}

/// West's meshed `hello`, exported; east's meshed client.
fn workloads(env: &Env, ns: &TestNamespace) {
    hello(env, ns);
    ns.kubectl(
        "west",
        &["label", "svc", "hello", "mirror.linkerd.io/exported=true"],
    );
    ns.apply("east", &dataplane::service_account("client"));
    ns.apply(
        "east",
        &dataplane::inject(
            env,
            "east",
            &dataplane::with_service_account(&dataplane::client_pod("client"), "client"),
            ProxyIdentity::FromCluster,
        ),
    );
    dataplane::wait_rollout(ns, "west", "hello");
    dataplane::wait_pod_ready(ns, "east", "client");
}

#[tokio::test]
async fn an_east_pod_reaches_west_through_the_gateway_over_mtls_and_not_across_roots() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    let mesh = Multicluster::install(&env, &CLUSTERS);
    mesh.link("west", "east");
    let ns = env.namespace("dp-multicluster", &CLUSTERS);
    workloads(&env, &ns);

    // The mirror made hello-west in east, its endpoint at west's gateway.
    let gateway = mesh.gateway_address("west");
    eventually(
        "hello-west in east, ready at west's gateway",
        Duration::from_secs(60),
        || {
            let out = ns.kubectl(
                "east",
                &[
                    "get",
                    "endpointslices",
                    "-l",
                    "kubernetes.io/service-name=hello-west",
                    "-o",
                    "jsonpath={range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready} {end}",
                ],
            );
            let want = format!("{gateway}=true");
            async move {
                if out.trim() == want {
                    Ok(())
                } else {
                    Err(out)
                }
            }
        },
    )
    .await;

    let client = dataplane::pod_netns(&env, &ns, "east", "client");
    let svc = dataplane::service_addr(&ns, "east", "hello-west");
    let pod = eventually(
        "hello-west answering east's client",
        Duration::from_secs(60),
        || {
            let got = call(&client, svc);
            async move { got }
        },
    )
    .await;

    // East's proxy spoke mTLS to the gateway, verified as the gateway.
    let east = dataplane::proxy_metrics(&client, "the client");
    let gateway_id = gateway_identity();
    let to_gateway = metric_sum(
        &east,
        "response_total",
        &[
            ("direction", "outbound"),
            ("tls", "true"),
            ("server_id", &gateway_id),
            ("status_code", "200"),
        ],
    );
    assert!(
        to_gateway >= 1.0,
        "east's proxy counted no mTLS response from {gateway_id}:\n{east}"
    );
    // West's backend got it from the gateway, over mTLS too.
    let backend = dataplane::pod_netns(&env, &ns, "west", &pod);
    let west = dataplane::proxy_metrics(&backend, "west's backend");
    let from_gateway = metric_sum(
        &west,
        "response_total",
        &[
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", &gateway_id),
            ("status_code", "200"),
        ],
    );
    assert!(
        from_gateway >= 1.0,
        "west's backend counted no mTLS request from {gateway_id}:\n{west}"
    );

    // West on a root of its own: its gateway and backend get certificates
    // east does not trust. The backend is injected again, as after any
    // change of root: its proxy carries the anchors it was injected with.
    mesh.reroot("west");
    hello(&env, &ns);
    dataplane::wait_rollout(&ns, "west", "hello");
    let refused = eventually(
        "hello-west refused once west has another root",
        Duration::from_secs(60),
        || {
            let got = call(&client, svc);
            async move {
                match got {
                    Ok(body) => Err(format!("still served by {body}")),
                    Err(e) => Ok(e),
                }
            }
        },
    )
    .await;
    for _ in 0..5 {
        let again = call(&client, svc);
        assert!(again.is_err(), "served across trust roots: {again:?}");
    }
    let logs =
        run_ok(
            env.kubectl("east")
                .args(["-n", &ns.name, "logs", "client", "-c", "tandem-proxy"]),
        );
    assert!(
        logs.contains("mTLS to an endpoint failed"),
        "the call failed ({refused}), but east's proxy logged no mTLS failure:\n{logs}"
    );
}

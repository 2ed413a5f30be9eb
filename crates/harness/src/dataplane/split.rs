//! The routing tests' shared setup: two meshed backends behind an apex
//! Service split between them, and a meshed client.

use std::net::SocketAddr;

use super::{
    PodNetns, ROUTING_IDENTITY, apex, backend, client_pod, inject, inject_backend, pod_netns,
    service_addr, traffic_split, wait_pod_ready, wait_rollout,
};
use crate::{Env, TestNamespace};

/// What [`routed_split`] set up.
pub struct RoutedSplit {
    /// The apex Service's ClusterIP and port.
    pub apex: SocketAddr,
    /// The network namespace of the meshed client pod `client`.
    pub client: PodNetns,
}

/// Meshed backends `b1` and `b2` with `replicas` pods each, the apex
/// Service `apex` selecting both, a TrafficSplit of it over `b1` and `b2`
/// with `weights`, and a meshed client pod `client`; returns once all of
/// them are ready. They run with [`ROUTING_IDENTITY`], so over mTLS.
pub fn routed_split(
    env: &Env,
    ns: &TestNamespace,
    cluster: &str,
    replicas: [u32; 2],
    weights: [u32; 2],
) -> RoutedSplit {
    let meshed_backend = |m: &str| inject_backend(env, cluster, m, ROUTING_IDENTITY);
    ns.apply(cluster, &meshed_backend(&backend("b1", replicas[0], true)));
    ns.apply(cluster, &meshed_backend(&backend("b2", replicas[1], true)));
    ns.apply(cluster, &apex("apex"));
    ns.apply(
        cluster,
        &traffic_split("apex", &[("b1", weights[0]), ("b2", weights[1])]),
    );
    ns.apply(
        cluster,
        &inject(env, cluster, &client_pod("client"), ROUTING_IDENTITY),
    );
    wait_rollout(ns, cluster, "b1");
    wait_rollout(ns, cluster, "b2");
    wait_pod_ready(ns, cluster, "client");
    RoutedSplit {
        apex: service_addr(ns, cluster, "apex"),
        client: pod_netns(env, ns, cluster, "client"),
    }
}

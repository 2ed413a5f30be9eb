//! The objects the benchmark creates, built by pure functions.
//!
//! Service `svc-K` has no selector, so no pod and no Kubernetes controller
//! is involved: its one EndpointSlice `svc-K` is written by the benchmark
//! alone, with one endpoint on a loopback address. TrafficSplit `split-J`
//! sends traffic to `svc-(2i)` with `svc-(2i+1)` as its fallback, where
//! `i = J mod pairs`: the splits beyond the first `pairs` share their services.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    core::v1::{Service, ServicePort, ServiceSpec},
    discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};
use serde_json::{Value, json};

pub const SPLIT_GROUP: &str = "split.smi-spec.io";
pub const SPLIT_VERSION: &str = "v1alpha2";
/// The failover controller's default selector is this label's presence.
pub const CONTROLLED_BY_LABEL: &str = "failover.linkerd.io/controlled-by";
pub const STATE_ANNOTATION: &str = "failover.tandem.io/state";
pub const LAST_TRANSITION_TIME_ANNOTATION: &str = "failover.tandem.io/last-transition-time";
use tandem_api::endpoints::SERVICE_NAME_LABEL;
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "bench.tandem.io";

/// At most this many services: their addresses come from 127.20.0.0/16.
pub const MAX_SERVICES: usize = 250 * 256;

pub fn traffic_split_api() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        SPLIT_GROUP,
        SPLIT_VERSION,
        "TrafficSplit",
    ))
}

pub fn service_name(k: usize) -> String {
    format!("svc-{k}")
}

pub fn split_name(j: usize) -> String {
    format!("split-{j}")
}

/// The primary service of split `j`, when `pairs` pairs of services exist.
pub fn primary_of(j: usize, pairs: usize) -> usize {
    2 * (j % pairs)
}

/// A loopback address per service, clear of the testbed's pod ranges
/// (127.10.0.0/16 and up, one /16 per cluster).
fn address(k: usize) -> String {
    format!("127.20.{}.{}", k / 250, k % 250 + 1)
}

pub fn service(ns: &str, k: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(service_name(k)),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// [`service`], headless: thousands of Services do not fit the testbed's
/// service range, and the failover controller reads only their slices.
pub fn headless_service(ns: &str, k: usize) -> Service {
    let mut svc = service(ns, k);
    if let Some(spec) = svc.spec.as_mut() {
        spec.cluster_ip = Some("None".into());
    }
    svc
}

pub fn endpoint_slice(ns: &str, k: usize) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(service_name(k)),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([
                (SERVICE_NAME_LABEL.to_string(), service_name(k)),
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            ])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: endpoints(k, true),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(80),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn endpoints(k: usize, ready: bool) -> Vec<Endpoint> {
    vec![Endpoint {
        addresses: vec![address(k)],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(false),
        }),
        ..Default::default()
    }]
}

/// The merge patch that makes service `k`'s one endpoint ready or not
/// (a merge patch replaces the list whole).
pub fn readiness_patch(k: usize, ready: bool) -> Value {
    json!({ "endpoints": endpoints(k, ready) })
}

/// The merge patch that moves service `k`'s one endpoint to another address
/// (`moved`) or back, ready all along: an endpoint change that changes no
/// Service's readiness.
pub fn move_patch(k: usize, moved: bool) -> Value {
    let mut endpoints = endpoints(k, true);
    if moved {
        endpoints[0].addresses = vec![format!("127.21.{}.{}", k / 250, k % 250 + 1)];
    }
    json!({ "endpoints": endpoints })
}

pub fn traffic_split(ns: &str, j: usize, pairs: usize) -> DynamicObject {
    let k = primary_of(j, pairs);
    split_between(ns, &split_name(j), k, k + 1)
}

/// Split `name` from service `primary` to service `fallback`.
pub fn split_between(ns: &str, name: &str, primary: usize, fallback: usize) -> DynamicObject {
    let primary = service_name(primary);
    let fallback = service_name(fallback);
    let mut obj = DynamicObject::new(name, &traffic_split_api())
        .within(ns)
        .data(json!({
            "spec": {
                "service": primary,
                "backends": [
                    {"service": primary, "weight": 1},
                    {"service": fallback, "weight": 0},
                ],
            }
        }));
    obj.metadata.labels = Some(BTreeMap::from([(
        CONTROLLED_BY_LABEL.to_string(),
        "bench".to_string(),
    )]));
    obj
}

/// The backend weights of a TrafficSplit, in spec order.
pub fn weights(obj: &DynamicObject) -> Vec<u64> {
    obj.data["spec"]["backends"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| match &b["weight"] {
                    Value::Number(n) => n.as_u64().unwrap_or(0),
                    Value::String(s) => s.parse().unwrap_or(0),
                    _ => 0,
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn state(obj: &DynamicObject) -> Option<String> {
    obj.metadata
        .annotations
        .as_ref()?
        .get(STATE_ANNOTATION)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pair_services_and_wrap_beyond_the_pairs() {
        let s = traffic_split("bench", 3, 1000);
        assert_eq!(s.metadata.name.as_deref(), Some("split-3"));
        assert_eq!(s.data["spec"]["backends"][0]["service"], "svc-6");
        assert_eq!(s.data["spec"]["backends"][1]["service"], "svc-7");
        assert_eq!(weights(&s), [1, 0]);
        let wrapped = traffic_split("bench", 1003, 1000);
        assert_eq!(wrapped.data["spec"]["backends"][0]["service"], "svc-6");
        assert_eq!(primary_of(1003, 1000), 6);
        assert_eq!(state(&s), None);
    }

    #[test]
    fn addresses_are_distinct_loopback_addresses() {
        assert_eq!(address(0), "127.20.0.1");
        assert_eq!(address(249), "127.20.0.250");
        assert_eq!(address(250), "127.20.1.1");
        assert_eq!(address(MAX_SERVICES - 1), "127.20.255.250");
        let slice = endpoint_slice("bench", 5);
        let labels = slice.metadata.labels.unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "svc-5");
        assert_eq!(slice.endpoints[0].addresses, ["127.20.0.6"]);
    }

    #[test]
    fn the_move_patch_keeps_the_endpoint_ready_on_another_address() {
        let p = move_patch(5, true);
        assert_eq!(p["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(p["endpoints"][0]["addresses"][0], "127.21.0.6");
        assert_eq!(
            move_patch(5, false)["endpoints"][0]["addresses"][0],
            "127.20.0.6"
        );
        let solo = split_between("bench", "restart-0", 2000, 2001);
        assert_eq!(solo.data["spec"]["backends"][1]["service"], "svc-2001");
    }

    #[test]
    fn the_readiness_patch_replaces_the_endpoint() {
        let p = readiness_patch(5, false);
        assert_eq!(p["endpoints"][0]["conditions"]["ready"], false);
        assert_eq!(p["endpoints"][0]["addresses"][0], "127.20.0.6");
    }

    #[test]
    fn weights_read_integers_and_quantity_strings() {
        let mut s = traffic_split("bench", 0, 1);
        s.data["spec"]["backends"][0]["weight"] = json!("0");
        s.data["spec"]["backends"][1]["weight"] = json!(1);
        assert_eq!(weights(&s), [0, 1]);
    }
}

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::DynamicObject;
use serde_json::{Value, json};
use tandem_failover::resource::Resource;

use super::*;

fn object(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("a valid object")
}

fn mk_split(annotations: Value, backends: Value) -> DynamicObject {
    object(json!({
        "apiVersion": "split.smi-spec.io/v1alpha2",
        "kind": "TrafficSplit",
        "metadata": {
            "name": "emoji-svc",
            "namespace": "emojivoto",
            "labels": {"failover.linkerd.io/controlled-by": "linkerd-failover"},
            "annotations": annotations,
        },
        "spec": {"service": "emoji-svc", "backends": backends},
    }))
}

fn mk_event(name: &str, reason: &str, time: &str) -> EventView {
    EventView {
        type_: "Normal".into(),
        reason: reason.into(),
        message: format!("{name} {reason}"),
        time: Some(time.into()),
        count: 1,
    }
}

/// What, through which version, the object, its Events, the state and weights shown.
type Case<'a> = (
    &'a str,
    &'a Resource,
    DynamicObject,
    Vec<EventView>,
    &'a str,
    Vec<(&'a str, u32, bool)>,
);

fn weights(v: &SplitView) -> Vec<(&str, u32, bool)> {
    v.backends
        .iter()
        .map(|b| (b.service.as_str(), b.weight, b.active))
        .collect()
}

#[test]
fn splits_show_weights_state_and_newest_events() {
    let v1 = Resource::traffic_split("v1alpha1");
    let v2 = Resource::traffic_split("v1alpha2");
    let failed_over = json!({
        "failover.linkerd.io/primary-service": "emoji-svc",
        "failover.tandem.io/state": "failover",
        "failover.tandem.io/last-transition-time": "2026-01-01T00:00:05Z",
    });
    let cases: Vec<Case> = vec![
        (
            "before the controller wrote anything",
            &v2,
            mk_split(
                json!({"failover.linkerd.io/primary-service": "emoji-svc"}),
                json!([{"service": "emoji-svc", "weight": 1}, {"service": "emoji-svc-west", "weight": 0}]),
            ),
            vec![],
            "unknown",
            vec![("emoji-svc", 1, true), ("emoji-svc-west", 0, false)],
        ),
        (
            "failed over, under v1alpha1 with quantities",
            &v1,
            mk_split(
                failed_over.clone(),
                json!([{"service": "emoji-svc", "weight": "0"}, {"service": "emoji-svc-west", "weight": "1"}]),
            ),
            vec![mk_event(
                "emoji-svc",
                "FailoverToFallback",
                "2026-01-01T00:00:05Z",
            )],
            "failover",
            vec![("emoji-svc", 0, false), ("emoji-svc-west", 1, true)],
        ),
        (
            "a fractional quantity reads as thousandths",
            &v1,
            mk_split(
                failed_over.clone(),
                json!([{"service": "a", "weight": "500m"}, {"service": "b", "weight": 0}]),
            ),
            vec![],
            "failover",
            vec![("a", 500, true), ("b", 0, false)],
        ),
        (
            "every backend down",
            &v2,
            mk_split(
                json!({"failover.tandem.io/state": "no-ready-backends"}),
                json!([{"service": "a", "weight": 1}, {"service": "b", "weight": 0}]),
            ),
            vec![],
            "no-ready-backends",
            vec![("a", 1, true), ("b", 0, false)],
        ),
    ];
    for (what, res, obj, events, state, want) in cases {
        let v = split_view(res, obj, events.clone());
        assert_eq!(v.state, state, "{what}");
        assert_eq!(weights(&v), want, "{what}");
        assert_eq!(v.error, None, "{what}");
        assert_eq!(v.service.as_deref(), Some("emoji-svc"), "{what}");
        assert_eq!(
            v.controlled_by.as_deref(),
            Some("linkerd-failover"),
            "{what}"
        );
        assert_eq!(v.api_version, res.api.api_version, "{what}");
        assert_eq!(v.events, events, "{what}");
    }
}

#[test]
fn a_split_that_cannot_be_read_is_an_error_row() {
    let res = Resource::traffic_split("v1alpha2");
    for (what, backends, want) in [
        ("no backends", Value::Null, "spec.backends is missing"),
        (
            "a weight that is no quantity",
            json!([{"service": "a", "weight": "lots"}]),
            "spec.backends[0]",
        ),
        (
            "a backend without a service",
            json!([{"weight": 1}]),
            "spec.backends[0].service is missing",
        ),
    ] {
        let v = split_view(&res, mk_split(json!({}), backends), vec![]);
        assert_eq!(v.state, "invalid", "{what}");
        assert!(v.backends.is_empty(), "{what}");
        let error = v.error.unwrap_or_default();
        assert!(error.contains(want), "{what}: {error}");
        assert_eq!(v.name, "emoji-svc", "{what}");
    }
}

#[test]
fn a_split_keeps_its_newest_events_only() {
    let res = Resource::traffic_split("v1alpha2");
    let events: Vec<EventView> = (0..8)
        .map(|i| mk_event("s", &format!("R{i}"), &format!("2026-01-01T00:00:0{i}Z")))
        .rev()
        .collect();
    let v = split_view(
        &res,
        mk_split(json!({}), json!([{"service": "a", "weight": 1}])),
        events,
    );
    let reasons: Vec<&str> = v.events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["R7", "R6", "R5", "R4", "R3"]);
}

#[test]
fn events_are_grouped_by_their_object() {
    let ev = |ns: &str, name: &str, reason: &str, count: Option<i32>| Event {
        involved_object: ObjectReference {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            kind: Some("TrafficSplit".into()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        count,
        ..Default::default()
    };
    let grouped = events_by_object(vec![
        ev("a", "s", "FailoverToFallback", Some(2)),
        ev("b", "s", "InvalidSplit", None),
        ev("a", "s", "FailbackToPrimary", None),
    ]);
    let a = &grouped[&("a".to_string(), "s".to_string())];
    assert_eq!(a.len(), 2);
    assert_eq!(
        (a[0].reason.as_str(), a[0].count),
        ("FailoverToFallback", 2)
    );
    assert_eq!(a[1].count, 1, "no count means it happened once");
    assert_eq!(grouped[&("b".to_string(), "s".to_string())].len(), 1);
    assert_eq!(grouped.len(), 2);
}

fn mk_link(status: Value) -> DynamicObject {
    object(json!({
        "apiVersion": "multicluster.tandem.io/v1alpha1",
        "kind": "Link",
        "metadata": {"name": "west", "namespace": "tandem-multicluster"},
        "spec": {
            "targetClusterName": "west",
            "clusterCredentialsSecret": "cluster-credentials-west",
            "gatewayAddress": "198.18.0.10",
        },
        "status": status,
    }))
}

#[test]
fn gateways_show_what_the_mirror_wrote() {
    let v = gateway_view(mk_link(json!({
        "mirroredServices": 3,
        "failedServices": 1,
        "lastHeartbeatTime": "2026-01-01T00:00:00Z",
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Mirroring", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }],
        "gateway": {
            "alive": true,
            "addresses": ["198.18.0.10"],
            "probes": [{"address": "198.18.0.10:4191", "alive": true, "lastError": null}],
            "latencyMsP50": 2, "latencyMsP95": 4, "latencyMsP99": 9,
        },
    })));
    assert_eq!(v.error, None);
    assert_eq!(
        (v.namespace.as_str(), v.link.as_str()),
        ("tandem-multicluster", "west")
    );
    assert_eq!(v.target_cluster, "west");
    assert_eq!(v.port, 4143, "the default gateway port");
    assert_eq!(v.alive, Some(true));
    assert_eq!(
        (v.latency_ms_p50, v.latency_ms_p95, v.latency_ms_p99),
        (Some(2), Some(4), Some(9))
    );
    assert_eq!((v.mirrored_services, v.failed_services), (3, 1));
    assert_eq!(v.probes.len(), 1);
    assert_eq!(v.conditions[0].type_, "Ready");
    assert_eq!(
        v.last_heartbeat_time.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
}

#[test]
fn a_link_without_status_is_not_yet_probed() {
    let v = gateway_view(mk_link(Value::Null));
    assert_eq!(v.error, None);
    assert_eq!(v.alive, None);
    assert!(v.probes.is_empty());
    assert_eq!(v.mirrored_services, 0);
}

#[test]
fn a_malformed_link_is_an_error_row() {
    let mut link = mk_link(Value::Null);
    link.data["spec"]["gatewayPort"] = json!("not a port");
    let v = gateway_view(link);
    assert_eq!(v.link, "west");
    assert!(
        v.error
            .as_deref()
            .unwrap_or_default()
            .contains("cannot read this Link"),
        "{:?}",
        v.error
    );
}

#[test]
fn the_state_serializes_for_scripts() {
    let state = State {
        refresh_ms: 1000,
        clusters: vec![ClusterView {
            context: "east".into(),
            stats: StatsView::NotInstalled {
                message: "viz not installed".into(),
            },
            splits: Section::failed("no TrafficSplit CRD"),
            ..Default::default()
        }],
    };
    let v = serde_json::to_value(&state).unwrap();
    assert_eq!(v["clusters"][0]["stats"]["state"], "not-installed");
    assert_eq!(v["clusters"][0]["splits"]["error"], "no TrafficSplit CRD");
    let back: State = serde_json::from_value(v).unwrap();
    assert_eq!(back, state);
}

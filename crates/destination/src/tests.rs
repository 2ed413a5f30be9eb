//! The index and the decisions, with objects built by `mk_*` helpers and
//! folded as the watches fold them. No cluster.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::{
    api::{
        core::v1::{
            ObjectReference, Pod, PodIP, PodSpec, PodStatus, Service, ServicePort, ServiceSpec,
        },
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::{
        apis::meta::v1::{ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::api::DynamicObject;
use linkerd2_proxy_api::destination::update;
use tandem_api::smi::v1alpha1::{TrafficSplit, TrafficSplitBackend, TrafficSplitSpec};

use crate::{
    grpc::diff,
    index::*,
    objects::{self, SplitKind, SvcKey},
};

const DOMAIN: &str = "cluster.local";

fn index() -> Index {
    Index::new(Config {
        cluster_domain: DOMAIN.into(),
        control_plane_ns: "tandem".into(),
        trust_domain: DOMAIN.into(),
    })
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn mk_svc(ns: &str, name: &str, ip: &str, labels: &[(&str, &str)], ann: &[(&str, &str)]) -> Change {
    let svc = Service {
        metadata: ObjectMeta {
            labels: Some(map(labels)),
            annotations: Some(map(ann)),
            ..meta(ns, name)
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    Change::Services(Event::Apply(objects::service(svc)))
}

/// A slice of `svc` with port `grpc` → `port`: (ip, ready, pod).
fn mk_slice(
    ns: &str,
    svc: &str,
    port: i32,
    eps: &[(&str, bool, Option<&str>)],
    ann: &[(&str, &str)],
) -> Change {
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            labels: Some(map(&[("kubernetes.io/service-name", svc)])),
            annotations: Some(map(ann)),
            ..meta(ns, &format!("{svc}-abc"))
        },
        address_type: "IPv4".into(),
        endpoints: eps
            .iter()
            .map(|(ip, ready, pod)| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    ..Default::default()
                }),
                target_ref: pod.map(|p| ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some(p.into()),
                    namespace: Some(ns.into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("grpc".into()),
            port: Some(port),
            ..Default::default()
        }]),
    };
    Change::Slices(Event::Apply(objects::slice(slice)))
}

fn mk_pod(ns: &str, name: &str, ip: &str, meshed: bool, ann: &[(&str, &str)]) -> Change {
    let mut labels = map(&[("pod-template-hash", "5d8f")]);
    if meshed {
        labels.insert("linkerd.io/control-plane-ns".into(), "tandem".into());
    }
    let pod = Pod {
        metadata: ObjectMeta {
            labels: Some(labels),
            annotations: Some(map(ann)),
            owner_references: Some(vec![OwnerReference {
                kind: "ReplicaSet".into(),
                name: "emoji-5d8f".into(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..meta(ns, name)
        },
        spec: Some(PodSpec {
            service_account_name: Some("emoji".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            ..Default::default()
        }),
    };
    Change::Pods(Event::Apply(objects::pod(pod)))
}

fn mk_ts(
    ns: &str,
    name: &str,
    apex: &str,
    created: &str,
    backends: &[(&str, IntOrString)],
) -> Change {
    let mut ts = TrafficSplit::new(
        name,
        TrafficSplitSpec {
            service: apex.into(),
            backends: backends
                .iter()
                .map(|(s, w)| TrafficSplitBackend {
                    service: s.to_string(),
                    weight: w.clone(),
                })
                .collect(),
        },
    );
    ts.metadata.namespace = Some(ns.into());
    ts.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        created.parse().unwrap(),
    ));
    Change::Splits(
        SplitKind::TrafficSplit,
        Event::Apply(objects::traffic_split(ts, DOMAIN)),
    )
}

fn mk_route(ns: &str, name: &str, spec: serde_json::Value) -> Change {
    let route: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"namespace": ns, "name": name}, "spec": spec,
    }))
    .unwrap();
    Change::Splits(
        SplitKind::HttpRoute,
        Event::Apply(objects::http_route(route, DOMAIN)),
    )
}

fn int(i: i32) -> IntOrString {
    IntOrString::Int(i)
}

fn q(s: &str) -> IntOrString {
    IntOrString::String(s.into())
}

fn svc(ns: &str, name: &str) -> SvcKey {
    SvcKey::new(ns, name)
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn overrides_of(idx: &Index, ns: &str, name: &str) -> Vec<(String, u32)> {
    idx.profile(&ProfileTarget::Service(svc(ns, name), 8080))
        .overrides
        .into_iter()
        .map(|o| (o.authority, o.weight))
        .collect()
}

fn emoji() -> Index {
    let mut idx = index();
    idx.apply(mk_svc("ev", "emoji-svc", "10.96.0.10", &[], &[]));
    idx
}

// === endpoints ===

#[test]
fn endpoints_are_the_ready_addresses_with_pod_metadata() {
    let mut idx = emoji();
    idx.apply(mk_pod("ev", "emoji-1", "10.0.0.1", true, &[]));
    idx.apply(mk_pod("ev", "emoji-2", "10.0.0.2", false, &[]));
    idx.apply(mk_slice(
        "ev",
        "emoji-svc",
        9090,
        &[
            ("10.0.0.1", true, Some("emoji-1")),
            ("10.0.0.2", true, Some("emoji-2")),
            ("10.0.0.3", false, None),
        ],
        &[],
    ));
    let eps = idx.endpoints(&svc("ev", "emoji-svc"), 8080);
    assert!(eps.exists);
    assert_eq!(
        eps.labels,
        map(&[("namespace", "ev"), ("service", "emoji-svc")])
    );
    let addrs: Vec<SocketAddr> = eps.addrs.keys().copied().collect();
    assert_eq!(
        addrs,
        [sa("10.0.0.1:9090"), sa("10.0.0.2:9090")],
        "not-ready left out, target port used"
    );

    let meshed = &eps.addrs[&sa("10.0.0.1:9090")];
    assert_eq!(meshed.weight, 10_000);
    assert_eq!(
        meshed.identity.as_deref(),
        Some("emoji.ev.serviceaccount.identity.tandem.cluster.local")
    );
    assert!(meshed.h2);
    assert_eq!(
        meshed.labels,
        map(&[
            ("control_plane_ns", "tandem"),
            ("deployment", "emoji"),
            ("pod", "emoji-1"),
            ("pod_template_hash", "5d8f"),
            ("serviceaccount", "emoji"),
        ])
    );
    let plain = &eps.addrs[&sa("10.0.0.2:9090")];
    assert_eq!(
        (plain.identity.as_ref(), plain.h2),
        (None, false),
        "unmeshed pod"
    );
    assert_eq!(plain.labels["deployment"], "emoji");
}

#[test]
fn a_skipped_inbound_port_gets_no_identity() {
    let mut idx = emoji();
    let ann = [("config.linkerd.io/skip-inbound-ports", "22,9000-9100")];
    idx.apply(mk_pod("ev", "emoji-1", "10.0.0.1", true, &ann));
    idx.apply(mk_slice(
        "ev",
        "emoji-svc",
        9090,
        &[("10.0.0.1", true, Some("emoji-1"))],
        &[],
    ));
    let eps = idx.endpoints(&svc("ev", "emoji-svc"), 8080);
    let a = &eps.addrs[&sa("10.0.0.1:9090")];
    assert_eq!((a.identity.as_ref(), a.h2), (None, false));
}

#[test]
fn opaque_service_ports() {
    let mut idx = emoji();
    let profile = |idx: &Index, name: &str| {
        idx.profile(&ProfileTarget::Service(svc("ev", name), 8080))
            .opaque
    };
    assert!(
        !profile(&idx, "emoji-svc"),
        "8080 is no default opaque port"
    );
    let ann = [("config.linkerd.io/opaque-ports", "8080")];
    idx.apply(mk_svc("ev", "db", "10.96.0.30", &[], &ann));
    assert!(profile(&idx, "db"));
    let default = idx.profile(&ProfileTarget::Service(svc("ev", "emoji-svc"), 3306));
    assert!(default.opaque, "3306 is a default opaque port");
}

#[test]
fn mirror_endpoints_go_through_the_gateway() {
    let mut idx = index();
    idx.apply(mk_svc(
        "ev",
        "emoji-svc-west",
        "10.96.0.11",
        &[
            ("mirror.linkerd.io/mirrored-service", "true"),
            ("mirror.linkerd.io/cluster-name", "west"),
        ],
        &[(
            "mirror.linkerd.io/remote-svc-fq-name",
            "emoji-svc.ev.svc.cluster.local",
        )],
    ));
    let gw = "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.tandem.cluster.local";
    idx.apply(mk_slice(
        "ev",
        "emoji-svc-west",
        4143,
        &[("172.18.0.5", true, None)],
        &[("mirror.linkerd.io/remote-gateway-identity", gw)],
    ));
    let eps = idx.endpoints(&svc("ev", "emoji-svc-west"), 8080);
    let a = &eps.addrs[&sa("172.18.0.5:4143")];
    assert_eq!(a.identity.as_deref(), Some(gw));
    assert_eq!(
        a.authority_override.as_deref(),
        Some("emoji-svc.ev.svc.cluster.local:8080")
    );
    assert!(a.h2);
    assert_eq!(
        a.labels,
        map(&[
            ("target_cluster", "west"),
            ("target_service", "emoji-svc"),
            ("target_service_namespace", "ev")
        ])
    );
}

#[test]
fn unknown_services_and_ports() {
    let idx = emoji();
    assert_eq!(
        idx.endpoints(&svc("ev", "nope"), 8080),
        Endpoints::default()
    );
    let eps = idx.endpoints(&svc("ev", "emoji-svc"), 1234);
    assert!(
        eps.exists && eps.addrs.is_empty(),
        "a port the Service lacks: exists, empty"
    );
}

// === profiles ===

/// A name, the changes applied, the overrides wanted.
type Case = (&'static str, Vec<Change>, Vec<(String, u32)>);

#[test]
fn overrides_from_splits() {
    let a = |s: &str| format!("{s}.ev.svc.cluster.local:8080");
    let t0 = "2026-01-01T00:00:00Z";
    let route = |weights: serde_json::Value| {
        serde_json::json!({
            "parentRefs": [{"group": "core", "kind": "Service", "name": "emoji-svc"}],
            "rules": [{"backendRefs": weights}],
        })
    };
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("no split, no overrides", vec![], vec![]),
        ("v1alpha2 integers", vec![mk_ts("ev", "s", "emoji-svc", t0, &[("emoji-svc", int(1)), ("emoji-svc-west", int(0))])],
            vec![(a("emoji-svc"), 10_000), (a("emoji-svc-west"), 0)]),
        ("v1alpha1 quantities", vec![mk_ts("ev", "s", "emoji-svc", t0, &[("emoji-svc", q("500m")), ("emoji-svc-west", q("1500m"))])],
            vec![(a("emoji-svc"), 5_000), (a("emoji-svc-west"), 15_000)]),
        ("a FQDN apex and backend", vec![mk_ts("ev", "s", "emoji-svc.ev.svc.cluster.local", t0, &[("emoji-svc-west.ev.svc.cluster.local", int(3))])],
            vec![(a("emoji-svc-west"), 30_000)]),
        ("a backend in another namespace is left out", vec![mk_ts("ev", "s", "emoji-svc", t0, &[("emoji-svc", int(1)), ("x.other", int(1))])],
            vec![(a("emoji-svc"), 10_000)]),
        ("a nonsense weight: the split is ignored", vec![mk_ts("ev", "s", "emoji-svc", t0, &[("emoji-svc", q("lots"))])], vec![]),
        ("another apex's split", vec![mk_ts("ev", "s", "web-svc", t0, &[("emoji-svc", int(1))])], vec![]),
        ("an apex in another namespace", vec![mk_ts("other", "s", "emoji-svc.ev", t0, &[("emoji-svc", int(1))])], vec![]),
        ("HTTPRoute parent in another namespace", vec![mk_route("other", "r", serde_json::json!({
            "parentRefs": [{"kind": "Service", "name": "emoji-svc", "namespace": "ev"}],
            "rules": [{"backendRefs": [{"name": "emoji-svc"}]}]}))], vec![]),
        ("two splits: the oldest", vec![
            mk_ts("ev", "young", "emoji-svc", "2026-02-01T00:00:00Z", &[("emoji-svc", int(1))]),
            mk_ts("ev", "old", "emoji-svc", t0, &[("emoji-svc-west", int(1))]),
        ], vec![(a("emoji-svc-west"), 10_000)]),
        ("a bad split leaves the good one", vec![
            mk_ts("ev", "bad", "emoji-svc", t0, &[("emoji-svc", q("1x"))]),
            mk_ts("ev", "good", "emoji-svc", "2026-02-01T00:00:00Z", &[("emoji-svc-west", int(2))]),
        ], vec![(a("emoji-svc-west"), 20_000)]),
        ("HTTPRoute weights", vec![mk_route("ev", "r", route(serde_json::json!([
            {"name": "emoji-svc", "port": 8080, "weight": 3}, {"name": "emoji-svc-west", "port": 8080}])))],
            vec![(a("emoji-svc"), 30_000), (a("emoji-svc-west"), 10_000)]),
        ("HTTPRoute backend in another namespace", vec![mk_route("ev", "r", route(serde_json::json!([
            {"name": "emoji-svc", "weight": 1}, {"name": "emoji-svc", "namespace": "other", "weight": 1}])))],
            vec![(a("emoji-svc"), 10_000)]),
        ("HTTPRoute of a Gateway parent", vec![mk_route("ev", "r", serde_json::json!({
            "parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "emoji-svc"}]}]}))], vec![]),
        ("HTTPRoute bad weight", vec![mk_route("ev", "r", route(serde_json::json!([{"name": "emoji-svc", "weight": -1}])))], vec![]),
    ];
    for (name, changes, want) in cases {
        let mut idx = emoji();
        for c in changes {
            idx.apply(c);
        }
        assert_eq!(overrides_of(&idx, "ev", "emoji-svc"), want, "{name}");
    }
}

#[test]
fn profiles_by_name_and_by_cluster_ip() {
    let mut idx = emoji();
    idx.apply(mk_pod("ev", "emoji-1", "10.0.0.1", true, &[]));
    let by_name = idx.profile(&ProfileTarget::Service(svc("ev", "emoji-svc"), 8080));
    assert_eq!(by_name.fqn, "emoji-svc.ev.svc.cluster.local");
    assert_eq!(by_name.endpoint, None);
    let ip: IpAddr = "10.96.0.10".parse().unwrap();
    assert_eq!(idx.profile(&ProfileTarget::Ip(ip, 8080)), by_name);

    // An IP of no Service: a direct endpoint, with the pod's identity if a pod has it.
    let pod_ip: IpAddr = "10.0.0.1".parse().unwrap();
    let direct = idx.profile(&ProfileTarget::Ip(pod_ip, 9090));
    assert_eq!(direct.fqn, "");
    let (addr, a) = direct.endpoint.unwrap();
    assert_eq!(addr, sa("10.0.0.1:9090"));
    assert!(a.identity.is_some() && a.h2);
    let nobody = idx.profile(&ProfileTarget::Ip("192.0.2.1".parse().unwrap(), 80));
    let (_, a) = nobody.endpoint.unwrap();
    assert_eq!((a.weight, a.identity), (10_000, None));
}

// === subscriptions ===

#[test]
fn subscribers_see_changes_at_once_and_only_changes() {
    let mut idx = emoji();
    let t0 = "2026-01-01T00:00:00Z";
    let mut profile = idx.profile_rx(ProfileTarget::Ip("10.96.0.10".parse().unwrap(), 8080));
    let mut eps = idx.endpoints_rx(svc("ev", "emoji-svc"), 8080);
    let mut unknown = idx.endpoints_rx(svc("ev", "later"), 8080);
    assert!(!unknown.borrow_and_update().exists);

    idx.apply(mk_ts(
        "ev",
        "s",
        "emoji-svc",
        t0,
        &[("emoji-svc", int(3)), ("emoji-svc-west", int(1))],
    ));
    assert!(profile.has_changed().unwrap());
    let weights: Vec<u32> = profile
        .borrow_and_update()
        .overrides
        .iter()
        .map(|o| o.weight)
        .collect();
    assert_eq!(weights, [30_000, 10_000]);
    assert!(
        !eps.has_changed().unwrap(),
        "a split does not touch endpoints"
    );

    // The same split again: nothing to send.
    idx.apply(mk_ts(
        "ev",
        "s",
        "emoji-svc",
        t0,
        &[("emoji-svc", int(3)), ("emoji-svc-west", int(1))],
    ));
    assert!(!profile.has_changed().unwrap());

    idx.apply(mk_slice(
        "ev",
        "emoji-svc",
        8080,
        &[("10.0.0.1", true, None)],
        &[],
    ));
    assert!(eps.has_changed().unwrap());
    assert_eq!(eps.borrow_and_update().addrs.len(), 1);

    idx.apply(mk_svc("ev", "later", "10.96.0.12", &[], &[]));
    assert!(unknown.borrow_and_update().exists, "a Service that appears");

    // Another namespace's change is not even looked at, and a dropped
    // receiver's subscription goes.
    drop(unknown);
    idx.apply(mk_svc("other", "x", "10.96.0.13", &[], &[]));
    assert_eq!(idx.subscriptions(), (1, 1));
}

#[test]
fn moves_reach_both_the_old_and_the_new_subscriber() {
    let mut idx = emoji();
    idx.apply(mk_svc("ev", "web-svc", "10.96.0.20", &[], &[]));
    let t0 = "2026-01-01T00:00:00Z";
    let mut emoji_p = idx.profile_rx(ProfileTarget::Service(svc("ev", "emoji-svc"), 8080));
    let mut web_p = idx.profile_rx(ProfileTarget::Service(svc("ev", "web-svc"), 8080));
    idx.apply(mk_ts("ev", "s", "emoji-svc", t0, &[("emoji-svc", int(1))]));
    assert_eq!(emoji_p.borrow_and_update().overrides.len(), 1);
    assert!(!web_p.has_changed().unwrap());
    // The split now names another apex: the old one loses its overrides.
    idx.apply(mk_ts("ev", "s", "web-svc", t0, &[("emoji-svc", int(1))]));
    assert!(emoji_p.borrow_and_update().overrides.is_empty());
    assert_eq!(web_p.borrow_and_update().overrides.len(), 1);

    // A pod that becomes meshed changes the endpoints that point at it.
    idx.apply(mk_pod("ev", "emoji-1", "10.0.0.1", false, &[]));
    idx.apply(mk_slice(
        "ev",
        "emoji-svc",
        8080,
        &[("10.0.0.1", true, Some("emoji-1"))],
        &[],
    ));
    let mut eps = idx.endpoints_rx(svc("ev", "emoji-svc"), 8080);
    assert!(
        eps.borrow_and_update()
            .addrs
            .values()
            .all(|a| a.identity.is_none())
    );
    idx.apply(mk_pod("ev", "emoji-1", "10.0.0.1", true, &[]));
    assert!(
        eps.borrow_and_update()
            .addrs
            .values()
            .all(|a| a.identity.is_some())
    );
    idx.apply(Change::Slices(Event::Reset(vec![])));
    assert!(
        eps.borrow_and_update().addrs.is_empty(),
        "a re-list without the slice"
    );
}

// === the wire ===

fn kinds(updates: &[linkerd2_proxy_api::destination::Update]) -> Vec<String> {
    updates
        .iter()
        .map(|u| match u.update.as_ref().unwrap() {
            update::Update::Add(s) => format!("add {}", s.addrs.len()),
            update::Update::Remove(s) => format!("remove {}", s.addrs.len()),
            update::Update::NoEndpoints(n) => format!("none exists={}", n.exists),
        })
        .collect()
}

#[test]
fn diffs() {
    let mut idx = emoji();
    let none = idx.endpoints(&svc("ev", "nope"), 8080);
    let empty = idx.endpoints(&svc("ev", "emoji-svc"), 8080);
    idx.apply(mk_slice(
        "ev",
        "emoji-svc",
        8080,
        &[("10.0.0.1", true, None), ("10.0.0.2", true, None)],
        &[],
    ));
    let two = idx.endpoints(&svc("ev", "emoji-svc"), 8080);
    idx.apply(mk_slice(
        "ev",
        "emoji-svc",
        8080,
        &[("10.0.0.2", true, None), ("10.0.0.3", true, None)],
        &[],
    ));
    let moved = idx.endpoints(&svc("ev", "emoji-svc"), 8080);
    #[rustfmt::skip]
    let cases: Vec<(&str, Option<&Endpoints>, &Endpoints, Vec<&str>)> = vec![
        ("unknown first", None, &none, vec!["none exists=false"]),
        ("empty first", None, &empty, vec!["none exists=true"]),
        ("full set first", None, &two, vec!["add 2"]),
        ("one in, one out", Some(&two), &moved, vec!["add 1", "remove 1"]),
        ("no change", Some(&two), &two, vec![]),
        ("all gone", Some(&two), &empty, vec!["remove 2"]),
        ("service deleted", Some(&two), &none, vec!["none exists=false"]),
        ("still unknown", Some(&none), &none, vec![]),
        ("appears", Some(&none), &two, vec!["add 2"]),
    ];
    for (name, old, new, want) in cases {
        assert_eq!(kinds(&diff(old, new)), want, "{name}");
    }
}

use super::*;
use serde_json::json;

fn mk_link(spec: serde_json::Value) -> Link {
    let mut s = json!({
        "targetClusterName": "west",
        "clusterCredentialsSecret": "cluster-credentials-west",
        "gatewayAddress": "127.20.0.1",
    });
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "multicluster.tandem.io/v1alpha1",
        "kind": "Link",
        "metadata": {"name": "west", "namespace": "tandem-multicluster"},
        "spec": s,
    }))
    .unwrap()
}

fn mk_svc(v: serde_json::Value) -> Service {
    let mut base = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "emoji-svc", "namespace": "emojivoto"},
        "spec": {"ports": [{"name": "grpc", "port": 8080, "targetPort": 8080}]},
    });
    merge(&mut base, v);
    serde_json::from_value(base).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn labels(s: &Service) -> BTreeMap<String, String> {
    s.metadata.labels.clone().unwrap_or_default()
}

fn annotations(s: &Service) -> BTreeMap<String, String> {
    s.metadata.annotations.clone().unwrap_or_default()
}

#[test]
fn mirror_names() {
    let cases = [
        ("emoji-svc", "west", "emoji-svc-west"),
        ("web", "east-1", "web-east-1"),
        ("a", "b", "a-b"),
    ];
    for (svc, cluster, want) in cases {
        assert_eq!(mirror_name(svc, cluster), want);
    }
    assert_eq!(slice_name("emoji-svc-west"), "emoji-svc-west-gateway");
}

#[test]
fn exclusion_patterns() {
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases: &[(&str, &[&str], bool)] = &[
        ("app", &[], false),
        ("app", &["app"], true),
        ("app", &["ap"], false),
        ("app.kubernetes.io/name", &["app.kubernetes.io/*"], true),
        ("app.kubernetes.io", &["app.kubernetes.io/*"], false),
        ("app.kubernetes.io/", &["app.kubernetes.io/*"], true),
        ("x.io/a", &["y.io/*", "x.io/a"], true),
        // Only a trailing `/*` is a prefix.
        ("abc", &["a*"], false),
        ("a*", &["a*"], true),
        ("team", &["*"], false),
    ];
    for (key, patterns, want) in cases {
        assert_eq!(
            excluded(key, &p(patterns)),
            *want,
            "{key} against {patterns:?}"
        );
    }
}

#[test]
fn mirror_services() {
    let link = mk_link(json!({
        "targetClusterDomain": "west.local",
        "gatewayIdentity": "gateway.tandem-multicluster.serviceaccount.identity.tandem.west.local",
        "excludedLabels": ["team", "internal.example.com/*"],
        "excludedAnnotations": ["secret-note"],
    }));
    let remote = mk_svc(json!({
        "metadata": {
            "uid": "remote-uid",
            "resourceVersion": "42",
            "labels": {
                "app": "emoji",
                "team": "a",
                "internal.example.com/cost": "1",
                "mirror.linkerd.io/exported": "true",
                "multicluster.tandem.io/link": "forged",
            },
            "annotations": {
                "note": "kept",
                "secret-note": "dropped",
                "mirror.linkerd.io/anything": "dropped",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
        },
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.97.0.10",
            "clusterIPs": ["10.97.0.10"],
            "selector": {"app": "emoji"},
            "ports": [
                {"name": "grpc", "port": 8080, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
                {"name": "metrics", "port": 8801, "targetPort": 8801, "nodePort": 30081},
            ],
        },
    }));
    let m = mirror_service(&remote, &link).unwrap();
    assert_eq!(m.metadata.name.as_deref(), Some("emoji-svc-west"));
    assert_eq!(m.metadata.namespace.as_deref(), Some("emojivoto"));
    assert!(m.metadata.uid.is_none() && m.metadata.resource_version.is_none());
    let spec = m.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(spec.cluster_ip.is_none() && spec.cluster_ips.is_none());
    assert!(
        spec.selector.is_none(),
        "the mirror's endpoints are written, not selected"
    );
    let ports = spec.ports.as_ref().unwrap();
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0].name.as_deref(), Some("grpc"));
    assert_eq!(ports[0].port, 8080);
    assert_eq!(ports[0].app_protocol.as_deref(), Some("kubernetes.io/h2c"));
    assert!(
        ports
            .iter()
            .all(|p| p.node_port.is_none() && p.target_port.is_none())
    );
    assert_eq!(
        ports[1].protocol.as_deref(),
        Some("TCP"),
        "protocol defaulted"
    );

    let l = labels(&m);
    let want_labels: BTreeMap<String, String> = [
        ("app", "emoji"),
        ("mirror.linkerd.io/mirrored-service", "true"),
        ("mirror.linkerd.io/cluster-name", "west"),
        ("multicluster.tandem.io/link", "tandem-multicluster.west"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(l, want_labels);
    let a = annotations(&m);
    assert_eq!(a.get("note").map(String::as_str), Some("kept"));
    assert!(!a.contains_key("secret-note"));
    assert!(!a.contains_key("mirror.linkerd.io/anything"));
    assert!(!a.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    assert_eq!(
        a.get(REMOTE_SVC_FQ_NAME_ANNOTATION).map(String::as_str),
        Some("emoji-svc.emojivoto.svc.west.local")
    );
    assert_eq!(
        a.get(REMOTE_GATEWAY_IDENTITY_ANNOTATION)
            .map(String::as_str),
        Some("gateway.tandem-multicluster.serviceaccount.identity.tandem.west.local")
    );
    assert_eq!(
        a.get(LINK_ANNOTATION).map(String::as_str),
        Some("tandem-multicluster/west")
    );

    // No gateway identity: no annotation; the default domain.
    let plain = mirror_service(&mk_svc(json!({})), &mk_link(json!({}))).unwrap();
    let a = annotations(&plain);
    assert!(!a.contains_key(REMOTE_GATEWAY_IDENTITY_ANNOTATION));
    assert_eq!(
        a.get(REMOTE_SVC_FQ_NAME_ANNOTATION).map(String::as_str),
        Some("emoji-svc.emojivoto.svc.cluster.local")
    );
}

#[test]
fn services_that_cannot_be_mirrored() {
    let link = mk_link(json!({}));
    let long = "x".repeat(59);
    let cases = [
        (
            json!({"spec": {"type": "ExternalName", "externalName": "example.com", "ports": null}}),
            "ExternalName",
        ),
        (json!({"spec": {"ports": []}}), "no ports"),
        (json!({"spec": {"ports": null}}), "no ports"),
        (
            json!({"spec": {"ports": [{"port": 80}, {"name": "b", "port": 81}]}}),
            "must name each",
        ),
        (json!({"metadata": {"name": long}}), "longer than 63"),
    ];
    for (patch, want) in cases {
        let err = mirror_service(&mk_svc(patch.clone()), &link).unwrap_err();
        assert!(err.contains(want), "{patch}: {err}");
    }
    // A headless Service is mirrored as a plain ClusterIP Service.
    let headless = mk_svc(json!({"spec": {"clusterIP": "None"}}));
    let m = mirror_service(&headless, &link).unwrap();
    assert!(m.spec.unwrap().cluster_ip.is_none());
    // One unnamed port is fine.
    let one = mk_svc(json!({"spec": {"ports": [{"port": 80}]}}));
    assert!(mirror_service(&one, &link).is_ok());
}

#[test]
fn mirror_slices() {
    let link = mk_link(json!({"gatewayPort": 4143, "gatewayIdentity": "gw.id"}));
    let remote = mk_svc(json!({"spec": {"ports": [
        {"name": "grpc", "port": 8080, "appProtocol": "kubernetes.io/h2c"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    ]}}));
    let mut mirror = mirror_service(&remote, &link).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let ips = [
        ip("127.20.0.3"),
        ip("127.20.0.1"),
        ip("::1"),
        ip("127.20.0.3"),
    ];

    for ready in [true, false] {
        let s = mirror_slice(&mirror, &link, &ips, ready);
        assert_eq!(s.metadata.name.as_deref(), Some("emoji-svc-west-gateway"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("emojivoto"));
        assert_eq!(s.address_type, "IPv4");
        let l = s.metadata.labels.clone().unwrap();
        assert_eq!(l[SERVICE_NAME_LABEL], "emoji-svc-west");
        assert_eq!(l[MANAGED_BY_LABEL], MIRROR_MANAGED_BY);
        assert_eq!(l[CLUSTER_NAME_LABEL], "west");
        assert_eq!(l[LINK_LABEL], "tandem-multicluster.west");
        assert_eq!(
            s.metadata.annotations.as_ref().unwrap()[REMOTE_GATEWAY_IDENTITY_ANNOTATION],
            "gw.id"
        );
        // Every IPv4 gateway IP, sorted, once; all with the same readiness.
        let addrs: Vec<&str> = s
            .endpoints
            .iter()
            .map(|e| e.addresses[0].as_str())
            .collect();
        assert_eq!(addrs, ["127.20.0.1", "127.20.0.3"]);
        for e in &s.endpoints {
            let c = e.conditions.as_ref().unwrap();
            assert_eq!(
                (c.ready, c.serving, c.terminating),
                (Some(ready), Some(ready), Some(false))
            );
        }
        let ports = s.ports.as_ref().unwrap();
        type Port<'a> = (
            Option<&'a str>,
            Option<i32>,
            Option<&'a str>,
            Option<&'a str>,
        );
        let got: Vec<Port<'_>> = ports
            .iter()
            .map(|p| {
                (
                    p.name.as_deref(),
                    p.port,
                    p.protocol.as_deref(),
                    p.app_protocol.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    Some("grpc"),
                    Some(4143),
                    Some("TCP"),
                    Some("kubernetes.io/h2c")
                ),
                (Some("dns"), Some(4143), Some("UDP"), None),
            ]
        );
        assert!(s.metadata.owner_references.is_none(), "no uid, no owner");
    }

    // No gateway address: a slice with no endpoints.
    assert!(mirror_slice(&mirror, &link, &[], true).endpoints.is_empty());

    // Once the mirror has a uid, it owns its slice.
    mirror.metadata.uid = Some("uid-1".into());
    let s = mirror_slice(&mirror, &link, &ips, true);
    let owner = &s.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Service", "emoji-svc-west", "uid-1")
    );
}

#[test]
fn link_label_values_stay_valid() {
    assert_eq!(
        link_label_value("tandem-multicluster", "west"),
        "tandem-multicluster.west"
    );
    let long = link_label_value("a-namespace-with-a-long-name", &"l".repeat(60));
    assert!(long.len() <= 63, "{long}");
    assert_ne!(
        long,
        link_label_value("a-namespace-with-a-long-name", &"l".repeat(61))
    );
    assert!(long.chars().last().unwrap().is_ascii_alphanumeric());
    // Odd input (a typo on the command line) never panics.
    let odd = link_label_value("é", &"ü".repeat(70));
    assert!(odd.len() <= 63 && odd.is_ascii(), "{odd}");
}

#[test]
fn drift_is_what_was_written_and_changed() {
    let link = mk_link(json!({}));
    let desired = mirror_service(
        &mk_svc(json!({"metadata": {"labels": {"app": "emoji"}}})),
        &link,
    )
    .unwrap();
    // As the server returns it: defaults and fields of others added.
    let mut live = desired.clone();
    live.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("added-by".into(), "someone".into());
    let spec = live.spec.as_mut().unwrap();
    spec.cluster_ip = Some("10.96.0.7".into());
    spec.ports.as_mut().unwrap()[0].target_port =
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080));
    assert!(!service_drifted(&live, &desired));

    let mut edited = live.clone();
    edited.metadata.labels.as_mut().unwrap().remove("app");
    assert!(service_drifted(&edited, &desired), "a label removed");
    let mut edited = live.clone();
    edited
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(REMOTE_SVC_FQ_NAME_ANNOTATION.into(), "x".into());
    assert!(service_drifted(&edited, &desired), "an annotation changed");
    let mut edited = live.clone();
    edited.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 9090;
    assert!(service_drifted(&edited, &desired), "a port changed");

    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let slice = mirror_slice(&desired, &link, &[ip("127.20.0.1")], true);
    let mut live = slice.clone();
    live.metadata.resource_version = Some("7".into());
    assert!(!slice_drifted(&live, &slice));
    live.endpoints[0].conditions.as_mut().unwrap().ready = Some(false);
    assert!(slice_drifted(&live, &slice), "readiness changed");
    let mut live = slice.clone();
    live.endpoints.clear();
    assert!(slice_drifted(&live, &slice), "endpoints removed");
}

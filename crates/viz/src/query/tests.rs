use super::*;

fn req(kind: Kind, ns: Option<&str>, name: Option<&str>) -> StatRequest {
    StatRequest {
        namespace: ns.map(Into::into),
        name: name.map(Into::into),
        ..StatRequest::new(kind)
    }
}

#[test]
fn deployments_are_inbound_by_namespace_and_deployment() {
    let q = build(&req(Kind::Deployment, Some("emojivoto"), None));
    assert_eq!(
        q.requests,
        r#"sum(increase(response_total{direction="inbound", namespace="emojivoto"}[1m])) by (namespace, deployment, classification, tls)"#
    );
    assert_eq!(
        q.latency[0],
        r#"histogram_quantile(0.5, sum(irate(response_latency_ms_bucket{direction="inbound", namespace="emojivoto"}[1m])) by (le, namespace, deployment))"#
    );
    assert!(q.latency[1].starts_with("histogram_quantile(0.95, "));
    assert!(q.latency[2].starts_with("histogram_quantile(0.99, "));
    assert_eq!(
        q.tcp_connections,
        r#"sum(tcp_open_connections{direction="inbound", namespace="emojivoto", peer="src"}) by (namespace, deployment)"#
    );
    assert_eq!(q.row_labels, ("namespace", "deployment"));
}

#[test]
fn services_are_outbound_to_their_authority_named_by_dst_service() {
    let q = build(&req(Kind::Service, Some("emojivoto"), None));
    assert_eq!(
        q.requests,
        r#"sum(increase(response_total{direction="outbound", authority=~"^.+\\.emojivoto\\.svc\\.cluster\\.local.*"}[1m])) by (dst_namespace, dst_service, classification, tls)"#
    );
    assert_eq!(
        q.tcp_connections,
        r#"sum(tcp_open_connections{direction="outbound", authority=~"^.+\\.emojivoto\\.svc\\.cluster\\.local.*", peer="dst"}) by (dst_namespace, dst_service)"#
    );
    assert_eq!(q.row_labels, ("dst_namespace", "dst_service"));

    let mut one = req(Kind::Service, Some("emojivoto"), Some("web-svc"));
    one.window = "30s".parse().unwrap();
    one.from = Some("deploy/vote-bot".parse().unwrap());
    assert_eq!(
        build(&one).requests,
        r#"sum(increase(response_total{direction="outbound", authority=~"^web-svc\\.emojivoto\\.svc\\.cluster\\.local.*", namespace="emojivoto", deployment="vote-bot"}[30s])) by (dst_namespace, dst_service, classification, tls)"#
    );
    // All namespaces.
    assert!(
        build(&req(Kind::Service, None, None))
            .requests
            .contains(r#"authority=~"^.+\\..+\\.svc\\.cluster\\.local.*""#)
    );
}

#[test]
fn pods_namespaces_and_from() {
    let q = build(&req(Kind::Pod, Some("app"), Some("web-1")));
    assert!(
        q.requests
            .contains(r#"{direction="inbound", namespace="app", pod="web-1"}"#)
    );
    assert!(
        q.requests
            .contains("by (namespace, pod, classification, tls)")
    );

    // A namespace is named by its name; -n does not apply.
    let q = build(&req(Kind::Namespace, Some("default"), Some("app")));
    assert!(
        q.requests
            .contains(r#"{direction="inbound", namespace="app"}"#),
        "{}",
        q.requests
    );
    assert!(q.requests.contains("by (namespace, classification, tls)"));
    assert_eq!(q.row_labels, ("namespace", "namespace"));
    let all = build(&req(Kind::Namespace, Some("default"), None));
    assert!(
        all.requests.contains(r#"{direction="inbound"}"#),
        "{}",
        all.requests
    );

    let mut from = req(Kind::Deployment, Some("app"), Some("api"));
    from.from = Some("deploy/web".parse().unwrap());
    let q = build(&from);
    assert!(
        q.requests.contains(
            r#"{direction="outbound", namespace="app", deployment="web", dst_namespace="app", dst_deployment="api"}"#
        ),
        "{}",
        q.requests
    );
    assert!(
        q.requests
            .contains("by (dst_namespace, dst_deployment, classification, tls)")
    );
    assert_eq!(q.row_labels, ("dst_namespace", "dst_deployment"));
}

#[test]
fn values_are_quoted_and_escaped() {
    let q = build(&req(Kind::Service, Some("a.b"), Some(r#"x"y"#)));
    assert!(
        q.requests.contains(r#"authority=~"^x\"y\\.a\\.b\\.svc"#),
        "{}",
        q.requests
    );
    let q = build(&req(Kind::Deployment, Some(r#"n"s"#), None));
    assert!(q.requests.contains(r#"namespace="n\"s""#), "{}", q.requests);
}

#[test]
fn kinds_resources_and_windows_parse_as_kubectl_and_prometheus_write_them() {
    for (s, k) in [
        ("deploy", Kind::Deployment),
        ("deployments", Kind::Deployment),
        ("svc", Kind::Service),
        ("Service", Kind::Service),
        ("po", Kind::Pod),
        ("ts", Kind::TrafficSplit),
        ("ns", Kind::Namespace),
    ] {
        assert_eq!(s.parse::<Kind>().unwrap(), k, "{s}");
    }
    assert!(
        "rs".parse::<Kind>()
            .unwrap_err()
            .to_string()
            .contains("deploy, svc")
    );
    let r: Resource = "deploy/web".parse().unwrap();
    assert_eq!((r.kind, r.name.as_deref()), (Kind::Deployment, Some("web")));
    assert_eq!("svc".parse::<Resource>().unwrap().name, None);
    for bad in ["deploy/", "deploy/a/b", "x/y"] {
        assert!(bad.parse::<Resource>().is_err(), "{bad}");
    }
    for (s, secs, shown) in [
        ("30s", 30.0, "30s"),
        ("1m", 60.0, "1m"),
        ("90s", 90.0, "90s"),
        ("120s", 120.0, "2m"),
        ("1h", 3600.0, "1h"),
    ] {
        let w: Window = s.parse().unwrap();
        assert_eq!((w.seconds(), w.to_string().as_str()), (secs, shown), "{s}");
    }
    for bad in ["", "30", "s", "0s", "1d", "-1m", "1.5m", "m1"] {
        assert!(bad.parse::<Window>().is_err(), "{bad:?}");
    }
}

/// `--to`: the rows' own outbound traffic to the resource, named by their
/// own labels; `--from-namespace`/`--to-namespace` name the peer's
/// namespace.
#[test]
fn to_and_the_peers_namespaces() {
    let mut to = req(Kind::Deployment, Some("emojivoto"), None);
    to.to = Some("svc/emoji-svc-west".parse().unwrap());
    let q = build(&to);
    assert!(
        q.requests.contains(
            r#"{direction="outbound", namespace="emojivoto", dst_namespace="emojivoto", dst_service="emoji-svc-west"}"#
        ),
        "{}",
        q.requests
    );
    assert!(
        q.requests
            .contains("by (namespace, deployment, classification, tls)")
    );
    assert_eq!(q.row_labels, ("namespace", "deployment"));
    assert!(
        q.tcp_connections.contains(r#"peer="dst""#),
        "{}",
        q.tcp_connections
    );

    // The peer in another namespace; a namespace as the peer.
    let mut other = req(Kind::Pod, Some("emojivoto"), Some("web-1"));
    let mut peer: Resource = "deploy/api".parse().unwrap();
    peer.namespace = Some("backend".into());
    other.to = Some(peer.clone());
    let q = build(&other);
    assert!(
        q.requests.contains(
            r#"{direction="outbound", namespace="emojivoto", pod="web-1", dst_namespace="backend", dst_deployment="api"}"#
        ),
        "{}",
        q.requests
    );
    let mut to_ns = req(Kind::Namespace, None, Some("emojivoto"));
    to_ns.to = Some("ns/backend".parse().unwrap());
    let q = build(&to_ns);
    assert!(
        q.requests
            .contains(r#"{direction="outbound", namespace="emojivoto", dst_namespace="backend"}"#),
        "{}",
        q.requests
    );
    assert!(q.requests.contains("by (namespace, classification, tls)"));

    let mut from = req(Kind::Deployment, Some("emojivoto"), Some("api"));
    from.from = Some(peer);
    let q = build(&from);
    assert!(
        q.requests.contains(
            r#"{direction="outbound", namespace="backend", deployment="api", dst_namespace="emojivoto", dst_deployment="api"}"#
        ),
        "{}",
        q.requests
    );
    // --from a namespace: its name is the source namespace, once.
    let mut from_ns = req(Kind::Service, Some("emojivoto"), None);
    from_ns.from = Some("ns/clients".parse().unwrap());
    let q = build(&from_ns);
    assert_eq!(
        q.requests.matches("namespace=").count(),
        1,
        "{}",
        q.requests
    );
    assert!(
        q.requests.contains(r#"namespace="clients""#),
        "{}",
        q.requests
    );
}

use super::*;

fn kinds(objs: &[Value]) -> Vec<String> {
    objs.iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_objects_and_their_order() {
    let objs = render(&VizOptions::default());
    assert_eq!(
        kinds(&objs),
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "Service"
        ]
    );
    for o in &objs[1..] {
        if o["kind"] != "ClusterRole" && o["kind"] != "ClusterRoleBinding" {
            assert_eq!(o["metadata"]["namespace"], "tandem-viz", "{o}");
        }
    }
    let role = &objs[2];
    assert_eq!(
        role["rules"],
        serde_json::json!([{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"] }])
    );
    let deploy = &objs[5];
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], DEFAULT_PROMETHEUS_IMAGE);
    assert!(
        c["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--config.file=/etc/prometheus/prometheus.yml")
    );
    let svc = &objs[6];
    assert_eq!(svc["metadata"]["name"], "prometheus");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9090);
    assert_eq!(
        objs[0]["metadata"]["annotations"]["linkerd.io/inject"],
        "disabled"
    );
}

#[test]
fn the_scrape_keeps_tandems_proxies_and_labels_them_as_linkerd() {
    let config = prometheus_config(&VizOptions::default());
    assert!(
        config.contains("regex: \"^tandem-proxy;tandem-admin;tandem$\""),
        "{config}"
    );
    for needed in [
        "scrape_interval: 10s",
        "role: pod",
        "target_label: namespace",
        "target_label: pod",
        "target_label: k8s_job",
        "regex: __meta_kubernetes_pod_label_linkerd_io_proxy_(.+)",
        "regex: __meta_kubernetes_pod_label_linkerd_io_(.+)",
        "replacement: __tmp_pod_label_$1",
    ] {
        assert!(config.contains(needed), "{needed} missing from\n{config}");
    }
    // The ConfigMap holds exactly this text, and its hash rolls the pods.
    let objs = render(&VizOptions::default());
    assert_eq!(objs[4]["data"]["prometheus.yml"], config);
    let other = render(&VizOptions {
        scrape_interval: "5s".into(),
        ..Default::default()
    });
    let hash = |o: &[Value]| {
        o[5]["spec"]["template"]["metadata"]["annotations"]["viz.tandem.io/config-hash"].clone()
    };
    assert_ne!(hash(&objs), hash(&other));
}

#[test]
fn set_takes_known_keys_and_warns_about_others() {
    let mut o = VizOptions::default();
    let warnings = o
        .set(&[
            "grafana.url=grafana.linkerd-viz:3000".into(),
            "prometheus.image=example.org/prom:1".into(),
            "linkerdNamespace=linkerd".into(),
            "dashboard.replicas=2".into(),
        ])
        .unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("dashboard.replicas") && warnings[0].contains("grafana.url"),
        "{warnings:?}"
    );
    assert_eq!(o.grafana_url.as_deref(), Some("grafana.linkerd-viz:3000"));
    let objs = render(&o);
    assert_eq!(
        objs[0]["metadata"]["annotations"][GRAFANA_URL_ANNOTATION],
        "grafana.linkerd-viz:3000"
    );
    assert_eq!(
        objs[5]["spec"]["template"]["spec"]["containers"][0]["image"],
        "example.org/prom:1"
    );
    assert!(
        objs[4]["data"]["prometheus.yml"]
            .as_str()
            .unwrap()
            .contains(";linkerd$")
    );

    for bad in [
        "grafana.url",
        "prometheus.image=",
        "prometheus.scrapeInterval=soon",
    ] {
        assert!(VizOptions::default().set(&[bad.into()]).is_err(), "{bad}");
    }
}

//! Table tests of the pure parts: ports, the pod patch, the stream, the
//! proxy-init rules. Whole-stream golden tests are in `tests/golden.rs`.

use serde_json::{Value, json};

use crate::{stream::split_documents, *};

const ANCHORS: &str = include_str!("../tests/golden/ca.crt");

fn cfg() -> Config {
    Config::new(
        "tandem",
        "cluster.local",
        "ghcr.io/tandem-io/tandem:9.9.9",
        ANCHORS,
        "9.9.9",
    )
    .unwrap()
}

fn deployment(spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "emojivoto" },
        "spec": { "template": { "metadata": { "labels": { "app": "web" } }, "spec": spec } },
    })
}

fn inject_one(obj: &Value) -> (Option<Value>, Report) {
    let mut reports = Vec::new();
    let out = inject_object(obj, &cfg(), &mut reports);
    assert_eq!(reports.len(), 1, "{reports:?}");
    (out, reports.remove(0))
}

fn env_of(container: &Value, name: &str) -> Option<Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

// === ports ===

#[test]
fn port_lists_parse_or_say_which_item_is_wrong() {
    let ok = [
        ("", vec![]),
        ("80", vec![PortRange::port(80)]),
        (
            " 25, 4000-4010 ,,25",
            vec![
                PortRange::port(25),
                PortRange {
                    first: 4000,
                    last: 4010,
                },
            ],
        ),
    ];
    for (given, want) in ok {
        assert_eq!(parse_ports(given).unwrap(), want, "{given:?}");
    }
    for (given, item) in [
        ("0", "0"),
        ("80,http", "http"),
        ("65536", "65536"),
        ("10-5", "10-5"),
        ("1-", "1-"),
    ] {
        let err = parse_ports(given).unwrap_err();
        assert_eq!(err.item, item, "{given:?}");
        assert!(err.to_string().contains(given), "{err}");
    }
}

// === config ===

#[test]
fn config_refuses_bad_names_anchors_and_images() {
    let bad = [
        Config::new("Tandem", "cluster.local", "img", ANCHORS, "1"),
        Config::new("tandem.x", "cluster.local", "img", ANCHORS, "1"),
        Config::new("tandem", "cluster..local", "img", ANCHORS, "1"),
        Config::new("tandem", "cluster.local", "img", "not pem", "1"),
        Config::new("tandem", "cluster.local", "", ANCHORS, "1"),
        Config::new("tandem", "cluster.local", "a b", ANCHORS, "1"),
    ];
    for (i, c) in bad.into_iter().enumerate() {
        assert!(c.is_err(), "case {i} was accepted");
    }
    let c = cfg();
    assert_eq!(c.trust_root_sha256().len(), 64);
    assert_eq!(
        c.component_identity("tandem-identity"),
        "tandem-identity.tandem.serviceaccount.identity.tandem.cluster.local"
    );
}

// === the pod patch ===

#[test]
fn a_deployment_gets_init_container_proxy_first_volumes_labels_and_annotations() {
    let d = deployment(json!({
        "containers": [{ "name": "app", "image": "app:1", "ports": [{ "containerPort": 8080 }, { "containerPort": 6379 }] }],
        "initContainers": [{ "name": "setup", "image": "setup:1" }],
        "volumes": [{ "name": "data", "emptyDir": {} }],
    }));
    let (out, report) = inject_one(&d);
    assert_eq!(report.to_string(), "deployment \"web\" injected");
    assert_eq!(report.warning(), None);
    let out = out.expect("changed");
    let t = &out["spec"]["template"];
    let containers = t["spec"]["containers"].as_array().unwrap();
    let names: Vec<_> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tandem-proxy", "app"]);
    let inits: Vec<_> = t["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(inits, ["setup", "tandem-init"]);
    let volumes: Vec<_> = t["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        ["data", END_ENTITY_VOLUME, TOKEN_VOLUME, XTABLES_LOCK_VOLUME]
    );

    let labels = &t["metadata"]["labels"];
    assert_eq!(labels["app"], "web");
    assert_eq!(labels["linkerd.io/control-plane-ns"], "tandem");
    assert_eq!(labels["linkerd.io/proxy-deployment"], "web");
    assert_eq!(labels["linkerd.io/workload-ns"], "emojivoto");
    let ann = &t["metadata"]["annotations"];
    assert_eq!(ann["linkerd.io/created-by"], "tandem 9.9.9");
    assert_eq!(ann["linkerd.io/proxy-version"], "9.9.9");
    assert_eq!(ann["linkerd.io/inject"], "enabled");
    assert_eq!(
        ann["linkerd.io/trust-root-sha256"],
        cfg().trust_root_sha256()
    );
    // 6379 (Redis) is one of the default opaque ports.
    assert_eq!(ann[OPAQUE_PORTS_ANNOTATION], "6379");

    let proxy = &containers[0];
    assert_eq!(proxy["args"], json!(["proxy"]));
    assert_eq!(proxy["securityContext"]["runAsUser"], 2102);
    assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        proxy["ports"][0],
        json!({"name": "tandem-proxy", "containerPort": 4143})
    );
    assert_eq!(
        proxy["ports"][1],
        json!({"name": "tandem-admin", "containerPort": 4191})
    );
    assert_eq!(proxy["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/ready");
    let value = |name| env_of(proxy, name).unwrap_or_else(|| panic!("no {name}"))["value"].clone();
    assert_eq!(value("LINKERD2_PROXY_INBOUND_PORTS"), "6379,8080");
    assert_eq!(
        value("LINKERD2_PROXY_IDENTITY_SVC_ADDR"),
        "tandem-identity.tandem.svc.cluster.local.:8080"
    );
    assert_eq!(
        value("LINKERD2_PROXY_DESTINATION_SVC_ADDR"),
        "tandem-destination.tandem.svc.cluster.local.:8086"
    );
    assert_eq!(
        value("LINKERD2_PROXY_IDENTITY_LOCAL_NAME"),
        "$(_pod_sa).$(_pod_ns).serviceaccount.identity.tandem.cluster.local"
    );
    assert_eq!(value("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"), ANCHORS);
    assert_eq!(
        value("LINKERD2_PROXY_IDENTITY_TOKEN_FILE"),
        "/var/run/secrets/tokens/tandem-identity-token"
    );
    assert_eq!(
        value("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR"),
        "127.0.0.1:4140"
    );
    let ips = env_of(proxy, "LINKERD2_PROXY_INBOUND_IPS").unwrap();
    assert_eq!(ips["valueFrom"]["fieldRef"]["fieldPath"], "status.podIPs");
    // The downward-API variables come before the values that use them.
    let env_names: Vec<_> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let pos = |n| env_names.iter().position(|e| *e == n).unwrap();
    assert!(pos("_pod_sa") < pos("LINKERD2_PROXY_IDENTITY_LOCAL_NAME"));
    assert!(pos("_pod_ns") < pos("LINKERD2_PROXY_DESTINATION_CONTEXT"));

    let init = t["spec"]["initContainers"][1].clone();
    assert_eq!(
        init["args"],
        json!([
            "proxy-init",
            "--incoming-proxy-port",
            "4143",
            "--outgoing-proxy-port",
            "4140",
            "--proxy-uid",
            "2102",
            "--inbound-ports-to-ignore",
            "4190,4191,4567,4568",
            "--outbound-ports-to-ignore",
            "4567,4568"
        ])
    );
    assert_eq!(
        init["securityContext"]["capabilities"],
        json!({"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]})
    );
    assert_eq!(init["volumeMounts"][0]["mountPath"], "/run");

    let token = &t["spec"]["volumes"][2]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "identity.l5d.io");
    assert_eq!(token["expirationSeconds"], 86400);
    assert_eq!(token["path"], "tandem-identity-token");
}

#[test]
fn injecting_the_output_again_changes_nothing() {
    let d = deployment(json!({ "containers": [{ "name": "app", "image": "app:1" }] }));
    let (once, _) = inject_one(&d);
    let (twice, report) = inject_one(&once.unwrap());
    assert_eq!(twice, None);
    assert_eq!(
        report.outcome,
        Outcome::Skipped(Skip::AlreadyInjected("tandem-proxy".into()))
    );
}

/// CNI mode: the same proxy, no init container and no xtables volume; the
/// pod carries the init container's arguments for the plugin, skipped
/// ports included.
#[test]
fn in_cni_mode_the_pod_carries_proxy_inits_arguments_instead_of_an_init_container() {
    let mut d = deployment(json!({
        "containers": [{ "name": "app", "image": "app:1", "ports": [{ "containerPort": 8080 }] }],
    }));
    d["spec"]["template"]["metadata"]["annotations"] =
        json!({ SKIP_OUTBOUND_ANNOTATION: "3306", SKIP_INBOUND_ANNOTATION: "9000-9010" });
    let inject = |cfg: &Config| {
        let mut reports = Vec::new();
        let out = inject_object(&d, cfg, &mut reports).expect("injected");
        out["spec"]["template"].clone()
    };
    let plain = inject(&cfg());
    let cni = inject(&cfg().with_cni(true));
    let init_args: Vec<String> =
        serde_json::from_value(plain["spec"]["initContainers"][0]["args"].clone()).unwrap();
    assert_eq!(init_args[0], "proxy-init");
    assert_eq!(
        plain["metadata"]["annotations"].get(PROXY_INIT_ANNOTATION),
        None
    );

    assert_eq!(cni["spec"].get("initContainers"), None, "{cni:#}");
    let annotation = cni["metadata"]["annotations"][PROXY_INIT_ANNOTATION]
        .as_str()
        .expect("the annotation is a string");
    let args: Vec<String> = serde_json::from_str(annotation).unwrap();
    assert_eq!(args, init_args[1..]);
    let joined = args.join(" ");
    assert!(
        joined.contains("--outbound-ports-to-ignore 4567,4568,3306"),
        "{joined}"
    );
    assert!(joined.contains("9000-9010"), "{joined}");
    let volumes = |t: &Value| -> Vec<String> {
        t["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(volumes(&plain).contains(&XTABLES_LOCK_VOLUME.to_string()));
    assert!(!volumes(&cni).contains(&XTABLES_LOCK_VOLUME.to_string()));
    // Everything else is the same injection.
    assert_eq!(cni["spec"]["containers"], plain["spec"]["containers"]);
}

#[test]
fn templates_that_must_not_be_injected_are_skipped_with_a_reason() {
    let app = json!([{ "name": "app", "image": "app:1" }]);
    let disabled = {
        let mut d = deployment(json!({ "containers": app }));
        d["spec"]["template"]["metadata"]["annotations"] =
            json!({ "linkerd.io/inject": "disabled" });
        d
    };
    let bad_skip = {
        let mut d = deployment(json!({ "containers": app }));
        d["spec"]["template"]["metadata"]["annotations"] =
            json!({ SKIP_OUTBOUND_ANNOTATION: "3306,mysql" });
        d
    };
    let cases = [
        (disabled, "linkerd.io/inject: disabled"),
        (
            deployment(json!({ "hostNetwork": true, "containers": app })),
            "hostNetwork",
        ),
        (
            deployment(json!({ "containers": [{ "name": "linkerd-proxy" }, { "name": "app" }] })),
            "already has the container linkerd-proxy",
        ),
        (
            deployment(
                json!({ "initContainers": [{ "name": "linkerd-init" }], "containers": app }),
            ),
            "linkerd-init",
        ),
        (
            deployment(json!({ "containers": app, "volumes": [{ "name": TOKEN_VOLUME }] })),
            "already has a volume named tandem-identity-token",
        ),
        (bad_skip, "\"mysql\""),
        (
            deployment(json!({ "containers": "app" })),
            "no containers list",
        ),
        (
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" }, "spec": {} }),
            "no pod template at spec.template",
        ),
    ];
    for (obj, why) in cases {
        let (out, report) = inject_one(&obj);
        assert_eq!(out, None, "{why}");
        assert_eq!(report.to_string(), "deployment \"web\" skipped");
        let warning = report.warning().expect("a warning");
        assert!(warning.contains(why), "{warning:?} should say {why:?}");
    }
}

#[test]
fn skip_annotations_extend_the_ignored_ports_and_opaque_ports_are_kept() {
    let mut d = deployment(
        json!({ "containers": [{ "name": "app", "ports": [{ "containerPort": 3306 }] }] }),
    );
    d["spec"]["template"]["metadata"]["annotations"] = json!({
        SKIP_INBOUND_ANNOTATION: "9000-9010",
        SKIP_OUTBOUND_ANNOTATION: "443, 4567",
        OPAQUE_PORTS_ANNOTATION: "3306,5000",
    });
    let (out, _) = inject_one(&d);
    let t = &out.unwrap()["spec"]["template"];
    let args = &t["spec"]["initContainers"][0]["args"];
    assert_eq!(args[8], "4190,4191,4567,4568,9000-9010");
    assert_eq!(args[10], "4567,4568,443");
    // A user's opaque-ports annotation is theirs: kept, and given to the proxy.
    assert_eq!(
        t["metadata"]["annotations"][OPAQUE_PORTS_ANNOTATION],
        "3306,5000"
    );
    let proxy = &t["spec"]["containers"][0];
    assert_eq!(
        env_of(
            proxy,
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION"
        )
        .unwrap()["value"],
        "3306,5000"
    );
}

#[test]
fn every_workload_kind_is_found_at_its_template_and_labelled_by_kind() {
    let pod_spec = json!({ "containers": [{ "name": "app", "image": "app:1" }] });
    let tpl = json!({ "metadata": {}, "spec": pod_spec });
    let cases = [
        (
            "apps/v1",
            "StatefulSet",
            json!({ "template": tpl }),
            "statefulset",
        ),
        (
            "apps/v1",
            "DaemonSet",
            json!({ "template": tpl }),
            "daemonset",
        ),
        (
            "apps/v1",
            "ReplicaSet",
            json!({ "template": tpl }),
            "replicaset",
        ),
        (
            "v1",
            "ReplicationController",
            json!({ "template": tpl }),
            "replicationcontroller",
        ),
        ("batch/v1", "Job", json!({ "template": tpl }), "job"),
        (
            "batch/v1",
            "CronJob",
            json!({ "schedule": "* * * * *", "jobTemplate": { "spec": { "template": tpl } } }),
            "cronjob",
        ),
    ];
    for (api, kind, spec, label) in cases {
        let obj =
            json!({ "apiVersion": api, "kind": kind, "metadata": { "name": "w" }, "spec": spec });
        let (out, report) = inject_one(&obj);
        assert_eq!(report.outcome, Outcome::Injected, "{kind}");
        let out = out.unwrap();
        let t = if kind == "CronJob" {
            &out["spec"]["jobTemplate"]["spec"]["template"]
        } else {
            &out["spec"]["template"]
        };
        assert_eq!(
            t["metadata"]["labels"][format!("linkerd.io/proxy-{label}")],
            "w",
            "{kind}"
        );
        // No namespace in the object: no workload-ns label.
        assert!(
            t["metadata"]["labels"]
                .get("linkerd.io/workload-ns")
                .is_none()
        );
        assert_eq!(t["spec"]["containers"][0]["name"], "tandem-proxy", "{kind}");
    }
    // A bare pod: injected in place, no proxy-<kind> label.
    let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p", "namespace": "n" }, "spec": pod_spec });
    let (out, _) = inject_one(&pod);
    let out = out.unwrap();
    assert_eq!(out["spec"]["containers"][0]["name"], "tandem-proxy");
    let labels = out["metadata"]["labels"].as_object().unwrap();
    assert!(
        !labels.keys().any(|k| k.starts_with("linkerd.io/proxy-")),
        "{labels:?}"
    );
    // Same kind name, another API group: not a workload.
    let other = json!({ "apiVersion": "example.com/v1", "kind": "Deployment", "metadata": { "name": "x" }, "spec": { "template": tpl } });
    let (out, report) = inject_one(&other);
    assert_eq!((out, report.outcome), (None, Outcome::NotAWorkload));
}

#[test]
fn a_list_is_injected_item_by_item_with_a_report_each() {
    let list = json!({
        "apiVersion": "v1", "kind": "List",
        "items": [
            { "apiVersion": "v1", "kind": "Service", "metadata": { "name": "svc" } },
            deployment(json!({ "containers": [{ "name": "app" }] })),
        ],
    });
    let mut reports = Vec::new();
    let out = inject_object(&list, &cfg(), &mut reports).unwrap();
    let lines: Vec<_> = reports.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        ["service \"svc\" skipped", "deployment \"web\" injected"]
    );
    assert_eq!(out["items"][0], list["items"][0]);
    assert_eq!(
        out["items"][1]["spec"]["template"]["spec"]["containers"][0]["name"],
        "tandem-proxy"
    );
}

// === the stream ===

#[test]
fn documents_split_at_separator_lines_only() {
    let stream = "# leading comment\n---\na: 1\n--- \nb: |\n  ---x\n  text\n...\n---\n# only a comment\n--- {c: 3}\n";
    let docs = split_documents(stream);
    let texts: Vec<_> = docs.iter().map(|d| (d.line, d.text.as_str())).collect();
    assert_eq!(
        texts,
        [
            (3, "a: 1\n"),
            (5, "b: |\n  ---x\n  text\n"),
            (11, "{c: 3}\n")
        ]
    );
}

#[test]
fn a_broken_document_fails_the_stream_naming_each_broken_one() {
    let stream = "kind: Service\nmetadata: {name: a}\n---\nkind: [unclosed\n---\njust a string\n---\nkind: Service\n";
    let err = inject_stream(stream, &cfg()).unwrap_err();
    let StreamError::Broken(docs) = &err else {
        panic!("{err:?}")
    };
    let at: Vec<_> = docs.iter().map(|d| (d.index, d.line)).collect();
    assert_eq!(at, [(2, 4), (3, 6)]);
    assert!(docs[1].message.contains("not a Kubernetes object"), "{err}");
    assert!(err.to_string().contains("document 2 (line 4)"), "{err}");
}

#[test]
fn unchanged_documents_keep_their_text_and_strings_stay_strings() {
    let stream = "# a service\nkind: Service\nmetadata: {name: a}   # inline\n---\n".to_string()
        + &serde_saphyr::to_string(&deployment(json!({ "containers": [{ "name": "app" }] })))
            .unwrap();
    let out = inject_stream(&stream, &cfg()).unwrap();
    assert!(
        out.yaml
            .starts_with("---\n# a service\nkind: Service\nmetadata: {name: a}   # inline\n---\n"),
        "{}",
        out.yaml
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out.yaml).unwrap();
    let t = &docs[1]["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        t["cluster-autoscaler.kubernetes.io/safe-to-evict"],
        json!("true")
    );
    assert_eq!(t["linkerd.io/proxy-version"], json!("9.9.9"));
}

#[test]
fn the_proxy_awaits_readiness_first_unless_the_template_opts_out() {
    let app = json!([{ "name": "app" }]);
    let (out, _) = inject_one(&deployment(json!({ "containers": app })));
    let containers = out.unwrap()["spec"]["template"]["spec"]["containers"].clone();
    assert_eq!(containers[0]["name"], "tandem-proxy");
    assert_eq!(
        containers[0]["lifecycle"]["postStart"]["exec"]["command"],
        json!(["/tandem", "proxy-await", "--timeout", "2m"])
    );

    let mut d = deployment(json!({ "containers": app }));
    d["spec"]["template"]["metadata"]["annotations"] =
        json!({ PROXY_AWAIT_ANNOTATION: "disabled" });
    let (out, _) = inject_one(&d);
    let containers = out.unwrap()["spec"]["template"]["spec"]["containers"].clone();
    assert_eq!(containers[1]["name"], "tandem-proxy");
    assert_eq!(containers[0]["name"], "app");
    assert!(containers[1].get("lifecycle").is_none());
}

/// The names of the containers in `list` of an injected template's spec.
fn names(template: &Value, list: &str) -> Vec<String> {
    template["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_native_sidecar_is_an_init_container_that_keeps_running_before_the_templates_own() {
    let mut d = deployment(json!({
        "initContainers": [{ "name": "migrate", "image": "app:1" }],
        "containers": [{ "name": "app", "image": "app:1" }],
    }));
    let inject = |d: &Value, cfg: &Config| {
        let mut reports = Vec::new();
        let out = inject_object(d, cfg, &mut reports);
        assert_eq!(reports.len(), 1, "{reports:?}");
        (
            out.map(|o| o["spec"]["template"].clone()),
            reports.remove(0),
        )
    };

    let plain = inject(&d, &cfg()).0.unwrap();
    let native = inject(&d, &cfg().with_native_sidecar(true)).0.unwrap();
    assert_eq!(names(&plain, "initContainers"), ["migrate", "tandem-init"]);
    assert_eq!(names(&plain, "containers"), ["tandem-proxy", "app"]);
    assert_eq!(
        names(&native, "initContainers"),
        ["tandem-init", "tandem-proxy", "migrate"]
    );
    assert_eq!(names(&native, "containers"), ["app"]);
    let proxy = &native["spec"]["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    // The hook stays: kubelet starts `migrate` once the proxy is ready.
    assert_eq!(
        proxy["lifecycle"]["postStart"]["exec"]["command"],
        json!(["/tandem", "proxy-await", "--timeout", "2m"])
    );
    // Apart from its place and restart policy, the same proxy.
    let mut same = proxy.clone();
    same.as_object_mut().unwrap().remove("restartPolicy");
    assert_eq!(same, plain["spec"]["containers"][0]);
    assert!(
        plain["spec"]["containers"][0]
            .get("restartPolicy")
            .is_none()
    );

    // CNI mode: no tandem-init, the proxy first.
    let cni = inject(&d, &cfg().with_native_sidecar(true).with_cni(true))
        .0
        .unwrap();
    assert_eq!(names(&cni, "initContainers"), ["tandem-proxy", "migrate"]);

    // The template's annotation wins either way, under either name.
    for (key, value, want) in [
        (NATIVE_SIDECAR_ANNOTATION, "true", true),
        (NATIVE_SIDECAR_ALPHA_ANNOTATION, "True", true),
        (NATIVE_SIDECAR_ANNOTATION, "false", false),
    ] {
        d["spec"]["template"]["metadata"]["annotations"] = json!({ key: value });
        for default in [false, true] {
            let out = inject(&d, &cfg().with_native_sidecar(default)).0.unwrap();
            assert_eq!(
                names(&out, "containers").contains(&"tandem-proxy".to_string()),
                !want,
                "{key}: {value} over a default of {default}"
            );
        }
    }

    // A value that is neither is refused, naming the annotation.
    d["spec"]["template"]["metadata"]["annotations"] =
        json!({ NATIVE_SIDECAR_ALPHA_ANNOTATION: "yes" });
    let (out, report) = inject(&d, &cfg());
    assert!(out.is_none());
    let why = report.warning().expect("a warning");
    assert!(why.contains(NATIVE_SIDECAR_ALPHA_ANNOTATION), "{why}");
    assert!(why.contains("\"yes\""), "{why}");

    // Injecting the result again changes nothing: the init container counts.
    let again = inject(
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "p", "namespace": "n" },
            "spec": native["spec"],
        }),
        &cfg(),
    );
    assert!(again.0.is_none());
    let why = again.1.warning().expect("a warning");
    assert!(why.contains("already has the container tandem-"), "{why}");
}

//! The patch of one pod template: Linkerd's webhook patch, tandem's names.

use serde_json::{Map, Value, json};

use crate::{
    ADMIN_PORT, ADMIN_PORT_NAME, CLUSTER_NETWORKS, CONTROL_PORT, Config, DEFAULT_IGNORED_PORTS,
    DEFAULT_OPAQUE_PORTS, END_ENTITY_VOLUME, IDENTITY_DIR, INBOUND_PORT, INIT_CONTAINER,
    INJECT_ANNOTATION, KNOWN_SIDECARS, NATIVE_SIDECAR_ALPHA_ANNOTATION, NATIVE_SIDECAR_ANNOTATION,
    OPAQUE_PORTS_ANNOTATION, OUTBOUND_PORT, PROXY_AWAIT_ANNOTATION, PROXY_CONTAINER,
    PROXY_INIT_ANNOTATION, PROXY_PORT_NAME, PROXY_UID, SKIP_INBOUND_ANNOTATION,
    SKIP_OUTBOUND_ANNOTATION, TOKEN_AUDIENCE, TOKEN_DIR, TOKEN_FILE, TOKEN_VOLUME,
    XTABLES_LOCK_VOLUME,
    ports::{PortRange, join, parse_ports},
    workload::Skip,
};

/// Whose pod template this is, for the `linkerd.io/proxy-<kind>` and
/// `linkerd.io/workload-ns` labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Owner {
    /// `deployment`, `cronjob`, ...; `None` for a bare pod.
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// What the template asks for through its annotations, checked.
struct Overrides {
    skip_inbound: Vec<PortRange>,
    skip_outbound: Vec<PortRange>,
    opaque: Option<String>,
}

/// `template` (an object with `metadata` and `spec`) injected, or why not.
/// The input is never changed; every check comes before any change.
pub(crate) fn inject_pod(template: &Value, owner: &Owner, cfg: &Config) -> Result<Value, Skip> {
    let spec = template
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| Skip::Invalid("it has no pod spec".into()))?;
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .ok_or_else(|| Skip::Invalid("its pod spec has no containers list".into()))?;
    let annotations = template["metadata"]["annotations"].as_object();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key)).and_then(Value::as_str);
    if annotation(INJECT_ANNOTATION) == Some("disabled") {
        return Err(Skip::Disabled);
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err(Skip::HostNetwork);
    }
    let init_containers = spec.get("initContainers").and_then(Value::as_array);
    let names = containers
        .iter()
        .chain(init_containers.into_iter().flatten())
        .filter_map(|c| c["name"].as_str());
    for name in names {
        if KNOWN_SIDECARS.contains(&name) {
            return Err(Skip::AlreadyInjected(name.into()));
        }
    }
    if let Some(volumes) = spec.get("volumes").and_then(Value::as_array) {
        for v in volumes.iter().filter_map(|v| v["name"].as_str()) {
            if [END_ENTITY_VOLUME, TOKEN_VOLUME, XTABLES_LOCK_VOLUME].contains(&v) {
                return Err(Skip::Invalid(format!("it already has a volume named {v}")));
            }
        }
    }
    let ports_of = |key: &str| {
        annotation(key)
            .map(parse_ports)
            .transpose()
            .map(Option::unwrap_or_default)
            .map_err(|e| Skip::Invalid(format!("annotation {key}: {e}")))
    };
    let overrides = Overrides {
        skip_inbound: ports_of(SKIP_INBOUND_ANNOTATION)?,
        skip_outbound: ports_of(SKIP_OUTBOUND_ANNOTATION)?,
        opaque: match annotation(OPAQUE_PORTS_ANNOTATION) {
            Some(list) => {
                parse_ports(list).map_err(|e| {
                    Skip::Invalid(format!("annotation {OPAQUE_PORTS_ANNOTATION}: {e}"))
                })?;
                Some(list.to_string())
            }
            None => None,
        },
    };
    let app_ports = container_ports(containers);
    let proxy_await = annotation(PROXY_AWAIT_ANNOTATION) != Some("disabled");
    let native_sidecar = native_sidecar(&annotation, cfg.native_sidecar())?;

    let mut out = template.clone();
    let mut_obj = |v: &mut Value| {
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
    };
    mut_obj(&mut out["metadata"]);
    for key in ["labels", "annotations"] {
        mut_obj(&mut out["metadata"][key]);
    }
    let labels = out["metadata"]["labels"]
        .as_object_mut()
        .expect("an object");
    labels.insert(
        "linkerd.io/control-plane-ns".into(),
        json!(cfg.control_plane_ns()),
    );
    if let (Some(kind), Some(name)) = (&owner.kind, &owner.name) {
        labels.insert(format!("linkerd.io/proxy-{kind}"), json!(name));
    }
    if let Some(ns) = &owner.namespace {
        labels.insert("linkerd.io/workload-ns".into(), json!(ns));
    }
    let annotations = out["metadata"]["annotations"]
        .as_object_mut()
        .expect("an object");
    for (k, v) in [
        ("linkerd.io/created-by", format!("tandem {}", cfg.version())),
        ("linkerd.io/proxy-version", cfg.version().to_string()),
        ("linkerd.io/trust-root-sha256", cfg.trust_root_sha256()),
        (INJECT_ANNOTATION, "enabled".into()),
        (
            "cluster-autoscaler.kubernetes.io/safe-to-evict",
            "true".into(),
        ),
    ] {
        annotations.insert(k.into(), json!(v));
    }
    if overrides.opaque.is_none() {
        let opaque = default_opaque_in_use(&app_ports);
        if !opaque.is_empty() {
            annotations.insert(OPAQUE_PORTS_ANNOTATION.into(), json!(opaque));
        }
    }

    if cfg.cni() {
        let args = serde_json::to_string(&proxy_init_args(&overrides))
            .expect("a list of strings serializes");
        annotations.insert(PROXY_INIT_ANNOTATION.into(), json!(args));
    }

    let spec = out["spec"].as_object_mut().expect("checked above");
    let mut proxy = proxy_container(cfg, &overrides, &app_ports);
    if proxy_await {
        proxy["lifecycle"] = json!({ "postStart": { "exec": { "command": [
            "/tandem", "proxy-await", "--timeout", "2m"
        ]}}});
    }
    if native_sidecar {
        // tandem-init (unless CNI mode), the proxy, then the template's
        // own init containers, which so run with the proxy serving.
        proxy["restartPolicy"] = json!("Always");
        let mut first = Vec::new();
        if !cfg.cni() {
            first.push(init_container(cfg, &overrides));
        }
        first.push(proxy);
        list(spec, "initContainers").splice(0..0, first);
    } else {
        if !cfg.cni() {
            list(spec, "initContainers").push(init_container(cfg, &overrides));
        }
        let containers = list(spec, "containers");
        if proxy_await {
            containers.insert(0, proxy);
        } else {
            containers.push(proxy);
        }
    }
    for v in volumes() {
        if cfg.cni() && v["name"] == XTABLES_LOCK_VOLUME {
            continue;
        }
        list(spec, "volumes").push(v);
    }
    Ok(out)
}

/// The list `key` of `obj`, made if missing.
fn list<'a>(obj: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let list = obj.entry(key).or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    list.as_array_mut().expect("an array")
}

/// Whether the proxy goes in as a native sidecar: the template's
/// annotation (Linkerd 2.19's name, else 2.15's), else `default`.
fn native_sidecar<'a>(
    annotation: &impl Fn(&str) -> Option<&'a str>,
    default: bool,
) -> Result<bool, Skip> {
    let Some((key, value)) = [NATIVE_SIDECAR_ANNOTATION, NATIVE_SIDECAR_ALPHA_ANNOTATION]
        .into_iter()
        .find_map(|key| annotation(key).map(|v| (key, v)))
    else {
        return Ok(default);
    };
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Skip::Invalid(format!(
            "annotation {key}: {value:?} is neither true nor false"
        ))),
    }
}

/// Every `containerPort` of the application's containers, sorted, once.
fn container_ports(containers: &[Value]) -> Vec<u16> {
    let mut ports: Vec<u16> = containers
        .iter()
        .filter_map(|c| c["ports"].as_array())
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64())
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The application's ports that are in Linkerd's default opaque list.
fn default_opaque_in_use(app_ports: &[u16]) -> String {
    let defaults = parse_ports(DEFAULT_OPAQUE_PORTS).expect("a valid constant");
    let used: Vec<PortRange> = app_ports
        .iter()
        .map(|p| PortRange::port(*p))
        .filter(|p| defaults.contains(p))
        .collect();
    join(&used)
}

fn with_defaults(defaults: &str, extra: &[PortRange]) -> String {
    let mut all = parse_ports(defaults).expect("a valid constant");
    for p in extra {
        if !all.contains(p) {
            all.push(*p);
        }
    }
    join(&all)
}

/// The arguments of `tandem proxy-init` (after the subcommand): the init
/// container's, or in CNI mode the plugin's, from the pod's annotation.
fn proxy_init_args(o: &Overrides) -> Vec<String> {
    let inbound_ignored = with_defaults(
        &format!("{CONTROL_PORT},{ADMIN_PORT},{DEFAULT_IGNORED_PORTS}"),
        &o.skip_inbound,
    );
    let outbound_ignored = with_defaults(DEFAULT_IGNORED_PORTS, &o.skip_outbound);
    [
        "--incoming-proxy-port",
        &INBOUND_PORT.to_string(),
        "--outgoing-proxy-port",
        &OUTBOUND_PORT.to_string(),
        "--proxy-uid",
        &PROXY_UID.to_string(),
        "--inbound-ports-to-ignore",
        &inbound_ignored,
        "--outbound-ports-to-ignore",
        &outbound_ignored,
    ]
    .map(String::from)
    .to_vec()
}

fn init_container(cfg: &Config, o: &Overrides) -> Value {
    let mut args = vec!["proxy-init".to_string()];
    args.extend(proxy_init_args(o));
    json!({
        "name": INIT_CONTAINER,
        "image": cfg.image(),
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": false,
            "runAsUser": 0,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{ "name": XTABLES_LOCK_VOLUME, "mountPath": "/run" }],
    })
}

fn env(name: &str, value: impl Into<String>) -> Value {
    json!({ "name": name, "value": value.into() })
}

fn field_env(name: &str, field: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": field } } })
}

fn proxy_container(cfg: &Config, o: &Overrides, app_ports: &[u16]) -> Value {
    let p = "LINKERD2_PROXY_";
    let mut envs = vec![
        field_env("_pod_name", "metadata.name"),
        field_env("_pod_ns", "metadata.namespace"),
        field_env("_pod_nodeName", "spec.nodeName"),
        field_env("_pod_sa", "spec.serviceAccountName"),
        env(&format!("{p}LOG"), "warn,tandem_proxy=info"),
        env(&format!("{p}LOG_FORMAT"), "plain"),
        env(
            &format!("{p}DESTINATION_SVC_ADDR"),
            cfg.service_addr("tandem-destination", 8086),
        ),
        env(
            &format!("{p}DESTINATION_SVC_NAME"),
            cfg.component_identity("tandem-destination"),
        ),
        env(
            &format!("{p}DESTINATION_PROFILE_NETWORKS"),
            CLUSTER_NETWORKS,
        ),
        env(
            &format!("{p}DESTINATION_PROFILE_SUFFIXES"),
            "svc.cluster.local.",
        ),
        env(
            &format!("{p}DESTINATION_CONTEXT"),
            r#"{"ns":"$(_pod_ns)", "nodeName":"$(_pod_nodeName)"}"#,
        ),
        env(&format!("{p}INBOUND_DEFAULT_POLICY"), "all-unauthenticated"),
        env(
            &format!("{p}CONTROL_LISTEN_ADDR"),
            format!("0.0.0.0:{CONTROL_PORT}"),
        ),
        env(
            &format!("{p}ADMIN_LISTEN_ADDR"),
            format!("0.0.0.0:{ADMIN_PORT}"),
        ),
        env(
            &format!("{p}OUTBOUND_LISTEN_ADDR"),
            format!("127.0.0.1:{OUTBOUND_PORT}"),
        ),
        env(
            &format!("{p}INBOUND_LISTEN_ADDR"),
            format!("0.0.0.0:{INBOUND_PORT}"),
        ),
        field_env(&format!("{p}INBOUND_IPS"), "status.podIPs"),
    ];
    if !app_ports.is_empty() {
        let ports: Vec<String> = app_ports.iter().map(u16::to_string).collect();
        envs.push(env(&format!("{p}INBOUND_PORTS"), ports.join(",")));
    }
    envs.extend([
        env(
            &format!("{p}INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION"),
            o.opaque.as_deref().unwrap_or(DEFAULT_OPAQUE_PORTS),
        ),
        env(&format!("{p}IDENTITY_DIR"), IDENTITY_DIR),
        env(
            &format!("{p}IDENTITY_TRUST_ANCHORS"),
            cfg.trust_anchors_pem(),
        ),
        env(
            &format!("{p}IDENTITY_TOKEN_FILE"),
            format!("{TOKEN_DIR}/{TOKEN_FILE}"),
        ),
        env(
            &format!("{p}IDENTITY_SVC_ADDR"),
            cfg.service_addr("tandem-identity", 8080),
        ),
        env(
            &format!("{p}IDENTITY_SVC_NAME"),
            cfg.component_identity("tandem-identity"),
        ),
        env(
            &format!("{p}IDENTITY_LOCAL_NAME"),
            cfg.local_name_template(),
        ),
    ]);
    json!({
        "name": PROXY_CONTAINER,
        "image": cfg.image(),
        "imagePullPolicy": "IfNotPresent",
        "args": ["proxy"],
        "env": envs,
        "ports": [
            { "name": PROXY_PORT_NAME, "containerPort": INBOUND_PORT },
            { "name": ADMIN_PORT_NAME, "containerPort": ADMIN_PORT },
        ],
        "livenessProbe": {
            "httpGet": { "path": "/live", "port": ADMIN_PORT },
            "initialDelaySeconds": 10,
        },
        // Probed every second from the start (Linkerd: after 2 s, then
        // every 10 s), so that a new pod takes traffic, e.g. at a failback,
        // about a second after its proxy holds a certificate rather than
        // up to 10 s later. `/ready` is a cheap local read.
        "readinessProbe": {
            "httpGet": { "path": "/ready", "port": ADMIN_PORT },
            "periodSeconds": 1,
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": PROXY_UID,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            { "name": END_ENTITY_VOLUME, "mountPath": IDENTITY_DIR },
            { "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true },
        ],
    })
}

fn volumes() -> [Value; 3] {
    [
        json!({ "name": END_ENTITY_VOLUME, "emptyDir": { "medium": "Memory" } }),
        json!({
            "name": TOKEN_VOLUME,
            "projected": { "sources": [{ "serviceAccountToken": {
                "audience": TOKEN_AUDIENCE,
                "expirationSeconds": 86400,
                "path": TOKEN_FILE,
            }}]},
        }),
        json!({ "name": XTABLES_LOCK_VOLUME, "emptyDir": {} }),
    ]
}

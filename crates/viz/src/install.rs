//! `tandem viz install`: Prometheus in `tandem-viz`, scraping the admin port
//! of every injected proxy with Linkerd's relabeling
//! (`viz/charts/linkerd-viz/templates/prometheus.yaml`, job `linkerd-proxy`):
//! keep pods by proxy container name, admin port name and the
//! control-plane-ns label; set `namespace` and `pod`; `linkerd.io/proxy-job`
//! becomes `k8s_job`, `linkerd.io/proxy-<kind>` becomes `<kind>` (so
//! `deployment`), other `linkerd.io/<x>` labels lose the prefix, and every
//! other pod label is copied. Pure rendering.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tandem_inject::{ADMIN_PORT_NAME, PROXY_CONTAINER};

use crate::prom::{NAMESPACE, PORT, SERVICE};

/// The image `viz install` runs by default: Prometheus as the testbed
/// builds it from its Go module (`tools/prometheus`).
pub const DEFAULT_PROMETHEUS_IMAGE: &str = "tandem.local/prometheus:3.16.0";
/// The annotation `--set grafana.url=...` is recorded in: tandem ships no
/// Grafana (it is AGPL); the URL only tells where one is.
pub const GRAFANA_URL_ANNOTATION: &str = "viz.tandem.io/grafana-url";

/// What `--set` can change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VizOptions {
    /// `prometheus.image`.
    pub prometheus_image: String,
    /// `prometheus.scrapeInterval`.
    pub scrape_interval: String,
    /// `prometheus.retention`.
    pub retention: String,
    /// `linkerdNamespace`: the control plane whose proxies are scraped.
    pub control_plane_namespace: String,
    /// `grafana.url`: recorded as an annotation, nothing more.
    pub grafana_url: Option<String>,
}

impl Default for VizOptions {
    fn default() -> Self {
        Self {
            prometheus_image: DEFAULT_PROMETHEUS_IMAGE.into(),
            scrape_interval: "10s".into(),
            retention: "6h".into(),
            control_plane_namespace: "tandem".into(),
            grafana_url: None,
        }
    }
}

/// The `--set` keys, with what they change.
pub const KEYS: &[(&str, &str)] = &[
    ("prometheus.image", "the Prometheus image"),
    (
        "prometheus.scrapeInterval",
        "how often proxies are scraped (10s)",
    ),
    ("prometheus.retention", "how long metrics are kept (6h)"),
    ("linkerdNamespace", "the control plane's namespace (tandem)"),
    (
        "grafana.url",
        "recorded as an annotation only: tandem ships no Grafana",
    ),
];

impl VizOptions {
    /// Applies `key=value` settings in order. Returns a warning for each
    /// unknown key (ignored, as the seed's scripts may pass Linkerd's); a
    /// setting without `=` or with an empty known value is an error.
    pub fn set(&mut self, settings: &[String]) -> Result<Vec<String>, crate::Error> {
        let mut warnings = vec![];
        for s in settings {
            let Some((key, value)) = s.split_once('=') else {
                return Err(crate::Error::BadArgument(format!(
                    "--set {s:?} is not key=value"
                )));
            };
            let known = KEYS.iter().any(|(k, _)| *k == key);
            if known && value.is_empty() {
                return Err(crate::Error::BadArgument(format!(
                    "--set {key}= needs a value"
                )));
            }
            match key {
                "prometheus.image" => self.prometheus_image = value.into(),
                "prometheus.scrapeInterval" => {
                    value.parse::<crate::query::Window>()?;
                    self.scrape_interval = value.into();
                }
                "prometheus.retention" => self.retention = value.into(),
                "linkerdNamespace" => self.control_plane_namespace = value.into(),
                "grafana.url" => self.grafana_url = Some(value.into()),
                _ => warnings.push(format!(
                    "--set {key}: unknown key, ignored (known: {})",
                    KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        Ok(warnings)
    }
}

fn labels() -> Value {
    json!({
        "app.kubernetes.io/part-of": "tandem",
        "app.kubernetes.io/component": "prometheus",
        "linkerd.io/extension": "viz",
    })
}

/// The Prometheus configuration: itself, and the proxies.
pub fn prometheus_config(o: &VizOptions) -> String {
    let keep = format!(
        "^{PROXY_CONTAINER};{ADMIN_PORT_NAME};{}$",
        o.control_plane_namespace
    );
    format!(
        r#"global:
  scrape_interval: {interval}
  scrape_timeout: {interval}
  evaluation_interval: {interval}
scrape_configs:
- job_name: prometheus
  static_configs:
  - targets: ["localhost:{PORT}"]
# Every injected proxy's admin port, labelled as Linkerd's linkerd-proxy job.
- job_name: linkerd-proxy
  kubernetes_sd_configs:
  - role: pod
  relabel_configs:
  # Only the proxy container's admin port of this control plane's pods.
  - source_labels:
    - __meta_kubernetes_pod_container_name
    - __meta_kubernetes_pod_container_port_name
    - __meta_kubernetes_pod_label_linkerd_io_control_plane_ns
    action: keep
    regex: "{keep}"
  - source_labels: [__meta_kubernetes_namespace]
    action: replace
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    action: replace
    target_label: pod
  # linkerd.io/proxy-job would clash with Prometheus' own job label.
  - source_labels: [__meta_kubernetes_pod_label_linkerd_io_proxy_job]
    action: replace
    target_label: k8s_job
  - action: labeldrop
    regex: __meta_kubernetes_pod_label_linkerd_io_proxy_job
  # linkerd.io/proxy-deployment=x becomes deployment=x, and so on.
  - action: labelmap
    regex: __meta_kubernetes_pod_label_linkerd_io_proxy_(.+)
  - action: labeldrop
    regex: __meta_kubernetes_pod_label_linkerd_io_proxy_(.+)
  # Other linkerd.io/x labels lose their prefix (control_plane_ns, ...).
  - action: labelmap
    regex: __meta_kubernetes_pod_label_linkerd_io_(.+)
  # Every other pod label is copied as it is.
  - action: labelmap
    regex: __meta_kubernetes_pod_label_(.+)
    replacement: __tmp_pod_label_$1
  - action: labelmap
    regex: __tmp_pod_label_linkerd_io_(.+)
    replacement: __tmp_pod_label_$1
  - action: labeldrop
    regex: __tmp_pod_label_linkerd_io_(.+)
  - action: labelmap
    regex: __tmp_pod_label_(.+)
"#,
        interval = o.scrape_interval,
    )
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({ "apiGroups": groups, "resources": resources, "verbs": verbs })
}

/// The objects, in apply order.
pub fn render(o: &VizOptions) -> Vec<Value> {
    let ns = NAMESPACE;
    let l = labels();
    let role = format!("tandem-viz-{SERVICE}");
    let mut ns_annotations = BTreeMap::from([("linkerd.io/inject", "disabled".to_string())]);
    if let Some(url) = &o.grafana_url {
        ns_annotations.insert(GRAFANA_URL_ANNOTATION, url.clone());
    }
    let config = prometheus_config(o);
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": { "app.kubernetes.io/part-of": "tandem", "tandem.io/extension": "viz", "linkerd.io/extension": "viz" },
                "annotations": ns_annotations,
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": SERVICE, "namespace": ns, "labels": l },
        }),
        // Pod discovery, cluster-wide, read only.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": role, "labels": l },
            "rules": [rule(&[""], &["pods"], &["get", "list", "watch"])],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": role, "labels": l },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "kind": "ServiceAccount", "name": SERVICE, "namespace": ns }],
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "prometheus-config", "namespace": ns, "labels": l },
            "data": { "prometheus.yml": config },
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": SERVICE, "namespace": ns, "labels": l },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": { "app.kubernetes.io/component": "prometheus" } },
                "template": {
                    "metadata": {
                        "labels": l,
                        // A new configuration restarts Prometheus.
                        "annotations": { "viz.tandem.io/config-hash": config_hash(&config) },
                    },
                    "spec": {
                        "serviceAccountName": SERVICE,
                        "securityContext": { "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534, "runAsNonRoot": true },
                        "containers": [{
                            "name": "prometheus",
                            "image": o.prometheus_image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": [
                                "--config.file=/etc/prometheus/prometheus.yml",
                                "--storage.tsdb.path=/data",
                                format!("--storage.tsdb.retention.time={}", o.retention),
                                format!("--web.listen-address=0.0.0.0:{PORT}"),
                                "--log.level=info",
                            ],
                            "ports": [{ "name": "http", "containerPort": PORT }],
                            "readinessProbe": { "httpGet": { "path": "/-/ready", "port": "http" }, "periodSeconds": 2 },
                            "livenessProbe": { "httpGet": { "path": "/-/healthy", "port": "http" }, "periodSeconds": 10, "failureThreshold": 6 },
                            "resources": { "requests": { "cpu": "50m", "memory": "128Mi" } },
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": { "drop": ["ALL"] },
                            },
                            "volumeMounts": [
                                { "name": "config", "mountPath": "/etc/prometheus", "readOnly": true },
                                { "name": "data", "mountPath": "/data" },
                            ],
                        }],
                        "volumes": [
                            { "name": "config", "configMap": { "name": "prometheus-config" } },
                            { "name": "data", "emptyDir": {} },
                        ],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": SERVICE, "namespace": ns, "labels": l },
            "spec": {
                "selector": { "app.kubernetes.io/component": "prometheus" },
                "ports": [{ "name": "http", "port": PORT, "targetPort": "http" }],
            },
        }),
    ]
}

/// A short, stable hash of the configuration (FNV-1a; not for security).
fn config_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
#[path = "install_tests.rs"]
mod tests;

//! `tandem install`: the core control plane.

use base64::Engine;
use serde_json::{Value, json};

use crate::{
    ImageOptions,
    controller::{Controller, replicated},
    labels, rule,
};

mod destination;

pub use destination::{DESTINATION, GRPC_PORT as DESTINATION_GRPC_PORT};

pub const DEFAULT_NAMESPACE: &str = "tandem";
pub const TRUST_ROOTS_CONFIGMAP: &str = "tandem-identity-trust-roots";
pub const TRUST_ROOTS_KEY: &str = "ca-bundle.crt";
/// The install's settings that other commands read from the cluster (as
/// Linkerd's `linkerd-config`): `tandem inject` reads [`CNI_ENABLED_KEY`]
/// and [`NATIVE_SIDECAR_KEY`].
pub const CONFIG_CONFIGMAP: &str = "tandem-config";
/// `"true"` when the control plane was installed with
/// `--linkerd-cni-enabled`: injected pods get no init container.
pub const CNI_ENABLED_KEY: &str = "cniEnabled";
/// `"true"` when the control plane was installed with `--native-sidecar`:
/// injected proxies are native sidecars unless a template says otherwise.
pub const NATIVE_SIDECAR_KEY: &str = "nativeSidecar";
pub const ISSUER_SECRET: &str = "tandem-identity-issuer";
pub const ISSUER_CERT_KEY: &str = "crt.pem";
pub const ISSUER_KEY_KEY: &str = "key.pem";
pub const IDENTITY: &str = "tandem-identity";
/// The admin port of every tandem process: /live, /ready, /metrics.
pub const ADMIN_PORT: u16 = 9990;
/// Identity/Certify (gRPC over TLS), on Linkerd's identity port.
pub const IDENTITY_GRPC_PORT: u16 = 8080;
/// The replicas of identity and destination with `--ha` (Linkerd's
/// `controllerReplicas` in its HA values).
pub const HA_REPLICAS: u32 = 3;

/// The core control plane's inputs: already validated certificates.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    pub namespace: String,
    pub image: ImageOptions,
    pub trust_anchors_pem: String,
    pub issuer_cert_pem: String,
    pub issuer_key_pem: String,
    pub cluster_domain: String,
    pub log_level: String,
    /// `--linkerd-cni-enabled`: the tandem-cni plugin redirects the pods.
    pub cni_enabled: bool,
    /// `--native-sidecar`: injected proxies are native sidecars.
    pub native_sidecar: bool,
    /// Replicas of identity and of destination; above one they prefer
    /// different nodes, and each has a PodDisruptionBudget.
    pub replicas: u32,
}

/// The control plane's objects, in apply order: identity, then destination.
pub fn render(o: &CoreOptions) -> Vec<Value> {
    let mut objs = identity(o);
    objs.extend(destination::render(o));
    objs
}

fn identity(o: &CoreOptions) -> Vec<Value> {
    let ns = o.namespace.as_str();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let l = labels("identity");
    let mut objs = vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": ns, "labels": { crate::PART_OF: "tandem", "tandem.io/control-plane-ns": ns } },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": TRUST_ROOTS_CONFIGMAP, "namespace": ns, "labels": l },
            "data": { TRUST_ROOTS_KEY: o.trust_anchors_pem },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": CONFIG_CONFIGMAP, "namespace": ns, "labels": { crate::PART_OF: "tandem" } },
            "data": {
                CNI_ENABLED_KEY: o.cni_enabled.to_string(),
                NATIVE_SIDECAR_KEY: o.native_sidecar.to_string(),
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": { "name": ISSUER_SECRET, "namespace": ns, "labels": l },
            "data": { ISSUER_CERT_KEY: b64(&o.issuer_cert_pem), ISSUER_KEY_KEY: b64(&o.issuer_key_pem) },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": IDENTITY, "namespace": ns, "labels": l },
        }),
        // Reads only its own issuer and trust roots, by name.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": { "name": IDENTITY, "namespace": ns, "labels": l },
            "rules": [
                { "apiGroups": [""], "resources": ["secrets"], "resourceNames": [ISSUER_SECRET], "verbs": ["get", "watch"] },
                { "apiGroups": [""], "resources": ["configmaps"], "resourceNames": [TRUST_ROOTS_CONFIGMAP], "verbs": ["get", "watch"] },
            ],
        }),
        binding(
            "RoleBinding",
            IDENTITY,
            Some(ns),
            ("Role", IDENTITY),
            (IDENTITY, ns),
            &l,
        ),
        // Validates workload tokens before it signs, and reports issuer events.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": format!("{IDENTITY}-{ns}"), "labels": l },
            "rules": [
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            ],
        }),
        binding(
            "ClusterRoleBinding",
            &format!("{IDENTITY}-{ns}"),
            None,
            ("ClusterRole", &format!("{IDENTITY}-{ns}")),
            (IDENTITY, ns),
            &l,
        ),
    ];
    let pods = json!({ "app.kubernetes.io/component": "identity", crate::PART_OF: "tandem" });
    let mut deployment = Controller {
        name: IDENTITY,
        namespace: ns,
        labels: &l,
        pod_labels: &l,
        selector: &pods,
        container: "identity",
        image: &o.image.reference(),
        args: json!([
            "identity",
            "--trust-anchors-file",
            format!("/var/run/tandem/trust-roots/{TRUST_ROOTS_KEY}"),
            "--issuer-dir",
            "/var/run/tandem/issuer",
            "--cluster-domain",
            o.cluster_domain,
            "--control-plane-namespace",
            ns,
            "--admin-addr",
            format!("0.0.0.0:{ADMIN_PORT}"),
            "--grpc-addr",
            format!("0.0.0.0:{IDENTITY_GRPC_PORT}"),
            "--log",
            o.log_level,
        ]),
        ports: &[("grpc", IDENTITY_GRPC_PORT)],
        memory_limit: "128Mi",
    }
    .deployment();
    let pod = &mut deployment["spec"]["template"]["spec"];
    pod["containers"][0]["volumeMounts"] = json!([
        { "name": "trust-roots", "mountPath": "/var/run/tandem/trust-roots", "readOnly": true },
        { "name": "issuer", "mountPath": "/var/run/tandem/issuer", "readOnly": true },
    ]);
    pod["volumes"] = json!([
        { "name": "trust-roots", "configMap": { "name": TRUST_ROOTS_CONFIGMAP } },
        { "name": "issuer", "secret": { "secretName": ISSUER_SECRET } },
    ]);
    objs.extend(replicated(deployment, o.replicas));
    objs.push(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": IDENTITY, "namespace": ns, "labels": l },
        "spec": {
            "selector": pods,
            "ports": [
                { "name": "grpc", "port": IDENTITY_GRPC_PORT, "targetPort": "grpc" },
                { "name": "admin-http", "port": ADMIN_PORT, "targetPort": "admin-http" },
            ],
        },
    }));
    objs
}

/// A RoleBinding or ClusterRoleBinding of one ServiceAccount (name, namespace)
/// to a role (kind, name).
pub(crate) fn binding(
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    role: (&str, &str),
    sa: (&str, &str),
    labels: &Value,
) -> Value {
    let mut meta = json!({ "name": name, "labels": labels });
    if let Some(ns) = namespace {
        meta["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": role.0, "name": role.1 },
        "subjects": [{ "kind": "ServiceAccount", "name": sa.0, "namespace": sa.1 }],
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn opts() -> CoreOptions {
        CoreOptions {
            namespace: DEFAULT_NAMESPACE.into(),
            image: ImageOptions::default(),
            trust_anchors_pem: "ANCHORS".into(),
            issuer_cert_pem: "CERT".into(),
            issuer_key_pem: "KEY".into(),
            cluster_domain: "cluster.local".into(),
            log_level: "info".into(),
            cni_enabled: false,
            native_sidecar: false,
            replicas: 1,
        }
    }

    pub(crate) fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objs.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name} rendered"))
    }

    #[test]
    fn certificates_land_in_the_configmap_and_secret() {
        let objs = render(&opts());
        assert_eq!(
            find(&objs, "ConfigMap", TRUST_ROOTS_CONFIGMAP)["data"][TRUST_ROOTS_KEY],
            "ANCHORS"
        );
        let secret = find(&objs, "Secret", ISSUER_SECRET);
        assert_eq!(secret["data"][ISSUER_CERT_KEY], "Q0VSVA==");
        assert_eq!(secret["data"][ISSUER_KEY_KEY], "S0VZ");
    }

    #[test]
    fn the_config_says_whether_the_cni_plugin_redirects_the_pods_and_proxies_are_native() {
        for (cni_enabled, native_sidecar) in [(false, false), (true, false), (false, true)] {
            let objs = render(&CoreOptions {
                cni_enabled,
                native_sidecar,
                ..opts()
            });
            let config = find(&objs, "ConfigMap", CONFIG_CONFIGMAP);
            assert_eq!(config["metadata"]["namespace"], DEFAULT_NAMESPACE);
            assert_eq!(config["data"][CNI_ENABLED_KEY], cni_enabled.to_string());
            assert_eq!(
                config["data"][NATIVE_SIDECAR_KEY],
                native_sidecar.to_string()
            );
        }
    }

    #[test]
    fn the_identity_role_reads_only_its_own_objects() {
        let objs = render(&opts());
        let role = find(&objs, "Role", IDENTITY);
        for r in role["rules"].as_array().unwrap() {
            assert!(
                r["resourceNames"].as_array().is_some_and(|n| n.len() == 1),
                "{r}"
            );
            assert!(!r["verbs"].as_array().unwrap().contains(&json!("list")));
        }
        let crb = find(&objs, "ClusterRoleBinding", "tandem-identity-tandem");
        assert_eq!(crb["subjects"][0]["name"], IDENTITY);
        assert_eq!(crb["subjects"][0]["namespace"], "tandem");
    }

    #[test]
    fn identity_serves_certify_on_8080() {
        let objs = render(&opts());
        let container =
            &find(&objs, "Deployment", IDENTITY)["spec"]["template"]["spec"]["containers"][0];
        assert!(
            container["ports"]
                .as_array()
                .unwrap()
                .contains(&json!({ "name": "grpc", "containerPort": 8080 })),
            "{container}"
        );
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.windows(2)
                .any(|w| w == ["--grpc-addr", "0.0.0.0:8080"]),
            "{args:?}"
        );
        assert!(
            args.windows(2)
                .any(|w| w == ["--control-plane-namespace", "tandem"]),
            "{args:?}"
        );
        let svc = find(&objs, "Service", IDENTITY);
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({ "name": "grpc", "port": 8080, "targetPort": "grpc" })
        );
    }

    #[test]
    fn with_ha_identity_and_destination_spread_and_get_budgets() {
        let objs = render(&CoreOptions {
            replicas: HA_REPLICAS,
            ..opts()
        });
        for name in [IDENTITY, DESTINATION] {
            let d = find(&objs, "Deployment", name);
            assert_eq!(d["spec"]["replicas"], 3);
            assert!(
                d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].is_object(),
                "{d}"
            );
            let selector = &d["spec"]["selector"]["matchLabels"];
            let pdb = find(&objs, "PodDisruptionBudget", name);
            assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
            // The selector picks the template's pods.
            let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
            for (k, v) in selector.as_object().unwrap() {
                assert_eq!(&pod_labels[k], v, "{name}: {k}");
            }
        }
        let one = render(&opts());
        assert!(one.iter().all(|o| o["kind"] != "PodDisruptionBudget"));
        assert_eq!(find(&one, "Deployment", IDENTITY)["spec"]["replicas"], 1);
    }

    #[test]
    fn every_namespaced_object_is_in_the_namespace() {
        let mut o = opts();
        o.namespace = "elsewhere".into();
        for obj in render(&o) {
            let kind = obj["kind"].as_str().unwrap();
            if !matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding") {
                assert_eq!(obj["metadata"]["namespace"], "elsewhere", "{kind}");
            }
        }
    }
}

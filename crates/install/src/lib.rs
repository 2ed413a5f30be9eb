//! The manifests tandem prints for `kubectl apply -f -`: the core control
//! plane, the failover extension, the SMI CRD and the CNI installer. Pure
//! rendering: no cluster is read here, and the same options always give the
//! same objects. [`cni`] also decides how a node's CNI config is patched.

#![forbid(unsafe_code)]

pub mod chart;
pub mod cni;
mod controller;
pub mod core;
pub mod failover;
pub mod multicluster;

use serde_json::{Value, json};

/// The label that marks every object tandem renders.
pub const PART_OF: &str = "app.kubernetes.io/part-of";
/// The label that names an extension's namespace, for `check` to find it.
pub const EXTENSION_LABEL: &str = "tandem.io/extension";
/// The label linkerd-failover's check looks for; set too, for drop-in use.
pub const LINKERD_EXTENSION_LABEL: &str = "linkerd.io/extension";

/// Where images come from. `--image` wins; otherwise `REGISTRY/NAME:TAG`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageOptions {
    pub image: Option<String>,
    pub registry: String,
    pub tag: String,
}

pub const DEFAULT_REGISTRY: &str = "ghcr.io/tandem-io";

impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            image: None,
            registry: DEFAULT_REGISTRY.into(),
            tag: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

impl ImageOptions {
    /// The image reference of the `tandem` binary's image.
    pub fn reference(&self) -> String {
        match &self.image {
            Some(image) => image.clone(),
            None => format!(
                "{}/tandem:{}",
                self.registry.trim_end_matches('/'),
                self.tag
            ),
        }
    }
}

/// Labels shared by an extension's objects.
pub(crate) fn labels(component: &str) -> Value {
    json!({
        PART_OF: "tandem",
        "app.kubernetes.io/component": component,
    })
}

/// A namespaced RBAC rule.
pub(crate) fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({ "apiGroups": groups, "resources": resources, "verbs": verbs })
}

/// The container's security settings: nothing more than the binary needs.
pub(crate) fn restricted_security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// Renders objects as a multi-document YAML stream.
pub fn to_yaml(objects: &[Value]) -> Result<String, String> {
    tandem_api::to_yaml_stream(objects)
}

/// `kind/namespace/name` of each object, in order, for `uninstall`.
pub fn object_keys(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
            format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap_or(""),
                ns,
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// What `uninstall` prints: the same objects, reduced to what `kubectl
/// delete -f -` needs, namespaced objects first and namespaces and CRDs last.
pub fn for_deletion(objects: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut meta = json!({ "name": o["metadata"]["name"] });
            if let Some(ns) = o["metadata"]["namespace"].as_str() {
                meta["namespace"] = json!(ns);
            }
            json!({ "apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": meta })
        })
        .collect();
    let rank = |o: &Value| match o["kind"].as_str() {
        Some("Namespace") => 2,
        Some("CustomResourceDefinition") => 3,
        _ => 1,
    };
    out.sort_by_key(rank);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_reference_prefers_the_full_image() {
        let mut o = ImageOptions {
            image: None,
            registry: "example.com/mirror/".into(),
            tag: "1.2.3".into(),
        };
        assert_eq!(o.reference(), "example.com/mirror/tandem:1.2.3");
        o.image = Some("local/tandem@sha256:abc".into());
        assert_eq!(o.reference(), "local/tandem@sha256:abc");
    }

    #[test]
    fn deletion_puts_namespaces_and_crds_last() {
        let objs = vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "c"}}),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s", "namespace": "n"}, "secrets": []}),
        ];
        let del = for_deletion(&objs);
        let kinds: Vec<_> = del.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["ServiceAccount", "Namespace", "CustomResourceDefinition"]
        );
        assert!(del[0].get("secrets").is_none(), "only what delete needs");
        assert_eq!(del[0]["metadata"]["namespace"], "n");
    }
}

//! The Deployment of a tandem controller, and what more than one replica
//! of it needs: the replicas prefer different nodes and zones, and a
//! PodDisruptionBudget lets a drain take only one at a time (Linkerd's
//! `--ha`).
//!
//! Unlike Linkerd's, the node spread is a preference, not a requirement: a
//! cluster with fewer nodes than replicas still runs them all, and `tandem
//! check` warns that they share a node.

use serde_json::{Value, json};

use crate::{core::ADMIN_PORT, restricted_security_context};

/// A tandem controller: one container of the tandem image, whose admin
/// port's `/live` and `/ready` are its probes.
pub(crate) struct Controller<'a> {
    /// The Deployment's and its ServiceAccount's name.
    pub name: &'a str,
    pub namespace: &'a str,
    /// The Deployment's labels.
    pub labels: &'a Value,
    /// Its pods' labels, a superset of `selector`.
    pub pod_labels: &'a Value,
    pub selector: &'a Value,
    pub container: &'a str,
    pub image: &'a str,
    pub args: Value,
    /// Ports besides the admin port (`admin-http`).
    pub ports: &'a [(&'a str, u16)],
    pub memory_limit: &'a str,
}

impl Controller<'_> {
    /// Its Deployment, of one replica (see [`replicated`]).
    pub(crate) fn deployment(&self) -> Value {
        let mut ports: Vec<Value> = self
            .ports
            .iter()
            .map(|(name, port)| json!({ "name": name, "containerPort": port }))
            .collect();
        ports.push(json!({ "name": "admin-http", "containerPort": ADMIN_PORT }));
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": self.name, "namespace": self.namespace, "labels": self.labels },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": self.selector },
                "template": {
                    "metadata": { "labels": self.pod_labels },
                    "spec": {
                        "serviceAccountName": self.name,
                        "automountServiceAccountToken": true,
                        "containers": [{
                            "name": self.container,
                            "image": self.image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": self.args,
                            "ports": ports,
                            "livenessProbe": { "httpGet": { "path": "/live", "port": "admin-http" } },
                            "readinessProbe": { "httpGet": { "path": "/ready", "port": "admin-http" } },
                            "resources": {
                                "requests": { "cpu": "10m", "memory": "32Mi" },
                                "limits": { "memory": self.memory_limit },
                            },
                            "securityContext": restricted_security_context(),
                        }],
                    },
                },
            },
        })
    }
}

/// The Deployment's container learns its pod's name from `POD_NAME`: a
/// replica's name in a leader election.
pub(crate) fn with_pod_name(mut deployment: Value) -> Value {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([field_env("POD_NAME", "metadata.name")]);
    deployment
}

/// An environment variable from a field of the pod (the downward API).
pub(crate) fn field_env(name: &str, field: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": field } } })
}

/// The topology keys the replicas spread over, with their weights: a
/// node's loss is likelier than a zone's, so nodes weigh more.
const SPREAD: [(&str, u32); 2] = [
    ("kubernetes.io/hostname", 100),
    ("topology.kubernetes.io/zone", 50),
];

/// The pods a Deployment selects.
fn selector(deployment: &Value) -> &Value {
    &deployment["spec"]["selector"]["matchLabels"]
}

/// Sets a Deployment's replicas; above one, its pods prefer different nodes
/// and zones, and a PodDisruptionBudget of the same name follows it.
pub(crate) fn replicated(mut deployment: Value, replicas: u32) -> Vec<Value> {
    deployment["spec"]["replicas"] = json!(replicas);
    if replicas <= 1 {
        return vec![deployment];
    }
    spread(&mut deployment);
    let budget = disruption_budget(&deployment);
    vec![deployment, budget]
}

/// The pods of the Deployment prefer nodes and zones that hold none of them.
fn spread(deployment: &mut Value) {
    let pods = selector(deployment).clone();
    let terms: Vec<Value> = SPREAD
        .iter()
        .map(|(key, weight)| {
            json!({
                "weight": weight,
                "podAffinityTerm": { "topologyKey": key, "labelSelector": { "matchLabels": pods } },
            })
        })
        .collect();
    deployment["spec"]["template"]["spec"]["affinity"] =
        json!({ "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": terms } });
}

/// A voluntary disruption (a drain, an eviction) takes at most one of the
/// Deployment's pods at a time.
fn disruption_budget(deployment: &Value) -> Value {
    let meta = &deployment["metadata"];
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": { "name": meta["name"], "namespace": meta["namespace"], "labels": meta["labels"] },
        "spec": { "maxUnavailable": 1, "selector": { "matchLabels": selector(deployment) } },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "d", "namespace": "n", "labels": { "a": "b" } },
            "spec": {
                "replicas": 7,
                "selector": { "matchLabels": { "app": "d" } },
                "template": { "metadata": { "labels": { "app": "d", "x": "y" } }, "spec": { "containers": [] } },
            },
        })
    }

    #[test]
    fn one_replica_is_left_alone() {
        let objs = replicated(deployment(), 1);
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0]["spec"]["replicas"], 1);
        assert!(
            objs[0]["spec"]["template"]["spec"]
                .get("affinity")
                .is_none()
        );
    }

    #[test]
    fn replicas_spread_and_get_a_budget_of_one_at_a_time() {
        let objs = replicated(deployment(), 3);
        let [d, pdb] = objs.as_slice() else {
            panic!("a Deployment and its budget: {objs:?}")
        };
        assert_eq!(d["spec"]["replicas"], 3);
        let terms = d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .unwrap();
        let keys: Vec<(&str, u64)> = terms
            .iter()
            .map(|t| {
                (
                    t["podAffinityTerm"]["topologyKey"].as_str().unwrap(),
                    t["weight"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("kubernetes.io/hostname", 100),
                ("topology.kubernetes.io/zone", 50)
            ]
        );
        for t in terms {
            assert_eq!(
                t["podAffinityTerm"]["labelSelector"]["matchLabels"],
                json!({ "app": "d" })
            );
        }
        assert_eq!(pdb["kind"], "PodDisruptionBudget");
        assert_eq!(pdb["apiVersion"], "policy/v1");
        assert_eq!(pdb["metadata"]["name"], "d");
        assert_eq!(pdb["metadata"]["namespace"], "n");
        assert_eq!(pdb["metadata"]["labels"], json!({ "a": "b" }));
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        // Exactly the Deployment's pods.
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            d["spec"]["selector"]["matchLabels"]
        );
    }
}

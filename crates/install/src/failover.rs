//! `tandem failover install`: the failover controller and its least-privilege
//! RBAC. The Helm chart in `charts/tandem-failover` is generated from this.

use serde_json::{Value, json};

use crate::{
    EXTENSION_LABEL, ImageOptions, LINKERD_EXTENSION_LABEL,
    controller::{Controller, replicated, with_pod_name},
    core::ADMIN_PORT,
    core::binding,
    labels, rule,
};

pub const DEFAULT_NAMESPACE: &str = "tandem-failover";
pub const NAME: &str = "tandem-failover";
pub const DEFAULT_SELECTOR: &str = "failover.linkerd.io/controlled-by";
/// The Lease the replicas elect their leader with.
pub const LEASE: &str = "tandem-failover";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverOptions {
    pub namespace: String,
    pub image: ImageOptions,
    /// Two replicas: one leads, one stands by (leader election on a Lease).
    pub replicas: u32,
    /// The label selector of the TrafficSplits and HTTPRoutes it controls.
    pub selector: String,
    pub log_level: String,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.into(),
            image: ImageOptions::default(),
            replicas: 2,
            selector: DEFAULT_SELECTOR.into(),
            log_level: "info".into(),
        }
    }
}

/// The extension's objects, in apply order.
pub fn render(o: &FailoverOptions) -> Vec<Value> {
    render_with_image(o, &o.image.reference())
}

/// As [`render`], with the image reference given as is (the chart passes a
/// template expression here).
pub(crate) fn render_with_image(o: &FailoverOptions, image: &str) -> Vec<Value> {
    let ns = o.namespace.as_str();
    let l = labels("failover");
    let cluster_name = format!("{NAME}-{ns}");
    let mut objs = vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": { crate::PART_OF: "tandem", EXTENSION_LABEL: "failover", LINKERD_EXTENSION_LABEL: "failover" },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": NAME, "namespace": ns, "labels": l },
        }),
        // Exactly what the controller does, cluster-wide: read and patch the
        // splits, read readiness, report events.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": cluster_name, "labels": l },
            "rules": [
                rule(&["split.smi-spec.io"], &["trafficsplits"], &["get", "list", "watch", "patch"]),
                rule(&["gateway.networking.k8s.io"], &["httproutes"], &["get", "list", "watch", "patch"]),
                rule(&["discovery.k8s.io"], &["endpointslices"], &["get", "list", "watch"]),
                rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            ],
        }),
        binding(
            "ClusterRoleBinding",
            &cluster_name,
            None,
            ("ClusterRole", &cluster_name),
            (NAME, ns),
            &l,
        ),
        // Leader election, in its own namespace only.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": { "name": NAME, "namespace": ns, "labels": l },
            "rules": [rule(&["coordination.k8s.io"], &["leases"], &["get", "create", "update"])],
        }),
        binding(
            "RoleBinding",
            NAME,
            Some(ns),
            ("Role", NAME),
            (NAME, ns),
            &l,
        ),
    ];
    let pods = json!({ "app.kubernetes.io/component": "failover", crate::PART_OF: "tandem" });
    let deployment = with_pod_name(
        Controller {
            name: NAME,
            namespace: ns,
            labels: &l,
            pod_labels: &l,
            selector: &pods,
            container: "failover",
            image,
            args: json!([
                "failover",
                "run",
                "--selector",
                o.selector,
                "--admin-addr",
                format!("0.0.0.0:{ADMIN_PORT}"),
                "--lease-namespace",
                ns,
                "--log",
                o.log_level,
            ]),
            ports: &[],
            memory_limit: "128Mi",
        }
        .deployment(),
    );
    objs.extend(replicated(deployment, o.replicas));
    objs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(objs: &[Value]) -> Vec<(String, String, Vec<String>)> {
        let role = objs.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                let verbs: Vec<String> = r["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
                let groups = r["apiGroups"].as_array().unwrap().clone();
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(move |res| {
                        let verbs = verbs.clone();
                        groups.clone().into_iter().map(move |g| {
                            (
                                g.as_str().unwrap().to_string(),
                                res.as_str().unwrap().to_string(),
                                verbs.clone(),
                            )
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn rbac_is_least_privilege() {
        let objs = render(&FailoverOptions::default());
        let r = rules(&objs);
        let verbs = |g: &str, res: &str| {
            r.iter()
                .find(|(gg, rr, _)| gg == g && rr == res)
                .map(|(_, _, v)| v.join(","))
                .unwrap_or_default()
        };
        assert_eq!(
            verbs("split.smi-spec.io", "trafficsplits"),
            "get,list,watch,patch"
        );
        assert_eq!(
            verbs("gateway.networking.k8s.io", "httproutes"),
            "get,list,watch,patch"
        );
        assert_eq!(
            verbs("discovery.k8s.io", "endpointslices"),
            "get,list,watch"
        );
        // Readiness comes from EndpointSlices alone: no Services.
        assert_eq!(verbs("", "services"), "", "no access to services");
        assert!(verbs("events.k8s.io", "events").starts_with("create"));
        assert_eq!(verbs("", "secrets"), "", "no access to secrets");
        assert!(r.iter().all(|(_, _, v)| !v.contains(&"delete".to_string())));
        // Leases only in its own namespace.
        let role = objs.iter().find(|o| o["kind"] == "Role").unwrap();
        assert_eq!(role["metadata"]["namespace"], DEFAULT_NAMESPACE);
        assert_eq!(role["rules"][0]["resources"][0], "leases");
    }

    #[test]
    fn the_deployment_runs_two_replicas_with_the_selector() {
        let objs = render(&FailoverOptions::default());
        let d = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(d["spec"]["replicas"], 2);
        // Two replicas: a drain takes one at a time.
        let pdb = objs
            .iter()
            .find(|o| o["kind"] == "PodDisruptionBudget")
            .unwrap();
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            d["spec"]["selector"]["matchLabels"]
        );
        let one = render(&FailoverOptions {
            replicas: 1,
            ..FailoverOptions::default()
        });
        assert!(one.iter().all(|o| o["kind"] != "PodDisruptionBudget"));
        let args: Vec<&str> = d["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(&args[..2], ["failover", "run"]);
        assert!(
            args.windows(2)
                .any(|w| w == ["--selector", DEFAULT_SELECTOR])
        );
    }
}

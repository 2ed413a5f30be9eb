//! The destination service's objects: it reads Services, EndpointSlices,
//! Pods, TrafficSplits and HTTPRoutes cluster-wide and writes nothing.

use serde_json::{Value, json};

use super::{ADMIN_PORT, CoreOptions, binding};
use crate::{
    controller::{Controller, replicated},
    labels, rule,
};

pub const DESTINATION: &str = "tandem-destination";
/// Linkerd's destination port.
pub const GRPC_PORT: u16 = 8086;

pub fn render(o: &CoreOptions) -> Vec<Value> {
    let ns = o.namespace.as_str();
    let l = labels("destination");
    let selector =
        json!({ "app.kubernetes.io/component": "destination", crate::PART_OF: "tandem" });
    let cluster_role = format!("{DESTINATION}-{ns}");
    let mut objs = vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": DESTINATION, "namespace": ns, "labels": l },
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": cluster_role, "labels": l },
            "rules": [
                rule(&[""], &["services", "pods"], &["get", "list", "watch"]),
                rule(&["discovery.k8s.io"], &["endpointslices"], &["get", "list", "watch"]),
                rule(&["split.smi-spec.io"], &["trafficsplits"], &["get", "list", "watch"]),
                rule(&["gateway.networking.k8s.io"], &["httproutes"], &["get", "list", "watch"]),
            ],
        }),
        binding(
            "ClusterRoleBinding",
            &cluster_role,
            None,
            ("ClusterRole", &cluster_role),
            (DESTINATION, ns),
            &l,
        ),
    ];
    let deployment = Controller {
        name: DESTINATION,
        namespace: ns,
        labels: &l,
        pod_labels: &l,
        selector: &selector,
        container: "destination",
        image: &o.image.reference(),
        args: json!([
            "destination",
            "--grpc-addr",
            format!("0.0.0.0:{GRPC_PORT}"),
            "--admin-addr",
            format!("0.0.0.0:{ADMIN_PORT}"),
            "--cluster-domain",
            o.cluster_domain,
            "--control-plane-namespace",
            ns,
            "--log",
            o.log_level,
        ]),
        ports: &[("grpc", GRPC_PORT)],
        memory_limit: "256Mi",
    }
    .deployment();
    objs.extend(replicated(deployment, o.replicas));
    objs.push(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": DESTINATION, "namespace": ns, "labels": l },
        "spec": {
            "selector": selector,
            "ports": [{ "name": "grpc", "port": GRPC_PORT, "targetPort": "grpc" }],
        },
    }));
    objs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tests::{find, opts};

    #[test]
    fn the_destination_reads_what_it_indexes_and_writes_nothing() {
        let objs = super::super::render(&opts());
        let role = find(&objs, "ClusterRole", "tandem-destination-tandem");
        let mut resources = vec![];
        for r in role["rules"].as_array().unwrap() {
            assert_eq!(r["verbs"], json!(["get", "list", "watch"]), "{r}");
            resources.extend(r["resources"].as_array().unwrap().iter().cloned());
        }
        assert_eq!(
            resources,
            json!([
                "services",
                "pods",
                "endpointslices",
                "trafficsplits",
                "httproutes"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let crb = find(&objs, "ClusterRoleBinding", "tandem-destination-tandem");
        assert_eq!(crb["subjects"][0]["name"], DESTINATION);

        let svc = find(&objs, "Service", DESTINATION);
        assert_eq!(svc["spec"]["ports"][0]["port"], GRPC_PORT);
        let deploy = find(&objs, "Deployment", DESTINATION);
        let pod = &deploy["spec"]["template"];
        assert_eq!(pod["spec"]["serviceAccountName"], DESTINATION);
        for (k, v) in deploy["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                &pod["metadata"]["labels"][k], v,
                "the selector matches the pods"
            );
            assert_eq!(
                &svc["spec"]["selector"][k], v,
                "the Service selects the pods"
            );
        }
        let args: Vec<&str> = pod["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], "destination");
        assert!(
            args.windows(2)
                .any(|w| w == ["--control-plane-namespace", "tandem"]),
            "{args:?}"
        );
    }
}

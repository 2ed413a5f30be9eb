//! Cluster addons on real nodes: CoreDNS at the cluster DNS address.
//!
//! CoreDNS serves `cluster.local` and the reverse zones from the API, and
//! answers every other name with NXDOMAIN at once: it never forwards, so no
//! pod query can reach the host's resolver (an address outside this
//! machine).

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
};
use serde_json::{Value, json};
use tandem_util::call::call_retrying;

use crate::{ClusterLayout, Error};

pub const COREDNS_NAME: &str = "coredns";

/// The CoreDNS image reference, as the testbed builds it.
pub fn coredns_image(version: &str) -> String {
    format!("tandem.local/coredns:{version}")
}

pub const COREFILE: &str = r#"cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        ttl 30
    }
    prometheus :9153
    cache 30
    reload
    loadbalance
}
.:53 {
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
"#;

/// Every object of the addon, in apply order.
pub fn coredns_objects(l: &ClusterLayout, image: &str) -> Vec<Value> {
    let labels = json!({ "k8s-app": "kube-dns" });
    vec![
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": { "name": COREDNS_NAME, "namespace": "kube-system" },
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": "system:coredns" },
            "rules": [
                { "apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"] },
                { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"] },
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": "system:coredns" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns" },
            "subjects": [{ "kind": "ServiceAccount", "name": COREDNS_NAME, "namespace": "kube-system" }],
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": COREDNS_NAME, "namespace": "kube-system" },
            "data": { "Corefile": COREFILE },
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": COREDNS_NAME, "namespace": "kube-system", "labels": labels },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": labels },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "serviceAccountName": COREDNS_NAME,
                        "priorityClassName": "system-cluster-critical",
                        "dnsPolicy": "Default",
                        "containers": [{
                            "name": "coredns",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "resources": { "requests": { "cpu": "50m", "memory": "70Mi" }, "limits": { "memory": "170Mi" } },
                            "ports": [
                                { "name": "dns", "containerPort": 53, "protocol": "UDP" },
                                { "name": "dns-tcp", "containerPort": 53, "protocol": "TCP" },
                                { "name": "metrics", "containerPort": 9153, "protocol": "TCP" },
                            ],
                            "livenessProbe": {
                                "httpGet": { "path": "/health", "port": 8080 },
                                "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 5,
                            },
                            "readinessProbe": {
                                "httpGet": { "path": "/ready", "port": 8181 },
                                "periodSeconds": 1,
                            },
                            "volumeMounts": [{ "name": "config", "mountPath": "/etc/coredns", "readOnly": true }],
                        }],
                        "volumes": [{ "name": "config", "configMap": { "name": COREDNS_NAME } }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "kube-dns", "namespace": "kube-system",
                "labels": { "k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS" },
            },
            "spec": {
                "selector": labels,
                "clusterIP": l.dns_service_ip().to_string(),
                "ports": [
                    { "name": "dns", "port": 53, "protocol": "UDP" },
                    { "name": "dns-tcp", "port": 53, "protocol": "TCP" },
                    { "name": "metrics", "port": 9153, "protocol": "TCP" },
                ],
            },
        }),
    ]
}

fn api_resource(kind: &str) -> Option<ApiResource> {
    Some(match kind {
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        "ClusterRole" => ApiResource::erase::<ClusterRole>(&()),
        "ClusterRoleBinding" => ApiResource::erase::<ClusterRoleBinding>(&()),
        "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        _ => return None,
    })
}

/// Applies objects server-side; applying them again changes nothing.
pub async fn apply(client: &Client, l: &ClusterLayout, objects: &[Value]) -> Result<(), Error> {
    let params = PatchParams::apply("tandem-testbed").force();
    for obj in objects {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let what = format!("applying {kind} {name}");
        let failed = |detail: String| Error::Cluster {
            cluster: l.name.clone(),
            detail,
        };
        let ar = api_resource(kind).ok_or_else(|| failed(format!("{what}: unknown kind")))?;
        let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let patch = Patch::Apply(obj);
        call_retrying(&what, || api.patch(name, &params, &patch))
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(())
}

/// True once CoreDNS has a ready replica.
pub async fn coredns_ready(client: &Client) -> Result<bool, kube::Error> {
    let d = Api::<Deployment>::namespaced(client.clone(), "kube-system")
        .get_opt(COREDNS_NAME)
        .await?;
    Ok(d.and_then(|d| d.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Nodes};

    #[test]
    fn coredns_never_forwards_and_sits_at_the_dns_address() {
        assert!(!COREFILE.contains("forward"));
        assert!(COREFILE.contains("rcode NXDOMAIN"));
        let l = Config::new("/tb".into(), 26440, vec!["east".into()], Nodes::Real)
            .unwrap()
            .layouts()
            .remove(0);
        let objs = coredns_objects(&l, "tandem.local/coredns:1.0.0");
        let svc = objs.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(svc["spec"]["clusterIP"], l.dns_service_ip().to_string());
        let dep = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Never");
        // Every object is of a kind `apply` knows, and parses as it.
        for o in &objs {
            assert!(api_resource(o["kind"].as_str().unwrap()).is_some());
        }
        let dep: Deployment = serde_json::from_value(dep.clone()).unwrap();
        assert_eq!(dep.spec.unwrap().replicas, Some(1));
        let _: Service = serde_json::from_value(svc.clone()).unwrap();
    }
}

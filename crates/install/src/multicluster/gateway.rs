//! The gateway's objects: its ServiceAccount (its mesh identity), the
//! rights to watch Services and read the trust anchors, the Deployment
//! that runs `tandem gateway` with Linkerd's proxy environment and a
//! projected token for identity, and the LoadBalancer Service.

use serde_json::{Value, json};

use super::{
    GATEWAY, GATEWAY_IDENTITY_ANNOTATION, GATEWAY_PORT, InstallOptions, PROBE_PATH,
    PROBE_PATH_ANNOTATION, PROBE_PERIOD_ANNOTATION, PROBE_PERIOD_SECONDS, PROBE_PORT,
    gateway_identity,
};
use crate::{
    PART_OF,
    controller::{field_env, replicated},
    core::{
        DESTINATION, DESTINATION_GRPC_PORT, IDENTITY, IDENTITY_GRPC_PORT, TRUST_ROOTS_CONFIGMAP,
        binding,
    },
    labels, restricted_security_context, rule,
};

/// The token identity checks: audience `identity.l5d.io`, as Linkerd's.
pub const TOKEN_AUDIENCE: &str = "identity.l5d.io";
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
pub const TOKEN_FILE: &str = "tandem-identity-token";
const TOKEN_VOLUME: &str = "tandem-identity-token";

fn env(name: &str, value: impl Into<String>) -> Value {
    json!({ "name": name, "value": value.into() })
}

/// The gateway container's environment (Linkerd's names).
pub fn gateway_env(o: &InstallOptions) -> Vec<Value> {
    let cp = o.control_plane_namespace.as_str();
    let domain = o.cluster_domain.as_str();
    let p = "LINKERD2_PROXY_";
    vec![
        field_env("_pod_ns", "metadata.namespace"),
        field_env("_pod_nodeName", "spec.nodeName"),
        env(
            &format!("{p}INBOUND_LISTEN_ADDR"),
            format!("0.0.0.0:{GATEWAY_PORT}"),
        ),
        env(
            &format!("{p}ADMIN_LISTEN_ADDR"),
            format!("0.0.0.0:{PROBE_PORT}"),
        ),
        env(
            &format!("{p}INBOUND_GATEWAY_SUFFIXES"),
            format!("svc.{domain}."),
        ),
        env(
            &format!("{p}DESTINATION_SVC_ADDR"),
            format!("{DESTINATION}.{cp}.svc.{domain}.:{DESTINATION_GRPC_PORT}"),
        ),
        env(
            &format!("{p}DESTINATION_CONTEXT"),
            r#"{"ns":"$(_pod_ns)", "nodeName":"$(_pod_nodeName)"}"#,
        ),
        env(
            &format!("{p}IDENTITY_LOCAL_NAME"),
            gateway_identity(&o.namespace, cp, domain),
        ),
        env(
            &format!("{p}IDENTITY_TOKEN_FILE"),
            format!("{TOKEN_DIR}/{TOKEN_FILE}"),
        ),
        env(
            &format!("{p}IDENTITY_SVC_ADDR"),
            format!("{IDENTITY}.{cp}.svc.{domain}.:{IDENTITY_GRPC_PORT}"),
        ),
        env(
            &format!("{p}IDENTITY_SVC_NAME"),
            format!("{IDENTITY}.{cp}.serviceaccount.identity.{cp}.{domain}"),
        ),
        // The anchors are read from the control plane's ConfigMap.
        env("TANDEM_CONTROL_PLANE_NAMESPACE", cp),
    ]
}

/// The gateway's objects, in apply order.
pub fn objects(o: &InstallOptions) -> Vec<Value> {
    let ns = o.namespace.as_str();
    let cp = o.control_plane_namespace.as_str();
    let gw = labels("gateway");
    let rbac = format!("{GATEWAY}-{ns}");
    let mut objs = vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": GATEWAY, "namespace": ns, "labels": gw },
        }),
        // Which Services are exported: a watch on all of them.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": rbac, "labels": gw },
            "rules": [rule(&[""], &["services"], &["get", "list", "watch"])],
        }),
        binding(
            "ClusterRoleBinding",
            &rbac,
            None,
            ("ClusterRole", &rbac),
            (GATEWAY, ns),
            &gw,
        ),
        // The trust anchors every client must chain to.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": { "name": rbac, "namespace": cp, "labels": gw },
            "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "resourceNames": [TRUST_ROOTS_CONFIGMAP], "verbs": ["get"] }],
        }),
        binding(
            "RoleBinding",
            &rbac,
            Some(cp),
            ("Role", &rbac),
            (GATEWAY, ns),
            &gw,
        ),
    ];
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": GATEWAY, "namespace": ns, "labels": gw },
        "spec": {
            "selector": { "matchLabels": { "app.kubernetes.io/component": "gateway", PART_OF: "tandem" } },
            "template": {
                "metadata": { "labels": gw },
                "spec": {
                    "serviceAccountName": GATEWAY,
                    "containers": [{
                        "name": "gateway",
                        "image": o.image.reference(),
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["gateway"],
                        "env": gateway_env(o),
                        "ports": [
                            { "name": "mc-gateway", "containerPort": GATEWAY_PORT },
                            { "name": "mc-probe", "containerPort": PROBE_PORT },
                        ],
                        "livenessProbe": { "httpGet": { "path": "/live", "port": "mc-probe" } },
                        "readinessProbe": { "httpGet": { "path": PROBE_PATH, "port": "mc-probe" } },
                        "resources": { "requests": { "cpu": "10m", "memory": "16Mi" }, "limits": { "memory": "128Mi" } },
                        "securityContext": restricted_security_context(),
                        "volumeMounts": [{ "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true }],
                    }],
                    "volumes": [{
                        "name": TOKEN_VOLUME,
                        "projected": { "sources": [{ "serviceAccountToken": {
                            "audience": TOKEN_AUDIENCE,
                            "expirationSeconds": 86400,
                            "path": TOKEN_FILE,
                        } }] },
                    }],
                },
            },
        },
    });
    objs.extend(replicated(deployment, o.gateway_replicas));
    objs.push(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": GATEWAY,
            "namespace": ns,
            "labels": gw,
            "annotations": {
                GATEWAY_IDENTITY_ANNOTATION: gateway_identity(ns, cp, &o.cluster_domain),
                PROBE_PATH_ANNOTATION: PROBE_PATH,
                PROBE_PERIOD_ANNOTATION: PROBE_PERIOD_SECONDS.to_string(),
            },
        },
        "spec": {
            "type": "LoadBalancer",
            "selector": { "app.kubernetes.io/component": "gateway", PART_OF: "tandem" },
            "ports": [
                { "name": "mc-gateway", "port": GATEWAY_PORT, "targetPort": "mc-gateway" },
                { "name": "mc-probe", "port": PROBE_PORT, "targetPort": "mc-probe" },
            ],
        },
    }));
    objs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objs.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    #[test]
    fn with_ha_the_gateway_replicas_spread_and_get_a_budget() {
        let one = objects(&InstallOptions::default());
        assert_eq!(find(&one, "Deployment", GATEWAY)["spec"]["replicas"], 1);
        assert!(one.iter().all(|o| o["kind"] != "PodDisruptionBudget"));
        let ha = objects(&InstallOptions {
            gateway_replicas: super::super::HA_GATEWAY_REPLICAS,
            ..Default::default()
        });
        let d = find(&ha, "Deployment", GATEWAY);
        assert_eq!(d["spec"]["replicas"], 3);
        assert!(d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].is_object());
        let pdb = find(&ha, "PodDisruptionBudget", GATEWAY);
        // The budget and the LoadBalancer Service select the same pods.
        let svc = find(&ha, "Service", GATEWAY);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            svc["spec"]["selector"]
        );
    }

    fn env_of<'a>(container: &'a Value, name: &str) -> &'a str {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("no env {name}"))
    }

    #[test]
    fn the_deployment_runs_the_gateway_with_identity_and_destination() {
        let o = InstallOptions {
            namespace: "mc".into(),
            control_plane_namespace: "cp".into(),
            cluster_domain: "example.org".into(),
            ..Default::default()
        };
        let objs = objects(&o);
        let d = find(&objs, "Deployment", GATEWAY);
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["args"], json!(["gateway"]));
        // The identity it asks for is the one the Service advertises.
        let svc = find(&objs, "Service", GATEWAY);
        assert_eq!(
            env_of(c, "LINKERD2_PROXY_IDENTITY_LOCAL_NAME"),
            svc["metadata"]["annotations"][GATEWAY_IDENTITY_ANNOTATION]
        );
        assert_eq!(
            env_of(c, "LINKERD2_PROXY_IDENTITY_LOCAL_NAME"),
            "tandem-gateway.mc.serviceaccount.identity.cp.example.org"
        );
        assert_eq!(pod["serviceAccountName"], GATEWAY);
        for (k, v) in [
            ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0:4143"),
            ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "0.0.0.0:4191"),
            (
                "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES",
                "svc.example.org.",
            ),
            (
                "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
                "tandem-destination.cp.svc.example.org.:8086",
            ),
            (
                "LINKERD2_PROXY_IDENTITY_SVC_ADDR",
                "tandem-identity.cp.svc.example.org.:8080",
            ),
            (
                "LINKERD2_PROXY_IDENTITY_SVC_NAME",
                "tandem-identity.cp.serviceaccount.identity.cp.example.org",
            ),
            (
                "LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
                "/var/run/secrets/tokens/tandem-identity-token",
            ),
            ("TANDEM_CONTROL_PLANE_NAMESPACE", "cp"),
        ] {
            assert_eq!(env_of(c, k), v, "{k}");
        }
        // The projected token, for identity's TokenReview.
        let token = &pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
        assert_eq!(token["audience"], "identity.l5d.io");
        assert_eq!(token["path"], TOKEN_FILE);
        assert_eq!(c["volumeMounts"][0]["mountPath"], TOKEN_DIR);
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "mc-probe");
    }

    #[test]
    fn the_gateway_may_watch_services_and_read_the_anchors_only() {
        let objs = objects(&InstallOptions::default());
        let name = "tandem-gateway-tandem-multicluster";
        let cr = find(&objs, "ClusterRole", name);
        assert_eq!(
            cr["rules"],
            json!([rule(&[""], &["services"], &["get", "list", "watch"])])
        );
        let role = find(&objs, "Role", name);
        assert_eq!(role["metadata"]["namespace"], "tandem");
        assert_eq!(
            role["rules"][0]["resourceNames"],
            json!([TRUST_ROOTS_CONFIGMAP])
        );
        assert_eq!(role["rules"][0]["verbs"], json!(["get"]));
        for kind in ["ClusterRoleBinding", "RoleBinding"] {
            let b = find(&objs, kind, name);
            assert_eq!(b["subjects"][0]["name"], GATEWAY, "{kind}");
            assert_eq!(
                b["subjects"][0]["namespace"], "tandem-multicluster",
                "{kind}"
            );
        }
    }
}

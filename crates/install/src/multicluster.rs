//! `tandem multicluster install` and `link`: the gateway, the read-only
//! remote access other clusters use, and a Link with its service mirror.

use base64::Engine;
use serde_json::{Value, json};
use tandem_api::multicluster::{CREDENTIALS_KEY, CREDENTIALS_SECRET_TYPE, EXPORT_LABEL};

mod gateway;

pub use gateway::{TOKEN_AUDIENCE, TOKEN_DIR, TOKEN_FILE, gateway_env};

use crate::{
    EXTENSION_LABEL, ImageOptions, LINKERD_EXTENSION_LABEL, PART_OF,
    controller::{Controller, replicated, with_pod_name},
    core::{ADMIN_PORT, TRUST_ROOTS_CONFIGMAP, binding},
    labels, rule,
};

pub const DEFAULT_NAMESPACE: &str = "tandem-multicluster";
pub const GATEWAY: &str = "tandem-gateway";
pub const GATEWAY_PORT: u16 = 4143;
pub const PROBE_PORT: u16 = 4191;
pub const PROBE_PATH: &str = "/ready";
/// Seconds between probes, as linkerd's gateway annotation says it.
pub const PROBE_PERIOD_SECONDS: u32 = 3;
pub const REMOTE_ACCESS: &str = "tandem-service-mirror-remote-access-default";
pub const GATEWAY_IDENTITY_ANNOTATION: &str = "mirror.linkerd.io/gateway-identity";
pub const PROBE_PATH_ANNOTATION: &str = "mirror.linkerd.io/probe-path";
pub const PROBE_PERIOD_ANNOTATION: &str = "mirror.linkerd.io/probe-period";

/// The remote-access token Secret's name.
pub fn remote_access_token_secret() -> String {
    format!("{REMOTE_ACCESS}-token")
}

#[derive(Clone, Debug)]
pub struct InstallOptions {
    pub namespace: String,
    /// The core control plane's namespace, whose trust roots linked clusters read.
    pub control_plane_namespace: String,
    pub image: ImageOptions,
    pub cluster_domain: String,
    /// Replicas of the gateway; above one, they prefer different nodes and
    /// the gateway gets a PodDisruptionBudget.
    pub gateway_replicas: u32,
}

/// The gateway's replicas with `multicluster install --ha` (Linkerd's).
pub const HA_GATEWAY_REPLICAS: u32 = 3;

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.into(),
            control_plane_namespace: crate::core::DEFAULT_NAMESPACE.into(),
            image: ImageOptions::default(),
            cluster_domain: "cluster.local".into(),
            gateway_replicas: 1,
        }
    }
}

/// The gateway's mTLS identity, in linkerd's form.
pub fn gateway_identity(namespace: &str, control_plane_ns: &str, domain: &str) -> String {
    format!("{GATEWAY}.{namespace}.serviceaccount.identity.{control_plane_ns}.{domain}")
}

/// What `multicluster install` prints, in apply order.
pub fn install(o: &InstallOptions) -> Vec<Value> {
    let ns = o.namespace.as_str();
    let l = labels("multicluster");
    let remote = format!("{REMOTE_ACCESS}-{ns}");
    let crd = serde_json::to_value(tandem_api::multicluster::link_crd())
        .expect("the Link CRD serializes");
    let mut objs = vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": ns, "labels": { PART_OF: "tandem", EXTENSION_LABEL: "multicluster", LINKERD_EXTENSION_LABEL: "multicluster" } },
        }),
        crd,
        // What linked clusters may do here: read Services, their endpoints
        // and namespaces, nothing else.
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": REMOTE_ACCESS, "namespace": ns, "labels": l },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": remote_access_token_secret(),
                "namespace": ns,
                "labels": l,
                "annotations": { "kubernetes.io/service-account.name": REMOTE_ACCESS },
            },
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": remote, "labels": l },
            "rules": [
                rule(&[""], &["services", "namespaces"], &["get", "list", "watch"]),
                rule(&["discovery.k8s.io"], &["endpointslices"], &["get", "list", "watch"]),
            ],
        }),
        binding(
            "ClusterRoleBinding",
            &remote,
            None,
            ("ClusterRole", &remote),
            (REMOTE_ACCESS, ns),
            &l,
        ),
        // So that `multicluster check` on a linked cluster can compare trust anchors.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": { "name": remote, "namespace": o.control_plane_namespace, "labels": l },
            "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "resourceNames": [TRUST_ROOTS_CONFIGMAP], "verbs": ["get"] }],
        }),
        binding(
            "RoleBinding",
            &remote,
            Some(&o.control_plane_namespace),
            ("Role", &remote),
            (REMOTE_ACCESS, ns),
            &l,
        ),
    ];
    // After the Namespace and the CRD.
    objs.splice(2..2, gateway::objects(o));
    objs
}

/// What `link` needs to know, already read from the target cluster.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// The target cluster's name.
    pub cluster_name: String,
    /// Where the Link and the mirror live in the local cluster.
    pub namespace: String,
    pub image: ImageOptions,
    /// A kubeconfig for the target cluster, with the remote-access token.
    pub kubeconfig: String,
    pub gateway_addresses: Vec<String>,
    pub gateway_port: u16,
    pub gateway_identity: String,
    pub probe_path: String,
    pub probe_port: u16,
    pub probe_period: String,
    pub target_cluster_domain: String,
    pub target_control_plane_namespace: String,
    /// Replicas of the service mirror; above one, they elect a leader and
    /// prefer different nodes.
    pub replicas: u32,
}

/// The service mirror's replicas with `link --ha`: one leads, one stands by.
pub const HA_REPLICAS: u32 = 2;

/// The name of the service mirror's ServiceAccount, Role, RoleBinding, Deployment and
/// (with more than one replica) PodDisruptionBudget.
pub fn mirror_name(cluster: &str) -> String {
    format!("tandem-service-mirror-{cluster}")
}

/// The service mirror's ClusterRole and ClusterRoleBinding.
pub fn mirror_cluster_role(cluster: &str, namespace: &str) -> String {
    format!("{}-{namespace}", mirror_name(cluster))
}

pub fn credentials_secret(cluster: &str) -> String {
    format!("cluster-credentials-{cluster}")
}

/// What `link` prints for the local cluster, in apply order.
///
/// The service mirror runs as its own ServiceAccount, with the names it is
/// given by `--own-name` and `--own-cluster-role`. When it starts it makes
/// the Link the owner of its namespaced objects (ServiceAccount, Role,
/// RoleBinding, Deployment, PodDisruptionBudget), and its ClusterRoleBinding the owner of its
/// ClusterRole. So [`unlink`] deletes only the Link and its Secret: the
/// mirror keeps its rights while the Link's finalizer deletes the mirrors,
/// then deletes its ClusterRoleBinding and lets the Link go, and the garbage
/// collector takes the rest.
pub fn link(o: &LinkOptions) -> Vec<Value> {
    let ns = o.namespace.as_str();
    let name = o.cluster_name.as_str();
    let mirror = mirror_name(name);
    let l = labels("service-mirror");
    let cluster_role = mirror_cluster_role(name, ns);
    let named = |groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]| {
        let mut r = rule(groups, resources, verbs);
        r["resourceNames"] = json!(names);
        r
    };
    let [secret, link] = link_and_secret(o);
    // The mirror's pods: the Deployment's selector (and so its replicas'
    // anti-affinity).
    let pods = json!({ "app.kubernetes.io/component": "service-mirror", "mirror.linkerd.io/cluster-name": name });
    let mut objects = vec![
        secret,
        link,
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": mirror, "namespace": ns, "labels": l },
        }),
        // Mirrors can land in any namespace: Services and their slices,
        // cluster-wide, with the verbs the mirror uses and no more (a
        // Service is read again only when its create finds one there).
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": cluster_role, "labels": l },
            "rules": [
                rule(&[""], &["services"], &["get", "list", "watch", "create", "patch", "delete"]),
                // A server-side apply that makes a slice needs create.
                rule(&["discovery.k8s.io"], &["endpointslices"], &["list", "watch", "create", "patch", "delete"]),
                // Its own ClusterRole goes with its ClusterRoleBinding,
                // which it deletes once the Link's finalizer ran.
                named(&["rbac.authorization.k8s.io"], &["clusterroles"], &["patch"], &[&cluster_role]),
                named(&["rbac.authorization.k8s.io"], &["clusterrolebindings"], &["get", "delete"], &[&cluster_role]),
            ],
        }),
        binding(
            "ClusterRoleBinding",
            &cluster_role,
            None,
            ("ClusterRole", &cluster_role),
            (&mirror, ns),
            &l,
        ),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": { "name": mirror, "namespace": ns, "labels": l },
            "rules": [
                named(&["multicluster.tandem.io"], &["links"], &["get", "list", "watch", "patch"], &[name]),
                named(&["multicluster.tandem.io"], &["links/status"], &["patch"], &[name]),
                // Owner references to the Link that block its deletion.
                named(&["multicluster.tandem.io"], &["links/finalizers"], &["update"], &[name]),
                named(&[""], &["secrets"], &["get"], &[&credentials_secret(name)]),
                // Leader election among the mirror's replicas (a create
                // cannot be limited to a name).
                rule(&["coordination.k8s.io"], &["leases"], &["create"]),
                named(&["coordination.k8s.io"], &["leases"], &["get", "update"], &[&tandem_api::multicluster::mirror_lease_name(name)]),
                // Events about the Link (a mirror it must leave alone).
                rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
                // Its own objects, given to the Link as owner.
                named(&[""], &["serviceaccounts"], &["patch"], &[&mirror]),
                named(&["rbac.authorization.k8s.io"], &["roles", "rolebindings"], &["patch"], &[&mirror]),
                named(&["apps"], &["deployments"], &["patch"], &[&mirror]),
                named(&["policy"], &["poddisruptionbudgets"], &["patch"], &[&mirror]),
            ],
        }),
        binding(
            "RoleBinding",
            &mirror,
            Some(ns),
            ("Role", &mirror),
            (&mirror, ns),
            &l,
        ),
    ];
    let deployment = with_pod_name(
        Controller {
            name: &mirror,
            namespace: ns,
            labels: &l,
            pod_labels: &json!({ "app.kubernetes.io/component": "service-mirror", PART_OF: "tandem", "mirror.linkerd.io/cluster-name": name }),
            selector: &pods,
            container: "service-mirror",
            image: &o.image.reference(),
            args: json!([
                "multicluster", "mirror",
                "--link", name,
                "--namespace", ns,
                "--own-name", mirror,
                "--own-cluster-role", cluster_role,
                "--admin-addr", format!("0.0.0.0:{ADMIN_PORT}"),
            ]),
            ports: &[],
            memory_limit: "256Mi",
        }
        .deployment(),
    );
    // Replicas on different nodes where possible, so that a node's loss
    // leaves a standby, under a budget (the Link's, as the mirror's other
    // objects: the mirror adopts it by name when it starts).
    objects.extend(replicated(deployment, o.replicas));
    objects
}

/// What `unlink` prints, for `kubectl delete -f -`: the Link and its
/// credentials Secret only. The mirror's own objects must outlive the Link's
/// finalizer, so they go after it (see [`link`]).
pub fn unlink(cluster_name: &str, namespace: &str) -> Vec<Value> {
    let o = LinkOptions {
        cluster_name: cluster_name.into(),
        namespace: namespace.into(),
        image: ImageOptions::default(),
        kubeconfig: String::new(),
        gateway_addresses: vec![],
        gateway_port: 0,
        gateway_identity: String::new(),
        probe_path: String::new(),
        probe_port: 0,
        probe_period: String::new(),
        target_cluster_domain: String::new(),
        target_control_plane_namespace: String::new(),
        replicas: 1,
    };
    let [secret, link] = link_and_secret(&o);
    crate::for_deletion(&[link, secret])
}

/// The credentials Secret and the Link.
fn link_and_secret(o: &LinkOptions) -> [Value; 2] {
    let ns = o.namespace.as_str();
    let name = o.cluster_name.as_str();
    let l = labels("service-mirror");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    [
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": CREDENTIALS_SECRET_TYPE,
            "metadata": { "name": credentials_secret(name), "namespace": ns, "labels": l },
            "data": { CREDENTIALS_KEY: b64(&o.kubeconfig) },
        }),
        json!({
            "apiVersion": "multicluster.tandem.io/v1alpha1",
            "kind": "Link",
            "metadata": { "name": name, "namespace": ns, "labels": l },
            "spec": {
                "targetClusterName": name,
                "targetClusterDomain": o.target_cluster_domain,
                "targetClusterNamespace": o.target_control_plane_namespace,
                "clusterCredentialsSecret": credentials_secret(name),
                "gatewayAddress": o.gateway_addresses.join(","),
                "gatewayPort": o.gateway_port,
                "gatewayIdentity": o.gateway_identity,
                "probeSpec": { "path": o.probe_path, "port": o.probe_port, "period": o.probe_period, "timeout": "2s", "failureThreshold": 3 },
                "selector": { "matchLabels": { EXPORT_LABEL: "true" } },
            },
        }),
    ]
}

/// A kubeconfig for the target cluster, authenticating with a token.
pub fn remote_kubeconfig(cluster: &str, server: &str, ca_data_b64: &str, token: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": cluster, "cluster": { "server": server, "certificate-authority-data": ca_data_b64 } }],
        "users": [{ "name": REMOTE_ACCESS, "user": { "token": token } }],
        "contexts": [{ "name": cluster, "context": { "cluster": cluster, "user": REMOTE_ACCESS } }],
        "current-context": cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_access_is_read_only() {
        let objs = install(&InstallOptions::default());
        let name = format!("{REMOTE_ACCESS}-{DEFAULT_NAMESPACE}");
        let role = objs
            .iter()
            .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == name)
            .unwrap();
        for r in role["rules"].as_array().unwrap() {
            assert_eq!(r["verbs"], json!(["get", "list", "watch"]), "{r}");
        }
        let resources: Vec<&str> = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap())
            })
            .collect();
        assert_eq!(resources, ["services", "namespaces", "endpointslices"]);
    }

    #[test]
    fn the_gateway_service_carries_the_ports_and_annotations() {
        let objs = install(&InstallOptions::default());
        let svc = objs.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(svc["spec"]["ports"][0]["name"], "mc-gateway");
        assert_eq!(svc["spec"]["ports"][0]["port"], 4143);
        assert_eq!(svc["spec"]["ports"][1]["name"], "mc-probe");
        assert_eq!(svc["spec"]["ports"][1]["port"], 4191);
        assert_eq!(
            svc["metadata"]["annotations"][PROBE_PATH_ANNOTATION],
            "/ready"
        );
        assert_eq!(
            svc["metadata"]["annotations"][GATEWAY_IDENTITY_ANNOTATION],
            "tandem-gateway.tandem-multicluster.serviceaccount.identity.tandem.cluster.local"
        );
    }

    /// A link of west, one replica, no credentials or gateways.
    fn west() -> LinkOptions {
        LinkOptions {
            cluster_name: "west".into(),
            namespace: DEFAULT_NAMESPACE.into(),
            image: ImageOptions::default(),
            kubeconfig: String::new(),
            gateway_addresses: vec![],
            gateway_port: 4143,
            gateway_identity: String::new(),
            probe_path: "/ready".into(),
            probe_port: 4191,
            probe_period: "3s".into(),
            target_cluster_domain: "cluster.local".into(),
            target_control_plane_namespace: "tandem".into(),
            replicas: 1,
        }
    }

    #[test]
    fn link_prints_the_secret_the_link_and_the_mirror() {
        let o = LinkOptions {
            kubeconfig: "apiVersion: v1\n".into(),
            gateway_addresses: vec!["127.20.0.2".into(), "gw.example".into()],
            gateway_identity: "id".into(),
            ..west()
        };
        let objs = link(&o);
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Secret",
                "Link",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Deployment"
            ]
        );
        assert_eq!(objs[0]["metadata"]["name"], "cluster-credentials-west");
        assert_eq!(objs[0]["type"], CREDENTIALS_SECRET_TYPE);
        assert_eq!(objs[1]["spec"]["gatewayAddress"], "127.20.0.2,gw.example");
        assert_eq!(
            objs[1]["spec"]["selector"]["matchLabels"][EXPORT_LABEL],
            "true"
        );
        // The mirror reads only its own credentials, and touches only its
        // own Link (and its own objects).
        let role = &objs[5];
        assert_eq!(
            role["rules"][3]["resourceNames"],
            json!(["cluster-credentials-west"])
        );
        for r in role["rules"].as_array().unwrap() {
            if r["apiGroups"] == json!(["multicluster.tandem.io"]) {
                assert_eq!(r["resourceNames"], json!(["west"]), "{r}");
            }
            // Only creates, which cannot name an object, are unnamed.
            if r["apiGroups"] != json!(["events.k8s.io"]) && r["verbs"] != json!(["create"]) {
                assert!(r["resourceNames"].is_array(), "{r}");
            }
        }
        // Leader election on Linkerd's Lease, by the pod's name.
        let lease = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["apiGroups"] == json!(["coordination.k8s.io"]) && r["resourceNames"].is_array()
            })
            .unwrap();
        assert_eq!(lease["resourceNames"], json!(["service-mirror-write-west"]));
        assert_eq!(lease["verbs"], json!(["get", "update"]));
        let env = &objs[7]["spec"]["template"]["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], "POD_NAME");
        assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
        // Events only where the Link is, never cluster-wide.
        let cluster_role = &objs[3];
        assert!(
            !cluster_role["rules"].to_string().contains("events"),
            "{cluster_role}"
        );
        // The mirror is told its own objects' names.
        let args = objs[7]["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(
            args.contains(r#""--own-name","tandem-service-mirror-west""#)
                && args.contains(
                    r#""--own-cluster-role","tandem-service-mirror-west-tandem-multicluster""#
                ),
            "{args}"
        );
    }

    #[test]
    fn link_ha_runs_two_mirrors_on_different_nodes_where_possible_under_a_budget() {
        let o = |replicas| LinkOptions { replicas, ..west() };
        let kind = |objs: &[Value], kind: &str| -> Option<Value> {
            objs.iter().find(|x| x["kind"] == kind).cloned()
        };
        let one = link(&o(1));
        let deployment = kind(&one, "Deployment").unwrap();
        assert_eq!(deployment["spec"]["replicas"], 1);
        assert!(
            deployment["spec"]["template"]["spec"]
                .get("affinity")
                .is_none()
        );
        assert_eq!(kind(&one, "PodDisruptionBudget"), None);
        let ha = link(&o(HA_REPLICAS));
        let deployment = kind(&ha, "Deployment").unwrap();
        assert_eq!(deployment["spec"]["replicas"], 2);
        let term = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["podAffinityTerm"];
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        // It matches exactly the Deployment's own pods.
        assert_eq!(
            term["labelSelector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        // The budget, of the mirror's name, which the mirror may make the
        // Link's (and nothing else of its kind).
        let pdb = kind(&ha, "PodDisruptionBudget").unwrap();
        assert_eq!(pdb["metadata"]["name"], deployment["metadata"]["name"]);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        let role = kind(&ha, "Role").unwrap();
        let budgets: Vec<&Value> = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resources"] == json!(["poddisruptionbudgets"]))
            .collect();
        assert_eq!(
            budgets,
            [&json!({
                "apiGroups": ["policy"],
                "resources": ["poddisruptionbudgets"],
                "verbs": ["patch"],
                "resourceNames": ["tandem-service-mirror-west"],
            })]
        );
    }

    #[test]
    fn unlink_deletes_only_the_link_and_its_secret() {
        let objs = unlink("west", "mc");
        let got: Vec<(&str, &str, &str)> = objs
            .iter()
            .map(|o| {
                (
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap(),
                    o["metadata"]["namespace"].as_str().unwrap(),
                )
            })
            .collect();
        // The Link first: its finalizer needs the mirror, which keeps its
        // ServiceAccount, roles and Deployment until the Link is gone.
        assert_eq!(
            got,
            [
                ("Link", "west", "mc"),
                ("Secret", "cluster-credentials-west", "mc")
            ]
        );
        assert!(
            objs.iter()
                .all(|o| o.get("spec").is_none() && o.get("data").is_none())
        );
    }
}

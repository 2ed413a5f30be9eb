//! The Link (`links.multicluster.tandem.io`): how this cluster reaches
//! another, and which of its Services to mirror here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "multicluster.tandem.io";
pub const CRD_NAME: &str = "links.multicluster.tandem.io";

/// The export label, as the workshop uses it.
pub const EXPORT_LABEL: &str = "mirror.linkerd.io/exported";
/// Labels and annotation every mirror carries.
pub const MIRRORED_SERVICE_LABEL: &str = "mirror.linkerd.io/mirrored-service";
pub const CLUSTER_NAME_LABEL: &str = "mirror.linkerd.io/cluster-name";
pub const REMOTE_SVC_FQ_NAME_ANNOTATION: &str = "mirror.linkerd.io/remote-svc-fq-name";
pub const REMOTE_GATEWAY_IDENTITY_ANNOTATION: &str = "mirror.linkerd.io/remote-gateway-identity";
/// The credentials Secret's type and key, as linkerd writes them.
pub const CREDENTIALS_SECRET_TYPE: &str = "mirror.linkerd.io/remote-kubeconfig";
pub const CREDENTIALS_KEY: &str = "kubeconfig";
/// The managed-by label value of mirror EndpointSlices.
pub const MIRROR_MANAGED_BY: &str = "service-mirror.multicluster.tandem.io";
/// The finalizer that deletes a Link's mirrors with it.
pub const LINK_FINALIZER: &str = "multicluster.tandem.io/mirrors";

/// A link to another cluster.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "multicluster.tandem.io",
    version = "v1alpha1",
    kind = "Link",
    namespaced,
    status = "LinkStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.targetClusterName"}"#,
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.gatewayAddress"}"#,
    printcolumn = r#"{"name":"Alive","type":"string","jsonPath":".status.gateway.alive"}"#,
    printcolumn = r#"{"name":"Mirrored","type":"integer","jsonPath":".status.mirroredServices"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LinkSpec {
    /// The other cluster's name: mirrors are called `<service>-<name>`.
    pub target_cluster_name: String,
    /// The other cluster's DNS domain.
    #[serde(default = "default_domain")]
    pub target_cluster_domain: String,
    /// The other cluster's tandem namespace.
    #[serde(default = "default_namespace")]
    pub target_cluster_namespace: String,
    /// The Secret (in the Link's namespace) with a kubeconfig for the other cluster.
    pub cluster_credentials_secret: String,
    /// The other cluster's gateway: comma-separated IPs or hostnames.
    pub gateway_address: String,
    /// The gateway's traffic port.
    #[serde(default = "default_gateway_port")]
    pub gateway_port: u16,
    /// The gateway's mTLS identity.
    #[serde(default)]
    pub gateway_identity: String,
    #[serde(default)]
    pub probe_spec: ProbeSpec,
    /// Which Services to mirror. Default: `mirror.linkerd.io/exported=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Labels not copied to mirrors; a trailing `/*` matches a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_labels: Vec<String>,
    /// Annotations not copied to mirrors; a trailing `/*` matches a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_annotations: Vec<String>,
}

fn default_domain() -> String {
    "cluster.local".into()
}

fn default_namespace() -> String {
    "tandem".into()
}

fn default_gateway_port() -> u16 {
    4143
}

/// How the gateway is probed: an HTTP GET of `path` on `port`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    #[serde(default = "default_probe_path")]
    pub path: String,
    #[serde(default = "default_probe_port")]
    pub port: u16,
    /// Between probes, as a duration: `3s`.
    #[serde(default = "default_period")]
    pub period: String,
    /// Of one probe: `2s`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Consecutive failures before the gateway counts as dead.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self {
            path: default_probe_path(),
            port: default_probe_port(),
            period: default_period(),
            timeout: default_timeout(),
            failure_threshold: default_failure_threshold(),
        }
    }
}

fn default_probe_path() -> String {
    "/ready".into()
}
fn default_probe_port() -> u16 {
    4191
}
fn default_period() -> String {
    "3s".into()
}
fn default_timeout() -> String {
    "2s".into()
}
fn default_failure_threshold() -> u32 {
    3
}

/// What the service mirror reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    /// `Ready` (mirroring), `RemoteReachable` (the other API server answers),
    /// with reasons and messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One entry per remote Service that matches the selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror_services: Vec<MirrorServiceStatus>,
    /// How many are mirrored now.
    #[serde(default)]
    pub mirrored_services: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayStatus>,
    /// When the service mirror last wrote this status (RFC 3339): shows it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorServiceStatus {
    /// The remote Service, as `namespace/name`.
    pub remote_ref: RemoteRef,
    /// `Mirrored`: True, or False with reason InvalidService, Error or MissingNamespace.
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RemoteRef {
    pub namespace: String,
    pub name: String,
}

/// The gateway as the probe sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub alive: bool,
    /// The addresses the mirrors' endpoints point at (resolved).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Probe latency percentiles over the recent probes, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_p50: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_p95: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_p99: Option<u64>,
}

/// The Link CRD.
pub fn link_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = Link::crd();
    crd.metadata.labels = Some(
        [(super::PART_OF_LABEL.to_string(), "tandem".to_string())]
            .into_iter()
            .collect(),
    );
    crd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_link_gets_the_defaults() {
        let link: Link = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.tandem.io/v1alpha1",
            "kind": "Link",
            "metadata": {"name": "west", "namespace": "tandem-multicluster"},
            "spec": {"targetClusterName": "west", "clusterCredentialsSecret": "cluster-credentials-west", "gatewayAddress": "127.20.0.2"}
        }))
        .unwrap();
        assert_eq!(link.spec.gateway_port, 4143);
        assert_eq!(link.spec.probe_spec.port, 4191);
        assert_eq!(link.spec.probe_spec.failure_threshold, 3);
        assert_eq!(link.spec.target_cluster_domain, "cluster.local");
        assert!(link.spec.selector.is_none());
    }

    #[test]
    fn the_crd_has_a_status_subresource() {
        let crd = link_crd();
        assert_eq!(crd.metadata.name.as_deref(), Some(CRD_NAME));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().unwrap().status.is_some());
    }
}

//! The Link (`links.multicluster.tandem.io`): how this cluster reaches
//! another, and which of its Services to mirror here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod link;

pub use link::{InvalidLink, LinkConfig, ProbeConfig};

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

/// The leader-election Lease that the replicas of a Link's service mirror
/// share, in the Link's namespace: Linkerd's name, so that its tools find it.
pub fn mirror_lease_name(link: &str) -> String {
    format!("service-mirror-write-{link}")
}

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
    printcolumn = r#"{"name":"Mirrored","type":"integer","jsonPath":".status.mirroredServices"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failedServices"}"#
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

/// What the service mirror reports: counts, and the failures only, so that
/// the status stays small whatever the number of mirrored Services.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    /// `Ready` (mirroring), `RemoteReachable` (the other API server answers),
    /// with reasons and messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many of the remote Services that match the selector are mirrored now.
    #[serde(default)]
    pub mirrored_services: u32,
    /// How many cannot be mirrored now (see `failures`).
    #[serde(default)]
    pub failed_services: u32,
    /// How many are not written yet.
    #[serde(default)]
    pub pending_services: u32,
    /// The first failing Services, sorted by namespace and name (at most
    /// [`MAX_LISTED_FAILURES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<MirrorFailure>,
    /// Failing Services beyond those listed in `failures`.
    #[serde(default)]
    pub more_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayStatus>,
    /// When the service mirror last wrote this status (RFC 3339): shows it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
}

/// How many failing Services a Link's status lists by name.
pub const MAX_LISTED_FAILURES: usize = 20;

/// A remote Service that cannot be mirrored, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorFailure {
    /// The remote Service.
    pub remote_ref: RemoteRef,
    /// InvalidService, Error, MissingNamespace or NameTaken (a Service of
    /// the mirror's name that is not this Link's, left alone).
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct RemoteRef {
    pub namespace: String,
    pub name: String,
}

/// The gateway as the probe sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// Alive while any address passes its probe, dead when none does; null
    /// until the probes tell (then no mirror's readiness is written).
    /// Always serialized, so that a merge patch clears an old value.
    #[serde(default)]
    pub alive: Option<bool>,
    /// The addresses the mirrors' endpoints point at (resolved).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Each address's own probe result.
    #[serde(default)]
    pub probes: Vec<GatewayAddressStatus>,
    /// Probe latency percentiles over the recent probes, in milliseconds.
    #[serde(default)]
    pub latency_ms_p50: Option<u64>,
    #[serde(default)]
    pub latency_ms_p95: Option<u64>,
    #[serde(default)]
    pub latency_ms_p99: Option<u64>,
}

/// One gateway address as its probe sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAddressStatus {
    pub address: String,
    /// As for the gateway: null until the probes tell.
    #[serde(default)]
    pub alive: Option<bool>,
    /// Why its last probe failed, if it did.
    #[serde(default)]
    pub last_error: Option<String>,
}

// === credentials ===

/// What a Link's credentials Secret may hold: a kubeconfig whose current
/// context names an `https://` server, optionally its CA data, and a bearer
/// token. Nothing else is accepted: whoever can write a Link and its Secret
/// must not be able to run a command (`exec`, `auth-provider`), read a file
/// (`tokenFile`, `certificate-authority`, client certificates), turn TLS
/// verification off, or send the token in clear, where the kubeconfig is
/// used: in the service mirror's pod, and on an admin's machine through
/// `multicluster check`.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteAccess {
    pub server: String,
    /// The server's CA bundle, base64 of PEM, as the kubeconfig held it.
    pub ca_data: Option<String>,
    pub token: String,
}

impl std::fmt::Debug for RemoteAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAccess")
            .field("server", &self.server)
            .field("ca_data", &self.ca_data.as_ref().map(|_| "..."))
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why a credentials kubeconfig is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialsRefused {
    /// Not a kubeconfig at all.
    Broken(String),
    /// A field outside what is accepted, with why it matters.
    Field { path: String, why: &'static str },
    /// The server is not `https://`.
    NotHttps(String),
    /// No token in the current user.
    NoToken,
}

impl std::fmt::Display for CredentialsRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const ONLY: &str = "a Link's credentials may hold only an https server, its certificate-authority-data and a token";
        match self {
            Self::Broken(why) => write!(f, "{why}"),
            Self::Field { path, why } => write!(f, "{path} is refused ({why}): {ONLY}"),
            Self::NotHttps(server) => write!(
                f,
                "the server {server:?} is not https: the token would travel in clear; {ONLY}"
            ),
            Self::NoToken => write!(f, "the current user has no token: {ONLY}"),
        }
    }
}

impl std::error::Error for CredentialsRefused {}

/// Why each refused field is refused, for the message.
fn refused_why(key: &str) -> &'static str {
    match key {
        "exec" => "an exec plugin runs a command",
        "auth-provider" => "an auth provider runs code and may run a command",
        "tokenFile"
        | "token-file"
        | "certificate-authority"
        | "client-certificate"
        | "client-key" => "it names a file of the machine that uses the kubeconfig",
        "insecure-skip-tls-verify" => "it turns off TLS verification",
        "client-certificate-data" | "client-key-data" | "username" | "password" => {
            "only a token authenticates"
        }
        "as" | "as-uid" | "as-groups" | "as-user-extra" => "it impersonates another user",
        "proxy-url" => "it sends the traffic through a proxy",
        _ => "not one of the accepted fields",
    }
}

/// Reads a credentials kubeconfig, accepting only the current context's
/// https server, CA data and token (see [`RemoteAccess`]).
pub fn remote_access(kubeconfig: &str) -> Result<RemoteAccess, CredentialsRefused> {
    use serde_json::Value;
    let broken = |why: String| CredentialsRefused::Broken(why);
    let doc: Value = serde_saphyr::from_str(kubeconfig).map_err(|e| broken(e.to_string()))?;
    let current = doc
        .get("current-context")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| broken("it has no current-context".into()))?;
    // `section[].name == name` → its `field`, and where it is, for messages.
    let entry = |section: &str, field: &str, name: &str| {
        doc.get(section)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .find(|(_, e)| e.get("name").and_then(Value::as_str) == Some(name))
            .map(|(i, e)| {
                let v = e.get(field).cloned().unwrap_or(Value::Null);
                (format!("{section}[{i}].{field}"), v)
            })
            .ok_or_else(|| broken(format!("{section} has no entry named {name:?}")))
    };
    let (_, context) = entry("contexts", "context", current)?;
    let name_of = |key: &str| {
        context
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| broken(format!("the context {current:?} names no {key}")))
    };
    let (cluster_path, cluster) = entry("clusters", "cluster", &name_of("cluster")?)?;
    let (user_path, user) = entry("users", "user", &name_of("user")?)?;

    // Every field set, but the accepted ones, is refused. `false`, empty
    // and null values set nothing.
    let check = |path: &str, v: &Value, accepted: &[&str]| {
        for (key, value) in v.as_object().into_iter().flatten() {
            let unset = matches!(value, Value::Null | Value::Bool(false))
                || value.as_str() == Some("")
                || value.as_array().is_some_and(Vec::is_empty)
                || value.as_object().is_some_and(serde_json::Map::is_empty);
            if !accepted.contains(&key.as_str()) && !unset {
                return Err(CredentialsRefused::Field {
                    path: format!("{path}.{key}"),
                    why: refused_why(key),
                });
            }
        }
        Ok(())
    };
    check(
        &cluster_path,
        &cluster,
        &["server", "certificate-authority-data"],
    )?;
    check(&user_path, &user, &["token"])?;

    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let server =
        text(&cluster, "server").ok_or_else(|| broken(format!("{cluster_path} has no server")))?;
    let https = server
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        && server.len() > 8;
    if !https {
        return Err(CredentialsRefused::NotHttps(server));
    }
    Ok(RemoteAccess {
        server,
        ca_data: text(&cluster, "certificate-authority-data"),
        token: text(&user, "token").ok_or(CredentialsRefused::NoToken)?,
    })
}

impl RemoteAccess {
    /// The kubeconfig of only these fields, for kube's client.
    pub fn kubeconfig(&self) -> Result<kube::config::Kubeconfig, String> {
        let mut cluster = serde_json::json!({ "server": self.server });
        if let Some(ca) = &self.ca_data {
            cluster["certificate-authority-data"] = ca.clone().into();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "remote", "cluster": cluster }],
            "users": [{ "name": "remote", "user": { "token": self.token } }],
            "contexts": [{ "name": "remote", "context": { "cluster": "remote", "user": "remote" } }],
            "current-context": "remote",
        }))
        .map_err(|e| e.to_string())
    }
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

    fn kubeconfig(cluster: serde_json::Value, user: serde_json::Value) -> String {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "other", "cluster": {"server": "https://10.0.0.9:6443", "exec": {"command": "sh"}}},
                         {"name": "west", "cluster": cluster}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "west", "context": {"cluster": "west", "user": "u", "namespace": "x"}}],
            "current-context": "west",
        })
        .to_string()
    }

    #[test]
    fn credentials_accept_an_https_server_ca_data_and_a_token() {
        let ok = remote_access(&kubeconfig(
            serde_json::json!({"server": "https://198.18.0.1:6443", "certificate-authority-data": "Q0E=", "insecure-skip-tls-verify": false}),
            serde_json::json!({"token": "t0k3n"}),
        ))
        .unwrap();
        assert_eq!(ok.server, "https://198.18.0.1:6443");
        assert_eq!(ok.ca_data.as_deref(), Some("Q0E="));
        assert_eq!(ok.token, "t0k3n");
        assert!(
            !format!("{ok:?}").contains("t0k3n"),
            "the token is not logged"
        );
        // Only the current context counts: the other cluster's exec is never used.
        let kc = ok.kubeconfig().unwrap();
        assert_eq!(kc.clusters.len(), 1);
        assert_eq!(kc.auth_infos.len(), 1);
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.exec.is_none() && user.auth_provider.is_none());
    }

    #[test]
    fn credentials_refuse_every_other_shape() {
        use serde_json::json;
        let server = json!({"server": "https://198.18.0.1:6443"});
        let token = json!({"token": "t"});
        // (cluster, user, what the message must name)
        let cases = [
            (
                server.clone(),
                json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh", "args": ["-c", "id"]}}),
                "users[0].user.exec is refused (an exec plugin runs a command)",
            ),
            (
                server.clone(),
                json!({"token": "t", "exec": {"command": "sh"}}),
                "users[0].user.exec",
            ),
            (
                server.clone(),
                json!({"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/sh"}}}),
                "users[0].user.auth-provider is refused",
            ),
            (
                server.clone(),
                json!({"tokenFile": "/etc/shadow"}),
                "users[0].user.tokenFile is refused (it names a file",
            ),
            (
                server.clone(),
                json!({"token": "t", "client-certificate": "/home/admin/.kube/cert"}),
                "users[0].user.client-certificate",
            ),
            (
                server.clone(),
                json!({"token": "t", "client-key-data": "a2V5"}),
                "users[0].user.client-key-data is refused (only a token authenticates)",
            ),
            (
                server.clone(),
                json!({"username": "admin", "password": "p"}),
                "is refused (only a token authenticates)",
            ),
            (
                server.clone(),
                json!({"token": "t", "as": "system:admin"}),
                "users[0].user.as is refused (it impersonates",
            ),
            (
                json!({"server": "https://198.18.0.1:6443", "certificate-authority": "/etc/kubernetes/pki/ca.crt"}),
                token.clone(),
                "clusters[1].cluster.certificate-authority is refused (it names a file",
            ),
            (
                json!({"server": "https://198.18.0.1:6443", "insecure-skip-tls-verify": true}),
                token.clone(),
                "clusters[1].cluster.insecure-skip-tls-verify is refused (it turns off TLS verification)",
            ),
            (
                json!({"server": "https://198.18.0.1:6443", "proxy-url": "http://evil:3128"}),
                token.clone(),
                "clusters[1].cluster.proxy-url",
            ),
            (
                json!({"server": "http://198.18.0.1:8080"}),
                token.clone(),
                "the server \"http://198.18.0.1:8080\" is not https: the token would travel in clear",
            ),
            (
                json!({"server": "198.18.0.1:6443"}),
                token.clone(),
                "is not https",
            ),
            (server.clone(), json!({}), "the current user has no token"),
        ];
        for (cluster, user, want) in cases {
            let err = remote_access(&kubeconfig(cluster.clone(), user.clone()))
                .expect_err(&format!("{cluster} {user} must be refused"));
            let msg = err.to_string();
            assert!(msg.contains(want), "{cluster} {user}: {msg}");
            if !matches!(err, CredentialsRefused::Broken(_)) {
                assert!(
                    msg.contains(
                        "may hold only an https server, its certificate-authority-data and a token"
                    ),
                    "{msg}"
                );
            }
        }
        for (text, want) in [
            ("{{{", ""),
            (
                "apiVersion: v1\nkind: Config\nclusters: []\n",
                "no current-context",
            ),
            (
                "current-context: east\ncontexts: [{name: west, context: {cluster: west, user: u}}]\n",
                "contexts has no entry named \"east\"",
            ),
        ] {
            let err = remote_access(text).unwrap_err();
            assert!(
                matches!(err, CredentialsRefused::Broken(_)),
                "{text}: {err:?}"
            );
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
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

//! `tandem install-cni`: the DaemonSet that runs `tandem cni-install` on
//! every node, as `linkerd install-cni`.

use serde_json::{Value, json};

use crate::{ImageOptions, PART_OF, labels};

pub const NAMESPACE: &str = "tandem-cni";
pub const NAME: &str = "tandem-cni";
pub const CONTAINER: &str = "install-cni";
/// The node's CNI dirs, as Linkerd's `--dest-cni-bin-dir` and
/// `--dest-cni-net-dir` default them.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_NET_DIR: &str = "/etc/cni/net.d";
/// Where the container sees them.
pub const MOUNTED_BIN_DIR: &str = "/host/cni-bin";
pub const MOUNTED_NET_DIR: &str = "/host/cni-net";
/// The tandem binary in its image, for exec probes and hooks (the image's
/// entrypoint; the injected proxy's postStart hook runs it there too).
pub const BINARY_IN_IMAGE: &str = "/tandem";
/// Linkerd's label on every object of its CNI plugin.
const LINKERD_CNI_RESOURCE: &str = "linkerd.io/cni-resource";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniOptions {
    pub image: ImageOptions,
    /// The node's CNI bin dir (absolute).
    pub bin_dir: String,
    /// The node's CNI config dir (absolute).
    pub net_dir: String,
}

impl Default for CniOptions {
    fn default() -> Self {
        Self {
            image: ImageOptions::default(),
            bin_dir: DEFAULT_BIN_DIR.into(),
            net_dir: DEFAULT_NET_DIR.into(),
        }
    }
}

/// The installer's objects, in apply order. No RBAC: it reads nothing from
/// the API, only the node's files.
pub fn render(o: &CniOptions) -> Vec<Value> {
    let mut l = labels("cni");
    l[LINKERD_CNI_RESOURCE] = json!("true");
    let dirs = ["--bin-dir", MOUNTED_BIN_DIR, "--net-dir", MOUNTED_NET_DIR];
    let args: Vec<&str> = ["cni-install"].into_iter().chain(dirs).collect();
    let check: Vec<&str> = [BINARY_IN_IMAGE, "cni-install", "--check"]
        .into_iter()
        .chain(dirs)
        .collect();
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NAMESPACE,
                "labels": {
                    PART_OF: "tandem",
                    LINKERD_CNI_RESOURCE: "true",
                    // Host paths as root: no other Pod Security level admits it.
                    "pod-security.kubernetes.io/enforce": "privileged",
                },
                "annotations": { "linkerd.io/inject": "disabled" },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": NAME, "namespace": NAMESPACE, "labels": l },
            "automountServiceAccountToken": false,
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": { "name": NAME, "namespace": NAMESPACE, "labels": l },
            "spec": {
                "selector": { "matchLabels": { "app.kubernetes.io/component": "cni", PART_OF: "tandem" } },
                "template": {
                    "metadata": { "labels": l },
                    "spec": {
                        "serviceAccountName": NAME,
                        "automountServiceAccountToken": false,
                        "nodeSelector": { "kubernetes.io/os": "linux" },
                        // Every node, whatever its taints: a node without the
                        // plugin starts meshed pods unredirected.
                        "tolerations": [{ "operator": "Exists" }],
                        // Not on the pod network it installs itself into.
                        "hostNetwork": true,
                        // On SIGTERM it takes its entry out of the config;
                        // that takes well under a second.
                        "terminationGracePeriodSeconds": 10,
                        "containers": [{
                            "name": CONTAINER,
                            "image": o.image.reference(),
                            "imagePullPolicy": "IfNotPresent",
                            "args": args,
                            "env": [{ "name": "TANDEM_LOG", "value": "info" }],
                            "readinessProbe": {
                                "exec": { "command": check },
                                "periodSeconds": 1,
                            },
                            "resources": {
                                "requests": { "cpu": "10m", "memory": "32Mi" },
                                "limits": { "memory": "128Mi" },
                            },
                            // Root, to write the node's root-owned CNI dirs;
                            // no capability beyond owning them.
                            "securityContext": {
                                "runAsUser": 0,
                                "runAsNonRoot": false,
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": { "drop": ["ALL"] },
                                "seccompProfile": { "type": "RuntimeDefault" },
                            },
                            "volumeMounts": [
                                { "name": "cni-bin", "mountPath": MOUNTED_BIN_DIR },
                                { "name": "cni-net", "mountPath": MOUNTED_NET_DIR },
                            ],
                        }],
                        "volumes": [
                            { "name": "cni-bin", "hostPath": { "path": o.bin_dir, "type": "DirectoryOrCreate" } },
                            { "name": "cni-net", "hostPath": { "path": o.net_dir, "type": "DirectoryOrCreate" } },
                        ],
                    },
                },
            },
        }),
    ]
}

const HEADER: &str = "# Generated by `cargo test -p tandem-install` from crates/install/src/cni/manifest.rs.\n# Do not edit: change the renderer and run the tests with TANDEM_UPDATE_GENERATED=1.\n# `tandem install-cni` prints the same, with its flags for the node's CNI dirs and the image.\n";

/// The CNI installer with its defaults, committed under `manifests/` for
/// those who apply files rather than run the CLI.
pub fn manifest_yaml() -> Result<String, String> {
    Ok(format!(
        "{HEADER}{}",
        crate::to_yaml(&render(&CniOptions::default()))?
    ))
}

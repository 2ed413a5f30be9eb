//! How each control-plane process is started and checked.

use std::path::{Path, PathBuf};

use crate::{
    ClusterLayout, Component, Nodes, Toolchain,
    node::{
        files::{self, NodeFiles},
        net,
    },
    pki::Pki,
    process::Spec,
};

/// The kwok stages: what the fake kubelet does to nodes and pods.
pub const KWOK_STAGES: &str = include_str!("kwok/stages.yaml");

/// The annotation that hands a pod's readiness to something other than kwok.
pub const EXTERNAL_READINESS_ANNOTATION: &str = "testbed.tandem.io/readiness";

/// The service-account issuer, as in a default cluster.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The health endpoint of a component: (URL, needs the cluster CA).
pub fn health_url(layout: &ClusterLayout, c: Component) -> String {
    let port = layout.port(c);
    match c {
        Component::Etcd => format!("http://127.0.0.1:{port}/health"),
        Component::KubeApiserver => format!("https://{}:{port}/readyz", layout.apiserver_ip()),
        Component::KubeControllerManager | Component::KubeScheduler => {
            format!("https://127.0.0.1:{port}/healthz")
        }
        Component::Kwok | Component::Agent => format!("http://127.0.0.1:{port}/healthz"),
        Component::Containerd => format!("unix://{}", layout.containerd_socket().display()),
        Component::Kubelet => format!("http://{}:10248/healthz", layout.node_ip()),
        Component::KubeProxy => format!("http://{}:10256/healthz", layout.node_ip()),
    }
}

fn p(path: impl AsRef<Path>) -> String {
    path.as_ref().display().to_string()
}

/// The command line of one component.
pub fn spec(layout: &ClusterLayout, tc: &Toolchain, c: Component) -> Spec {
    let pki = Pki::new(layout);
    let ca = pki.ca();
    let args: Vec<String> = match c {
        Component::Etcd => {
            let client = format!("http://127.0.0.1:{}", layout.port(c));
            let peer = format!("http://127.0.0.1:{}", layout.etcd_peer_port());
            vec![
                format!("--name={}", layout.name),
                format!("--data-dir={}", p(layout.etcd_data_dir())),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster={}={peer}", layout.name),
                "--initial-cluster-state=new".into(),
                // Test data: no fsync, as envtest does; much faster on shared disks.
                "--unsafe-no-fsync=true".into(),
                "--quota-backend-bytes=4294967296".into(),
                "--log-level=warn".into(),
            ]
        }
        Component::KubeApiserver => {
            let serving = pki.apiserver();
            let mut args = vec![
                format!(
                    "--etcd-servers=http://127.0.0.1:{}",
                    layout.port(Component::Etcd)
                ),
                format!("--secure-port={}", layout.port(c)),
                format!("--bind-address={}", layout.apiserver_ip()),
                format!("--advertise-address={}", layout.apiserver_ip()),
                format!("--cert-dir={}", p(layout.dir.join("run"))),
                format!("--tls-cert-file={}", p(&serving.cert)),
                format!("--tls-private-key-file={}", p(&serving.key)),
                format!("--client-ca-file={}", p(&ca.cert)),
                match layout.nodes {
                    // Kubelets get exactly their own node's objects.
                    Nodes::Real => "--authorization-mode=Node,RBAC".into(),
                    Nodes::Fake => "--authorization-mode=RBAC".into(),
                },
                format!("--service-account-issuer={SA_ISSUER}"),
                format!("--service-account-key-file={}", p(pki.sa_pub())),
                format!("--service-account-signing-key-file={}", p(pki.sa_key())),
                format!("--service-cluster-ip-range={}", layout.service_cidr()),
                "--allow-privileged=true".into(),
                "--enable-priority-and-fairness=false".into(),
                "--profiling=false".into(),
                "--event-ttl=1h".into(),
                "--v=1".into(),
            ];
            if layout.nodes == Nodes::Real {
                let kc = pki.apiserver_kubelet_client();
                args.extend([
                    "--enable-admission-plugins=NodeRestriction".into(),
                    format!("--kubelet-client-certificate={}", p(&kc.cert)),
                    format!("--kubelet-client-key={}", p(&kc.key)),
                    // Node names do not resolve; their InternalIP does.
                    "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
                ]);
            }
            args
        }
        Component::KubeControllerManager | Component::KubeScheduler => {
            let own = pki.component(c);
            let kubeconfig = p(layout.component_kubeconfig(c));
            let mut args = vec![
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics".into(),
                format!("--secure-port={}", layout.port(c)),
                "--bind-address=127.0.0.1".into(),
                format!("--tls-cert-file={}", p(&own.cert)),
                format!("--tls-private-key-file={}", p(&own.key)),
                "--leader-elect=false".into(),
                "--v=1".into(),
            ];
            if c == Component::KubeControllerManager {
                args.extend([
                    format!("--root-ca-file={}", p(&ca.cert)),
                    format!("--service-account-private-key-file={}", p(pki.sa_key())),
                    format!("--cluster-signing-cert-file={}", p(&ca.cert)),
                    format!("--cluster-signing-key-file={}", p(&ca.key)),
                    format!("--service-cluster-ip-range={}", layout.service_cidr()),
                    // Each controller acts as its own ServiceAccount, bound to
                    // its bootstrap role, as in a kubeadm cluster.
                    "--use-service-account-credentials=true".into(),
                ]);
            }
            args
        }
        Component::Kwok => vec![
            format!("--kubeconfig={}", p(layout.component_kubeconfig(c))),
            format!("--config={}", p(kwok_config_path(layout))),
            match layout.nodes {
                Nodes::Fake => "--manage-all-nodes=true".into(),
                // Only the fake node: the real one is the kubelet's.
                Nodes::Real => {
                    format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake")
                }
            },
            // Without a node Lease, kube-controller-manager marks the node
            // NotReady after its grace period, and every pod with it.
            "--node-lease-duration-seconds=40".into(),
            format!("--cidr={}", layout.kwok_pod_cidr()),
            format!("--node-ip={}", kwok_node_ip(layout)),
            format!("--server-address=127.0.0.1:{}", layout.port(c)),
            "--v=INFO".into(),
        ],
        Component::Containerd => {
            return node_spec(
                layout,
                c,
                tc.binary(c),
                vec![format!(
                    "--config={}",
                    p(NodeFiles::new(layout).containerd_config())
                )],
            );
        }
        Component::Kubelet => {
            let args = files::kubelet_args(layout, &layout.component_kubeconfig(c));
            return node_spec(layout, c, tc.binary(c), args);
        }
        Component::KubeProxy => {
            let args = vec![
                format!("--config={}", p(NodeFiles::new(layout).kube_proxy_config())),
                "--v=1".into(),
            ];
            return node_spec(layout, c, tc.binary(c), args);
        }
        Component::Agent => {
            return Spec {
                program: crate::dev_binary(c.binary()),
                args: vec![
                    "agent".into(),
                    // The kubeconfig's path names the testbed's directory,
                    // so that `down` also finds a stray agent.
                    format!("--kubeconfig={}", p(layout.component_kubeconfig(c))),
                    format!("--context={}", layout.name),
                    format!("--lb-pool={}", layout.lb_pool()),
                    format!("--health-port={}", layout.port(c)),
                ],
                log: layout.log_path(c),
                pid_file: layout.pid_path(c),
            };
        }
    };
    Spec {
        program: tc.binary(c),
        args,
        log: layout.log_path(c),
        pid_file: layout.pid_path(c),
    }
}

/// A node component, run in the node's network namespace.
fn node_spec(layout: &ClusterLayout, c: Component, binary: PathBuf, args: Vec<String>) -> Spec {
    let (program, args) = net::in_netns(layout, &binary, args);
    Spec {
        program,
        args,
        log: layout.log_path(c),
        pid_file: layout.pid_path(c),
    }
}

/// The annotation by which kwok knows the nodes it plays.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// The taint that keeps ordinary pods off the kwok node when a real node
/// is there; benchmarks tolerate it.
pub const KWOK_TAINT: &str = "kwok.x-k8s.io/node";

/// The fake node's address: nobody connects to it.
pub fn kwok_node_ip(layout: &ClusterLayout) -> String {
    match layout.nodes {
        Nodes::Fake => layout.node_ip().to_string(),
        Nodes::Real => {
            let net = layout.kwok_pod_cidr();
            let base = net.split('/').next().unwrap_or_default();
            base.rsplit_once('.')
                .map(|(prefix, _)| format!("{prefix}.254"))
                .unwrap_or_default()
        }
    }
}

pub fn kwok_config_path(layout: &ClusterLayout) -> PathBuf {
    layout.dir.join("kwok-stages.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn layout() -> ClusterLayout {
        layout_with(Nodes::Fake)
    }

    fn layout_with(nodes: Nodes) -> ClusterLayout {
        Config::new(
            "/tb".into(),
            26440,
            vec!["east".into(), "west".into()],
            nodes,
        )
        .unwrap()
        .layout("west")
        .unwrap()
    }

    fn tc() -> Toolchain {
        Toolchain {
            bin_dir: "/bin-dir".into(),
            kube_version: "v1.37.2".into(),
        }
    }

    fn arg<'a>(spec: &'a Spec, flag: &str) -> Option<&'a str> {
        spec.args
            .iter()
            .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
    }

    #[test]
    fn apiserver_serves_on_loopback_with_rbac_and_token_signing() {
        let l = layout();
        let s = spec(&l, &tc(), Component::KubeApiserver);
        assert_eq!(s.program, PathBuf::from("/bin-dir/kube-apiserver"));
        assert_eq!(arg(&s, "--secure-port"), Some("26450"));
        assert_eq!(arg(&s, "--bind-address"), Some("127.0.0.1"));
        assert_eq!(arg(&s, "--advertise-address"), Some("127.0.0.1"));
        assert_eq!(arg(&s, "--authorization-mode"), Some("RBAC"));
        assert_eq!(arg(&s, "--etcd-servers"), Some("http://127.0.0.1:26451"));
        assert!(arg(&s, "--service-account-signing-key-file").is_some());
        assert!(arg(&s, "--insecure-port").is_none());
        assert_eq!(
            arg(&s, "--service-cluster-ip-range"),
            Some("198.19.193.0/24")
        );
    }

    #[test]
    fn with_real_nodes_the_apiserver_serves_the_bridge_and_authorizes_nodes() {
        let l = layout_with(Nodes::Real);
        let s = spec(&l, &tc(), Component::KubeApiserver);
        assert_eq!(arg(&s, "--bind-address"), Some("198.18.0.1"));
        assert_eq!(arg(&s, "--advertise-address"), Some("198.18.0.1"));
        assert_eq!(arg(&s, "--authorization-mode"), Some("Node,RBAC"));
        assert_eq!(
            arg(&s, "--kubelet-preferred-address-types"),
            Some("InternalIP,Hostname")
        );
        let kwok = spec(&l, &tc(), Component::Kwok);
        assert!(arg(&kwok, "--manage-all-nodes").is_none());
        assert_eq!(
            arg(&kwok, "--manage-nodes-with-annotation-selector"),
            Some("kwok.x-k8s.io/node=fake")
        );
        assert_eq!(arg(&kwok, "--node-ip"), Some("198.18.129.254"));
    }

    #[test]
    fn node_components_run_in_the_nodes_namespace() {
        let l = layout_with(Nodes::Real);
        for c in [
            Component::Containerd,
            Component::Kubelet,
            Component::KubeProxy,
        ] {
            let s = spec(&l, &tc(), c);
            assert_eq!(s.program, PathBuf::from("nsenter"), "{c}");
            assert_eq!(s.args[0], "--net=/run/netns/tandem0-west", "{c}");
            assert_eq!(s.args[2], format!("/bin-dir/{}", c.binary()), "{c}");
        }
    }

    #[test]
    fn every_component_listens_on_its_own_port_and_logs_to_its_cluster() {
        let l = layout_with(Nodes::Real);
        for c in Component::ALL {
            let s = spec(&l, &tc(), c);
            assert!(s.log.starts_with("/tb/clusters/west"), "{c}");
            assert!(s.pid_file.starts_with("/tb/clusters/west"), "{c}");
            let url = health_url(&l, c);
            if c.listens_on_host() {
                assert!(url.contains(&l.port(c).to_string()), "{c}: {url}");
            } else {
                assert!(
                    url.contains(&l.node_ip().to_string())
                        || url.starts_with("unix:///run/tandem/"),
                    "{c}: {url}"
                );
            }
        }
    }

    #[test]
    fn kwok_hands_out_the_clusters_pod_range() {
        let s = spec(&layout(), &tc(), Component::Kwok);
        assert_eq!(arg(&s, "--cidr"), Some("127.11.0.0/16"));
        assert_eq!(arg(&s, "--node-ip"), Some("127.0.0.1"));
        assert_eq!(arg(&s, "--manage-all-nodes"), Some("true"));
        assert_eq!(arg(&s, "--node-lease-duration-seconds"), Some("40"));
    }

    #[test]
    fn stages_gate_readiness_on_the_annotation() {
        assert!(KWOK_STAGES.contains(EXTERNAL_READINESS_ANNOTATION));
        for name in [
            "node-initialize",
            "node-heartbeat-with-lease",
            "pod-ready",
            "pod-start-external-readiness",
            "pod-delete",
        ] {
            assert!(KWOK_STAGES.contains(&format!("name: {name}\n")), "{name}");
        }
    }
}

//! How each control-plane process is started and checked.

use std::path::{Path, PathBuf};

use crate::{ClusterLayout, Component, Toolchain, pki::Pki, process::Spec};

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
        Component::KubeApiserver => format!("https://127.0.0.1:{port}/readyz"),
        Component::KubeControllerManager | Component::KubeScheduler => {
            format!("https://127.0.0.1:{port}/healthz")
        }
        Component::Kwok => format!("http://127.0.0.1:{port}/healthz"),
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
            vec![
                format!(
                    "--etcd-servers=http://127.0.0.1:{}",
                    layout.port(Component::Etcd)
                ),
                format!("--secure-port={}", layout.port(c)),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--cert-dir={}", p(layout.dir.join("run"))),
                format!("--tls-cert-file={}", p(&serving.cert)),
                format!("--tls-private-key-file={}", p(&serving.key)),
                format!("--client-ca-file={}", p(&ca.cert)),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-issuer={SA_ISSUER}"),
                format!("--service-account-key-file={}", p(pki.sa_pub())),
                format!("--service-account-signing-key-file={}", p(pki.sa_key())),
                format!("--service-cluster-ip-range={}", layout.service_cidr()),
                "--allow-privileged=true".into(),
                "--enable-priority-and-fairness=false".into(),
                "--profiling=false".into(),
                "--event-ttl=1h".into(),
                "--v=1".into(),
            ]
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
            "--manage-all-nodes=true".into(),
            // Without a node Lease, kube-controller-manager marks the node
            // NotReady after its grace period, and every pod with it.
            "--node-lease-duration-seconds=40".into(),
            format!("--cidr={}", layout.pod_cidr()),
            format!("--node-ip={}", layout.node_ip()),
            format!("--server-address=127.0.0.1:{}", layout.port(c)),
            "--v=INFO".into(),
        ],
    };
    Spec {
        program: tc.binary(c),
        args,
        log: layout.log_path(c),
        pid_file: layout.pid_path(c),
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
        Config::new("/tb".into(), 26440, vec!["east".into(), "west".into()])
            .unwrap()
            .layout("west")
            .unwrap()
    }

    fn tc() -> Toolchain {
        Toolchain {
            bin_dir: "/bin-dir".into(),
            kube_version: "v1.34.4".into(),
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
        assert_eq!(arg(&s, "--service-cluster-ip-range"), Some("10.97.0.0/16"));
    }

    #[test]
    fn every_component_listens_on_its_own_port_and_logs_to_its_cluster() {
        let l = layout();
        for c in Component::ALL {
            let s = spec(&l, &tc(), c);
            assert!(s.log.starts_with("/tb/clusters/west"), "{c}");
            assert!(s.pid_file.starts_with("/tb/clusters/west"), "{c}");
            let url = health_url(&l, c);
            assert!(url.contains(&l.port(c).to_string()), "{c}: {url}");
        }
    }

    #[test]
    fn kwok_hands_out_the_clusters_pod_range() {
        let s = spec(&layout(), &tc(), Component::Kwok);
        assert_eq!(arg(&s, "--cidr"), Some("127.11.0.0/16"));
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

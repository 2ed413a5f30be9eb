//! The testbed's layout: which clusters, which ports and address ranges.
//!
//! Everything here is derived from the cluster names, their order and a base
//! port, so that `up`, `status` and `down` agree without asking each other.

use std::{net::Ipv4Addr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
pub use crate::layout::ClusterLayout;

/// The default clusters, named as in the workshop.
pub const DEFAULT_CLUSTERS: &[&str] = &["east", "west"];

/// The default first port. Each cluster takes [`PORTS_PER_CLUSTER`] ports
/// from here on, in the order the clusters were named.
pub const DEFAULT_BASE_PORT: u16 = 26440;

/// Ports reserved for each cluster; see [`Component::port_offset`].
pub const PORTS_PER_CLUSTER: u16 = 10;

/// At most this many clusters with fake nodes: each gets its own
/// 127.(10+i).0.0/16 pod range.
pub const MAX_CLUSTERS: usize = 16;

/// At most this many clusters with real nodes: each takes /24s of
/// 198.18.0.0/15 within its testbed's network slot.
pub const MAX_REAL_CLUSTERS: usize = 8;

/// Testbeds with real nodes that may run side by side on one machine: each
/// takes one slot of 198.18.0.0/15 and its own bridge.
pub const NET_SLOTS: u8 = 8;

/// What a cluster's node is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nodes {
    /// A network namespace per cluster with containerd, kubelet and
    /// kube-proxy, so that pods run; needs root.
    #[default]
    Real,
    /// A kwok node only: pods are records that never run.
    Fake,
}

impl Nodes {
    pub fn name(self) -> &'static str {
        match self {
            Nodes::Real => "real",
            Nodes::Fake => "fake",
        }
    }
}

/// A process of one cluster's control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
    Containerd,
    Kubelet,
    KubeProxy,
    /// The testbed's own agent: LoadBalancer addresses and image hints.
    Agent,
    Kwok,
}

impl Component {
    /// In start order: each one needs the ones before it.
    pub const ALL: [Component; 9] = [
        Component::Etcd,
        Component::KubeApiserver,
        Component::KubeControllerManager,
        Component::KubeScheduler,
        Component::Containerd,
        Component::Kubelet,
        Component::KubeProxy,
        Component::Agent,
        Component::Kwok,
    ];

    /// The components a cluster runs with these nodes, in start order.
    pub fn started(nodes: Nodes) -> Vec<Component> {
        Self::ALL
            .into_iter()
            .filter(|c| nodes == Nodes::Real || !c.is_node())
            .collect()
    }

    /// Takes a port of the host (the node's own components listen inside
    /// its network namespace).
    pub fn listens_on_host(self) -> bool {
        !matches!(
            self,
            Component::Containerd | Component::Kubelet | Component::KubeProxy
        )
    }

    /// Runs in the node's network namespace, or serves it.
    pub fn is_node(self) -> bool {
        matches!(
            self,
            Component::Containerd | Component::Kubelet | Component::KubeProxy | Component::Agent
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::Containerd => "containerd",
            Component::Kubelet => "kubelet",
            Component::KubeProxy => "kube-proxy",
            Component::Agent => "agent",
            Component::Kwok => "kwok",
        }
    }

    /// The binary's file name in the build cache; the agent is the
    /// `tandem-testbed` tool itself.
    pub fn binary(self) -> &'static str {
        match self {
            Component::Agent => "tandem-testbed",
            c => c.name(),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The offset of this component's main port within its cluster's block.
    /// etcd also uses the next offset for its peer port.
    pub(crate) fn port_offset(self) -> u16 {
        match self {
            Component::KubeApiserver => 0,
            Component::Etcd => 1,
            Component::KubeControllerManager => 3,
            Component::KubeScheduler => 4,
            Component::Kwok => 5,
            Component::Agent => 6,
            // These listen inside the node's own network namespace, on the
            // ports a kubelet and kube-proxy always use; they take no port
            // of the host.
            Component::Containerd | Component::Kubelet | Component::KubeProxy => 0,
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The whole testbed as asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub dir: PathBuf,
    pub base_port: u16,
    pub clusters: Vec<String>,
    pub nodes: Nodes,
    /// The testbed's slot of 198.18.0.0/15 (real nodes only); chosen at the
    /// first `up` and kept in the state file.
    pub slot: u8,
}

impl Config {
    /// Validates names and ports; nothing is touched on disk.
    pub fn new(
        dir: PathBuf,
        base_port: u16,
        clusters: Vec<String>,
        nodes: Nodes,
    ) -> Result<Self, Error> {
        validate_cluster_names(&clusters)?;
        if nodes == Nodes::Real && clusters.len() > MAX_REAL_CLUSTERS {
            return Err(Error::InvalidConfig(format!(
                "{} clusters asked for; with real nodes the testbed runs at most {MAX_REAL_CLUSTERS} (--nodes fake allows {MAX_CLUSTERS})",
                clusters.len()
            )));
        }
        let span = PORTS_PER_CLUSTER as usize * clusters.len();
        if base_port < 1024 || base_port as usize + span > u16::MAX as usize {
            return Err(Error::InvalidConfig(format!(
                "--base-port {base_port} does not leave room for {} ports: choose a port between 1024 and {}",
                span,
                u16::MAX as usize - span
            )));
        }
        Ok(Self {
            dir,
            base_port,
            clusters,
            nodes,
            slot: 0,
        })
    }

    /// The same testbed in network slot `slot`.
    pub fn with_slot(mut self, slot: u8) -> Result<Self, Error> {
        if slot >= NET_SLOTS {
            return Err(Error::InvalidConfig(format!(
                "network slot {slot} is out of range: there are {NET_SLOTS}"
            )));
        }
        self.slot = slot;
        Ok(self)
    }

    /// The host's end of every node's link (real nodes).
    pub fn bridge(&self) -> String {
        bridge_name(self.slot)
    }

    /// The host's address on the bridge, where the apiservers listen.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.slot, 1)
    }

    pub fn layouts(&self) -> Vec<ClusterLayout> {
        self.clusters
            .iter()
            .enumerate()
            .map(|(index, name)| ClusterLayout {
                name: name.clone(),
                index,
                dir: self.dir.join("clusters").join(name),
                base_port: self.base_port + PORTS_PER_CLUSTER * index as u16,
                nodes: self.nodes,
                slot: self.slot,
            })
            .collect()
    }

    pub fn layout(&self, name: &str) -> Result<ClusterLayout, Error> {
        self.layouts()
            .into_iter()
            .find(|l| l.name == name)
            .ok_or_else(|| Error::UnknownCluster {
                name: name.to_string(),
                known: self.clusters.clone(),
            })
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
}

/// The bridge of network slot `slot`.
pub fn bridge_name(slot: u8) -> String {
    format!("tandem{slot}")
}

/// Cluster names become kubeconfig contexts and parts of Service names
/// (`emoji-svc-west`), so they must be DNS labels; they must also be unique.
pub fn validate_cluster_names(names: &[String]) -> Result<(), Error> {
    if names.is_empty() {
        return Err(Error::InvalidConfig(
            "no clusters named: pass at least one, as in --clusters east,west".into(),
        ));
    }
    if names.len() > MAX_CLUSTERS {
        return Err(Error::InvalidConfig(format!(
            "{} clusters asked for; the testbed runs at most {MAX_CLUSTERS}",
            names.len()
        )));
    }
    for (i, name) in names.iter().enumerate() {
        let valid = !name.is_empty()
            && name.len() <= 40
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && name.as_bytes()[0].is_ascii_lowercase()
            && !name.ends_with('-');
        if !valid {
            return Err(Error::InvalidConfig(format!(
                "cluster name {name:?} is not valid: use up to 40 lowercase letters, digits and '-', starting with a letter (for example east, west)"
            )));
        }
        if names[..i].contains(name) {
            return Err(Error::InvalidConfig(format!(
                "cluster name {name:?} is given twice"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(names: &[&str]) -> Result<Config, Error> {
        Config::new(
            "/tb".into(),
            DEFAULT_BASE_PORT,
            names.iter().map(|s| s.to_string()).collect(),
            Nodes::Fake,
        )
    }

    #[test]
    fn names_are_validated() {
        for good in [&["east", "west"][..], &["a"], &["c-1", "c-2", "c3"]] {
            assert!(cfg(good).is_ok(), "{good:?}");
        }
        for (bad, why) in [
            (&[][..], "no clusters"),
            (&["East"], "not valid"),
            (&["1st"], "not valid"),
            (&["a_b"], "not valid"),
            (&["a-"], "not valid"),
            (&[""], "not valid"),
            (&["east", "east"], "given twice"),
        ] {
            let err = cfg(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn too_many_clusters_are_refused() {
        let names: Vec<String> = (0..=MAX_CLUSTERS).map(|i| format!("c{i}")).collect();
        let err = Config::new("/tb".into(), DEFAULT_BASE_PORT, names, Nodes::Fake).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn base_port_must_leave_room() {
        let names = vec!["east".to_string(), "west".to_string()];
        let new = |port| Config::new("/tb".into(), port, names.clone(), Nodes::Fake);
        assert!(new(80).is_err());
        assert!(new(65530).is_err());
        assert!(new(65515).is_ok());
    }

    #[test]
    fn layouts_do_not_overlap() {
        let c = cfg(&["east", "west", "north"]).unwrap();
        let layouts = c.layouts();
        let mut ports: Vec<u16> = layouts
            .iter()
            .flat_map(|l| l.ports().into_iter().map(|(_, p)| p))
            .collect();
        let n = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), n, "ports are unique");

        let east = &layouts[0];
        let west = &layouts[1];
        assert_eq!(east.apiserver_url(), "https://127.0.0.1:26440");
        assert_eq!(west.apiserver_url(), "https://127.0.0.1:26450");
        assert_eq!(east.pod_cidr(), "127.10.0.0/16");
        assert_eq!(west.pod_cidr(), "127.11.0.0/16");
        assert_ne!(east.service_cidr(), west.service_cidr());
        assert!(east.node_ip().is_loopback());
        assert!(!east.kubernetes_service_ip().is_loopback());
        assert_eq!(east.service_cidr(), "198.19.192.0/24");
    }

    fn in_test_range(ip: Ipv4Addr) -> bool {
        let [a, b, ..] = ip.octets();
        a == 198 && (b == 18 || b == 19)
    }

    fn net_of(cidr: &str) -> Ipv4Addr {
        cidr.split('/').next().unwrap().parse().unwrap()
    }

    #[test]
    fn real_nodes_take_every_address_from_the_test_range_without_overlap() {
        let mut seen = std::collections::BTreeSet::new();
        for slot in 0..NET_SLOTS {
            let names: Vec<String> = (0..MAX_REAL_CLUSTERS).map(|i| format!("c{i}")).collect();
            let c = Config::new("/tb".into(), DEFAULT_BASE_PORT, names, Nodes::Real)
                .unwrap()
                .with_slot(slot)
                .unwrap();
            assert!(in_test_range(c.host_ip()));
            assert!(seen.insert(format!("{}/24", c.host_ip())));
            for l in c.layouts() {
                for ip in [
                    l.node_ip(),
                    l.apiserver_ip(),
                    l.kubernetes_service_ip(),
                    l.dns_service_ip(),
                ] {
                    assert!(in_test_range(ip), "{ip}");
                }
                assert_eq!(l.apiserver_ip(), c.host_ip());
                for cidr in [
                    l.pod_cidr(),
                    l.service_cidr(),
                    l.lb_pool(),
                    l.kwok_pod_cidr(),
                ] {
                    assert!(cidr.ends_with("/24"), "{cidr}");
                    assert!(in_test_range(net_of(&cidr)), "{cidr}");
                    assert!(seen.insert(cidr.clone()), "{cidr} is used twice");
                }
                assert!(l.veth().len() <= 15, "{}", l.veth());
            }
        }
        assert!(
            Config::new(
                "/tb".into(),
                DEFAULT_BASE_PORT,
                vec!["a".into()],
                Nodes::Real
            )
            .unwrap()
            .with_slot(NET_SLOTS)
            .is_err()
        );
    }

    #[test]
    fn real_nodes_allow_fewer_clusters() {
        let names: Vec<String> = (0..=MAX_REAL_CLUSTERS).map(|i| format!("c{i}")).collect();
        let err = Config::new("/tb".into(), DEFAULT_BASE_PORT, names.clone(), Nodes::Real)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--nodes fake"), "{err}");
        assert!(Config::new("/tb".into(), DEFAULT_BASE_PORT, names, Nodes::Fake).is_ok());
    }

    #[test]
    fn unknown_cluster_names_the_known_ones() {
        let c = cfg(&["east", "west"]).unwrap();
        let err = c.layout("north").unwrap_err().to_string();
        assert!(err.contains("north") && err.contains("east, west"), "{err}");
    }

    #[test]
    fn components_round_trip_by_name() {
        for c in Component::ALL {
            assert_eq!(Component::parse(c.name()), Some(c));
        }
        assert_eq!(Component::parse("kubelet"), Some(Component::Kubelet));
        assert_eq!(Component::parse("coredns"), None);
        assert!(Component::started(Nodes::Fake).iter().all(|c| !c.is_node()));
        assert_eq!(Component::started(Nodes::Real).len(), Component::ALL.len());
    }
}

//! One cluster's layout: its ports, addresses, directories and names, all
//! derived from its name, its index and the testbed's base port and slot.

use std::{net::Ipv4Addr, path::PathBuf};

use crate::{Component, MAX_REAL_CLUSTERS, Nodes};

/// One cluster's derived layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterLayout {
    pub name: String,
    pub index: usize,
    pub dir: PathBuf,
    pub base_port: u16,
    pub nodes: Nodes,
    pub slot: u8,
}

impl ClusterLayout {
    pub fn port(&self, component: Component) -> u16 {
        self.base_port + component.port_offset()
    }

    pub fn etcd_peer_port(&self) -> u16 {
        self.port(Component::Etcd) + 1
    }

    /// Every port this cluster listens on, with its owner.
    pub fn ports(&self) -> Vec<(Component, u16)> {
        let mut ports: Vec<_> = Component::started(self.nodes)
            .into_iter()
            .filter(|c| c.listens_on_host())
            .map(|c| (c, self.port(c)))
            .collect();
        ports.push((Component::Etcd, self.etcd_peer_port()));
        ports
    }

    /// Where the apiserver listens: the host's bridge address with real
    /// nodes (so that nodes and pods reach it), else loopback.
    pub fn apiserver_ip(&self) -> Ipv4Addr {
        match self.nodes {
            Nodes::Real => Ipv4Addr::new(198, 18, self.slot, 1),
            Nodes::Fake => Ipv4Addr::LOCALHOST,
        }
    }

    pub fn apiserver_url(&self) -> String {
        format!(
            "https://{}:{}",
            self.apiserver_ip(),
            self.port(Component::KubeApiserver)
        )
    }

    /// This cluster's number within the testbed's slot of 198.18.0.0/15.
    fn net_index(&self) -> u8 {
        self.slot * MAX_REAL_CLUSTERS as u8 + self.index as u8
    }

    /// Real nodes: 198.19.(8·slot+i).0/24 on the node's bridge. Fake nodes:
    /// 127.(10+i).0.0/16, so that a real process can bind a pod's IP with no
    /// network setup.
    pub fn pod_cidr(&self) -> String {
        match self.nodes {
            Nodes::Real => format!("198.19.{}.0/24", self.net_index()),
            Nodes::Fake => format!("127.{}.0.0/16", 10 + self.index),
        }
    }

    /// Pods on the kwok node; with real nodes a range of their own, apart
    /// from the real node's.
    pub fn kwok_pod_cidr(&self) -> String {
        match self.nodes {
            Nodes::Real => format!("198.18.{}.0/24", 128 + self.net_index()),
            Nodes::Fake => self.pod_cidr(),
        }
    }

    /// The node's address: 198.18.slot.(10+i) in its namespace with real
    /// nodes; with fake nodes, this machine's loopback.
    pub fn node_ip(&self) -> Ipv4Addr {
        match self.nodes {
            Nodes::Real => Ipv4Addr::new(198, 18, self.slot, 10 + self.index as u8),
            Nodes::Fake => Ipv4Addr::LOCALHOST,
        }
    }

    /// Service cluster IPs are virtual; 198.19.(128+…).0/24 keeps them apart
    /// from every pod range and inside 198.18.0.0/15.
    pub fn service_cidr(&self) -> String {
        format!("198.19.{}.0/24", self.service_octet())
    }

    fn service_octet(&self) -> u8 {
        match self.nodes {
            Nodes::Real => 128 + self.net_index(),
            Nodes::Fake => 192 + self.index as u8,
        }
    }

    /// The first service IP, which the `kubernetes` Service takes.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.service_octet(), 1)
    }

    /// The cluster DNS Service's IP.
    pub fn dns_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.service_octet(), 10)
    }

    /// LoadBalancer addresses: 198.18.(64+8·slot+i).0/24, routed to the node.
    pub fn lb_pool(&self) -> String {
        format!("198.18.{}.0/24", 64 + self.net_index())
    }

    /// The node's network namespace (real nodes).
    pub fn netns(&self) -> String {
        format!("tandem{}-{}", self.slot, self.name)
    }

    /// The host's end of the node's veth pair (at most 15 characters).
    pub fn veth(&self) -> String {
        format!("tb{}v{}", self.slot, self.index)
    }

    /// The cgroup under which the kubelet puts every pod.
    pub fn cgroup_root(&self) -> String {
        format!("tandem{}-{}", self.slot, self.name)
    }

    /// Short paths for sockets (a socket path has at most 108 bytes).
    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from("/run/tandem")
            .join(self.slot.to_string())
            .join(&self.name)
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.run_dir().join("containerd.sock")
    }

    /// The node's files: containerd's root, the kubelet's, CNI and configs.
    pub fn node_dir(&self) -> PathBuf {
        self.dir.join("node")
    }

    /// The kwok node: the only node with fake nodes; with real nodes a
    /// tainted second node for benchmarks of many pods.
    pub fn kwok_node_name(&self) -> String {
        match self.nodes {
            Nodes::Real => format!("{}-kwok-0", self.name),
            Nodes::Fake => self.node_name(),
        }
    }

    pub fn node_name(&self) -> String {
        format!("{}-node-0", self.name)
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    pub fn log_path(&self, component: Component) -> PathBuf {
        self.dir.join("logs").join(format!("{component}.log"))
    }

    pub fn pid_path(&self, component: Component) -> PathBuf {
        self.dir.join("run").join(format!("{component}.pid"))
    }

    pub fn etcd_data_dir(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// The kubeconfig a component uses to reach its own apiserver.
    pub fn component_kubeconfig(&self, component: Component) -> PathBuf {
        self.dir.join(format!("{component}.kubeconfig"))
    }
}

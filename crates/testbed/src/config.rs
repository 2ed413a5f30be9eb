//! The testbed's layout: which clusters, which ports and address ranges.
//!
//! Everything here is derived from the cluster names, their order and a base
//! port, so that `up`, `status` and `down` agree without asking each other.

use std::{net::Ipv4Addr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The default clusters, named as in the workshop.
pub const DEFAULT_CLUSTERS: &[&str] = &["east", "west"];

/// The default first port. Each cluster takes [`PORTS_PER_CLUSTER`] ports
/// from here on, in the order the clusters were named.
pub const DEFAULT_BASE_PORT: u16 = 26440;

/// Ports reserved for each cluster; see [`Component::port_offset`].
pub const PORTS_PER_CLUSTER: u16 = 10;

/// At most this many clusters: each gets its own 127.(10+i).0.0/16 pod range.
pub const MAX_CLUSTERS: usize = 16;

/// A process of one cluster's control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
    Kwok,
}

impl Component {
    /// In start order: each one needs the ones before it.
    pub const ALL: [Component; 5] = [
        Component::Etcd,
        Component::KubeApiserver,
        Component::KubeControllerManager,
        Component::KubeScheduler,
        Component::Kwok,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::Kwok => "kwok",
        }
    }

    /// The binary's file name in the build cache.
    pub fn binary(self) -> &'static str {
        self.name()
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The offset of this component's main port within its cluster's block.
    /// etcd also uses the next offset for its peer port.
    fn port_offset(self) -> u16 {
        match self {
            Component::KubeApiserver => 0,
            Component::Etcd => 1,
            Component::KubeControllerManager => 3,
            Component::KubeScheduler => 4,
            Component::Kwok => 5,
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
}

/// One cluster's derived layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterLayout {
    pub name: String,
    pub index: usize,
    pub dir: PathBuf,
    pub base_port: u16,
}

impl Config {
    /// Validates names and ports; nothing is touched on disk.
    pub fn new(dir: PathBuf, base_port: u16, clusters: Vec<String>) -> Result<Self, Error> {
        validate_cluster_names(&clusters)?;
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
        })
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

impl ClusterLayout {
    pub fn port(&self, component: Component) -> u16 {
        self.base_port + component.port_offset()
    }

    pub fn etcd_peer_port(&self) -> u16 {
        self.port(Component::Etcd) + 1
    }

    /// Every port this cluster listens on, with its owner.
    pub fn ports(&self) -> Vec<(Component, u16)> {
        let mut ports: Vec<_> = Component::ALL.iter().map(|c| (*c, self.port(*c))).collect();
        ports.push((Component::Etcd, self.etcd_peer_port()));
        ports
    }

    pub fn apiserver_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port(Component::KubeApiserver))
    }

    /// Pods get addresses from 127.(10+i).0.0/16, so that a real process can
    /// later bind a pod's IP without any network setup.
    pub fn pod_cidr(&self) -> String {
        format!("127.{}.0.0/16", 10 + self.index)
    }

    /// The fake node is this machine, so its address is where the control
    /// plane listens; it stays out of every pod range.
    pub fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::LOCALHOST
    }

    /// Service cluster IPs are virtual; 10.(96+i).0.0/16 keeps them apart
    /// from every pod range.
    pub fn service_cidr(&self) -> String {
        format!("10.{}.0.0/16", 96 + self.index)
    }

    /// The first service IP, which the `kubernetes` Service takes.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 96 + self.index as u8, 0, 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(names: &[&str]) -> Result<Config, Error> {
        Config::new(
            "/tb".into(),
            DEFAULT_BASE_PORT,
            names.iter().map(|s| s.to_string()).collect(),
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
        let err = Config::new("/tb".into(), DEFAULT_BASE_PORT, names).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn base_port_must_leave_room() {
        let names = vec!["east".to_string(), "west".to_string()];
        assert!(Config::new("/tb".into(), 80, names.clone()).is_err());
        assert!(Config::new("/tb".into(), 65530, names.clone()).is_err());
        assert!(Config::new("/tb".into(), 65515, names).is_ok());
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
        assert_eq!(Component::parse("kubelet"), None);
    }
}

//! Builds the testbed's binaries from Go modules (and the pause binary from C)
//! into a cache outside the clone, and finds them again.
//!
//! The Go modules under `tools/` are compiled into this crate, so any
//! `tandem` binary can build its own testbed. Each build unit (a module, or
//! the pause build) is cached in its own directory, `bin/<unit>-<key>`. The
//! key hashes what goes into that unit: its module files, packages, build
//! tags, environment, ldflags and source patch. A version change rebuilds
//! that unit and no other.
//!
//! Callers see one flat directory, `bin/<kube version>-<key>`, of hard links
//! to the artifacts of the [`Group`]s they asked for. The control plane never
//! needs the node group: a machine that only runs fake-node testbeds never
//! builds containerd.

mod build;
mod modules;
mod unit;

use std::{
    fs,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use self::{
    build::{Builder, link_units},
    modules::{KUBE_FILES, MODULES, Module, units},
    unit::{required_version, short_hex},
};
use crate::{Component, Error, Progress};

/// Which binaries a caller needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok,
    /// and the dev tools: helm and the Gateway API CRDs.
    ControlPlane,
    /// A real node: kubelet, kube-proxy, containerd with its shim and ctr,
    /// the CNI plugins, CoreDNS, Prometheus (for `viz install`) and pause.
    Node,
}

impl Group {
    pub const ALL: [Group; 2] = [Group::ControlPlane, Group::Node];

    pub fn name(self) -> &'static str {
        match self {
            Group::ControlPlane => "control-plane",
            Group::Node => "node",
        }
    }

    /// The artifacts of this group, as [`Toolchain::artifact`] names them.
    pub fn artifacts(self) -> Vec<&'static str> {
        units(&[self]).flat_map(Module::artifacts).collect()
    }
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// helm, built for testing tandem's charts.
pub const HELM: &str = "helm";
/// The Gateway API's standard-channel CRDs (HTTPRoute and friends).
pub const GATEWAY_API_CRDS: &str = "gateway-api-crds";
/// The kubelet, from the same Kubernetes release as the control plane.
pub const KUBELET: &str = "kubelet";
/// kube-proxy, from the same Kubernetes release as the control plane.
pub const KUBE_PROXY: &str = "kube-proxy";
/// The containerd daemon.
pub const CONTAINERD: &str = "containerd";
/// containerd's runc shim; containerd finds it beside itself or on PATH.
pub const CONTAINERD_SHIM: &str = "containerd-shim-runc-v2";
/// containerd's client, used to import images.
pub const CTR: &str = "ctr";
/// A directory holding the CNI plugins [`CNI_PLUGINS`], for containerd's
/// CNI `bin_dirs`.
pub const CNI_BIN: &str = "cni-bin";
/// The files of [`CNI_BIN`].
pub const CNI_PLUGINS: [&str; 4] = ["bridge", "host-local", "loopback", "portmap"];
/// CoreDNS with only the plugins a cluster's DNS needs; it forwards nothing.
pub const COREDNS: &str = "coredns";
/// Prometheus, with only Kubernetes (and file, http) service discovery.
pub const PROMETHEUS: &str = "prometheus";
/// The pod sandbox's pause binary, static, from Kubernetes' own source.
pub const PAUSE: &str = "pause";
/// The release of pause that [`PAUSE`] is built as: the tag Kubernetes'
/// `build/pause/Makefile` gives it. The build checks that it still does.
pub const PAUSE_VERSION: &str = "3.10.2";

/// The built binaries: one directory holding every artifact of the groups
/// asked for.
#[derive(Clone, Debug)]
pub struct Toolchain {
    pub bin_dir: PathBuf,
    pub kube_version: String,
}

impl Toolchain {
    pub fn binary(&self, component: Component) -> PathBuf {
        self.bin_dir.join(component.binary())
    }

    /// A built tool or directory, named by one of this module's constants
    /// ([`HELM`], [`GATEWAY_API_CRDS`], [`KUBELET`], [`CNI_BIN`], ...).
    pub fn artifact(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn missing(&self, groups: &[Group]) -> Vec<&'static str> {
        units(groups)
            .flat_map(Module::artifacts)
            .filter(|a| !self.artifact(a).exists())
            .collect()
    }

    /// `TANDEM_TESTBED_BIN`: a directory of binaries built elsewhere.
    fn prebuilt() -> Option<Self> {
        std::env::var_os("TANDEM_TESTBED_BIN").map(|dir| Self {
            bin_dir: dir.into(),
            kube_version: kube_version(),
        })
    }

    /// The control plane if it is fully built, without building anything.
    pub fn find() -> Option<Self> {
        Self::find_groups(&[Group::ControlPlane])
    }

    /// These groups if they are fully built, without building anything.
    pub fn find_groups(groups: &[Group]) -> Option<Self> {
        let tc = Self::prebuilt().unwrap_or_else(|| Self::expected(groups));
        tc.missing(groups).is_empty().then_some(tc)
    }

    /// The directory of links for these groups.
    fn expected(groups: &[Group]) -> Self {
        let mut h = Sha256::new();
        for m in units(groups) {
            h.update(m.cache_name().as_bytes());
            h.update([0]);
        }
        Self {
            bin_dir: bin_root().join(format!("{}-{}", kube_version(), short_hex(h))),
            kube_version: kube_version(),
        }
    }

    /// Finds the control plane's binaries (and dev tools), building whatever
    /// is missing. It never builds the node group.
    ///
    /// `TANDEM_TESTBED_BIN` names a directory of prebuilt binaries instead.
    pub fn ensure(progress: &dyn Progress) -> Result<Self, Error> {
        Self::ensure_groups(progress, &[Group::ControlPlane])
    }

    /// Finds the artifacts of `groups`, building whatever is missing: each
    /// unit in its own cache directory, then one directory linking them all.
    ///
    /// `TANDEM_TESTBED_BIN` names a directory of prebuilt binaries instead.
    pub fn ensure_groups(progress: &dyn Progress, groups: &[Group]) -> Result<Self, Error> {
        if let Some(tc) = Self::prebuilt() {
            let missing = tc.missing(groups);
            if !missing.is_empty() {
                return Err(Error::InvalidConfig(format!(
                    "TANDEM_TESTBED_BIN={} lacks {}: unset it to build them from Go modules",
                    tc.bin_dir.display(),
                    names(&missing)
                )));
            }
            return Ok(tc);
        }
        let tc = Self::expected(groups);
        if tc.missing(groups).is_empty() {
            return Ok(tc);
        }
        let root = cache_root();
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        // One builder at a time; a second caller waits, then finds the binaries.
        let lock_path = root.join("build.lock");
        let lock = fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        if tc.missing(groups).is_empty() {
            return Ok(tc);
        }

        let pending: Vec<(&Module, Vec<&str>)> = units(groups)
            .map(|m| (m, unit_missing(m)))
            .filter(|(_, missing)| !missing.is_empty())
            .collect();
        if !pending.is_empty() {
            let all: Vec<&str> = pending.iter().flat_map(|(_, m)| m.clone()).collect();
            progress.step(&format!(
                "building {} into {} (once; a cold build of the control plane takes 5-20 minutes on 2 cores, the node group as long again)",
                names(&all),
                bin_root().display()
            ));
            let builder = Builder::new(&root, progress)?;
            for (m, missing) in &pending {
                builder.build(m, missing)?;
            }
        }
        link_units(&tc.bin_dir, groups)?;
        Ok(tc)
    }
}

fn names(artifacts: &[&str]) -> String {
    artifacts.join(", ")
}

/// `TANDEM_CACHE`, else `$XDG_CACHE_HOME/tandem`, else `~/.cache/tandem`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("TANDEM_CACHE") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("tandem");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("tandem")
}

fn bin_root() -> PathBuf {
    cache_root().join("bin")
}

fn unit_dir(m: &Module) -> PathBuf {
    bin_root().join(m.cache_name())
}

fn unit_missing(m: &Module) -> Vec<&'static str> {
    let dir = unit_dir(m);
    m.artifacts()
        .into_iter()
        .filter(|a| !dir.join(a).exists())
        .collect()
}

/// The pinned Kubernetes release, read from the tools module.
pub fn kube_version() -> String {
    let go_mod = KUBE_FILES[0].1;
    required_version(go_mod, "k8s.io/kubernetes")
        .unwrap_or("unknown")
        .to_string()
}

/// The pinned containerd release (`v2.x.y`), read from its tools module.
pub fn containerd_version() -> String {
    unit_requirement("containerd", "github.com/containerd/containerd/v2")
}

/// The pinned CoreDNS release (`v1.x.y`), read from its tools module.
pub fn coredns_version() -> String {
    unit_requirement("coredns", "github.com/coredns/coredns")
}

fn unit_requirement(dir: &str, module: &str) -> String {
    MODULES
        .iter()
        .find(|m| m.dir == dir)
        .and_then(|m| required_version(m.go_mod(), module))
        .unwrap_or("unknown")
        .to_string()
}

/// The pinned Prometheus release (`3.x.y`), from its tools module.
pub fn prometheus_version() -> String {
    prometheus_release(&unit_requirement(
        "prometheus",
        "github.com/prometheus/prometheus",
    ))
}

/// Prometheus' release for its Go module's version: since 3.0, release
/// `3.M.P` is published as module `v0.3MM.P` (v0.316.0 is 3.16.0). Other
/// versions are given back as they are, without the `v`.
pub(super) fn prometheus_release(module_version: &str) -> String {
    let v = module_version.trim_start_matches('v');
    let mut parts = v.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("0"), Some(minor), Some(patch)) if minor.len() == 3 && minor.starts_with('3') => {
            match minor[1..].parse::<u32>() {
                Ok(m) => format!("3.{m}.{patch}"),
                Err(_) => v.to_string(),
            }
        }
        _ => v.to_string(),
    }
}

/// The last `n` lines of a file, for error messages.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_the_tools_module() {
        let v = kube_version();
        assert!(v.starts_with("v1.3"), "{v}");
    }

    #[test]
    fn prometheus_releases_are_read_from_module_versions() {
        assert_eq!(prometheus_release("v0.316.0"), "3.16.0");
        assert_eq!(prometheus_release("v0.300.1"), "3.0.1");
        assert_eq!(prometheus_release("v0.55.1"), "0.55.1");
        assert_eq!(prometheus_release("v2.1.0"), "2.1.0");
        assert_eq!(prometheus_version(), "3.16.0");
    }

    #[test]
    fn the_control_plane_does_not_need_the_node_group() {
        let cp = Group::ControlPlane.artifacts();
        for a in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
            HELM,
            GATEWAY_API_CRDS,
        ] {
            assert!(cp.contains(&a), "{a}");
        }
        let node = Group::Node.artifacts();
        assert_eq!(
            node,
            [
                KUBELET,
                KUBE_PROXY,
                CONTAINERD,
                CONTAINERD_SHIM,
                CTR,
                CNI_BIN,
                COREDNS,
                PROMETHEUS,
                PAUSE
            ]
        );
        assert!(cp.iter().all(|a| !node.contains(a)));
        assert!(units(&[Group::ControlPlane]).all(|m| m.group == Group::ControlPlane));
        // Each group has its own directory of links.
        let both = Toolchain::expected(&Group::ALL).bin_dir;
        assert_ne!(Toolchain::expected(&[Group::ControlPlane]).bin_dir, both);
        assert_eq!(
            Toolchain::expected(&[Group::Node, Group::ControlPlane]).bin_dir,
            both
        );
    }
}

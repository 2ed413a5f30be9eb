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

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::{Component, Error, Progress};

/// Which binaries a caller needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok,
    /// and the dev tools: helm and the Gateway API CRDs.
    ControlPlane,
    /// A real node: kubelet, kube-proxy, containerd with its shim and ctr,
    /// the CNI plugins, CoreDNS and pause.
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
/// The pod sandbox's pause binary, static, from Kubernetes' own source.
pub const PAUSE: &str = "pause";
/// The release of pause that [`PAUSE`] is built as: the tag Kubernetes'
/// `build/pause/Makefile` gives it. The build checks that it still does.
pub const PAUSE_VERSION: &str = "3.10.1";

/// One build unit: a Go module of `tools/` (its directory name and files), the
/// packages to build from it with their output names, directories to copy
/// out of a module it requires (module, directory in it, destination), and C
/// programs compiled from a module's source.
#[derive(Clone, Copy)]
struct Module {
    dir: &'static str,
    group: Group,
    files: &'static [(&'static str, &'static str)],
    builds: &'static [(&'static str, &'static str)],
    /// Put every build of this unit into one directory of this name, which
    /// is then the unit's artifact.
    bundle: Option<&'static str>,
    copies: &'static [(&'static str, &'static str, &'static str)],
    c_builds: &'static [CBuild],
    /// `go build -tags`; empty for none.
    tags: &'static str,
    /// Environment of `go build`.
    env: &'static [(&'static str, &'static str)],
    stamp: Stamp,
    patch: Option<&'static SourcePatch>,
}

/// How the version is stamped into a unit's binaries.
#[derive(Clone, Copy)]
enum Stamp {
    /// Kubernetes' version variables, set to the testbed's Kubernetes release.
    Kubernetes,
    /// `-X var=V`, V being the version the unit's go.mod requires of `module`.
    Var {
        module: &'static str,
        var: &'static str,
    },
}

/// A C program compiled from a file of a Go module the unit requires.
#[derive(Clone, Copy)]
struct CBuild {
    module: &'static str,
    source: &'static str,
    output: &'static str,
    cflags: &'static [&'static str],
    /// `-DVERSION=v<version>`, checked against this file, which must hold the
    /// line `<version_line><version>`.
    version: &'static str,
    version_file: &'static str,
    version_line: &'static str,
}

/// Go builds without cgo: static binaries that need no C toolchain.
const NO_CGO: &[(&str, &str)] = &[("CGO_ENABLED", "0")];
const KUBE_TAGS: &str = "selinux,notest";

const KUBE_FILES: &[(&str, &str)] = &[
    ("go.mod", include_str!("../../../tools/kube/go.mod")),
    ("go.sum", include_str!("../../../tools/kube/go.sum")),
    ("tools.go", include_str!("../../../tools/kube/tools.go")),
];
const KUBELET_GO_MOD: &str = include_str!("../../../tools/kubelet/go.mod");
const KUBELET_GO_SUM: &str = include_str!("../../../tools/kubelet/go.sum");

/// pause, as Kubernetes builds it (`build/pause/Makefile`), from the source
/// in the `k8s.io/kubernetes` module.
const PAUSE_BUILD: CBuild = CBuild {
    module: "k8s.io/kubernetes",
    source: "build/pause/linux/pause.c",
    output: PAUSE,
    cflags: &["-Os", "-Wall", "-Werror", "-static"],
    version: PAUSE_VERSION,
    version_file: "build/pause/Makefile",
    version_line: "TAG ?= ",
};

const MODULES: &[Module] = &[
    Module {
        dir: "kube",
        group: Group::ControlPlane,
        files: KUBE_FILES,
        builds: &[
            ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
            (
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-controller-manager",
            ),
            ("k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"),
        ],
        bundle: None,
        copies: &[],
        c_builds: &[],
        tags: KUBE_TAGS,
        env: NO_CGO,
        stamp: Stamp::Kubernetes,
        patch: Some(&ENDPOINT_IP_PATCH),
    },
    Module {
        dir: "etcd",
        group: Group::ControlPlane,
        files: &[
            ("go.mod", include_str!("../../../tools/etcd/go.mod")),
            ("go.sum", include_str!("../../../tools/etcd/go.sum")),
            ("main.go", include_str!("../../../tools/etcd/main.go")),
        ],
        builds: &[(".", "etcd")],
        bundle: None,
        copies: &[],
        c_builds: &[],
        tags: KUBE_TAGS,
        env: NO_CGO,
        stamp: Stamp::Kubernetes,
        patch: None,
    },
    Module {
        dir: "kwok",
        group: Group::ControlPlane,
        files: &[
            ("go.mod", include_str!("../../../tools/kwok/go.mod")),
            ("go.sum", include_str!("../../../tools/kwok/go.sum")),
            ("tools.go", include_str!("../../../tools/kwok/tools.go")),
        ],
        builds: &[("sigs.k8s.io/kwok/cmd/kwok", "kwok")],
        bundle: None,
        copies: &[],
        c_builds: &[],
        tags: KUBE_TAGS,
        env: NO_CGO,
        stamp: Stamp::Kubernetes,
        patch: None,
    },
    Module {
        dir: "helm",
        group: Group::ControlPlane,
        files: &[
            ("go.mod", include_str!("../../../tools/helm/go.mod")),
            ("go.sum", include_str!("../../../tools/helm/go.sum")),
        ],
        builds: &[("helm.sh/helm/v3/cmd/helm", HELM)],
        bundle: None,
        copies: &[],
        c_builds: &[],
        tags: KUBE_TAGS,
        env: NO_CGO,
        stamp: Stamp::Kubernetes,
        patch: None,
    },
    Module {
        dir: "gateway-api",
        group: Group::ControlPlane,
        files: &[
            ("go.mod", include_str!("../../../tools/gateway-api/go.mod")),
            ("go.sum", include_str!("../../../tools/gateway-api/go.sum")),
        ],
        builds: &[],
        bundle: None,
        copies: &[(
            "sigs.k8s.io/gateway-api",
            "config/crd/standard",
            GATEWAY_API_CRDS,
        )],
        c_builds: &[],
        tags: "",
        env: NO_CGO,
        stamp: Stamp::Kubernetes,
        patch: None,
    },
    // The node group. kubelet and kube-proxy come from the control plane's
    // Kubernetes release (a test checks that), in a module of their own so
    // that adding them did not touch `kube`'s cache; they need no patch.
    Module {
        dir: "kubelet",
        group: Group::Node,
        files: &[
            ("go.mod", KUBELET_GO_MOD),
            ("go.sum", KUBELET_GO_SUM),
            ("tools.go", include_str!("../../../tools/kubelet/tools.go")),
        ],
        builds: &[
            ("k8s.io/kubernetes/cmd/kubelet", KUBELET),
            ("k8s.io/kubernetes/cmd/kube-proxy", KUBE_PROXY),
        ],
        bundle: None,
        copies: &[],
        c_builds: &[],
        tags: KUBE_TAGS,
        env: NO_CGO,
        stamp: Stamp::Kubernetes,
        patch: None,
    },
    Module {
        dir: "containerd",
        group: Group::Node,
        files: &[
            ("go.mod", include_str!("../../../tools/containerd/go.mod")),
            ("go.sum", include_str!("../../../tools/containerd/go.sum")),
            (
                "tools.go",
                include_str!("../../../tools/containerd/tools.go"),
            ),
        ],
        builds: &[
            (
                "github.com/containerd/containerd/v2/cmd/containerd",
                CONTAINERD,
            ),
            (
                "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
                CONTAINERD_SHIM,
            ),
            ("github.com/containerd/containerd/v2/cmd/ctr", CTR),
        ],
        bundle: None,
        copies: &[],
        c_builds: &[],
        // BUILDING.md: only btrfs needs cgo; devmapper and zfs are not
        // wanted. urfave_cli_no_docs is upstream's default (Makefile).
        tags: "no_btrfs,no_devmapper,no_zfs,urfave_cli_no_docs",
        env: NO_CGO,
        stamp: Stamp::Var {
            module: "github.com/containerd/containerd/v2",
            var: "github.com/containerd/containerd/v2/version.Version",
        },
        patch: None,
    },
    Module {
        dir: "cni",
        group: Group::Node,
        files: &[
            ("go.mod", include_str!("../../../tools/cni/go.mod")),
            ("go.sum", include_str!("../../../tools/cni/go.sum")),
            ("tools.go", include_str!("../../../tools/cni/tools.go")),
        ],
        builds: &[
            (
                "github.com/containernetworking/plugins/plugins/main/bridge",
                CNI_PLUGINS[0],
            ),
            (
                "github.com/containernetworking/plugins/plugins/ipam/host-local",
                CNI_PLUGINS[1],
            ),
            (
                "github.com/containernetworking/plugins/plugins/main/loopback",
                CNI_PLUGINS[2],
            ),
            (
                "github.com/containernetworking/plugins/plugins/meta/portmap",
                CNI_PLUGINS[3],
            ),
        ],
        bundle: Some(CNI_BIN),
        copies: &[],
        c_builds: &[],
        tags: "",
        env: NO_CGO,
        stamp: Stamp::Var {
            module: "github.com/containernetworking/plugins",
            var: "github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion",
        },
        patch: None,
    },
    Module {
        dir: "coredns",
        group: Group::Node,
        files: &[
            ("go.mod", include_str!("../../../tools/coredns/go.mod")),
            ("go.sum", include_str!("../../../tools/coredns/go.sum")),
            ("main.go", include_str!("../../../tools/coredns/main.go")),
        ],
        builds: &[(".", COREDNS)],
        bundle: None,
        copies: &[],
        c_builds: &[],
        tags: "",
        env: NO_CGO,
        // Upstream stamps `git describe`, which is the tag for a release.
        stamp: Stamp::Var {
            module: "github.com/coredns/coredns",
            var: "github.com/coredns/coredns/coremain.GitCommit",
        },
        patch: None,
    },
    // pause is C. Its source comes from the kubelet's module, through a
    // copy of that module's requirements.
    Module {
        dir: "pause",
        group: Group::Node,
        files: &[("go.mod", KUBELET_GO_MOD), ("go.sum", KUBELET_GO_SUM)],
        builds: &[],
        bundle: None,
        copies: &[],
        c_builds: &[PAUSE_BUILD],
        tags: "",
        env: &[],
        stamp: Stamp::Kubernetes,
        patch: None,
    },
];

/// The units of some groups, in build order.
fn units(groups: &[Group]) -> impl Iterator<Item = &'static Module> + '_ {
    MODULES.iter().filter(|m| groups.contains(&m.group))
}

impl Module {
    /// What this unit puts into its cache directory: binaries and
    /// directories.
    fn artifacts(&self) -> Vec<&'static str> {
        let binaries: Vec<&'static str> = match self.bundle {
            Some(dir) => vec![dir],
            None => self.builds.iter().map(|(_, name)| *name).collect(),
        };
        binaries
            .into_iter()
            .chain(self.copies.iter().map(|(_, _, dest)| *dest))
            .chain(self.c_builds.iter().map(|c| c.output))
            .collect()
    }

    fn go_mod(&self) -> &'static str {
        self.files
            .iter()
            .find(|(name, _)| *name == "go.mod")
            .map(|(_, body)| *body)
            .unwrap_or_default()
    }

    fn ldflags(&self) -> String {
        match self.stamp {
            Stamp::Kubernetes => ldflags(&kube_version()),
            Stamp::Var { module, var } => {
                let v = required_version(self.go_mod(), module).unwrap_or("unknown");
                format!("-s -w -X {var}={v}")
            }
        }
    }

    /// A hash of everything that goes into this unit's artifacts.
    fn key(&self) -> String {
        let mut h = Sha256::new();
        let mut put = |s: &str| {
            h.update(s.as_bytes());
            h.update([0]);
        };
        put(self.dir);
        for (name, body) in self.files {
            put(name);
            put(body);
        }
        for (pkg, name) in self.builds {
            put(pkg);
            put(name);
        }
        put(self.bundle.unwrap_or_default());
        for (module, dir, dest) in self.copies {
            put(module);
            put(dir);
            put(dest);
        }
        for c in self.c_builds {
            put(c.module);
            put(c.source);
            put(c.output);
            for f in c.cflags {
                put(f);
            }
            put(c.version);
        }
        put(self.tags);
        for (k, v) in self.env {
            put(k);
            put(v);
        }
        put(&self.ldflags());
        if let Some(p) = self.patch {
            put(p.file);
            put(p.find);
            put(p.replace);
        }
        short_hex(h)
    }

    /// Where the unit comes from, for progress lines.
    fn source(&self) -> String {
        match self.c_builds {
            [c] if self.builds.is_empty() => format!("{} of {}", c.source, c.module),
            _ => format!("tools/{}", self.dir),
        }
    }

    /// `<dir>-<key>`: the unit's cache directory (under `bin/`) and build
    /// tree (under `src/`).
    fn cache_name(&self) -> String {
        format!("{}-{}", self.dir, self.key())
    }
}

fn short_hex(h: Sha256) -> String {
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The version a go.mod requires of `module`, in either `require` form.
fn required_version<'a>(go_mod: &'a str, module: &str) -> Option<&'a str> {
    go_mod.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("require ").unwrap_or(line);
        let mut words = line.split_whitespace();
        (words.next()? == module)
            .then(|| words.next())
            .flatten()
            .filter(|v| v.starts_with('v'))
    })
}

/// The one change made to Kubernetes' source, applied to a linked copy of the
/// module in the build tree and never to the module cache.
///
/// kube-apiserver refuses loopback addresses in Endpoints and EndpointSlices.
/// Testbed pods have loopback IPs (so that a real process can bind them with
/// no network setup, and nothing leaves the machine), and the endpointslice
/// controller must be able to publish them. Nothing else is relaxed.
const ENDPOINT_IP_PATCH: SourcePatch = SourcePatch {
    module: "k8s.io/kubernetes",
    file: "pkg/apis/core/validation/validation.go",
    find: "\tif ip.IsLoopback() {\n\t\tallErrs = append(allErrs, field.Invalid(fldPath, ipAddress, \"may not be in the loopback range",
    replace: "\tif false && ip.IsLoopback() { // tandem testbed: pods have loopback IPs\n\t\tallErrs = append(allErrs, field.Invalid(fldPath, ipAddress, \"may not be in the loopback range",
};

struct SourcePatch {
    module: &'static str,
    file: &'static str,
    find: &'static str,
    replace: &'static str,
}

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

fn ldflags(kube_version: &str) -> String {
    let v = kube_version.trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("0");
    let mut flags = String::from("-s -w");
    for (k, val) in [
        ("gitVersion", kube_version),
        ("gitMajor", major),
        ("gitMinor", minor),
        ("gitTreeState", "clean"),
    ] {
        for pkg in [
            "k8s.io/component-base/version",
            "k8s.io/client-go/pkg/version",
        ] {
            flags.push_str(&format!(" -X {pkg}.{k}={val}"));
        }
    }
    flags
}

/// Applies a patch to a source text, insisting that it matches exactly once so
/// that a new Kubernetes release cannot silently skip it.
fn apply_patch(source: &str, patch: &SourcePatch) -> Result<String, String> {
    match source.matches(patch.find).count() {
        1 => Ok(source.replacen(patch.find, patch.replace, 1)),
        n => Err(format!(
            "the testbed's patch to {}/{} matched {n} times instead of once; update ENDPOINT_IP_PATCH for this Kubernetes release",
            patch.module, patch.file
        )),
    }
}

/// Fills `view` with hard links to the artifacts of the groups' units, which
/// must all be built. The directory appears whole or not at all.
fn link_units(view: &Path, groups: &[Group]) -> Result<(), Error> {
    let name = view.file_name().unwrap_or_default().to_string_lossy();
    let partial = view.with_file_name(format!(".{name}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    for m in units(groups) {
        let dir = unit_dir(m);
        for a in m.artifacts() {
            let (from, to) = (dir.join(a), partial.join(a));
            if from.is_dir() {
                link_tree(&from, &to)?;
            } else {
                link_file(&from, &to)?;
            }
        }
    }
    if view.exists() {
        // Incomplete (a unit's artifact was deleted by hand): replace it.
        fs::remove_dir_all(view).map_err(|e| Error::io(view, e))?;
    }
    fs::rename(&partial, view).map_err(|e| Error::io(view, e))
}

fn link_file(from: &Path, to: &Path) -> Result<(), Error> {
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).map_err(|e| Error::io(to, e))?;
    }
    Ok(())
}

// === impl Builder ===

struct Builder<'a> {
    go: PathBuf,
    root: PathBuf,
    logs: PathBuf,
    progress: &'a dyn Progress,
}

impl<'a> Builder<'a> {
    fn new(root: &Path, progress: &'a dyn Progress) -> Result<Self, Error> {
        let go = find_go()?;
        let logs = root.join("build-logs");
        fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
        Ok(Self {
            go,
            root: root.to_path_buf(),
            logs,
            progress,
        })
    }

    /// Builds the `missing` artifacts of one unit into its cache directory.
    fn build(&self, m: &Module, missing: &[&str]) -> Result<(), Error> {
        let src = self.root.join("src").join(m.cache_name());
        fs::create_dir_all(&src).map_err(|e| Error::io(&src, e))?;
        for (name, body) in m.files {
            let path = src.join(name);
            fs::write(&path, body).map_err(|e| Error::io(&path, e))?;
        }
        let out = unit_dir(m);
        fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
        let start = Instant::now();
        self.progress.step(&format!(
            "building {} from {} into {}",
            names(missing),
            m.source(),
            out.display()
        ));

        if let Some(patch) = m.patch
            && !m.builds.is_empty()
        {
            self.patch_module(&src, patch)?;
        }
        match m.bundle {
            Some(bundle) if missing.contains(&bundle) => {
                let partial = fresh_dir(&out.join(format!(".{bundle}.partial")))?;
                for (pkg, binary) in m.builds {
                    self.go_build(m, &src, pkg, binary, &partial)?;
                }
                let target = out.join(bundle);
                fs::rename(&partial, &target).map_err(|e| Error::io(&target, e))?;
            }
            Some(_) => {}
            None => {
                for (pkg, binary) in m.builds {
                    if missing.contains(binary) {
                        self.go_build(m, &src, pkg, binary, &out)?;
                    }
                }
            }
        }
        for (module, dir, dest) in m.copies {
            if missing.contains(dest) {
                self.copy_from_module(&src, module, dir, dest, &out)?;
            }
        }
        for c in m.c_builds {
            if missing.contains(&c.output) {
                self.c_build(&src, c, &out)?;
            }
        }
        self.progress.step(&format!(
            "{} done in {}s",
            m.source(),
            start.elapsed().as_secs()
        ));
        Ok(())
    }

    /// Where `go mod download` put a module that the unit in `src` requires.
    fn module_dir(&self, src: &Path, module: &str) -> Result<PathBuf, Error> {
        let out = self.run_go(
            src,
            &["mod", "download", "-json", module],
            &format!("downloading {module}"),
        )?;
        let info: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| Error::BuildFailed {
                what: module.into(),
                detail: format!("go mod download -json printed something unexpected: {e}"),
            })?;
        match info["Dir"].as_str() {
            Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
            _ => Err(Error::BuildFailed {
                what: module.into(),
                detail: format!("go mod download did not report a directory: {out}"),
            }),
        }
    }

    fn copy_from_module(
        &self,
        src: &Path,
        module: &str,
        dir: &str,
        dest: &str,
        out: &Path,
    ) -> Result<(), Error> {
        self.progress.step(&format!("copying {dir} of {module}"));
        let from = self.module_dir(src, module)?.join(dir);
        let partial = fresh_dir(&out.join(format!(".{dest}.partial")))?;
        for entry in fs::read_dir(&from).map_err(|e| Error::io(&from, e))? {
            let entry = entry.map_err(|e| Error::io(&from, e))?;
            if entry.path().is_file() {
                let to = partial.join(entry.file_name());
                fs::copy(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
            }
        }
        let target = out.join(dest);
        fs::rename(&partial, &target).map_err(|e| Error::io(&target, e))
    }

    /// Go refuses to patch files in the module cache, so the module is linked
    /// file by file into the build tree, the one file is patched there, and the
    /// tools module is pointed at that tree with a `replace` line.
    fn patch_module(&self, src: &Path, patch: &SourcePatch) -> Result<(), Error> {
        let original = self.module_dir(src, patch.module)?;
        let tree = src.join("patched");
        if tree.exists() {
            fs::remove_dir_all(&tree).map_err(|e| Error::io(&tree, e))?;
        }
        link_tree(&original, &tree)?;

        let target = tree.join(patch.file);
        let source = fs::read_to_string(&target).map_err(|e| Error::io(&target, e))?;
        let patched = apply_patch(&source, patch).map_err(|detail| Error::BuildFailed {
            what: patch.module.into(),
            detail,
        })?;
        // Replace the link with a file of our own; the module cache is untouched.
        fs::remove_file(&target).map_err(|e| Error::io(&target, e))?;
        fs::write(&target, patched).map_err(|e| Error::io(&target, e))?;

        let go_mod = src.join("go.mod");
        let mut text = fs::read_to_string(&go_mod).map_err(|e| Error::io(&go_mod, e))?;
        text.push_str(&format!(
            "\n// Added by the testbed build: {} with the testbed's source patch.\nreplace {} => ./patched\n",
            patch.module, patch.module
        ));
        fs::write(&go_mod, text).map_err(|e| Error::io(&go_mod, e))
    }

    fn run_go(&self, dir: &Path, args: &[&str], what: &str) -> Result<String, Error> {
        let out = Command::new(&self.go)
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| Error::io(&self.go, e))?;
        if !out.status.success() {
            return Err(Error::BuildFailed {
                what: what.into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `go build` of one package into `out_dir/binary`.
    fn go_build(
        &self,
        m: &Module,
        src: &Path,
        pkg: &str,
        binary: &str,
        out_dir: &Path,
    ) -> Result<(), Error> {
        let partial = out_dir.join(format!(".{binary}.partial"));
        let mut cmd = Command::new(&self.go);
        cmd.current_dir(src).envs(m.env.iter().copied());
        cmd.args(["build", "-trimpath"]);
        if !m.tags.is_empty() {
            cmd.args(["-tags", m.tags]);
        }
        cmd.arg("-ldflags").arg(m.ldflags());
        cmd.arg("-o").arg(&partial).arg(pkg);
        self.run_logged(cmd, binary, &format!("{binary} ({pkg})"), "")?;
        let dest = out_dir.join(binary);
        fs::rename(&partial, &dest).map_err(|e| Error::io(&dest, e))
    }

    /// A C program, as its upstream Makefile builds it, from a file of a
    /// module the unit requires.
    fn c_build(&self, src: &Path, c: &CBuild, out: &Path) -> Result<(), Error> {
        let failed = |detail: String| Error::BuildFailed {
            what: c.output.into(),
            detail,
        };
        let gcc = find_on_path("gcc").ok_or_else(|| {
            failed(format!(
                "gcc was not found on PATH; {c} is C. Install gcc and libc6-dev (apt-get install gcc libc6-dev)",
                c = c.output
            ))
        })?;
        let dir = self.module_dir(src, c.module)?;
        let version_file = dir.join(c.version_file);
        let text = fs::read_to_string(&version_file).map_err(|e| Error::io(&version_file, e))?;
        let pinned = format!("{}{}", c.version_line, c.version);
        if !text.lines().any(|l| l.trim() == pinned) {
            return Err(failed(format!(
                "{} of {} no longer says `{pinned}`; update PAUSE_VERSION in the testbed's toolchain to the release it names",
                c.version_file, c.module
            )));
        }
        let partial = out.join(format!(".{}.partial", c.output));
        let mut cmd = Command::new(gcc);
        cmd.args(c.cflags)
            .arg(format!("-DVERSION=v{}", c.version))
            .arg("-o")
            .arg(&partial)
            .arg(dir.join(c.source));
        let hint = "\n(a static build needs the C library's libc.a: install libc6-dev (apt-get install gcc libc6-dev))";
        self.run_logged(cmd, c.output, &format!("{} ({})", c.output, c.source), hint)?;
        let dest = out.join(c.output);
        fs::rename(&partial, &dest).map_err(|e| Error::io(&dest, e))
    }

    /// Runs a build step with its output in `build-logs/<name>.log`, saying
    /// every 30 s that it is still going. `hint` follows the log's tail when it
    /// fails.
    fn run_logged(
        &self,
        mut cmd: Command,
        name: &str,
        what: &str,
        hint: &str,
    ) -> Result<(), Error> {
        let log_path = self.logs.join(format!("{name}.log"));
        let log = fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| Error::io(&log_path, e))?)
            .stderr(log);
        let program = PathBuf::from(cmd.get_program());
        let start = Instant::now();
        self.progress.step(&format!("building {what}"));
        let mut child = cmd.spawn().map_err(|e| Error::io(&program, e))?;
        let mut next_note = Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| Error::io(&program, e))? {
                break status;
            }
            if start.elapsed() >= next_note {
                self.progress.step(&format!(
                    "still building {name} ({}s)",
                    start.elapsed().as_secs()
                ));
                next_note += Duration::from_secs(30);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if !status.success() {
            let detail = tail(&log_path, 30);
            return Err(Error::BuildFailed {
                what: name.to_string(),
                detail: format!("{detail}{hint}\n(full log: {})", log_path.display()),
            });
        }
        self.progress
            .step(&format!("built {name} in {}s", start.elapsed().as_secs()));
        Ok(())
    }
}

/// An empty directory at `path`, whatever was there.
fn fresh_dir(path: &Path) -> Result<PathBuf, Error> {
    if path.exists() {
        fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
    Ok(path.to_path_buf())
}

/// Mirrors `from` into `to` with hard links (falling back to copies across
/// file systems): the Kubernetes module is large and only one file changes.
fn link_tree(from: &Path, to: &Path) -> Result<(), Error> {
    fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| Error::io(&src, e))?;
        if kind.is_dir() {
            link_tree(&src, &dst)?;
        } else if kind.is_file() {
            link_file(&src, &dst)?;
        }
    }
    Ok(())
}

/// `TANDEM_GO`, else `go` on PATH.
fn find_go() -> Result<PathBuf, Error> {
    let name = std::env::var_os("TANDEM_GO").unwrap_or_else(|| "go".into());
    let candidate = PathBuf::from(&name);
    if candidate.components().count() > 1 {
        return if candidate.is_file() {
            Ok(candidate)
        } else {
            Err(Error::GoMissing {
                looked_for: candidate.display().to_string(),
            })
        };
    }
    find_on_path(&candidate).ok_or_else(|| Error::GoMissing {
        looked_for: format!("{} on PATH", candidate.display()),
    })
}

fn find_on_path(name: impl AsRef<Path>) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name.as_ref()))
        .find(|p| p.is_file())
}

/// The last `n` lines of a file, for error messages.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn unit(dir: &str) -> &'static Module {
        MODULES.iter().find(|m| m.dir == dir).unwrap()
    }

    #[test]
    fn version_is_read_from_the_tools_module() {
        let v = kube_version();
        assert!(v.starts_with("v1.3"), "{v}");
    }

    #[test]
    fn the_kubelet_is_the_control_planes_kubernetes_release() {
        let kube = required_version(unit("kube").go_mod(), "k8s.io/kubernetes");
        let kubelet = required_version(KUBELET_GO_MOD, "k8s.io/kubernetes");
        assert!(kube.is_some());
        assert_eq!(kubelet, kube, "tools/kubelet/go.mod and tools/kube/go.mod");
        // And the same published staging modules.
        let replaces = |go_mod: &str| -> BTreeSet<String> {
            go_mod
                .lines()
                .filter(|l| l.contains("=> k8s.io/"))
                .map(|l| l.trim().to_string())
                .collect()
        };
        assert_eq!(replaces(KUBELET_GO_MOD).len(), 31);
        assert_eq!(replaces(KUBELET_GO_MOD), replaces(unit("kube").go_mod()));
    }

    #[test]
    fn required_versions_are_read_in_both_forms() {
        let go_mod = "module x\n\nrequire a.io/one v1.2.3\n\nrequire (\n\tb.io/two v0.1.0 // indirect\n)\n\nreplace c.io/three => c.io/three v0.0.1\n";
        assert_eq!(required_version(go_mod, "a.io/one"), Some("v1.2.3"));
        assert_eq!(required_version(go_mod, "b.io/two"), Some("v0.1.0"));
        assert_eq!(required_version(go_mod, "c.io/three"), None);
        assert_eq!(required_version(go_mod, "a.io"), None);
        assert!(containerd_version().starts_with("v2."));
        assert!(coredns_version().starts_with("v1."));
    }

    #[test]
    fn unit_keys_are_stable_short_and_distinct() {
        let keys: BTreeSet<String> = MODULES.iter().map(Module::key).collect();
        assert_eq!(keys.len(), MODULES.len());
        for m in MODULES {
            assert_eq!(m.key(), m.key());
            assert_eq!(m.key().len(), 16);
        }
    }

    #[test]
    fn a_change_to_one_unit_changes_only_its_key() {
        let kube = *unit("kube");
        let changed = Module {
            tags: "selinux",
            ..kube
        };
        assert_ne!(kube.key(), changed.key());
        let files = Module {
            files: &[("go.mod", "module other")],
            ..kube
        };
        assert_ne!(kube.key(), files.key());
        let unpatched = Module {
            patch: None,
            ..kube
        };
        assert_ne!(kube.key(), unpatched.key());
        // The kubelet's unit does not hash the control plane's files.
        let kubelet = unit("kubelet");
        assert!(
            kubelet
                .files
                .iter()
                .all(|(_, b)| !KUBE_FILES.iter().any(|(_, k)| k == b))
        );
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

    #[test]
    fn each_unit_builds_as_upstream_does() {
        for m in MODULES.iter().filter(|m| !m.builds.is_empty()) {
            assert_eq!(m.env, NO_CGO, "{}", m.dir);
        }
        assert_eq!(unit("kubelet").tags, "selinux,notest");
        assert!(unit("kubelet").patch.is_none());
        assert!(
            unit("containerd")
                .tags
                .starts_with("no_btrfs,no_devmapper,no_zfs")
        );
        let ctrd = unit("containerd").ldflags();
        assert!(
            ctrd.contains("github.com/containerd/containerd/v2/version.Version=v2."),
            "{ctrd}"
        );
        let cni = unit("cni").ldflags();
        assert!(cni.ends_with("buildversion.BuildVersion=v1.10.0"), "{cni}");
        assert_eq!(unit("cni").artifacts(), [CNI_BIN]);
        let names: Vec<&str> = unit("cni").builds.iter().map(|(_, n)| *n).collect();
        assert_eq!(names, CNI_PLUGINS);
    }

    #[test]
    fn coredns_has_no_way_to_the_hosts_resolver() {
        let main = unit("coredns").files[2].1;
        for plugin in [
            "forward", "loop", "grpc", "etcd", "route53", "azure", "clouddns",
        ] {
            assert!(!main.contains(&format!("plugin/{plugin}\"")), "{plugin}");
            assert!(!main.contains(&format!("\"{plugin}\",")), "{plugin}");
        }
        let go_sum = unit("coredns").files[1].1;
        for cloud in ["github.com/Azure/", "github.com/aws/", "cloud.google.com/"] {
            assert!(!go_sum.contains(cloud), "{cloud} in tools/coredns/go.sum");
        }
    }

    #[test]
    fn ldflags_stamp_the_version() {
        let f = ldflags("v1.34.4");
        assert!(f.contains("k8s.io/component-base/version.gitVersion=v1.34.4"));
        assert!(f.contains("gitMajor=1") && f.contains("gitMinor=34"));
    }

    #[test]
    fn patch_must_match_exactly_once() {
        let p = &ENDPOINT_IP_PATCH;
        let once = format!("before\n{}\" ...\nafter", p.find);
        let patched = apply_patch(&once, p).unwrap();
        assert!(patched.contains("if false && ip.IsLoopback()"));
        assert!(
            apply_patch("nothing here", p)
                .unwrap_err()
                .contains("0 times")
        );
        let twice = format!("{}{}", p.find, p.find);
        assert!(apply_patch(&twice, p).unwrap_err().contains("2 times"));
    }

    #[test]
    fn linked_directories_hold_every_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir_all(a.join("sub")).unwrap();
        fs::write(a.join("sub/f"), "x").unwrap();
        fs::write(a.join("g"), "y").unwrap();
        link_tree(&a, &b).unwrap();
        assert_eq!(fs::read_to_string(b.join("sub/f")).unwrap(), "x");
        assert_eq!(fs::read_to_string(b.join("g")).unwrap(), "y");
    }
}

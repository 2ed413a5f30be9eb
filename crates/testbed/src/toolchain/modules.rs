//! The table of build units: which Go modules (and C programs) the testbed
//! builds, with what tags, environment, version stamps and patch.

use super::{
    CNI_BIN, CNI_PLUGINS, CONTAINERD, CONTAINERD_SHIM, COREDNS, CTR, GATEWAY_API_CRDS, Group, HELM,
    KUBE_PROXY, KUBELET, PAUSE, PAUSE_VERSION, PROMETHEUS,
    unit::{ENDPOINT_IP_PATCH, SourcePatch},
};

/// One build unit: a Go module of `tools/` (its directory name and files), the
/// packages to build from it with their output names, directories to copy
/// out of a module it requires (module, directory in it, destination), and C
/// programs compiled from a module's source.
#[derive(Clone, Copy)]
pub(super) struct Module {
    pub(super) dir: &'static str,
    pub(super) group: Group,
    pub(super) files: &'static [(&'static str, &'static str)],
    pub(super) builds: &'static [(&'static str, &'static str)],
    /// Put every build of this unit into one directory of this name, which
    /// is then the unit's artifact.
    pub(super) bundle: Option<&'static str>,
    pub(super) copies: &'static [(&'static str, &'static str, &'static str)],
    pub(super) c_builds: &'static [CBuild],
    /// `go build -tags`; empty for none.
    pub(super) tags: &'static str,
    /// Environment of `go build`.
    pub(super) env: &'static [(&'static str, &'static str)],
    pub(super) stamp: Stamp,
    pub(super) patch: Option<&'static SourcePatch>,
}

/// How the version is stamped into a unit's binaries.
#[derive(Clone, Copy)]
pub(super) enum Stamp {
    /// Kubernetes' version variables, set to the testbed's Kubernetes release.
    Kubernetes,
    /// `-X var=V`, V being the version the unit's go.mod requires of `module`.
    Var {
        module: &'static str,
        var: &'static str,
    },
    /// `-X var=map(V)`, for modules whose Go version is not the release's
    /// own (Prometheus publishes release 3.16.0 as module v0.316.0).
    Mapped {
        module: &'static str,
        var: &'static str,
        map: fn(&str) -> String,
    },
}

/// A C program compiled from a file of a Go module the unit requires.
#[derive(Clone, Copy)]
pub(super) struct CBuild {
    pub(super) module: &'static str,
    pub(super) source: &'static str,
    pub(super) output: &'static str,
    pub(super) cflags: &'static [&'static str],
    /// `-DVERSION=v<version>`, checked against this file, which must hold the
    /// line `<version_line><version>`.
    pub(super) version: &'static str,
    pub(super) version_file: &'static str,
    pub(super) version_line: &'static str,
}

/// Go builds without cgo: static binaries that need no C toolchain.
pub(super) const NO_CGO: &[(&str, &str)] = &[("CGO_ENABLED", "0")];
pub(super) const KUBE_TAGS: &str = "selinux,notest";

pub(super) const KUBE_FILES: &[(&str, &str)] = &[
    ("go.mod", include_str!("../../../../tools/kube/go.mod")),
    ("go.sum", include_str!("../../../../tools/kube/go.sum")),
    ("tools.go", include_str!("../../../../tools/kube/tools.go")),
];
pub(super) const KUBELET_GO_MOD: &str = include_str!("../../../../tools/kubelet/go.mod");
pub(super) const KUBELET_GO_SUM: &str = include_str!("../../../../tools/kubelet/go.sum");

/// pause, as Kubernetes builds it (`build/pause/Makefile`), from the source
/// in the `k8s.io/kubernetes` module.
pub(super) const PAUSE_BUILD: CBuild = CBuild {
    module: "k8s.io/kubernetes",
    source: "build/pause/linux/pause.c",
    output: PAUSE,
    cflags: &["-Os", "-Wall", "-Werror", "-static"],
    version: PAUSE_VERSION,
    version_file: "build/pause/Makefile",
    version_line: "TAG ?= ",
};

/// What most units share: a Go build of Kubernetes' kind, without cgo, with
/// Kubernetes' tags and version stamp, and no bundle, copies, C or patch.
const GO_UNIT: Module = Module {
    dir: "",
    group: Group::ControlPlane,
    files: &[],
    builds: &[],
    bundle: None,
    copies: &[],
    c_builds: &[],
    tags: KUBE_TAGS,
    env: NO_CGO,
    stamp: Stamp::Kubernetes,
    patch: None,
};

pub(super) const MODULES: &[Module] = &[
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
        patch: Some(&ENDPOINT_IP_PATCH),
        ..GO_UNIT
    },
    Module {
        dir: "etcd",
        group: Group::ControlPlane,
        files: &[
            ("go.mod", include_str!("../../../../tools/etcd/go.mod")),
            ("go.sum", include_str!("../../../../tools/etcd/go.sum")),
            ("main.go", include_str!("../../../../tools/etcd/main.go")),
        ],
        builds: &[(".", "etcd")],
        ..GO_UNIT
    },
    Module {
        dir: "kwok",
        group: Group::ControlPlane,
        files: &[
            ("go.mod", include_str!("../../../../tools/kwok/go.mod")),
            ("go.sum", include_str!("../../../../tools/kwok/go.sum")),
            ("tools.go", include_str!("../../../../tools/kwok/tools.go")),
        ],
        builds: &[("sigs.k8s.io/kwok/cmd/kwok", "kwok")],
        ..GO_UNIT
    },
    Module {
        dir: "helm",
        group: Group::ControlPlane,
        files: &[
            ("go.mod", include_str!("../../../../tools/helm/go.mod")),
            ("go.sum", include_str!("../../../../tools/helm/go.sum")),
        ],
        builds: &[("helm.sh/helm/v3/cmd/helm", HELM)],
        ..GO_UNIT
    },
    Module {
        dir: "gateway-api",
        group: Group::ControlPlane,
        files: &[
            (
                "go.mod",
                include_str!("../../../../tools/gateway-api/go.mod"),
            ),
            (
                "go.sum",
                include_str!("../../../../tools/gateway-api/go.sum"),
            ),
        ],
        builds: &[],
        copies: &[(
            "sigs.k8s.io/gateway-api",
            "config/crd/standard",
            GATEWAY_API_CRDS,
        )],
        tags: "",
        ..GO_UNIT
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
            (
                "tools.go",
                include_str!("../../../../tools/kubelet/tools.go"),
            ),
        ],
        builds: &[
            ("k8s.io/kubernetes/cmd/kubelet", KUBELET),
            ("k8s.io/kubernetes/cmd/kube-proxy", KUBE_PROXY),
        ],
        ..GO_UNIT
    },
    Module {
        dir: "containerd",
        group: Group::Node,
        files: &[
            (
                "go.mod",
                include_str!("../../../../tools/containerd/go.mod"),
            ),
            (
                "go.sum",
                include_str!("../../../../tools/containerd/go.sum"),
            ),
            (
                "tools.go",
                include_str!("../../../../tools/containerd/tools.go"),
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
        // BUILDING.md: only btrfs needs cgo; devmapper and zfs are not
        // wanted. urfave_cli_no_docs is upstream's default (Makefile).
        tags: "no_btrfs,no_devmapper,no_zfs,urfave_cli_no_docs",
        stamp: Stamp::Var {
            module: "github.com/containerd/containerd/v2",
            var: "github.com/containerd/containerd/v2/version.Version",
        },
        ..GO_UNIT
    },
    Module {
        dir: "cni",
        group: Group::Node,
        files: &[
            ("go.mod", include_str!("../../../../tools/cni/go.mod")),
            ("go.sum", include_str!("../../../../tools/cni/go.sum")),
            ("tools.go", include_str!("../../../../tools/cni/tools.go")),
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
        tags: "",
        stamp: Stamp::Var {
            module: "github.com/containernetworking/plugins",
            var: "github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion",
        },
        ..GO_UNIT
    },
    Module {
        dir: "coredns",
        group: Group::Node,
        files: &[
            ("go.mod", include_str!("../../../../tools/coredns/go.mod")),
            ("go.sum", include_str!("../../../../tools/coredns/go.sum")),
            ("main.go", include_str!("../../../../tools/coredns/main.go")),
        ],
        builds: &[(".", COREDNS)],
        tags: "",
        // Upstream stamps `git describe`, which is the tag for a release.
        stamp: Stamp::Var {
            module: "github.com/coredns/coredns",
            var: "github.com/coredns/coredns/coremain.GitCommit",
        },
        ..GO_UNIT
    },
    // Prometheus, for `tandem viz install`, with service discovery trimmed
    // to Kubernetes (plugins/plugin_*.go: `remove_all_sd` drops every
    // discoverer but file and http, `enable_kubernetes_sd` keeps ours). The
    // web UI's assets are not embedded (no `builtinassets`): the API serves.
    Module {
        dir: "prometheus",
        group: Group::Node,
        files: &[
            (
                "go.mod",
                include_str!("../../../../tools/prometheus/go.mod"),
            ),
            (
                "go.sum",
                include_str!("../../../../tools/prometheus/go.sum"),
            ),
            (
                "tools.go",
                include_str!("../../../../tools/prometheus/tools.go"),
            ),
        ],
        builds: &[(
            "github.com/prometheus/prometheus/cmd/prometheus",
            PROMETHEUS,
        )],
        tags: "remove_all_sd,enable_kubernetes_sd",
        stamp: Stamp::Mapped {
            module: "github.com/prometheus/prometheus",
            var: "github.com/prometheus/common/version.Version",
            map: super::prometheus_release,
        },
        ..GO_UNIT
    },
    // pause is C. Its source comes from the kubelet's module, through a
    // copy of that module's requirements.
    Module {
        dir: "pause",
        group: Group::Node,
        files: &[("go.mod", KUBELET_GO_MOD), ("go.sum", KUBELET_GO_SUM)],
        builds: &[],
        c_builds: &[PAUSE_BUILD],
        tags: "",
        env: &[],
        ..GO_UNIT
    },
];

/// The units of some groups, in build order.
pub(super) fn units(groups: &[Group]) -> impl Iterator<Item = &'static Module> + '_ {
    MODULES.iter().filter(|m| groups.contains(&m.group))
}

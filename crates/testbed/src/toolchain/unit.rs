//! What one build unit is: its artifacts, its cache key, its ldflags, the
//! versions its go.mod pins, and the one source patch.

use sha2::{Digest, Sha256};

use super::{
    kube_version,
    modules::{Module, Stamp},
};

impl Module {
    /// What this unit puts into its cache directory: binaries and
    /// directories.
    pub(super) fn artifacts(&self) -> Vec<&'static str> {
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

    pub(super) fn go_mod(&self) -> &'static str {
        self.files
            .iter()
            .find(|(name, _)| *name == "go.mod")
            .map(|(_, body)| *body)
            .unwrap_or_default()
    }

    pub(super) fn ldflags(&self) -> String {
        match self.stamp {
            Stamp::Kubernetes => ldflags(&kube_version()),
            Stamp::Var { module, var } => {
                let v = required_version(self.go_mod(), module).unwrap_or("unknown");
                format!("-s -w -X {var}={v}")
            }
            Stamp::Mapped { module, var, map } => {
                let v = required_version(self.go_mod(), module).unwrap_or("unknown");
                format!("-s -w -X {var}={}", map(v))
            }
        }
    }

    /// A hash of everything that goes into this unit's artifacts.
    pub(super) fn key(&self) -> String {
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
    pub(super) fn source(&self) -> String {
        match self.c_builds {
            [c] if self.builds.is_empty() => format!("{} of {}", c.source, c.module),
            _ => format!("tools/{}", self.dir),
        }
    }

    /// `<dir>-<key>`: the unit's cache directory (under `bin/`) and build
    /// tree (under `src/`).
    pub(super) fn cache_name(&self) -> String {
        format!("{}-{}", self.dir, self.key())
    }
}

pub(super) fn short_hex(h: Sha256) -> String {
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The version a go.mod requires of `module`, in either `require` form.
pub(super) fn required_version<'a>(go_mod: &'a str, module: &str) -> Option<&'a str> {
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
pub(super) const ENDPOINT_IP_PATCH: SourcePatch = SourcePatch {
    module: "k8s.io/kubernetes",
    file: "pkg/apis/core/validation/validation.go",
    find: "\tif ip.IsLoopback() {\n\t\tallErrs = append(allErrs, field.Invalid(fldPath, ipAddress, \"may not be in the loopback range",
    replace: "\tif false && ip.IsLoopback() { // tandem testbed: pods have loopback IPs\n\t\tallErrs = append(allErrs, field.Invalid(fldPath, ipAddress, \"may not be in the loopback range",
};

pub(super) struct SourcePatch {
    pub(super) module: &'static str,
    pub(super) file: &'static str,
    pub(super) find: &'static str,
    pub(super) replace: &'static str,
}

pub(super) fn ldflags(kube_version: &str) -> String {
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
pub(super) fn apply_patch(source: &str, patch: &SourcePatch) -> Result<String, String> {
    match source.matches(patch.find).count() {
        1 => Ok(source.replacen(patch.find, patch.replace, 1)),
        n => Err(format!(
            "the testbed's patch to {}/{} matched {n} times instead of once; update ENDPOINT_IP_PATCH for this Kubernetes release",
            patch.module, patch.file
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::toolchain::{
        CNI_BIN, CNI_PLUGINS, containerd_version, coredns_version,
        modules::{KUBE_FILES, KUBELET_GO_MOD, MODULES, NO_CGO},
    };

    pub(super) fn unit(dir: &str) -> &'static Module {
        MODULES.iter().find(|m| m.dir == dir).unwrap()
    }

    #[test]
    pub(super) fn the_kubelet_is_the_control_planes_kubernetes_release() {
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
        assert_eq!(replaces(KUBELET_GO_MOD).len(), 33);
        assert_eq!(replaces(KUBELET_GO_MOD), replaces(unit("kube").go_mod()));
    }

    #[test]
    pub(super) fn required_versions_are_read_in_both_forms() {
        let go_mod = "module x\n\nrequire a.io/one v1.2.3\n\nrequire (\n\tb.io/two v0.1.0 // indirect\n)\n\nreplace c.io/three => c.io/three v0.0.1\n";
        assert_eq!(required_version(go_mod, "a.io/one"), Some("v1.2.3"));
        assert_eq!(required_version(go_mod, "b.io/two"), Some("v0.1.0"));
        assert_eq!(required_version(go_mod, "c.io/three"), None);
        assert_eq!(required_version(go_mod, "a.io"), None);
        assert!(containerd_version().starts_with("v2."));
        assert!(coredns_version().starts_with("v1."));
    }

    #[test]
    pub(super) fn unit_keys_are_stable_short_and_distinct() {
        let keys: BTreeSet<String> = MODULES.iter().map(Module::key).collect();
        assert_eq!(keys.len(), MODULES.len());
        for m in MODULES {
            assert_eq!(m.key(), m.key());
            assert_eq!(m.key().len(), 16);
        }
    }

    #[test]
    pub(super) fn a_change_to_one_unit_changes_only_its_key() {
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
    pub(super) fn each_unit_builds_as_upstream_does() {
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
        let prom = unit("prometheus").ldflags();
        assert!(
            prom.ends_with("github.com/prometheus/common/version.Version=3.16.0"),
            "{prom}"
        );
        assert_eq!(
            unit("prometheus").tags,
            "remove_all_sd,enable_kubernetes_sd"
        );
        let cni = unit("cni").ldflags();
        assert!(cni.ends_with("buildversion.BuildVersion=v1.10.0"), "{cni}");
        assert_eq!(unit("cni").artifacts(), [CNI_BIN]);
        let names: Vec<&str> = unit("cni").builds.iter().map(|(_, n)| *n).collect();
        assert_eq!(names, CNI_PLUGINS);
    }

    #[test]
    pub(super) fn coredns_has_no_way_to_the_hosts_resolver() {
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
    pub(super) fn ldflags_stamp_the_version() {
        let f = ldflags("v1.37.2");
        assert!(f.contains("k8s.io/component-base/version.gitVersion=v1.37.2"));
        assert!(f.contains("gitMajor=1") && f.contains("gitMinor=37"));
    }

    #[test]
    pub(super) fn patch_must_match_exactly_once() {
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
}

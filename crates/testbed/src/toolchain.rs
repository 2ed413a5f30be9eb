//! Builds the control-plane binaries from Go modules into a cache outside the
//! clone, and finds them again.
//!
//! The Go modules under `tools/` are compiled into this crate, so any
//! `tandem` binary can build its own testbed. The cache key is a hash of those
//! module files and of the source patch below: a version change rebuilds.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::{Component, Error, Progress};

/// One Go module of `tools/`: its directory name, files, the packages to
/// build from it with their output names, and directories to copy out of a
/// module it requires (module, directory in it, destination in the cache).
struct Module {
    dir: &'static str,
    files: &'static [(&'static str, &'static str)],
    builds: &'static [(&'static str, &'static str)],
    copies: &'static [(&'static str, &'static str, &'static str)],
}

/// helm, built for testing tandem's charts.
pub const HELM: &str = "helm";
/// The Gateway API's standard-channel CRDs (HTTPRoute and friends).
pub const GATEWAY_API_CRDS: &str = "gateway-api-crds";

const MODULES: &[Module] = &[
    Module {
        dir: "kube",
        files: &[
            ("go.mod", include_str!("../../../tools/kube/go.mod")),
            ("go.sum", include_str!("../../../tools/kube/go.sum")),
            ("tools.go", include_str!("../../../tools/kube/tools.go")),
        ],
        builds: &[
            ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
            (
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-controller-manager",
            ),
            ("k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"),
        ],
        copies: &[],
    },
    Module {
        dir: "etcd",
        files: &[
            ("go.mod", include_str!("../../../tools/etcd/go.mod")),
            ("go.sum", include_str!("../../../tools/etcd/go.sum")),
            ("main.go", include_str!("../../../tools/etcd/main.go")),
        ],
        builds: &[(".", "etcd")],
        copies: &[],
    },
    Module {
        dir: "kwok",
        files: &[
            ("go.mod", include_str!("../../../tools/kwok/go.mod")),
            ("go.sum", include_str!("../../../tools/kwok/go.sum")),
            ("tools.go", include_str!("../../../tools/kwok/tools.go")),
        ],
        builds: &[("sigs.k8s.io/kwok/cmd/kwok", "kwok")],
        copies: &[],
    },
    Module {
        dir: "helm",
        files: &[
            ("go.mod", include_str!("../../../tools/helm/go.mod")),
            ("go.sum", include_str!("../../../tools/helm/go.sum")),
        ],
        builds: &[("helm.sh/helm/v3/cmd/helm", HELM)],
        copies: &[],
    },
    Module {
        dir: "gateway-api",
        files: &[
            ("go.mod", include_str!("../../../tools/gateway-api/go.mod")),
            ("go.sum", include_str!("../../../tools/gateway-api/go.sum")),
        ],
        builds: &[],
        copies: &[(
            "sigs.k8s.io/gateway-api",
            "config/crd/standard",
            GATEWAY_API_CRDS,
        )],
    },
];

/// Everything the cache must hold: binaries and copied directories.
fn artifacts() -> impl Iterator<Item = &'static str> {
    MODULES.iter().flat_map(|m| {
        m.builds
            .iter()
            .map(|(_, name)| *name)
            .chain(m.copies.iter().map(|(_, _, dest)| *dest))
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

/// The built binaries.
#[derive(Clone, Debug)]
pub struct Toolchain {
    pub bin_dir: PathBuf,
    pub kube_version: String,
}

impl Toolchain {
    pub fn binary(&self, component: Component) -> PathBuf {
        self.bin_dir.join(component.binary())
    }

    /// A built tool ([`HELM`]) or copied directory ([`GATEWAY_API_CRDS`]).
    pub fn artifact(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn missing(&self) -> Vec<&'static str> {
        artifacts().filter(|a| !self.artifact(a).exists()).collect()
    }

    /// The toolchain if it is fully built, without building anything.
    pub fn find() -> Option<Self> {
        if let Some(dir) = std::env::var_os("TANDEM_TESTBED_BIN") {
            let tc = Self {
                bin_dir: dir.into(),
                kube_version: kube_version(),
            };
            return tc.missing().is_empty().then_some(tc);
        }
        let tc = Self::expected();
        tc.missing().is_empty().then_some(tc)
    }

    fn expected() -> Self {
        Self {
            bin_dir: cache_root()
                .join("bin")
                .join(format!("{}-{}", kube_version(), cache_key())),
            kube_version: kube_version(),
        }
    }

    /// Finds the binaries, building whatever is missing.
    ///
    /// `TANDEM_TESTBED_BIN` names a directory of prebuilt binaries instead.
    pub fn ensure(progress: &dyn Progress) -> Result<Self, Error> {
        if let Some(dir) = std::env::var_os("TANDEM_TESTBED_BIN") {
            let tc = Self {
                bin_dir: dir.into(),
                kube_version: kube_version(),
            };
            let missing = tc.missing();
            if !missing.is_empty() {
                return Err(Error::InvalidConfig(format!(
                    "TANDEM_TESTBED_BIN={} lacks {}: unset it to build them from Go modules",
                    tc.bin_dir.display(),
                    names(&missing)
                )));
            }
            return Ok(tc);
        }
        let tc = Self::expected();
        if tc.missing().is_empty() {
            return Ok(tc);
        }
        let root = cache_root();
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        // One builder at a time; a second caller waits, then finds the binaries.
        let lock_path = root.join("build.lock");
        let lock = fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        let missing = tc.missing();
        if missing.is_empty() {
            return Ok(tc);
        }
        Builder::new(&root, &tc, progress)?.build(&missing)?;
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

/// The pinned Kubernetes release, read from the tools module.
pub fn kube_version() -> String {
    let go_mod = MODULES[0].files[0].1;
    go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("require k8s.io/kubernetes "))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A hash of everything that goes into the binaries.
pub fn cache_key() -> String {
    let mut h = Sha256::new();
    for m in MODULES {
        for (name, body) in m.files {
            h.update(m.dir.as_bytes());
            h.update(name.as_bytes());
            h.update(body.as_bytes());
        }
        for (pkg, name) in m.builds {
            h.update(pkg.as_bytes());
            h.update(name.as_bytes());
        }
        for (module, dir, dest) in m.copies {
            h.update(module.as_bytes());
            h.update(dir.as_bytes());
            h.update(dest.as_bytes());
        }
    }
    h.update(ENDPOINT_IP_PATCH.file.as_bytes());
    h.update(ENDPOINT_IP_PATCH.replace.as_bytes());
    h.update(ldflags(&kube_version()).as_bytes());
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
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

// === impl Builder ===

struct Builder<'a> {
    go: PathBuf,
    src: PathBuf,
    logs: PathBuf,
    tc: &'a Toolchain,
    progress: &'a dyn Progress,
}

impl<'a> Builder<'a> {
    fn new(root: &Path, tc: &'a Toolchain, progress: &'a dyn Progress) -> Result<Self, Error> {
        let go = find_go()?;
        let key = cache_key();
        let src = root.join("src").join(&key);
        for m in MODULES {
            let dir = src.join(m.dir);
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            for (name, body) in m.files {
                let path = dir.join(name);
                fs::write(&path, body).map_err(|e| Error::io(&path, e))?;
            }
        }
        let logs = root.join("build-logs");
        fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
        fs::create_dir_all(&tc.bin_dir).map_err(|e| Error::io(&tc.bin_dir, e))?;
        Ok(Self {
            go,
            src,
            logs,
            tc,
            progress,
        })
    }

    fn build(&self, missing: &[&str]) -> Result<(), Error> {
        self.progress.step(&format!(
            "building {} {} from Go modules into {} (once; a cold build takes 5-20 minutes on 2 cores)",
            names(missing),
            self.tc.kube_version,
            self.tc.bin_dir.display()
        ));
        for m in MODULES {
            if m.builds.iter().any(|(_, b)| missing.contains(b)) && m.dir == "kube" {
                self.patch_kubernetes(m)?;
            }
            for (pkg, binary) in m.builds {
                if missing.contains(binary) {
                    self.go_build(m, pkg, binary)?;
                }
            }
            for (module, dir, dest) in m.copies {
                if missing.contains(dest) {
                    self.copy_from_module(m, module, dir, dest)?;
                }
            }
        }
        Ok(())
    }

    /// Where `go mod download` put a module that `m` requires.
    fn module_dir(&self, m: &Module, module: &str) -> Result<PathBuf, Error> {
        let out = self.run_go(
            &self.src.join(m.dir),
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
        m: &Module,
        module: &str,
        dir: &str,
        dest: &str,
    ) -> Result<(), Error> {
        self.progress.step(&format!("copying {dir} of {module}"));
        let from = self.module_dir(m, module)?.join(dir);
        let partial = self.tc.bin_dir.join(format!(".{dest}.partial"));
        if partial.exists() {
            fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
        }
        fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
        for entry in fs::read_dir(&from).map_err(|e| Error::io(&from, e))? {
            let entry = entry.map_err(|e| Error::io(&from, e))?;
            if entry.path().is_file() {
                let to = partial.join(entry.file_name());
                fs::copy(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
            }
        }
        let target = self.tc.artifact(dest);
        fs::rename(&partial, &target).map_err(|e| Error::io(&target, e))
    }

    /// Go refuses to patch files in the module cache, so the module is linked
    /// file by file into the build tree, the one file is patched there, and the
    /// tools module is pointed at that tree with a `replace` line.
    fn patch_kubernetes(&self, m: &Module) -> Result<(), Error> {
        let module_dir = self.src.join(m.dir);
        let out = self.run_go(
            &module_dir,
            &["mod", "download", "-json", ENDPOINT_IP_PATCH.module],
            "downloading k8s.io/kubernetes",
        )?;
        let info: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| Error::BuildFailed {
                what: "k8s.io/kubernetes".into(),
                detail: format!("go mod download -json printed something unexpected: {e}"),
            })?;
        let original = PathBuf::from(info["Dir"].as_str().unwrap_or_default());
        let tree = module_dir.join("kubernetes");
        if tree.exists() {
            fs::remove_dir_all(&tree).map_err(|e| Error::io(&tree, e))?;
        }
        link_tree(&original, &tree)?;

        let target = tree.join(ENDPOINT_IP_PATCH.file);
        let source = fs::read_to_string(&target).map_err(|e| Error::io(&target, e))?;
        let patched =
            apply_patch(&source, &ENDPOINT_IP_PATCH).map_err(|detail| Error::BuildFailed {
                what: "kube-apiserver".into(),
                detail,
            })?;
        // Replace the link with a file of our own; the module cache is untouched.
        fs::remove_file(&target).map_err(|e| Error::io(&target, e))?;
        fs::write(&target, patched).map_err(|e| Error::io(&target, e))?;

        let go_mod = module_dir.join("go.mod");
        let mut text = fs::read_to_string(&go_mod).map_err(|e| Error::io(&go_mod, e))?;
        text.push_str(&format!(
            "\n// Added by the testbed build: Kubernetes with the loopback-endpoint patch.\nreplace {} => ./kubernetes\n",
            ENDPOINT_IP_PATCH.module
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

    fn go_build(&self, m: &Module, pkg: &str, component: &str) -> Result<(), Error> {
        let partial = self.tc.bin_dir.join(format!(".{component}.partial"));
        let log_path = self.logs.join(format!("{component}.log"));
        let log = fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let mut cmd = Command::new(&self.go);
        cmd.current_dir(self.src.join(m.dir))
            .env("CGO_ENABLED", "0")
            .args(["build", "-trimpath", "-tags", "selinux,notest"])
            .arg("-ldflags")
            .arg(ldflags(&self.tc.kube_version));
        cmd.arg("-o").arg(&partial).arg(pkg);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| Error::io(&log_path, e))?)
            .stderr(log);

        let start = Instant::now();
        self.progress.step(&format!("building {component} ({pkg})"));
        let mut child = cmd.spawn().map_err(|e| Error::io(&self.go, e))?;
        let mut next_note = Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| Error::io(&self.go, e))? {
                break status;
            }
            if start.elapsed() >= next_note {
                self.progress.step(&format!(
                    "still building {component} ({}s)",
                    start.elapsed().as_secs()
                ));
                next_note += Duration::from_secs(30);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if !status.success() {
            let detail = tail(&log_path, 30);
            return Err(Error::BuildFailed {
                what: component.to_string(),
                detail: format!("{detail}\n(full log: {})", log_path.display()),
            });
        }
        let dest = self.tc.artifact(component);
        fs::rename(&partial, &dest).map_err(|e| Error::io(&dest, e))?;
        self.progress.step(&format!(
            "built {component} in {}s",
            start.elapsed().as_secs()
        ));
        if let Ok(mut f) = fs::File::create(self.tc.bin_dir.join("VERSION")) {
            let _ = writeln!(f, "{}", self.tc.kube_version);
        }
        Ok(())
    }
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
        } else if kind.is_file() && fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(|e| Error::io(&dst, e))?;
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
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(&candidate))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::GoMissing {
            looked_for: format!("{} on PATH", candidate.display()),
        })
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
    fn cache_key_is_stable_and_short() {
        assert_eq!(cache_key(), cache_key());
        assert_eq!(cache_key().len(), 16);
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
}

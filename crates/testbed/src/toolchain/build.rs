//! Building the units that are missing, each into its own cache directory,
//! and linking the artifacts of some groups into one directory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    Group,
    modules::{CBuild, Module, units},
    names, tail,
    unit::{SourcePatch, apply_patch},
    unit_dir,
};
use crate::{Error, Progress};

/// Fills `view` with hard links to the artifacts of the groups' units, which
/// must all be built. The directory appears whole or not at all.
pub(super) fn link_units(view: &Path, groups: &[Group]) -> Result<(), Error> {
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

pub(super) struct Builder<'a> {
    go: PathBuf,
    root: PathBuf,
    logs: PathBuf,
    progress: &'a dyn Progress,
}

impl<'a> Builder<'a> {
    pub(super) fn new(root: &Path, progress: &'a dyn Progress) -> Result<Self, Error> {
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
    pub(super) fn build(&self, m: &Module, missing: &[&str]) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

//! The node's cgroups (v1, cgroupfs driver): one root per kubelet, made in
//! every mounted hierarchy, emptied and removed at teardown.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};

use crate::Error;

const CGROUP_FS: &str = "/sys/fs/cgroup";

/// Mount points of the cgroup hierarchies, v1 and v2, from /proc/mounts.
pub fn hierarchies() -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    parse_hierarchies(&mounts)
}

fn parse_hierarchies(mounts: &str) -> Vec<PathBuf> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, target, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == "cgroup" || kind == "cgroup2").then(|| PathBuf::from(target))
        })
        .filter(|p| p.starts_with(CGROUP_FS))
        .collect()
}

/// Whether cgroup v1 is mounted with the controllers the kubelet needs.
pub fn missing_v1_controllers() -> Vec<&'static str> {
    let present = hierarchies();
    ["cpu", "cpuacct", "cpuset", "memory", "pids", "systemd"]
        .into_iter()
        .filter(|c| !present.iter().any(|p| p.ends_with(c)))
        .collect()
}

/// Makes `/<root>` in every v1 hierarchy; cpuset's gets its parent's CPUs
/// and memory nodes first, or no task could join it.
pub fn create(root: &str) -> Result<(), Error> {
    for h in hierarchies() {
        let dir = h.join(root);
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        if h.ends_with("cpuset") {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value =
                    fs::read_to_string(h.join(file)).map_err(|e| Error::io(h.join(file), e))?;
                let target = dir.join(file);
                let current = fs::read_to_string(&target).unwrap_or_default();
                if current.trim().is_empty() {
                    fs::write(&target, value.trim()).map_err(|e| Error::io(&target, e))?;
                }
            }
        }
    }
    Ok(())
}

/// Every pid in `/<root>` and below, in any hierarchy.
pub fn pids(root: &str) -> Vec<u32> {
    let mut out = vec![];
    for h in hierarchies() {
        collect_pids(&h.join(root), &mut out);
    }
    out.sort();
    out.dedup();
    out
}

fn collect_pids(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

/// Kills every process under `/<root>` (pods and their containers), and
/// waits until none is left.
pub fn kill_all(root: &str) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = pids(root);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Teardown {
                step: format!("killing the processes in cgroup /{root}"),
                detail: format!("still running: {left:?}"),
            });
        }
        for pid in left {
            let _ = signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes `/<root>` from every hierarchy, deepest first. A cgroup is a
/// directory whose files cannot be deleted: only `rmdir` removes it.
pub fn remove(root: &str) -> Result<(), Error> {
    for h in hierarchies() {
        let dir = h.join(root);
        if dir.exists() {
            remove_tree(&dir)?;
        }
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> Result<(), Error> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    fs::remove_dir(dir).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchies_are_read_from_mounts() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
            cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
            cgroup /sys/fs/cgroup/systemd cgroup rw,name=systemd 0 0\n\
            cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
            proc /proc proc rw 0 0\n";
        assert_eq!(
            parse_hierarchies(mounts),
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/systemd"),
                PathBuf::from("/sys/fs/cgroup/unified"),
            ]
        );
    }
}

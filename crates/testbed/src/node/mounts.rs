//! Mounts under the testbed's directories. The kubelet bind-mounts its
//! root, pods get tmpfs and bind volumes, containers get overlay root file
//! systems and containerd mounts network namespaces: deleting files through
//! any of them would reach the host's files. So teardown unmounts
//! everything under the testbed's directories, deepest first, before it
//! deletes a single file.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::Error;

/// Mount points at or under `dir`, deepest first.
pub fn under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts_under(&info, dir)
}

fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first; a path mounted twice is unmounted twice.
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|t| u8::from_str_radix(t, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything at or under `dir`, deepest first (lazily, so that a
/// busy mount is detached at once and freed when its last user goes).
/// Returns an error naming what is still mounted.
pub fn unmount_all(dir: &Path) -> Result<usize, Error> {
    let mut count = 0;
    for _ in 0..5 {
        let mounts = under(dir);
        if mounts.is_empty() {
            return Ok(count);
        }
        for m in mounts {
            let out = Command::new("umount")
                .arg("-l")
                .arg(&m)
                .output()
                .map_err(|e| Error::io("umount", e))?;
            if out.status.success() {
                count += 1;
            }
        }
    }
    let left = under(dir);
    if left.is_empty() {
        Ok(count)
    } else {
        Err(Error::Teardown {
            step: format!("unmounting under {}", dir.display()),
            detail: format!("still mounted: {left:?}"),
        })
    }
}

/// Deletes `dir` only when nothing is mounted under it.
pub fn remove_dir_safely(dir: &Path) -> Result<(), Error> {
    if !dir.exists() {
        return Ok(());
    }
    unmount_all(dir)?;
    let left = under(dir);
    if !left.is_empty() {
        return Err(Error::Teardown {
            step: format!("removing {}", dir.display()),
            detail: format!("refusing to delete through mounts: {left:?}"),
        });
    }
    fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_a_dir_come_deepest_first() {
        let info = "\
22 1 0:21 / / rw shared:1 - ext4 /dev/vda rw
30 22 0:40 / /tb/node/kubelet rw shared:5 - ext4 /dev/vda rw
31 30 0:41 / /tb/node/kubelet/pods/x/volumes/kubernetes.io~projected/token rw - tmpfs tmpfs rw
32 22 0:42 / /tb2/node rw - tmpfs tmpfs rw
33 22 0:43 / /tb/with\\040space rw - tmpfs tmpfs rw
";
        let got = mounts_under(info, Path::new("/tb"));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/tb/node/kubelet/pods/x/volumes/kubernetes.io~projected/token"),
                PathBuf::from("/tb/node/kubelet"),
                PathBuf::from("/tb/with space"),
            ]
        );
    }
}

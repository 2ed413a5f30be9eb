//! Importing archives into a node's containerd with `ctr`, and listing what
//! it holds.
//!
//! Images go into the `k8s.io` namespace, where the CRI plugin (and so
//! kubelet) sees them. With containerd 2.x `ctr images import` goes through
//! the transfer service: the image is named by the index's
//! `io.containerd.image.name` annotation and unpacked for `--platform` into
//! the default snapshotter.

use std::{
    ffi::OsStr,
    path::Path,
    process::{Command, Stdio},
};

use crate::Error;

/// The containerd namespace the CRI plugin uses.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The only platform the archives are built for.
pub const PLATFORM: &str = "linux/amd64";

/// Runs `ctr --address ADDRESS -n k8s.io images import --platform
/// linux/amd64 ARCHIVE`.
pub fn import(ctr: &Path, address: &Path, archive: &Path) -> Result<(), Error> {
    run(
        ctr,
        address,
        &[
            OsStr::new("images"),
            OsStr::new("import"),
            OsStr::new("--platform"),
            OsStr::new(PLATFORM),
            archive.as_os_str(),
        ],
    )
    .map(drop)
}

/// The image references in the `k8s.io` namespace (`ctr -n k8s.io images ls
/// -q`), in containerd's order.
pub fn list(ctr: &Path, address: &Path) -> Result<Vec<String>, Error> {
    let out = run(
        ctr,
        address,
        &[OsStr::new("images"), OsStr::new("ls"), OsStr::new("-q")],
    )?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Each image reference in the `k8s.io` namespace with its manifest digest
/// (`ctr -n k8s.io images ls`).
pub fn digests(ctr: &Path, address: &Path) -> Result<Vec<(String, String)>, Error> {
    let out = run(ctr, address, &[OsStr::new("images"), OsStr::new("ls")])?;
    Ok(parse_digests(&out))
}

/// `REF TYPE DIGEST ...` rows, after the header.
fn parse_digests(ls: &str) -> Vec<(String, String)> {
    ls.lines()
        .skip_while(|l| !l.starts_with("REF"))
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let reference = cols.next()?;
            let digest = cols.nth(1)?;
            digest
                .starts_with("sha256:")
                .then(|| (reference.to_string(), digest.to_string()))
        })
        .collect()
}

/// The command line as a person would type it, for messages.
fn command_line(ctr: &Path, address: &Path, args: &[&OsStr]) -> String {
    let mut line = format!(
        "{} --address {} -n {K8S_NAMESPACE}",
        ctr.display(),
        address.display()
    );
    for a in args {
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    line
}

fn run(ctr: &Path, address: &Path, args: &[&OsStr]) -> Result<String, Error> {
    let command = command_line(ctr, address, args);
    let out = Command::new(ctr)
        .arg("--address")
        .arg(address)
        .arg("--connect-timeout")
        .arg("10s")
        .args(["-n", K8S_NAMESPACE])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Ctr {
            command: command.clone(),
            detail: format!(
                "could not run {}: {e}\n  ctr comes with containerd (the testbed builds both into its cache); check the path",
                ctr.display()
            ),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Ctr {
            command,
            detail: format!(
                "{} ({})\n  Check that containerd is running and listening on {}",
                stderr.trim(),
                out.status,
                address.display()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_read_from_the_listing() {
        let ls = "time=\"...\" level=warning msg=\"DEPRECATION\"\n\
REF                          TYPE                                       DIGEST             SIZE     PLATFORMS   LABELS\n\
ghcr.io/tandem-io/tandem:0.1.0 application/vnd.oci.image.manifest.v1+json sha256:fdb4 69.0 MiB linux/amd64 io.cri-containerd.image=managed\n\
sha256:0123 application/vnd.oci.image.manifest.v1+json sha256:aaaa 1 MiB linux/amd64 -\n";
        assert_eq!(
            parse_digests(ls),
            vec![
                (
                    "ghcr.io/tandem-io/tandem:0.1.0".to_string(),
                    "sha256:fdb4".to_string()
                ),
                ("sha256:0123".to_string(), "sha256:aaaa".to_string()),
            ]
        );
        assert!(parse_digests("").is_empty());
    }
}

//! Container images built locally, without Docker or a registry.
//!
//! Real testbed nodes run containerd with no network, so every image a pod
//! uses is written here as an OCI image layout archive (one uncompressed
//! layer) and imported into each node's containerd with `ctr` (see [`ctr`]).
//!
//! An [`ImageSpec`] says what goes into an image; [`write_archive`] writes it
//! deterministically (the same spec gives the same bytes and digests), and
//! [`ensure_archive`] keeps archives under the cache root, rebuilt only when
//! the spec (including its files' contents) changes. The testbed's own images
//! are in [`images`]; shared-library handling for dynamic binaries is in
//! [`ldd`].

mod archive;
pub mod ctr;
pub mod images;
pub mod ldd;
mod oci;
#[cfg(test)]
mod tests;

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

pub use self::{
    archive::{read_image_id, write_archive},
    images::{binary_image, coredns, emojivoto, pause, prometheus, tandem, toolbox},
};
use crate::Error;

/// What goes into one image: its reference, its files and directories, and
/// how its container runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// A full reference with a tag, e.g. `ghcr.io/tandem-io/tandem:0.1.0`.
    /// Short names are normalized as Kubernetes does (`busybox` becomes
    /// `docker.io/library/busybox:latest`), see [`normalize_reference`].
    pub reference: String,
    pub files: Vec<File>,
    /// Directories to create besides the parents of files, which are always
    /// there (mode 0755 unless listed here).
    pub directories: Vec<Directory>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `uid`, `uid:gid` or a name from the image's /etc/passwd.
    pub user: Option<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
}

/// One file of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// Absolute path in the image, e.g. `/bin/busybox`.
    pub path: String,
    pub source: Source,
    /// Permission bits (up to 0o7777); ignored for symlinks.
    pub mode: u32,
}

/// Where a file's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file on this machine, read when the archive is written (symlinks are
    /// followed, so the image holds the content).
    Host(PathBuf),
    Bytes(Vec<u8>),
    /// A symbolic link to this target (relative or absolute, as in the image).
    Symlink(String),
}

/// A directory of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directory {
    /// Absolute path in the image, e.g. `/tmp`.
    pub path: String,
    pub mode: u32,
}

/// The digests that identify a written image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageId {
    /// The full reference the image is imported as.
    pub reference: String,
    /// `sha256:<hex>` of the manifest (what `ctr images ls` shows as DIGEST).
    pub manifest: String,
    /// `sha256:<hex>` of the config (the image ID `crictl images` shows).
    pub config: String,
}

/// An archive in the cache with the image it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    pub path: PathBuf,
    pub id: ImageId,
}

impl ImageSpec {
    /// An empty image with this reference.
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            files: Vec::new(),
            directories: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            user: None,
            env: Vec::new(),
            working_dir: None,
        }
    }

    /// Adds a file copied from this machine.
    pub fn host_file(mut self, path: &str, host: impl Into<PathBuf>, mode: u32) -> Self {
        self.files.push(File {
            path: path.into(),
            source: Source::Host(host.into()),
            mode,
        });
        self
    }

    /// Adds a file with this content.
    pub fn bytes(mut self, path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push(File {
            path: path.into(),
            source: Source::Bytes(content.into()),
            mode,
        });
        self
    }

    /// Adds a symbolic link.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.files.push(File {
            path: path.into(),
            source: Source::Symlink(target.into()),
            mode: 0o777,
        });
        self
    }

    /// Adds a directory.
    pub fn directory(mut self, path: &str, mode: u32) -> Self {
        self.directories.push(Directory {
            path: path.into(),
            mode,
        });
        self
    }

    pub fn entrypoint<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.entrypoint = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn cmd<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Adds `NAME=value` to the environment.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push(format!("{name}={value}"));
        self
    }

    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// The normalized full reference.
    pub fn full_reference(&self) -> Result<String, Error> {
        normalize_reference(&self.reference)
    }

    fn invalid(&self, detail: impl Into<String>) -> Error {
        Error::Image {
            reference: self.reference.clone(),
            detail: detail.into(),
        }
    }
}

/// Normalizes an image reference the way Kubernetes' container runtime does,
/// so that the imported name is the one a pod's `image:` resolves to:
/// `busybox` → `docker.io/library/busybox:latest`, `me/app:1` →
/// `docker.io/me/app:1`; a reference with a registry host is kept, with
/// `:latest` added when it has no tag. Digest references are refused.
pub fn normalize_reference(reference: &str) -> Result<String, Error> {
    let invalid = |detail: &str| Error::Image {
        reference: reference.into(),
        detail: format!(
            "{detail}; give a reference like registry.example/name:tag (lower case, no digest)"
        ),
    };
    if reference.contains('@') {
        return Err(invalid("a digest reference cannot name a built image"));
    }
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            &reference[last_slash + i + 1..],
        ),
        None => (reference, "latest"),
    };
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !tag.starts_with(['.', '-']);
    if !tag_ok {
        return Err(invalid(&format!("invalid tag {tag:?}")));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let has_domain = parts.len() > 1
        && (parts[0].contains(['.', ':']) || parts[0] == "localhost")
        && parts[0]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
    let domain = if has_domain {
        parts.remove(0)
    } else {
        "docker.io"
    };
    for part in &parts {
        let ok = !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(invalid(&format!("invalid name component {part:?}")));
        }
    }
    if domain == "docker.io" && parts.len() == 1 {
        parts.insert(0, "library");
    }
    Ok(format!("{domain}/{}:{tag}", parts.join("/")))
}

/// The tag of a normalized reference.
fn tag_of(full_reference: &str) -> &str {
    let last_slash = full_reference.rfind('/').map_or(0, |i| i + 1);
    full_reference[last_slash..]
        .rsplit_once(':')
        .map_or("latest", |(_, tag)| tag)
}

/// Bumped when the archive format changes, so cached archives are rebuilt.
const FORMAT: &str = "tandem-oci-archive-1";

/// A hash of everything that goes into the archive of `spec`: its
/// reference, run config, and every entry with the hash of its content.
pub fn spec_key(spec: &ImageSpec) -> Result<String, Error> {
    let mut h = Sha256::new();
    let mut field = |s: &[u8]| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s);
    };
    field(FORMAT.as_bytes());
    field(spec.full_reference()?.as_bytes());
    let lists = [&spec.entrypoint, &spec.cmd, &spec.env];
    for list in lists {
        field(list.len().to_string().as_bytes());
        for s in list {
            field(s.as_bytes());
        }
    }
    for opt in [&spec.user, &spec.working_dir] {
        field(opt.as_deref().unwrap_or("\0none").as_bytes());
    }
    let mut dirs: Vec<_> = spec.directories.iter().collect();
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    for d in dirs {
        field(b"dir");
        field(d.path.as_bytes());
        field(&d.mode.to_le_bytes());
    }
    let mut files: Vec<_> = spec.files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for f in files {
        field(b"file");
        field(f.path.as_bytes());
        field(&f.mode.to_le_bytes());
        match &f.source {
            Source::Host(p) => field(&hash_file(p)?),
            Source::Bytes(b) => field(&Sha256::digest(b)),
            Source::Symlink(t) => {
                field(b"symlink");
                field(t.as_bytes());
            }
        }
    }
    Ok(hex(&h.finalize()))
}

fn hash_file(path: &Path) -> Result<Vec<u8>, Error> {
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_vec())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the archives are kept: `<cache root>/images`.
pub fn archive_dir() -> PathBuf {
    crate::toolchain::cache_root().join("images")
}

/// The archive of `spec` under [`archive_dir`], written if it is not there
/// yet: `images/<name>-<spec key, 12 hex>.tar`.
pub fn ensure_archive(spec: &ImageSpec) -> Result<Archive, Error> {
    ensure_archive_in(spec, &archive_dir())
}

/// [`ensure_archive`] in another directory.
pub fn ensure_archive_in(spec: &ImageSpec, dir: &Path) -> Result<Archive, Error> {
    let key = spec_key(spec)?;
    let full = spec.full_reference()?;
    let path = dir.join(format!("{}-{}.tar", short_name(&full), &key[..12]));
    if path.is_file()
        && let Ok(id) = read_image_id(&path)
        && id.reference == full
    {
        return Ok(Archive { path, id });
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let id = write_archive(spec, &path)?;
    Ok(Archive { path, id })
}

/// The last name component of a reference, for file names: `toolbox` for
/// `ghcr.io/tandem-io/toolbox:latest`.
fn short_name(full_reference: &str) -> String {
    let last_slash = full_reference.rfind('/').map_or(0, |i| i + 1);
    let name = full_reference[last_slash..]
        .split(':')
        .next()
        .unwrap_or_default();
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

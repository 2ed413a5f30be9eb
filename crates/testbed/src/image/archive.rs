//! The OCI image layout archive: `oci-layout`, `index.json` and
//! `blobs/sha256/` (one uncompressed layer, the config, the manifest), as a
//! tar that `ctr images import` reads.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{ImageId, ImageSpec, Source, hex, oci::*, tag_of};
use crate::Error;

/// One entry of the layer, keyed by its path relative to the root.
enum Node<'a> {
    Dir(u32),
    File(&'a Source, u32),
}

/// Checks an absolute image path and returns it relative to `/`.
fn relative(spec: &ImageSpec, path: &str) -> Result<PathBuf, Error> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| spec.invalid(format!("path {path:?} must be absolute")))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty()
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
    {
        return Err(spec.invalid(format!(
            "path {path:?} must name a file below / with no empty, `.` or `..` components"
        )));
    }
    Ok(PathBuf::from(rest))
}

/// The layer's entries, parents included, sorted so that a directory comes
/// before what it holds.
fn layer_nodes(spec: &ImageSpec) -> Result<BTreeMap<PathBuf, Node<'_>>, Error> {
    let mut nodes = BTreeMap::new();
    for f in &spec.files {
        let rel = relative(spec, &f.path)?;
        if f.mode & !0o7777 != 0 {
            return Err(spec.invalid(format!("{}: mode {:o} is not 0..=7777", f.path, f.mode)));
        }
        if nodes.insert(rel, Node::File(&f.source, f.mode)).is_some() {
            return Err(spec.invalid(format!("{} is given twice", f.path)));
        }
    }
    for d in &spec.directories {
        let rel = relative(spec, &d.path)?;
        if d.mode & !0o7777 != 0 {
            return Err(spec.invalid(format!("{}: mode {:o} is not 0..=7777", d.path, d.mode)));
        }
        if let Some(Node::File(..)) = nodes.insert(rel, Node::Dir(d.mode)) {
            return Err(spec.invalid(format!("{} is both a file and a directory", d.path)));
        }
    }
    let paths: Vec<PathBuf> = nodes.keys().cloned().collect();
    for path in paths {
        for parent in path.ancestors().skip(1) {
            if parent.as_os_str().is_empty() {
                break;
            }
            match nodes.get(parent) {
                Some(Node::Dir(_)) => {}
                Some(Node::File(..)) => {
                    return Err(spec.invalid(format!(
                        "/{} is a file, but /{} is below it",
                        parent.display(),
                        path.display()
                    )));
                }
                None => {
                    nodes.insert(parent.to_path_buf(), Node::Dir(0o755));
                }
            }
        }
    }
    Ok(nodes)
}

/// A header with everything that would vary between machines zeroed:
/// mtime 0, uid/gid 0, no user or group names.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Counts and hashes what is written through it.
struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts what is read through it.
struct CountReader<R> {
    inner: R,
    len: u64,
}

impl<R: Read> Read for CountReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.len += n as u64;
        Ok(n)
    }
}

/// A file removed on drop unless it was renamed into place.
struct TempFile(PathBuf);

impl TempFile {
    fn next_to(out: &Path, what: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        TempFile(out.with_file_name(format!(".{name}.{what}.{}.{n}.tmp", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Writes the layer tar of `spec` to `out`; returns its sha256 hex and size.
fn write_layer(spec: &ImageSpec, out: &Path) -> Result<(String, u64), Error> {
    let nodes = layer_nodes(spec)?;
    let file = fs::File::create(out).map_err(|e| Error::io(out, e))?;
    let writer = HashWriter {
        inner: io::BufWriter::new(file),
        hash: Sha256::new(),
        len: 0,
    };
    let mut tar = tar::Builder::new(writer);
    let io_err = |e| Error::io(out, e);
    for (path, node) in &nodes {
        match node {
            Node::Dir(mode) => {
                let mut h = header(tar::EntryType::Directory, *mode, 0);
                let mut name = path.as_os_str().to_os_string();
                name.push("/");
                tar.append_data(&mut h, name, io::empty()).map_err(io_err)?;
            }
            Node::File(Source::Symlink(target), _) => {
                if target.is_empty() || target.contains('\0') {
                    return Err(
                        spec.invalid(format!("/{}: a symlink needs a target", path.display()))
                    );
                }
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, path, target).map_err(io_err)?;
            }
            Node::File(Source::Bytes(bytes), mode) => {
                let mut h = header(tar::EntryType::Regular, *mode, bytes.len() as u64);
                tar.append_data(&mut h, path, bytes.as_slice())
                    .map_err(io_err)?;
            }
            Node::File(Source::Host(host), mode) => {
                let f = fs::File::open(host).map_err(|e| Error::io(host, e))?;
                let meta = f.metadata().map_err(|e| Error::io(host, e))?;
                let size = meta.len();
                if !meta.is_file() {
                    return Err(spec.invalid(format!(
                        "{} (for /{}) is not a regular file",
                        host.display(),
                        path.display()
                    )));
                }
                let mut h = header(tar::EntryType::Regular, *mode, size);
                let mut reader = CountReader {
                    inner: f.take(size),
                    len: 0,
                };
                tar.append_data(&mut h, path, &mut reader)
                    .map_err(|e| Error::io(host, e))?;
                if reader.len != size {
                    return Err(spec.invalid(format!(
                        "{} changed while it was read; build the image again",
                        host.display()
                    )));
                }
            }
        }
    }
    let mut writer = tar.into_inner().map_err(io_err)?;
    writer.flush().map_err(io_err)?;
    let HashWriter { inner, hash, len } = writer;
    inner
        .into_inner()
        .map_err(|e| Error::io(out, e.into_error()))?
        .sync_all()
        .map_err(io_err)?;
    Ok((hex(&hash.finalize()), len))
}

/// A JSON blob with its descriptor.
fn json_blob<T: Serialize>(media_type: &str, value: &T) -> (Vec<u8>, Descriptor) {
    let bytes = serde_json::to_vec(value).expect("image JSON serializes");
    let desc = Descriptor {
        media_type: media_type.into(),
        digest: format!("sha256:{}", hex(&Sha256::digest(&bytes))),
        size: bytes.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    };
    (bytes, desc)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// Writes `spec` as an OCI image layout archive at `out` (through a
/// temporary file next to it, renamed into place) and returns its digests.
/// The same spec, with the same file contents, always gives the same bytes.
pub fn write_archive(spec: &ImageSpec, out: &Path) -> Result<ImageId, Error> {
    let reference = spec.full_reference()?;
    let layer_tmp = TempFile::next_to(out, "layer");
    let (layer_hex, layer_size) = write_layer(spec, &layer_tmp.0)?;
    let layer_digest = format!("sha256:{layer_hex}");

    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: RunConfig {
            user: spec.user.clone(),
            env: spec.env.clone(),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.cmd.clone(),
            working_dir: spec.working_dir.clone(),
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer_digest.clone()],
        },
    };
    let (config_bytes, config_desc) = json_blob(CONFIG_MEDIA_TYPE, &config);
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.into(),
        config: config_desc.clone(),
        layers: vec![Descriptor {
            media_type: LAYER_MEDIA_TYPE.into(),
            digest: layer_digest.clone(),
            size: layer_size,
            platform: None,
            annotations: BTreeMap::new(),
        }],
    };
    let (manifest_bytes, mut manifest_desc) = json_blob(MANIFEST_MEDIA_TYPE, &manifest);
    manifest_desc.platform = Some(Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
    });
    manifest_desc.annotations = BTreeMap::from([
        (IMAGE_NAME_ANNOTATION.to_string(), reference.clone()),
        (
            REF_NAME_ANNOTATION.to_string(),
            tag_of(&reference).to_string(),
        ),
    ]);
    let index = Index {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE.into(),
        manifests: vec![manifest_desc.clone()],
    };
    let index_bytes = serde_json::to_vec(&index).expect("image JSON serializes");

    let out_tmp = TempFile::next_to(out, "archive");
    let io_err = |e| Error::io(&out_tmp.0, e);
    let file = fs::File::create(&out_tmp.0).map_err(io_err)?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    for dir in ["blobs/", "blobs/sha256/"] {
        tar.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            dir,
            io::empty(),
        )
        .map_err(io_err)?;
    }
    // Blobs by digest, so the order is fixed.
    let mut blobs: Vec<(String, Option<&[u8]>, u64)> = vec![
        (blob_path(&layer_digest), None, layer_size),
        (
            blob_path(&config_desc.digest),
            Some(&config_bytes),
            config_desc.size,
        ),
        (
            blob_path(&manifest_desc.digest),
            Some(&manifest_bytes),
            manifest_desc.size,
        ),
    ];
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    blobs.dedup_by(|a, b| a.0 == b.0);
    for (name, bytes, size) in blobs {
        let mut h = header(tar::EntryType::Regular, 0o644, size);
        match bytes {
            Some(bytes) => tar.append_data(&mut h, name, bytes).map_err(io_err)?,
            None => {
                let f = fs::File::open(&layer_tmp.0).map_err(|e| Error::io(&layer_tmp.0, e))?;
                tar.append_data(&mut h, name, f).map_err(io_err)?;
            }
        }
    }
    let oci_layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    for (name, bytes) in [
        ("index.json", index_bytes.as_slice()),
        ("oci-layout", oci_layout.as_slice()),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        tar.append_data(&mut h, name, bytes).map_err(io_err)?;
    }
    let mut w = tar.into_inner().map_err(io_err)?;
    w.flush().map_err(io_err)?;
    w.into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .sync_all()
        .map_err(io_err)?;
    fs::rename(&out_tmp.0, out).map_err(|e| Error::io(out, e))?;
    Ok(ImageId {
        reference,
        manifest: manifest_desc.digest,
        config: config_desc.digest,
    })
}

/// Reads the image name and digests back from an archive written by
/// [`write_archive`], checking that the manifest blob is there and matches
/// its digest.
pub fn read_image_id(archive: &Path) -> Result<ImageId, Error> {
    let broken = |detail: String| Error::Image {
        reference: archive.display().to_string(),
        detail: format!("{detail}; delete the archive so that it is written again"),
    };
    let file = fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut tar = tar::Archive::new(file);
    // Small entries only (JSON); the layer is skipped by seeking.
    let mut small = HashMap::new();
    let entries = tar.entries_with_seek().map_err(|e| Error::io(archive, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::io(archive, e))?;
        if entry.header().entry_type() != tar::EntryType::Regular || entry.size() > 1 << 20 {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| Error::io(archive, e))?
            .to_string_lossy()
            .into_owned();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(archive, e))?;
        small.insert(name, bytes);
    }
    let index: Index = small
        .get("index.json")
        .and_then(|b| serde_json::from_slice(b).ok())
        .ok_or_else(|| broken("no readable index.json".into()))?;
    let [desc] = index.manifests.as_slice() else {
        return Err(broken(format!(
            "index.json lists {} manifests, not one",
            index.manifests.len()
        )));
    };
    let reference = desc
        .annotations
        .get(IMAGE_NAME_ANNOTATION)
        .cloned()
        .ok_or_else(|| broken(format!("index.json has no {IMAGE_NAME_ANNOTATION}")))?;
    let manifest_bytes = small
        .get(&blob_path(&desc.digest))
        .ok_or_else(|| broken(format!("manifest blob {} is missing", desc.digest)))?;
    if format!("sha256:{}", hex(&Sha256::digest(manifest_bytes))) != desc.digest {
        return Err(broken(format!(
            "manifest blob {} does not match its digest",
            desc.digest
        )));
    }
    let manifest: Manifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| broken(format!("manifest {}: {e}", desc.digest)))?;
    Ok(ImageId {
        reference,
        manifest: desc.digest.clone(),
        config: manifest.config.digest,
    })
}

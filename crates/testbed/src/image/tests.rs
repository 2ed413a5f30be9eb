//! Archives read back with the `tar` crate, as containerd would read them.

use std::{
    collections::BTreeMap,
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{
    images::{self, TOOLBOX_APPLETS},
    oci::{
        CONFIG_MEDIA_TYPE, IMAGE_NAME_ANNOTATION, INDEX_MEDIA_TYPE, ImageConfig, Index,
        LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, Manifest, REF_NAME_ANNOTATION,
    },
    *,
};

/// A minimal x86-64 ELF header with one program header of this type
/// (1 = PT_LOAD: static; 3 = PT_INTERP: dynamic).
pub(super) fn fake_elf(program_header_type: u32) -> Vec<u8> {
    let mut elf = vec![0u8; 64 + 56];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little endian
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf[64..68].copy_from_slice(&program_header_type.to_le_bytes());
    elf
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// One entry of a tar, as read back.
#[derive(Debug)]
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    mtime: u64,
    uid: u64,
    gid: u64,
    user_name: Vec<u8>,
    link: Option<String>,
    data: Vec<u8>,
}

/// All entries of a tar, in order.
fn read_tar(bytes: &[u8]) -> Vec<(String, Entry)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let h = entry.header();
        let e = Entry {
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            mtime: h.mtime().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            user_name: h.username_bytes().unwrap_or_default().to_vec(),
            link: entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned()),
            data: Vec::new(),
        };
        let mut e = e;
        entry.read_to_end(&mut e.data).unwrap();
        out.push((path, e));
    }
    out
}

/// An archive opened the way containerd's importer reads it: index.json,
/// then the manifest, config and layer blobs, each checked against its
/// digest.
struct ReadBack {
    index: Index,
    config: ImageConfig,
    layer: BTreeMap<String, Entry>,
    layer_order: Vec<String>,
    outer: Vec<(String, Entry)>,
}

fn read_back(path: &Path) -> ReadBack {
    let outer = read_tar(&fs::read(path).unwrap());
    let files: BTreeMap<&str, &Entry> = outer
        .iter()
        .filter(|(_, e)| e.kind == tar::EntryType::Regular)
        .map(|(p, e)| (p.as_str(), e))
        .collect();
    assert_eq!(
        files["oci-layout"].data,
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let blob = |digest: &str| -> &[u8] {
        let name = format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap());
        let data = &files
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} is missing"))
            .data;
        assert_eq!(sha256(data), digest, "{name} does not match its digest");
        data
    };
    let index: Index = serde_json::from_slice(&files["index.json"].data).unwrap();
    assert_eq!(index.schema_version, 2);
    assert_eq!(index.media_type, INDEX_MEDIA_TYPE);
    assert_eq!(index.manifests.len(), 1);
    let desc = &index.manifests[0];
    assert_eq!(desc.media_type, MANIFEST_MEDIA_TYPE);
    let platform = desc.platform.as_ref().unwrap();
    assert_eq!(
        (platform.os.as_str(), platform.architecture.as_str()),
        ("linux", "amd64")
    );
    let manifest_bytes = blob(&desc.digest);
    assert_eq!(manifest_bytes.len() as u64, desc.size);
    let manifest: Manifest = serde_json::from_slice(manifest_bytes).unwrap();
    assert_eq!(manifest.media_type, MANIFEST_MEDIA_TYPE);
    assert_eq!(manifest.config.media_type, CONFIG_MEDIA_TYPE);
    let config_bytes = blob(&manifest.config.digest);
    assert_eq!(config_bytes.len() as u64, manifest.config.size);
    let config: ImageConfig = serde_json::from_slice(config_bytes).unwrap();
    assert_eq!(
        (config.os.as_str(), config.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(config.rootfs.kind, "layers");
    assert_eq!(manifest.layers.len(), 1);
    let layer_desc = &manifest.layers[0];
    assert_eq!(layer_desc.media_type, LAYER_MEDIA_TYPE);
    let layer_bytes = blob(&layer_desc.digest);
    assert_eq!(layer_bytes.len() as u64, layer_desc.size);
    // Uncompressed: the diff ID is the layer's digest.
    assert_eq!(config.rootfs.diff_ids, [sha256(layer_bytes)]);
    let entries = read_tar(layer_bytes);
    let layer_order: Vec<String> = entries.iter().map(|(p, _)| p.clone()).collect();
    let layer = entries.into_iter().collect();
    ReadBack {
        index,
        config,
        layer,
        layer_order,
        outer,
    }
}

fn sample_spec(dir: &Path) -> ImageSpec {
    let host = dir.join("host-binary");
    fs::write(&host, b"\x7fELF pretend binary").unwrap();
    ImageSpec::new("tandem.local/sample:1.2.3")
        .host_file("/usr/local/bin/sample", &host, 0o755)
        .bytes("/etc/motd", "hello\n", 0o644)
        .symlink("/bin/sample", "../usr/local/bin/sample")
        .directory("/tmp", 0o1777)
        .entrypoint(["/bin/sample"])
        .cmd(["--flag"])
        .user("65535:65535")
        .env("A", "b")
        .working_dir("/tmp")
}

#[test]
fn archive_reads_back_with_digests_config_and_layer() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sample_spec(dir.path());
    let out = dir.path().join("sample.tar");
    let id = write_archive(&spec, &out).unwrap();
    let rb = read_back(&out);

    let desc = &rb.index.manifests[0];
    assert_eq!(id.reference, "tandem.local/sample:1.2.3");
    assert_eq!(id.manifest, desc.digest);
    assert_eq!(
        desc.annotations[IMAGE_NAME_ANNOTATION],
        "tandem.local/sample:1.2.3"
    );
    assert_eq!(desc.annotations[REF_NAME_ANNOTATION], "1.2.3");
    assert_eq!(read_image_id(&out).unwrap(), id);

    let c = &rb.config.config;
    assert_eq!(c.entrypoint, ["/bin/sample"]);
    assert_eq!(c.cmd, ["--flag"]);
    assert_eq!(c.user.as_deref(), Some("65535:65535"));
    assert_eq!(c.env, ["A=b"]);
    assert_eq!(c.working_dir.as_deref(), Some("/tmp"));

    let expected_order = [
        "bin/",
        "bin/sample",
        "etc/",
        "etc/motd",
        "tmp/",
        "usr/",
        "usr/local/",
        "usr/local/bin/",
        "usr/local/bin/sample",
    ];
    assert_eq!(rb.layer_order, expected_order);
    let l = &rb.layer;
    let dir_entry = &l["usr/local/bin/"];
    assert_eq!(
        (dir_entry.kind, dir_entry.mode),
        (tar::EntryType::Directory, 0o755)
    );
    assert_eq!(l["tmp/"].mode, 0o1777);
    let bin = &l["usr/local/bin/sample"];
    assert_eq!((bin.kind, bin.mode), (tar::EntryType::Regular, 0o755));
    assert_eq!(bin.data, b"\x7fELF pretend binary");
    assert_eq!(l["etc/motd"].data, b"hello\n");
    assert_eq!(l["etc/motd"].mode, 0o644);
    let link = &l["bin/sample"];
    assert_eq!(link.kind, tar::EntryType::Symlink);
    assert_eq!(link.link.as_deref(), Some("../usr/local/bin/sample"));
    for (path, e) in rb.layer.iter().chain(rb.outer.iter().map(|(p, e)| (p, e))) {
        assert_eq!((e.mtime, e.uid, e.gid), (0, 0, 0), "{path}");
        assert!(e.user_name.is_empty(), "{path} has a user name");
    }
}

#[test]
fn writing_twice_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sample_spec(dir.path());
    let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    let id_a = write_archive(&spec, &a).unwrap();
    // Host file metadata that must not leak into the archive.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let host = dir.path().join("host-binary");
    fs::write(&host, fs::read(&host).unwrap()).unwrap();
    let id_b = write_archive(&spec, &b).unwrap();
    assert_eq!(id_a, id_b);
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    // No temporary files left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn a_content_change_changes_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sample_spec(dir.path());
    let a = write_archive(&spec, &dir.path().join("a.tar")).unwrap();
    fs::write(dir.path().join("host-binary"), b"other").unwrap();
    let b = write_archive(&spec, &dir.path().join("b.tar")).unwrap();
    assert_ne!(a.manifest, b.manifest);
    assert_ne!(a.config, b.config);
}

#[test]
fn ensure_archive_reuses_until_the_spec_changes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sample_spec(dir.path());
    let cache = dir.path().join("images");
    let first = ensure_archive_in(&spec, &cache).unwrap();
    let name = first
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("sample-") && name.ends_with(".tar"),
        "{name}"
    );
    let modified = fs::metadata(&first.path).unwrap().modified().unwrap();
    let again = ensure_archive_in(&spec, &cache).unwrap();
    assert_eq!(again, first);
    assert_eq!(
        fs::metadata(&again.path).unwrap().modified().unwrap(),
        modified
    );

    fs::write(dir.path().join("host-binary"), b"rebuilt").unwrap();
    let changed = ensure_archive_in(&spec, &cache).unwrap();
    assert_ne!(changed.path, first.path);
    assert_ne!(changed.id.manifest, first.id.manifest);

    // A damaged archive at the expected path is written again.
    fs::write(&changed.path, b"garbage").unwrap();
    let repaired = ensure_archive_in(&spec, &cache).unwrap();
    assert_eq!(repaired, changed);
    read_back(&repaired.path);
}

#[test]
fn tandem_image_of_a_dynamic_binary_holds_loader_and_libc() {
    let dir = tempfile::tempdir().unwrap();
    let spec = images::tandem(Path::new("/bin/ls"), "9.8.7").unwrap();
    assert_eq!(spec.reference, "ghcr.io/tandem-io/tandem:9.8.7");
    let out = dir.path().join("tandem.tar");
    write_archive(&spec, &out).unwrap();
    let rb = read_back(&out);
    assert_eq!(
        rb.index.manifests[0].annotations[IMAGE_NAME_ANNOTATION],
        "ghcr.io/tandem-io/tandem:9.8.7"
    );
    assert_eq!(rb.config.config.entrypoint, ["/tandem"]);
    assert_eq!(rb.layer["tandem"].data, fs::read("/bin/ls").unwrap());

    let loader = rb
        .layer
        .iter()
        .find(|(p, _)| p.contains("/ld-linux-x86-64.so"))
        .unwrap_or_else(|| panic!("no loader in {:?}", rb.layer_order));
    let libc = rb
        .layer
        .iter()
        .find(|(p, _)| p.ends_with("/libc.so.6"))
        .unwrap_or_else(|| panic!("no libc in {:?}", rb.layer_order));
    for (path, e) in [loader, libc] {
        // The content is there (symlinks followed), under the host path.
        assert_eq!(e.kind, tar::EntryType::Regular, "{path}");
        assert_eq!(
            e.data,
            fs::read(PathBuf::from("/").join(path)).unwrap(),
            "{path}"
        );
    }
    let passwd = String::from_utf8(rb.layer["etc/passwd"].data.clone()).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    assert!(passwd.contains("\nnobody:x:65534:65534:"), "{passwd}");
    let group = String::from_utf8(rb.layer["etc/group"].data.clone()).unwrap();
    assert!(group.contains("root:x:0:") && group.contains("nobody:x:65534:"));
    assert_eq!(rb.layer["tmp/"].mode, 0o1777);
}

#[test]
fn emojivoto_image_runs_the_app_binary_with_its_libraries() {
    let dir = tempfile::tempdir().unwrap();
    let spec = images::emojivoto(Path::new("/bin/ls"), "9.8.7").unwrap();
    assert_eq!(spec.reference, "ghcr.io/tandem-io/emojivoto:9.8.7");
    let out = dir.path().join("emojivoto.tar");
    write_archive(&spec, &out).unwrap();
    let rb = read_back(&out);
    assert_eq!(
        rb.index.manifests[0].annotations[IMAGE_NAME_ANNOTATION],
        "ghcr.io/tandem-io/emojivoto:9.8.7"
    );
    assert_eq!(rb.config.config.entrypoint, ["/emojivoto"]);
    assert_eq!(rb.layer["emojivoto"].data, fs::read("/bin/ls").unwrap());
    assert!(
        rb.layer.keys().any(|p| p.ends_with("/libc.so.6")),
        "no libc in {:?}",
        rb.layer_order
    );
    // The app needs no iptables: that is the tandem image's, for proxy-init.
    assert!(!rb.layer.keys().any(|p| p.contains("xtables")));
    assert!(images::emojivoto(Path::new("/nonexistent/emojivoto"), "1").is_err());
}

#[test]
fn tandem_image_carries_iptables_nft_with_its_modules_and_libraries() {
    let dir = tempfile::tempdir().unwrap();
    let spec = images::tandem(Path::new("/bin/ls"), "9.8.7").unwrap();
    let out = dir.path().join("tandem.tar");
    write_archive(&spec, &out).unwrap();
    let rb = read_back(&out);
    let multi = &rb.layer["usr/sbin/xtables-nft-multi"];
    assert_eq!(multi.kind, tar::EntryType::Regular);
    assert_eq!(multi.mode, 0o755);
    assert_eq!(multi.data, fs::read(images::DEBIAN_XTABLES_NFT).unwrap());
    for name in images::IPTABLES_NAMES {
        let e = &rb.layer[&format!("usr/sbin/{name}")];
        assert_eq!(e.kind, tar::EntryType::Symlink, "{name}");
        assert_eq!(e.link.as_deref(), Some("xtables-nft-multi"), "{name}");
    }
    // The modules proxy-init's rules load, at the path iptables looks in.
    let modules = images::DEBIAN_XTABLES_MODULES.trim_start_matches('/');
    for m in [
        "comment",
        "multiport",
        "owner",
        "REDIRECT",
        "standard",
        "tcp",
    ] {
        let path = format!("{modules}/libxt_{m}.so");
        let e = rb
            .layer
            .get(&path)
            .unwrap_or_else(|| panic!("{path} is missing"));
        assert_eq!(e.kind, tar::EntryType::Regular, "{path}");
        assert!(e.data.starts_with(b"\x7fELF"), "{path}");
    }
    // iptables' own libraries, besides the tandem binary's.
    for lib in ["/libxtables.so.12", "/libnftnl.so.11", "/libmnl.so.0"] {
        assert!(
            rb.layer.keys().any(|p| p.ends_with(lib)),
            "no {lib} in {:?}",
            rb.layer_order
        );
    }
    assert_eq!(
        rb.layer
            .keys()
            .filter(|p| p.ends_with("/libc.so.6"))
            .count(),
        1,
        "libc once"
    );
}

#[test]
fn without_iptables_the_tandem_image_names_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("modules");
    fs::create_dir(&empty).unwrap();
    let base = || ImageSpec::new("x:1");
    let cases = [
        images::with_iptables(
            base(),
            &dir.path().join("xtables-nft-multi"),
            Path::new(images::DEBIAN_XTABLES_MODULES),
        ),
        images::with_iptables(
            base(),
            Path::new(images::DEBIAN_XTABLES_NFT),
            &dir.path().join("no-modules"),
        ),
        images::with_iptables(base(), Path::new(images::DEBIAN_XTABLES_NFT), &empty),
    ];
    for (i, res) in cases.into_iter().enumerate() {
        let err = res.unwrap_err();
        assert!(
            matches!(err, Error::Prerequisite { .. }),
            "case {i}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("apt-get install iptables") && message.contains("proxy-init"),
            "case {i}: {message}"
        );
    }
}

#[test]
fn binary_image_of_a_static_binary_has_no_libraries() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("tool");
    fs::write(&bin, fake_elf(1)).unwrap();
    let spec = binary_image(&bin, "example.test/tool:v1").unwrap();
    assert_eq!(spec.entrypoint, ["/tool"]);
    let host_files: Vec<_> = spec
        .files
        .iter()
        .filter(|f| matches!(f.source, Source::Host(_)))
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(host_files, ["/tool"]);
    // A short reference is normalized as kubelet's runtime does.
    let spec = binary_image(&bin, "tool").unwrap();
    assert_eq!(
        spec.full_reference().unwrap(),
        "docker.io/library/tool:latest"
    );
}

#[test]
fn toolbox_refuses_a_dynamic_busybox() {
    let err = images::toolbox(Path::new("/bin/ls")).unwrap_err();
    assert!(matches!(err, Error::NotStatic { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("apt-get install busybox-static"),
        "{message}"
    );
}

#[test]
fn toolbox_links_every_applet_to_busybox() {
    let dir = tempfile::tempdir().unwrap();
    let busybox = dir.path().join("busybox");
    fs::write(&busybox, fake_elf(1)).unwrap();
    let spec = images::toolbox(&busybox).unwrap();
    let out = dir.path().join("toolbox.tar");
    write_archive(&spec, &out).unwrap();
    let rb = read_back(&out);
    assert_eq!(
        rb.index.manifests[0].annotations[IMAGE_NAME_ANNOTATION],
        "ghcr.io/tandem-io/toolbox:latest"
    );
    assert_eq!(
        rb.index.manifests[0].annotations[REF_NAME_ANNOTATION],
        "latest"
    );
    assert!(rb.config.config.entrypoint.is_empty());
    assert_eq!(rb.config.config.cmd, ["/bin/sh"]);
    assert_eq!(rb.layer["bin/busybox"].data, fake_elf(1));
    assert_eq!(rb.layer["bin/busybox"].mode, 0o755);
    for applet in TOOLBOX_APPLETS {
        let e = &rb.layer[&format!("bin/{applet}")];
        assert_eq!(e.kind, tar::EntryType::Symlink, "{applet}");
        assert_eq!(e.link.as_deref(), Some("busybox"), "{applet}");
    }
}

#[test]
fn pause_and_coredns_are_static_with_upstream_settings() {
    let dir = tempfile::tempdir().unwrap();
    let pause_bin = dir.path().join("pause");
    fs::write(&pause_bin, fake_elf(1)).unwrap();
    let pause = images::pause(&pause_bin).unwrap();
    assert_eq!(pause.reference, "tandem.local/pause:3.10.2");
    // The image is tagged with the release the build checks pause.c against.
    assert_eq!(
        pause.reference,
        format!("tandem.local/pause:{}", crate::toolchain::PAUSE_VERSION)
    );
    assert_eq!(pause.entrypoint, ["/pause"]);
    assert_eq!(pause.user.as_deref(), Some("65535:65535"));
    let coredns = images::coredns(&pause_bin, "1.12.1").unwrap();
    assert_eq!(coredns.reference, "tandem.local/coredns:1.12.1");
    assert_eq!(coredns.entrypoint, ["/coredns"]);
    let prometheus = images::prometheus(&pause_bin, "3.16.0").unwrap();
    assert_eq!(prometheus.reference, "tandem.local/prometheus:3.16.0");
    assert_eq!(prometheus.entrypoint, ["/bin/prometheus"]);
    assert_eq!(prometheus.user.as_deref(), Some("65534:65534"));
    assert!(
        prometheus
            .directories
            .iter()
            .any(|d| d.path == "/prometheus")
    );
    assert!(matches!(
        images::prometheus(Path::new("/bin/ls"), "3.16.0"),
        Err(Error::NotStatic { .. })
    ));
    assert!(matches!(
        images::pause(Path::new("/bin/ls")),
        Err(Error::NotStatic { .. })
    ));
}

#[test]
fn references_are_normalized_like_kubelets_runtime() {
    let cases = [
        ("busybox", "docker.io/library/busybox:latest"),
        ("me/app:1", "docker.io/me/app:1"),
        (
            "ghcr.io/tandem-io/tandem:0.1.0",
            "ghcr.io/tandem-io/tandem:0.1.0",
        ),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("localhost/x:y", "localhost/x:y"),
    ];
    for (given, want) in cases {
        assert_eq!(normalize_reference(given).unwrap(), want, "{given}");
    }
    for bad in ["", "UPPER:1", "x@sha256:00", "x:", "a//b", "x:-tag"] {
        assert!(normalize_reference(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn inconsistent_specs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.tar");
    let cases = [
        ImageSpec::new("x:1").bytes("relative", "", 0o644),
        ImageSpec::new("x:1").bytes("/a/../b", "", 0o644),
        ImageSpec::new("x:1")
            .bytes("/a", "", 0o644)
            .bytes("/a", "", 0o644),
        ImageSpec::new("x:1")
            .bytes("/a", "", 0o644)
            .bytes("/a/b", "", 0o644),
        ImageSpec::new("x:1")
            .bytes("/a", "", 0o644)
            .directory("/a", 0o755),
        ImageSpec::new("x:1").bytes("/a", "", 0o10644),
    ];
    for spec in cases {
        let err = write_archive(&spec, &out).unwrap_err();
        assert!(matches!(err, Error::Image { .. }), "{err:?}");
    }
    assert!(!out.exists());
}

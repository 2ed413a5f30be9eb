//! The testbed's images, and any binary as an image.

use std::path::Path;

use super::{
    ImageSpec,
    ldd::{self, Linkage},
};
use crate::Error;

/// The pause (sandbox) image kubelet's pods start with.
pub const PAUSE_REFERENCE: &str = "tandem.local/pause:3.10.2";
/// A shell and network tools for test pods.
pub const TOOLBOX_REFERENCE: &str = "ghcr.io/tandem-io/toolbox:latest";
/// Where Debian's `busybox-static` package puts busybox.
pub const DEBIAN_BUSYBOX: &str = "/bin/busybox";
/// The busybox applets the toolbox links into /bin.
pub const TOOLBOX_APPLETS: &[&str] = &[
    "sh", "wget", "nslookup", "nc", "ls", "cat", "sleep", "ps", "kill", "env", "echo", "grep",
    "ip", "ping", "true", "false", "id", "hostname", "mkdir", "rm", "timeout", "seq", "date",
    "head", "tail", "wc", "tr", "cut", "printf", "test", "[", "httpd",
];

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";
const NSSWITCH: &str = "passwd: files\ngroup: files\nhosts: files dns\n";

/// `ghcr.io/tandem-io/tandem:<version>`.
pub fn tandem_reference(version: &str) -> String {
    format!("ghcr.io/tandem-io/tandem:{version}")
}

/// `ghcr.io/tandem-io/emojivoto:<version>`, the demo app (crates/emojivoto).
pub fn emojivoto_reference(version: &str) -> String {
    format!("ghcr.io/tandem-io/emojivoto:{version}")
}

/// `tandem.local/coredns:<version>`.
pub fn coredns_reference(version: &str) -> String {
    format!("tandem.local/coredns:{version}")
}

/// `tandem.local/prometheus:<version>`.
pub fn prometheus_reference(version: &str) -> String {
    format!("tandem.local/prometheus:{version}")
}

/// The Prometheus image: the static `/bin/prometheus` (built with CGO off)
/// as the entrypoint, run as nobody, with /prometheus for its data (as
/// upstream's image; a pod mounts a volume there) and no configuration of
/// its own: `viz install` mounts one and passes `--config.file`.
pub fn prometheus(prometheus_binary: &Path, version: &str) -> Result<ImageSpec, Error> {
    let reference = prometheus_reference(version);
    require_static(prometheus_binary, &reference, "Build it with CGO_ENABLED=0")?;
    Ok(base(ImageSpec::new(reference))
        .host_file("/bin/prometheus", prometheus_binary, 0o755)
        .directory("/prometheus", 0o777)
        .working_dir("/prometheus")
        .entrypoint(["/bin/prometheus"])
        .user("65534:65534"))
}

/// The pause image: the static `/pause` binary (built with `gcc -static`
/// from Kubernetes' `build/pause/linux/pause.c`), run as 65535:65535, as
/// upstream's.
pub fn pause(pause_binary: &Path) -> Result<ImageSpec, Error> {
    require_static(
        pause_binary,
        PAUSE_REFERENCE,
        "Build it with `gcc -Os -static` (glibc's libc.a is needed: Debian package libc6-dev)",
    )?;
    Ok(ImageSpec::new(PAUSE_REFERENCE)
        .host_file("/pause", pause_binary, 0o755)
        .entrypoint(["/pause"])
        .user("65535:65535"))
}

/// The CoreDNS image: the static `/coredns` binary (built with CGO off).
pub fn coredns(coredns_binary: &Path, version: &str) -> Result<ImageSpec, Error> {
    let reference = coredns_reference(version);
    require_static(coredns_binary, &reference, "Build it with CGO_ENABLED=0")?;
    Ok(ImageSpec::new(reference)
        .host_file("/coredns", coredns_binary, 0o755)
        .entrypoint(["/coredns"]))
}

/// Debian's iptables in nft mode (package iptables): one binary that acts
/// as the tool its name (argv[0]) says.
pub const DEBIAN_XTABLES_NFT: &str = "/usr/sbin/xtables-nft-multi";
/// Where Debian's iptables loads its match and target modules from
/// (`comment`, `multiport`, `owner`, `REDIRECT`, ...), at run time.
pub const DEBIAN_XTABLES_MODULES: &str = "/usr/lib/x86_64-linux-gnu/xtables";
/// The names in /usr/sbin that lead to xtables-nft-multi in the tandem image.
pub const IPTABLES_NAMES: &[&str] = &[
    "iptables",
    "iptables-nft",
    "iptables-save",
    "iptables-nft-save",
    "iptables-restore",
    "iptables-nft-restore",
];

/// The tandem image: the tandem binary at `/tandem` (normally
/// `std::env::current_exe()`), `version` the workspace version, with the
/// shared libraries it needs, /etc/passwd, /etc/group and /tmp, so that it
/// needs no base image; and this machine's iptables (nft), which the
/// injected init container (`tandem proxy-init`) runs.
pub fn tandem(tandem_binary: &Path, version: &str) -> Result<ImageSpec, Error> {
    let spec = with_binary(
        ImageSpec::new(tandem_reference(version)),
        tandem_binary,
        "/tandem",
    )?;
    with_iptables(
        spec,
        Path::new(DEBIAN_XTABLES_NFT),
        Path::new(DEBIAN_XTABLES_MODULES),
    )
}

/// The demo app's image: the `emojivoto` binary at `/emojivoto` as the
/// entrypoint (a Deployment's `args` picks the part: `emoji-svc`,
/// `voting-svc`, `web`, `vote-bot`), with its shared libraries.
pub fn emojivoto(emojivoto_binary: &Path, version: &str) -> Result<ImageSpec, Error> {
    with_binary(
        ImageSpec::new(emojivoto_reference(version)),
        emojivoto_binary,
        "/emojivoto",
    )
}

/// `spec` with iptables-nft: `xtables` (Debian's xtables-nft-multi) in
/// /usr/sbin under every name of [`IPTABLES_NAMES`], every module of
/// `modules` at the same path (iptables looks for them there), and the
/// libraries of both.
pub fn with_iptables(spec: ImageSpec, xtables: &Path, modules: &Path) -> Result<ImageSpec, Error> {
    let missing = |what: &Path| Error::Prerequisite {
        missing: format!(
            "{} (iptables, for the tandem image's init container `tandem proxy-init`)",
            what.display()
        ),
        fix: "install Debian's iptables package: apt-get install iptables".into(),
    };
    if !xtables.is_file() {
        return Err(missing(xtables));
    }
    let mut module_files: Vec<_> = std::fs::read_dir(modules)
        .map_err(|_| missing(modules))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "so") && p.is_file())
        .collect();
    module_files.sort();
    if module_files.is_empty() {
        return Err(missing(modules));
    }
    let mut spec = spec.host_file("/usr/sbin/xtables-nft-multi", xtables, 0o755);
    for name in IPTABLES_NAMES {
        spec = spec.symlink(&format!("/usr/sbin/{name}"), "xtables-nft-multi");
    }
    let image_dir = modules.to_string_lossy().into_owned();
    for m in &module_files {
        let file_name = m
            .file_name()
            .expect("read_dir gives names")
            .to_string_lossy();
        spec = spec.host_file(&format!("{image_dir}/{file_name}"), m, 0o644);
    }
    let mut binaries: Vec<&Path> = vec![xtables];
    binaries.extend(module_files.iter().map(|p| p.as_path()));
    let Linkage::Dynamic(libs) = ldd::libraries_of(&binaries)? else {
        return Ok(spec);
    };
    Ok(add_libraries(spec, &libs))
}

/// What a static glibc program loads for name lookups, at Debian's paths.
const GLIBC_NSS: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libnss_files.so.2",
    "/lib/x86_64-linux-gnu/libnss_dns.so.2",
    "/lib/x86_64-linux-gnu/libresolv.so.2",
];

/// Debian's static busybox at /bin/busybox with links for the usual tools;
/// the command (not the entrypoint, as in the busybox image, so that
/// `kubectl run ... -- sleep 60` runs `sleep`) is /bin/sh. A dynamic busybox
/// is refused: the image has no libraries.
pub fn toolbox(busybox: &Path) -> Result<ImageSpec, Error> {
    require_static(
        busybox,
        TOOLBOX_REFERENCE,
        "Install Debian's static busybox: apt-get install busybox-static",
    )?;
    let mut spec = base(ImageSpec::new(TOOLBOX_REFERENCE))
        .host_file("/bin/busybox", busybox, 0o755)
        .cmd(["/bin/sh"]);
    // A static glibc still loads NSS modules (and their libc) at run time
    // for getaddrinfo; without them busybox's wget crashes.
    for lib in GLIBC_NSS {
        let host = Path::new(lib);
        if !host.exists() {
            return Err(Error::Image {
                reference: TOOLBOX_REFERENCE.into(),
                detail: format!(
                    "{lib} is missing; static busybox needs glibc's NSS modules: apt-get install libc6"
                ),
            });
        }
        spec = spec.host_file(lib, host, 0o755);
    }
    for applet in TOOLBOX_APPLETS {
        spec = spec.symlink(&format!("/bin/{applet}"), "busybox");
    }
    Ok(spec)
}

/// Any single x86-64 Linux binary as an image `reference`, at `/<its file
/// name>` and run as the entrypoint. A dynamic binary gets the shared
/// libraries `ldd` reports, as the tandem image does.
pub fn binary_image(binary: &Path, reference: &str) -> Result<ImageSpec, Error> {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .ok_or_else(|| Error::NotExecutable {
            path: binary.into(),
            detail: "not a file name".into(),
        })?;
    with_binary(ImageSpec::new(reference), binary, &format!("/{name}"))
}

/// What every image with a libc needs besides libraries: the user and group
/// files, name service config, /tmp and PATH.
fn base(spec: ImageSpec) -> ImageSpec {
    spec.bytes("/etc/passwd", PASSWD, 0o644)
        .bytes("/etc/group", GROUP, 0o644)
        .bytes("/etc/nsswitch.conf", NSSWITCH, 0o644)
        .directory("/tmp", 0o1777)
        .env("PATH", PATH)
}

/// `spec` with `binary` at `image_path` as the entrypoint, plus its shared
/// libraries if it is dynamic.
fn with_binary(spec: ImageSpec, binary: &Path, image_path: &str) -> Result<ImageSpec, Error> {
    let mut spec = base(spec)
        .host_file(image_path, binary, 0o755)
        .entrypoint([image_path]);
    if ldd::is_static(binary)? {
        return Ok(spec);
    }
    let Linkage::Dynamic(libs) = ldd::libraries(binary)? else {
        return Err(Error::Ldd {
            binary: binary.into(),
            detail: "ldd calls it static, but it has a program interpreter".into(),
        });
    };
    if let Some(lib) = libs.iter().find(|l| l.path == Path::new(image_path)) {
        return Err(spec.invalid(format!(
            "a library is at {}, where the binary goes",
            lib.path.display()
        )));
    }
    spec = add_libraries(spec, &libs);
    Ok(spec)
}

/// `spec` with `libs` where the loader finds them; a file or link the
/// image already holds (another binary's library) is not added twice.
fn add_libraries(mut spec: ImageSpec, libs: &[ldd::Library]) -> ImageSpec {
    let placement = ldd::place(libs);
    let held = |spec: &ImageSpec, path: &str| spec.files.iter().any(|f| f.path == path);
    for (path, host) in placement.files {
        if !held(&spec, &path) {
            spec = spec.host_file(&path, host, 0o755);
        }
    }
    for (path, target) in placement.symlinks {
        if !held(&spec, &path) {
            spec = spec.symlink(&path, &target);
        }
    }
    if let Some(dirs) = placement.library_path {
        let var = format!("LD_LIBRARY_PATH={dirs}");
        if !spec.env.contains(&var) {
            spec = spec.env("LD_LIBRARY_PATH", &dirs);
        }
    }
    spec
}

fn require_static(binary: &Path, reference: &str, fix: &str) -> Result<(), Error> {
    if ldd::is_static(binary)? {
        Ok(())
    } else {
        Err(Error::NotStatic {
            path: binary.into(),
            image: reference.into(),
            fix: fix.into(),
        })
    }
}

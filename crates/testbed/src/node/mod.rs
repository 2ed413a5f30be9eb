//! Real nodes: per cluster a Linux network namespace with containerd,
//! kubelet and kube-proxy, joined to the host by a veth pair on a bridge.
//!
//! What `up` changes on the host, and `down` undoes:
//! - a bridge `tandem<slot>` (198.18.slot.1/24) with one veth per node, and
//!   routes to each node's pods and LoadBalancer pool;
//! - network namespaces `tandem<slot>-<cluster>`;
//! - cgroups `/tandem<slot>-<cluster>` in every hierarchy;
//! - sockets under `/run/tandem/<slot>/<cluster>`;
//! - the host-wide sysctls that the kubelet sets, restored when the last
//!   testbed with real nodes goes down;
//! - the kubelet's device plugin socket, whose path is fixed (see
//!   [`kubelet_start`]), removed when the last testbed goes down.
//!
//! The host's `ip_forward` is never touched.

pub mod addons;
pub mod cgroup;
pub mod files;
pub mod kubelet_start;
pub mod mounts;
pub mod net;
mod sysctl;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{ClusterLayout, Config, Error, NET_SLOTS, Progress, config::bridge_name, process};

pub use self::sysctl::HOST_SYSCTLS;

/// Checks what real nodes need, naming what is missing and how to get it.
pub fn check_prerequisites() -> Result<(), Error> {
    if !is_root() {
        return Err(Error::Prerequisite {
            missing: "root".into(),
            fix: "real nodes create network namespaces, a bridge and cgroups, which needs root. Run as root, or start a testbed of fake nodes with `tandem testbed up --nodes fake`".into(),
        });
    }
    let mut missing = vec![];
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("umount", "mount"),
        ("sysctl", "procps"),
        ("iptables", "iptables"),
        ("iptables-restore", "iptables"),
        ("ip6tables", "iptables"),
    ] {
        if find_on_path(tool).is_none() {
            missing.push(format!("{tool} (apt-get install {package})"));
        }
    }
    if !Path::new(files::RUNC).is_file() {
        missing.push(format!("{} (apt-get install runc)", files::RUNC));
    }
    // The toolbox image is Debian's static busybox.
    let busybox = Path::new(crate::image::images::DEBIAN_BUSYBOX);
    if !crate::image::ldd::is_static(busybox).unwrap_or(false) {
        missing.push(format!(
            "a static {} (apt-get install busybox-static)",
            busybox.display()
        ));
    }
    if !missing.is_empty() {
        return Err(Error::Prerequisite {
            missing: missing.join(", "),
            fix: "install them, or start a testbed of fake nodes with `tandem testbed up --nodes fake`".into(),
        });
    }
    let mut kernel = vec![];
    if !Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        kernel.push("bridge netfilter (br_netfilter)".to_string());
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") {
        kernel.push("overlayfs".into());
    }
    let cgroups = cgroup::missing_v1_controllers();
    if !cgroups.is_empty() {
        kernel.push(format!("cgroup v1 controllers {}", cgroups.join(", ")));
    }
    if !kernel.is_empty() {
        return Err(Error::Prerequisite {
            missing: kernel.join(", "),
            fix: "this kernel or mount setup lacks them; start a testbed of fake nodes with `tandem testbed up --nodes fake`".into(),
        });
    }
    Ok(())
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// What a slot's bridge and namespaces say about who owns them.
#[derive(Debug, PartialEq, Eq)]
pub enum SlotUse {
    Free,
    /// Owned by the testbed in this directory.
    Ours,
    /// Owned by another testbed directory.
    Other(PathBuf),
}

pub fn slot_use(slot: u8, dir: &Path) -> SlotUse {
    let bridge = bridge_name(slot);
    if !net::link_exists(&bridge) && net::slot_namespaces(slot).is_empty() {
        return SlotUse::Free;
    }
    match net::bridge_owner(&bridge) {
        Some(owner) if owner == dir => SlotUse::Ours,
        Some(owner) => SlotUse::Other(owner),
        None => SlotUse::Other(PathBuf::from("(unknown)")),
    }
}

/// The slot a new testbed in `dir` takes: the first free one.
pub fn choose_slot(dir: &Path) -> Result<u8, Error> {
    (0..NET_SLOTS)
        .find(|s| slot_use(*s, dir) == SlotUse::Free)
        .ok_or_else(|| Error::Prerequisite {
            missing: format!("a free network slot (all {NET_SLOTS} bridges tandem0-7 are taken)"),
            fix: "stop another testbed with `tandem testbed down --dir DIR`".into(),
        })
}

/// Refuses to start over what a crashed run left in this testbed's slot.
pub fn refuse_leftovers(config: &Config) -> Result<(), Error> {
    let dir = &config.dir;
    let leftover = |what: String| Error::StaleState {
        dir: dir.clone(),
        detail: format!(
            "{what} is left from an earlier run.\n  Run `tandem testbed down --dir {}` to remove it, then `tandem testbed up` again",
            dir.display()
        ),
    };
    match slot_use(config.slot, dir) {
        SlotUse::Free => {}
        SlotUse::Ours => return Err(leftover(format!("the bridge {}", config.bridge()))),
        SlotUse::Other(owner) => {
            return Err(Error::StaleState {
                dir: dir.clone(),
                detail: format!(
                    "network slot {} (bridge {}) belongs to the testbed in {}; stop it with `tandem testbed down --dir {}`",
                    config.slot,
                    config.bridge(),
                    owner.display(),
                    owner.display()
                ),
            });
        }
    }
    for l in config.layouts() {
        if l.run_dir().exists() {
            let socks = l.run_dir();
            if !mounts::under(&socks).is_empty() {
                return Err(leftover(format!("mounts under {}", socks.display())));
            }
        }
        if !cgroup::pids(&l.cgroup_root()).is_empty() {
            return Err(leftover(format!(
                "processes in cgroup /{}",
                l.cgroup_root()
            )));
        }
        if !mounts::under(&l.node_dir()).is_empty() {
            return Err(leftover(format!("mounts under {}", l.node_dir().display())));
        }
    }
    Ok(())
}

/// Creates the bridge, each node's namespace, cgroups and files.
pub fn setup_host(config: &Config, progress: &dyn Progress) -> Result<(), Error> {
    sysctl::record_and_set()?;
    net::create_bridge(config)?;
    for l in config.layouts() {
        net::create_node(config, &l)?;
        cgroup::create(&l.cgroup_root())?;
        for dir in [l.run_dir(), l.node_dir()] {
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        progress.step(&format!(
            "{}: node namespace {} at {} (pods {}, services {}, load balancers {})",
            l.name,
            l.netns(),
            l.node_ip(),
            l.pod_cidr(),
            l.service_cidr(),
            l.lb_pool()
        ));
    }
    Ok(())
}

/// Removes everything `setup_host` made and the nodes left, in an order that
/// never deletes through a live mount: the node processes are already
/// stopped; then what runs in the cgroups and the shims is killed, mounts
/// are undone deepest first, namespaces and links deleted, cgroups removed,
/// and only then files.
pub fn teardown(config: &Config, progress: &dyn Progress) -> Result<(), Error> {
    // Every step runs even when one fails, so that one stuck piece does not
    // leave the rest behind; the first error is returned at the end.
    let mut errors: Vec<Error> = vec![];
    let mut keep = |res: Result<(), Error>| {
        if let Err(e) = res {
            errors.push(e);
        }
    };
    for l in config.layouts() {
        keep(cgroup::kill_all(&l.cgroup_root()));
        // The shims name the node's socket (`-address RUN_DIR/containerd.sock`);
        // matched by whole argument, so never another node's RUN_DIR2.
        let shims = process::processes_mentioning(&l.run_dir().display().to_string());
        for pid in &shims {
            keep(
                process::ProcessId {
                    pid: *pid,
                    start_time: 0,
                }
                .stop(Duration::from_secs(5)),
            );
        }
        let mut unmounted = 0;
        for dir in [l.node_dir(), l.run_dir()] {
            match mounts::unmount_all(&dir) {
                Ok(n) => unmounted += n,
                Err(e) => keep(Err(e)),
            }
        }
        keep(net::delete_node(&l));
        keep(cgroup::remove(&l.cgroup_root()));
        keep(mounts::remove_dir_safely(&l.run_dir()));
        remove_container_log_links(&l);
        progress.step(&format!(
            "{}: node removed ({} shim(s) stopped, {unmounted} mount(s) undone)",
            l.name,
            shims.len()
        ));
    }
    if net::bridge_owner(&config.bridge()).is_none_or(|owner| owner == config.dir) {
        keep(net::delete_bridge(&config.bridge()));
    }
    let slot_run = PathBuf::from("/run/tandem").join(config.slot.to_string());
    if slot_run.exists() && fs::read_dir(&slot_run).is_ok_and(|mut d| d.next().is_none()) {
        let _ = fs::remove_dir(&slot_run);
    }
    // What is host-wide goes back only with the last testbed of real nodes.
    if !net::any_bridge() {
        keep(sysctl::restore());
        kubelet_start::remove_stale_socket();
    }
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The kubelet links every container's log into the host-wide
/// /var/log/containers; remove the links that point into this node.
fn remove_container_log_links(l: &ClusterLayout) {
    let logs = files::NodeFiles::new(l).pod_logs();
    let Ok(entries) = fs::read_dir("/var/log/containers") else {
        return;
    };
    for e in entries.flatten() {
        if fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&logs)) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Whether anything of this testbed's nodes is left on the host.
pub fn leftovers(config: &Config) -> Vec<String> {
    let mut out = vec![];
    if net::link_exists(&config.bridge())
        && net::bridge_owner(&config.bridge()).is_none_or(|o| o == config.dir)
    {
        out.push(format!("bridge {}", config.bridge()));
    }
    for l in config.layouts() {
        if net::netns_exists(&l.netns()) {
            out.push(format!("network namespace {}", l.netns()));
        }
        if net::link_exists(&l.veth()) {
            out.push(format!("link {}", l.veth()));
        }
        for h in cgroup::hierarchies() {
            if h.join(l.cgroup_root()).exists() {
                out.push(format!("cgroup {}", h.join(l.cgroup_root()).display()));
            }
        }
        for m in mounts::under(&l.node_dir())
            .into_iter()
            .chain(mounts::under(&l.run_dir()))
        {
            out.push(format!("mount {}", m.display()));
        }
        if l.run_dir().exists() {
            out.push(format!("directory {}", l.run_dir().display()));
        }
    }
    out
}

/// Writes one node's configuration files.
pub fn write_files(l: &ClusterLayout, tc: &crate::Toolchain) -> Result<(), Error> {
    let f = files::NodeFiles::new(l);
    let pki = crate::pki::Pki::new(l);
    for dir in [
        f.cni_conf_dir(),
        f.cni_bin_dir(),
        f.pod_logs(),
        f.kubelet_root(),
    ] {
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let cni_bin = tc.artifact(crate::toolchain::CNI_BIN);
    let write =
        |path: PathBuf, body: String| fs::write(&path, body).map_err(|e| Error::io(&path, e));
    write(f.containerd_config(), files::containerd_config(l, &cni_bin))?;
    write(
        f.kubelet_config(),
        files::kubelet_config(l, &pki.ca().cert)?,
    )?;
    write(
        f.kube_proxy_config(),
        files::kube_proxy_config(l, &l.component_kubeconfig(crate::Component::KubeProxy))?,
    )?;
    write(
        f.cni_conf_dir().join("10-tandem.conflist"),
        files::cni_conflist(l),
    )
}

/// The images every node holds: the sandbox, CoreDNS, tandem, the demo app,
/// the toolbox and Prometheus (for `tandem viz install`). The tandem image
/// holds the product binary `tandem` beside this tool (or
/// `TANDEM_IMAGE_BINARY`), without the development tools; the app's image
/// holds `emojivoto` from the same place (or `TANDEM_EMOJIVOTO_IMAGE_BINARY`).
pub fn testbed_images(tc: &crate::Toolchain) -> Result<Vec<crate::image::ImageSpec>, Error> {
    use crate::{image, toolchain};
    let tandem = image_binary("TANDEM_IMAGE_BINARY", "tandem", "the tandem image")?;
    let emojivoto = image_binary(
        "TANDEM_EMOJIVOTO_IMAGE_BINARY",
        "emojivoto",
        "the demo app's image",
    )?;
    let version = env!("CARGO_PKG_VERSION");
    Ok(vec![
        image::pause(&tc.artifact(toolchain::PAUSE))?,
        image::coredns(
            &tc.artifact(toolchain::COREDNS),
            &toolchain::coredns_version(),
        )?,
        image::tandem(&tandem, version)?,
        image::emojivoto(&emojivoto, version)?,
        image::toolbox(Path::new(image::images::DEBIAN_BUSYBOX))?,
        image::prometheus(
            &tc.artifact(toolchain::PROMETHEUS),
            &toolchain::prometheus_version(),
        )?,
    ])
}

/// The binary `name` of an image: `$var` if set, else beside this tool
/// (cargo builds the tandem package's binaries into one directory).
fn image_binary(var: &str, name: &str, image: &str) -> Result<PathBuf, Error> {
    let binary = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::dev_binary(name));
    if binary.is_file() {
        return Ok(binary);
    }
    Err(Error::Prerequisite {
        missing: format!("the {name} binary for {image} ({})", binary.display()),
        fix: format!(
            "build it with `cargo build -p tandem` (it goes beside tandem-testbed), or set {var}"
        ),
    })
}

/// Builds (or finds) the testbed's image archives and imports into the
/// node's containerd those it does not hold as they are now (the tandem
/// image changes with every build of tandem); returns how many it imported.
pub fn load_images(l: &ClusterLayout, tc: &crate::Toolchain) -> Result<usize, Error> {
    let ctr = tc.artifact(crate::toolchain::CTR);
    let held = crate::image::ctr::digests(&ctr, &l.containerd_socket())?;
    let mut imported = 0;
    for spec in testbed_images(tc)? {
        let archive = crate::image::ensure_archive(&spec)?;
        let current = held
            .iter()
            .any(|(r, d)| *r == archive.id.reference && *d == archive.id.manifest);
        if !current {
            crate::image::ctr::import(&ctr, &l.containerd_socket(), &archive.path)?;
            imported += 1;
        }
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_image_binary_names_how_to_build_it() {
        let err = image_binary(
            "TANDEM_TEST_NEVER_SET_IMAGE_BINARY",
            "no-such-binary",
            "the demo app's image",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "no-such-binary",
            "the demo app's image",
            "cargo build -p tandem",
            "TANDEM_TEST_NEVER_SET_IMAGE_BINARY",
        ] {
            assert!(err.contains(want), "{want:?} not in: {err}");
        }
    }
}

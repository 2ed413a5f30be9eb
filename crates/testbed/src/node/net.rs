//! The node's network: a bridge on the host, and per cluster a network
//! namespace joined to it by a veth pair. Every address is in 198.18.0.0/15.
//!
//! The host never forwards (its `ip_forward` stays 0): nodes reach each
//! other across the bridge, the host reaches nodes, pods and LoadBalancer
//! addresses by routes through a node, and nothing from a pod can leave the
//! machine.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{ClusterLayout, Config, Error};

/// Runs a command of the host's network tools and returns its stdout.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(program, e))?;
    if !out.status.success() {
        return Err(Error::Network {
            step: format!("{program} {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, Error> {
    run("ip", args)
}

/// The file `ip netns` keeps for a namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Whether the bridge of any testbed slot exists: a testbed with real
/// nodes still runs.
pub fn any_bridge() -> bool {
    (0..crate::NET_SLOTS).any(|s| link_exists(&crate::config::bridge_name(s)))
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub fn netns_exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// The bridge's alias names the testbed directory that owns it, so that a
/// leftover can be traced to its testbed.
pub fn bridge_owner(bridge: &str) -> Option<PathBuf> {
    let alias =
        fs::read_to_string(Path::new("/sys/class/net").join(bridge).join("ifalias")).ok()?;
    let alias = alias.trim();
    (!alias.is_empty()).then(|| PathBuf::from(alias))
}

/// Network namespaces of a slot (`tandem<slot>-*`).
pub fn slot_namespaces(slot: u8) -> Vec<String> {
    let prefix = format!("tandem{slot}-");
    fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates the bridge with the host's address on it.
pub fn create_bridge(config: &Config) -> Result<(), Error> {
    let bridge = config.bridge();
    let owner = config.dir.display().to_string();
    ip(&["link", "add", &bridge, "type", "bridge"])?;
    ip(&["link", "set", &bridge, "alias", &owner])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/24", config.host_ip()),
        "dev",
        &bridge,
    ])?;
    ip(&["link", "set", &bridge, "up"])?;
    Ok(())
}

/// Creates one node's namespace, its link to the bridge, its address and
/// its routes, and the host's routes to its pods and LoadBalancer pool.
pub fn create_node(config: &Config, l: &ClusterLayout) -> Result<(), Error> {
    let ns = l.netns();
    let veth = l.veth();
    let bridge = config.bridge();
    let node_ip = l.node_ip().to_string();
    ip(&["netns", "add", &ns])?;
    ip(&[
        "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ])?;
    ip(&["link", "set", &veth, "master", &bridge, "up"])?;
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{node_ip}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    // Other clusters' LoadBalancer addresses are reached through their node,
    // as a BGP speaker would announce them. There is no default route: a
    // packet for anywhere else is refused in the node.
    for other in config.layouts().iter().filter(|o| o.name != l.name) {
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            &other.lb_pool(),
            "via",
            &other.node_ip().to_string(),
        ])?;
    }
    for cidr in [l.pod_cidr(), l.lb_pool()] {
        ip(&["route", "add", &cidr, "via", &node_ip, "dev", &bridge])?;
    }
    // Pods on the node's bridge reach Services through kube-proxy's rules,
    // and the node forwards for its pods; both only inside the namespace.
    nsenter_sysctl(
        &ns,
        &[
            ("net.ipv4.ip_forward", "1"),
            ("net.bridge.bridge-nf-call-iptables", "1"),
            ("net.ipv4.conf.all.route_localnet", "1"),
        ],
    )
}

fn nsenter_sysctl(ns: &str, settings: &[(&str, &str)]) -> Result<(), Error> {
    let net = format!("--net={}", netns_path(ns).display());
    let mut args = vec![net.as_str(), "--", "sysctl", "-q", "-w"];
    let pairs: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    args.extend(pairs.iter().map(String::as_str));
    run("nsenter", &args).map(|_| ())
}

/// Deletes a node's namespace (and with it the veth pair). Idempotent.
pub fn delete_node(l: &ClusterLayout) -> Result<(), Error> {
    if netns_exists(&l.netns()) {
        ip(&["netns", "del", &l.netns()])?;
    }
    // The kernel removes the veth with the namespace, a moment later.
    delete_link(&l.veth())
}

/// Deletes the bridge; its routes go with it. Idempotent.
pub fn delete_bridge(bridge: &str) -> Result<(), Error> {
    if link_exists(bridge) {
        ip(&["link", "del", bridge])?;
    }
    Ok(())
}

/// Deletes a veth that is going away with its peer's namespace.
fn delete_link(name: &str) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while link_exists(name) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if !link_exists(name) {
        return Ok(());
    }
    match ip(&["link", "del", name]) {
        Err(_) if !link_exists(name) => Ok(()),
        other => other.map(drop),
    }
}

/// `nsenter` arguments that run a program in a node's network namespace
/// only: the mount namespace stays the host's, so that the kubelet's volume
/// mounts are seen by containerd and runc.
pub fn in_netns(l: &ClusterLayout, program: &Path, args: Vec<String>) -> (PathBuf, Vec<String>) {
    let mut all = vec![
        format!("--net={}", netns_path(&l.netns()).display()),
        "--".to_string(),
        program.display().to_string(),
    ];
    all.extend(args);
    (PathBuf::from("nsenter"), all)
}

/// The value of a sysctl of the host's namespace.
pub fn read_sysctl(key: &str) -> Option<String> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

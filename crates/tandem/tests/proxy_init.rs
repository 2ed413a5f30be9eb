//! `tandem proxy-init` for real: in a private network namespace (root
//! only), it installs the nat rules once however often it runs, completes
//! a part left by a cut-off run, and an
//! outgoing TCP connection then reaches the proxy's outbound port with its
//! original destination readable by `SO_ORIGINAL_DST`. The tandem image's
//! own iptables does the same, run from the image's file tree, and so does
//! the init container `tandem inject` adds, in a pod on a real node.

use std::{
    fs,
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use nix::{
    sched::{CloneFlags, setns},
    sys::socket::{getsockopt, sockopt},
};
use tandem_harness::Env;
use tandem_testbed::image::{ImageSpec, Source, images};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Fails (never skips) when the test cannot run here, and says why.
fn require_root_and_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it creates a network namespace and installs iptables rules in it"
    );
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables-nft", "iptables"),
        ("iptables-nft-save", "iptables"),
    ] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file());
        assert!(found, "{tool} is not on PATH: apt-get install {package}");
    }
}

/// A network namespace of this test, deleted when dropped (also when the
/// test fails).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("tandem-t-init-{}-{tag}", std::process::id());
        // A leftover of a crashed run with the same pid.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS`, which must succeed.
    fn ip(&self, args: &[&str]) {
        ok(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// `ip netns exec NS PROGRAM ARGS`.
    fn exec(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// A veth pair with 198.18.255.1/24 on one end and no address on the
    /// other: 198.18.255.2 is routed (not local, not loopback), and nothing
    /// answers there. (A veth, as some kernels have no dummy interfaces.)
    fn with_network(self) -> Self {
        self.ip(&[
            "link", "add", "t-in0", "type", "veth", "peer", "name", "t-in1",
        ]);
        self.ip(&["addr", "add", "198.18.255.1/24", "dev", "t-in0"]);
        self.ip(&["link", "set", "t-in0", "up"]);
        self.ip(&["link", "set", "t-in1", "up"]);
        self
    }

    fn nat_rules(&self) -> String {
        ok(&mut self.exec("iptables-nft-save", &["-t", "nat"]))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[track_caller]
fn ok(cmd: &mut Command) -> String {
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `-A` rules that belong to proxy-init.
fn proxy_init_rules(save: &str) -> Vec<&str> {
    save.lines()
        .filter(|l| l.starts_with("-A ") && l.contains("PROXY_INIT_"))
        .collect()
}

const ARGS: &[&str] = &[
    "proxy-init",
    "--inbound-ports-to-ignore",
    "4190,4191",
    "--outbound-ports-to-ignore",
    "4567",
];

#[test]
fn proxy_init_installs_its_rules_once_and_outbound_tcp_reaches_the_proxy_port() {
    require_root_and_tools();
    let ns = Netns::new("rules").with_network();
    let tandem = tandem_bin().to_str().unwrap();

    let first = ok(&mut ns.exec(tandem, ARGS));
    assert!(first.contains("rules installed"), "{first}");
    let second = ok(&mut ns.exec(tandem, ARGS));
    assert!(second.contains("already installed"), "{second}");

    let save = ns.nat_rules();
    let rules = proxy_init_rules(&save);
    assert_eq!(rules.len(), 8, "each rule once:\n{save}");
    for (chain, jump, comment) in [
        (
            "PREROUTING",
            "PROXY_INIT_REDIRECT",
            "install-proxy-init-prerouting",
        ),
        ("OUTPUT", "PROXY_INIT_OUTPUT", "install-proxy-init-output"),
    ] {
        let jumps: Vec<_> = rules
            .iter()
            .filter(|r| {
                r.starts_with(&format!("-A {chain} ")) && r.ends_with(&format!("-j {jump}"))
            })
            .collect();
        assert_eq!(jumps.len(), 1, "one jump from {chain}:\n{save}");
        assert!(
            jumps[0].contains(&format!("proxy-init/{comment}/")),
            "{save}"
        );
    }
    for comment in [
        "ignore-port",
        "redirect-all-incoming-to-proxy-port",
        "ignore-proxy-user-id",
        "ignore-loopback",
        "redirect-all-outgoing-to-proxy-port",
    ] {
        assert!(
            save.contains(&format!("proxy-init/{comment}/")),
            "no rule with comment proxy-init/{comment}/<ts>:\n{save}"
        );
    }

    // In the namespace: a connection from root (not the proxy's uid) to an
    // outside address lands on 127.0.0.1:4140, and the listener reads the
    // original destination; an ignored port is not redirected.
    let netns = fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
    let seen = std::thread::spawn(move || -> Result<(SocketAddrV4, bool), String> {
        setns(&netns, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
        let listener = TcpListener::bind("127.0.0.1:4140").map_err(|e| format!("bind: {e}"))?;
        let target = SocketAddr::from((Ipv4Addr::new(198, 18, 255, 2), 80));
        let _client = TcpStream::connect_timeout(&target, Duration::from_secs(10))
            .map_err(|e| format!("connecting to {target}: {e}"))?;
        let (accepted, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let dst = getsockopt(&accepted, sockopt::OriginalDst)
            .map_err(|e| format!("SO_ORIGINAL_DST: {e}"))?;
        let original = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(dst.sin_addr.s_addr)),
            u16::from_be(dst.sin_port),
        );
        // 4567 is ignored: the SYN goes out of the veth, where nothing
        // answers, and the proxy's port sees nothing.
        let ignored = SocketAddr::from((Ipv4Addr::new(198, 18, 255, 2), 4567));
        let direct = TcpStream::connect_timeout(&ignored, Duration::from_millis(300));
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let unredirected = direct.is_err()
            && matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock);
        Ok((original, unredirected))
    })
    .join()
    .expect("the namespace thread panicked");
    let (original, unredirected) = seen.unwrap();
    assert_eq!(
        original,
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 255, 2), 80)
    );
    assert!(
        unredirected,
        "a connection to the ignored port 4567 was redirected"
    );
}

/// What Linkerd's proxy-init, which runs its rules one `iptables` command
/// at a time, leaves when it is cut off after `-N PROXY_INIT_OUTPUT`; it
/// would take this for done when restarted (it sees `-A PROXY_INIT_`
/// rules), and the pod's outgoing traffic would bypass the proxy.
#[test]
fn a_part_left_by_a_cut_off_run_is_installed_whole() {
    require_root_and_tools();
    let ns = Netns::new("part");
    for rule in [
        "-N PROXY_INIT_REDIRECT",
        "-A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143",
        "-A PREROUTING -j PROXY_INIT_REDIRECT",
        "-N PROXY_INIT_OUTPUT",
    ] {
        let args: Vec<&str> = ["-t", "nat"]
            .into_iter()
            .chain(rule.split_whitespace())
            .collect();
        ok(&mut ns.exec("iptables-nft", &args));
    }
    let tandem = tandem_bin().to_str().unwrap();
    let out = ok(&mut ns.exec(tandem, ARGS));
    assert!(
        out.contains("only part of the rules is installed")
            && out.contains("PROXY_INIT_OUTPUT's redirect to the outbound port")
            && out.contains("the jump from OUTPUT")
            && !out.contains("the jump from PREROUTING"),
        "{out}"
    );
    assert!(out.contains("rules installed"), "{out}");
    // Whole, and each rule once: the chains were emptied and refilled, and
    // the jump from PREROUTING that was there is not doubled.
    let save = ns.nat_rules();
    let rules = proxy_init_rules(&save);
    assert_eq!(rules.len(), 8, "{save}");
    for jump in ["-j PROXY_INIT_REDIRECT", "-j PROXY_INIT_OUTPUT"] {
        assert_eq!(
            rules.iter().filter(|r| r.ends_with(jump)).count(),
            1,
            "{jump}:\n{save}"
        );
    }
    assert!(
        save.contains("--uid-owner 2102") && save.contains("--to-ports 4140"),
        "{save}"
    );
    let again = ok(&mut ns.exec(tandem, ARGS));
    assert!(again.contains("already installed"), "{again}");
}

/// The `cni.tandem.io/proxy-init` annotation `tandem inject
/// --linkerd-cni-enabled` writes on a pod that skips outbound port 3306.
fn cni_annotation() -> String {
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pod.yaml");
    fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    config.linkerd.io/skip-outbound-ports: \"3306\"\nspec:\n  containers:\n  - name: web\n    image: web:1\n",
    )
    .unwrap();
    let anchors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../inject/tests/golden/ca.crt");
    let out = ok(Command::new(tandem_bin())
        .args(["inject", "--linkerd-cni-enabled", "--trust-anchors-file"])
        .arg(anchors)
        .arg(&pod));
    let pod: serde_json::Value = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(pod["spec"].get("initContainers"), None, "{out}");
    pod["metadata"]["annotations"]["cni.tandem.io/proxy-init"]
        .as_str()
        .unwrap_or_else(|| panic!("no annotation in {out}"))
        .to_string()
}

/// Runs the tandem binary as the CNI plugin `tandem-cni` (its file name)
/// with `command`, the pod's network namespace and this network config.
fn cni(plugin: &Path, command: &str, ns: &Netns, config: &serde_json::Value) -> Output {
    use std::io::Write;
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "0123abcd")
        .env("CNI_NETNS", format!("/run/netns/{}", ns.name))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin.parent().unwrap())
        .env(
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web",
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the plugin starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// CNI mode: the plugin installs the annotated pod's rules (the same 8 as
/// the init container), hands the previous plugin's result on unchanged,
/// leaves a pod without the annotation alone, refuses a malformed one
/// with the error the runtime shows in the pod's events, and CHECK tells
/// a namespace with the rules from one without.
#[test]
fn the_cni_plugin_installs_the_rules_of_an_annotated_pod_only() {
    require_root_and_tools();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("tandem-cni");
    std::os::unix::fs::symlink(tandem_bin(), &plugin).unwrap();
    let annotation = cni_annotation();
    let prev = serde_json::json!({
        "cniVersion": "1.0.0",
        "interfaces": [{ "name": "eth0", "sandbox": "/run/netns/x" }],
        "ips": [{ "address": "198.18.10.5/24", "gateway": "198.18.10.1", "interface": 0 }],
        "routes": [{ "dst": "0.0.0.0/0" }],
    });
    let config = |annotations: serde_json::Value| {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "tandem-east",
            "type": "tandem-cni",
            "capabilities": { "io.kubernetes.cri.pod-annotations": true },
            "runtimeConfig": { "io.kubernetes.cri.pod-annotations": annotations },
            "prevResult": prev,
        })
    };
    let stdout = |o: &Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
    };

    let meshed = Netns::new("cni");
    let injected = config(serde_json::json!({ "cni.tandem.io/proxy-init": annotation }));
    let out = cni(&plugin, "ADD", &meshed, &injected);
    assert!(out.status.success(), "{out:?}");
    let result = stdout(&out);
    assert_eq!(result["ips"], prev["ips"], "{result}");
    assert_eq!(result["interfaces"], prev["interfaces"], "{result}");
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("shop/web") && said.contains("rules installed"),
        "{said}"
    );
    let save = meshed.nat_rules();
    assert_eq!(proxy_init_rules(&save).len(), 8, "{save}");
    assert!(
        save.contains("4567,4568,3306"),
        "the pod's skipped port:\n{save}"
    );
    let host = ok(Command::new("iptables-nft-save").args(["-t", "nat"]));
    assert!(
        !host.contains("PROXY_INIT_"),
        "the rules leaked to the host"
    );
    let check = cni(&plugin, "CHECK", &meshed, &injected);
    assert!(check.status.success(), "{check:?}");

    // Not injected: passed through, no rule. CHECK has nothing to check.
    let plain = Netns::new("cni-plain");
    let other = config(serde_json::json!({ "linkerd.io/inject": "disabled" }));
    let out = cni(&plugin, "ADD", &plain, &other);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out)["ips"], prev["ips"]);
    assert!(proxy_init_rules(&plain.nat_rules()).is_empty());
    assert!(cni(&plugin, "CHECK", &plain, &other).status.success());
    // An annotated pod whose namespace lacks the rules fails CHECK.
    let check = cni(&plugin, "CHECK", &plain, &injected);
    assert!(!check.status.success(), "{check:?}");
    let error = stdout(&check);
    assert!(
        error["msg"]
            .as_str()
            .unwrap()
            .contains("shop/web: the proxy's redirect is not installed"),
        "{error}"
    );

    // Malformed: the ADD fails and says which annotation and why.
    let bad =
        config(serde_json::json!({ "cni.tandem.io/proxy-init": "[\"--proxy-uid\",\"root\"]" }));
    let out = cni(&plugin, "ADD", &plain, &bad);
    assert!(!out.status.success(), "{out:?}");
    let error = stdout(&out);
    assert_eq!(error["code"], 7, "{error}");
    let msg = error["msg"].as_str().unwrap_or_default().to_string()
        + error["details"].as_str().unwrap_or_default();
    assert!(
        msg.contains("shop/web")
            && msg.contains("cni.tandem.io/proxy-init")
            && msg.contains("root"),
        "{error}"
    );
    assert!(proxy_init_rules(&plain.nat_rules()).is_empty());

    // VERSION, as a runtime asks before anything else.
    let out = cni(&plugin, "VERSION", &plain, &injected);
    assert!(out.status.success(), "{out:?}");
    let versions = stdout(&out)["supportedVersions"].to_string();
    assert!(versions.contains("1.0.0"), "{versions}");
}

/// Writes the image's files, links and directories under `root`, as a
/// container runtime would unpack its layer.
fn unpack(spec: &ImageSpec, root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for d in &spec.directories {
        let path = root.join(d.path.trim_start_matches('/'));
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(d.mode)).unwrap();
    }
    for f in &spec.files {
        let path = root.join(f.path.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        match &f.source {
            Source::Host(host) => {
                fs::copy(host, &path).unwrap_or_else(|e| panic!("{}: {e}", host.display()));
            }
            Source::Bytes(bytes) => fs::write(&path, bytes).unwrap(),
            Source::Symlink(target) => {
                std::os::unix::fs::symlink(target, &path).unwrap();
                continue;
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(f.mode)).unwrap();
    }
}

#[test]
fn the_tandem_images_own_iptables_installs_the_rules() {
    require_root_and_tools();
    let ns = Netns::new("image");
    let spec = images::tandem(tandem_bin(), "0.0.0-test").unwrap();
    let root = tempfile::tempdir().unwrap();
    unpack(&spec, root.path());
    // What the container runtime provides besides the image: /dev/null
    // (std's Command opens it for a child's stdin).
    let dev = root.path().join("dev");
    fs::create_dir(&dev).unwrap();
    ok(Command::new("mknod")
        .arg(dev.join("null"))
        .args(["-m", "666", "c", "1", "3"]));
    let root_dir = root.path().to_str().unwrap();
    let in_image = |program: &str, args: &[&str]| {
        let mut cmd = ns.exec("chroot", &[root_dir, program]);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        cmd
    };
    let out = ok(&mut in_image("/tandem", ARGS));
    assert!(out.contains("rules installed"), "{out}");
    let save = ok(&mut in_image("/usr/sbin/iptables-save", &["-t", "nat"]));
    assert_eq!(proxy_init_rules(&save).len(), 8, "{save}");
    assert!(
        save.contains("--uid-owner 2102") && save.contains("--to-ports 4140"),
        "{save}"
    );
    // The host's iptables reads the same rules: they are real nf_tables rules.
    assert_eq!(proxy_init_rules(&ns.nat_rules()).len(), 8);
}

#[test]
fn on_a_real_node_the_injected_init_container_installs_the_rules() {
    let env = Env::real(tandem_bin());
    let ns = env.namespace("proxy-init", &["east"]);
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pod.yaml");
    // The proxy goes last without the await hook, so that the application
    // starts whatever the proxy does: this test is about the init container.
    fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: meshed\n  annotations: {config.linkerd.io/proxy-await: disabled}\nspec:\n  containers:\n  - {name: app, image: \"ghcr.io/tandem-io/toolbox:latest\", command: [sleep, \"3600\"]}\n",
    )
    .unwrap();
    let anchors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../inject/tests/golden/ca.crt");
    let injected = ok(Command::new(tandem_bin())
        .arg("inject")
        .arg(&pod)
        .arg("--trust-anchors-file")
        .arg(&anchors));
    ns.apply("east", &injected);

    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let state = loop {
        let state = ns.kubectl(
            "east",
            &[
                "get",
                "pod",
                "meshed",
                "-o",
                "jsonpath={.status.initContainerStatuses[0].state.terminated.exitCode}",
            ],
        );
        if !state.is_empty() || std::time::Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let logs = ns.kubectl("east", &["logs", "meshed", "-c", "tandem-init"]);
    assert_eq!(state, "0", "tandem-init did not complete:\n{logs}");
    assert!(logs.contains("rules installed"), "{logs}");
    assert_eq!(proxy_init_rules(&logs).len(), 8, "{logs}");
    assert!(logs.contains("--uid-owner 2102"), "{logs}");
}

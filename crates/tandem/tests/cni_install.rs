//! `tandem cni-install` as the tandem-cni DaemonSet runs it, against
//! temporary dirs in place of the node's: the plugin and its entry go in,
//! come back when the cluster's network rewrites its config, and go out on
//! SIGTERM. And `tandem install-cni`, which prints that DaemonSet.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

/// A bridge and portmap list, as the node's network writes it.
const BRIDGE: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "east",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "198.18.4.0/24" }]]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
"#;

const WAIT: Duration = Duration::from_secs(20);

fn tandem() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
    for var in [
        "TANDEM_LOG",
        "TANDEM_IMAGE",
        "TANDEM_REGISTRY",
        "TANDEM_TAG",
        "TANDEM_CNI_BIN_DIR",
        "TANDEM_CNI_NET_DIR",
    ] {
        c.env_remove(var);
    }
    c
}

/// A node's two CNI dirs.
struct Node {
    _tmp: tempfile::TempDir,
    bin: PathBuf,
    net: PathBuf,
    log: PathBuf,
}

impl Node {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (bin, net) = (tmp.path().join("bin"), tmp.path().join("net.d"));
        fs::create_dir(&bin).unwrap();
        fs::create_dir(&net).unwrap();
        let log = tmp.path().join("cni-install.log");
        Node {
            _tmp: tmp,
            bin,
            net,
            log,
        }
    }

    fn dirs(&self) -> [&str; 4] {
        [
            "--bin-dir",
            self.bin.to_str().unwrap(),
            "--net-dir",
            self.net.to_str().unwrap(),
        ]
    }

    /// `tandem cni-install`, logging at info into [`Node::log`].
    fn start(&self) -> Installer {
        let log = fs::File::create(&self.log).unwrap();
        let child = tandem()
            .args(["--log", "info", "cni-install", "--interval", "200ms"])
            .args(self.dirs())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("running tandem cni-install");
        Installer { child: Some(child) }
    }

    fn check(&self) -> Output {
        tandem()
            .args(["cni-install", "--check"])
            .args(self.dirs())
            .output()
            .expect("running tandem cni-install --check")
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `done` until it holds, or fails with the installer's log.
    #[track_caller]
    fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < WAIT,
                "{what}: not after {WAIT:?}; the installer's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn config(&self, name: &str) -> Value {
        let text = fs::read_to_string(self.net.join(name)).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

/// The running installer; killed if a test fails before it stops it.
struct Installer {
    child: Option<Child>,
}

impl Installer {
    /// SIGTERM, as the kubelet sends, and its exit status.
    fn terminate(&mut self, node: &Node) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        let mut status = None;
        node.wait_for("the installer exits on SIGTERM", || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        self.child = None;
        status.unwrap()
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn types(config: &Value) -> Vec<&str> {
    config["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect()
}

fn has_entry(config: &Value) -> bool {
    types(config).contains(&"tandem-cni")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_plugin_goes_in_stays_in_and_goes_out_on_sigterm() {
    let node = Node::new();
    fs::write(node.net.join("10-east.conflist"), BRIDGE).unwrap();
    // Not the config containerd uses: left alone.
    let later = r#"{"name":"later","plugins":[{"type":"loopback"}]}"#;
    fs::write(node.net.join("99-later.conflist"), later).unwrap();
    let before = node.check();
    assert_eq!(before.status.code(), Some(1));
    let mut installer = node.start();

    node.wait_for("--check passes", || node.check().status.success());
    let config = node.config("10-east.conflist");
    assert_eq!(types(&config), ["bridge", "portmap", "tandem-cni"]);
    assert_eq!(
        config["plugins"][2],
        serde_json::json!({
            "type": "tandem-cni",
            "capabilities": { "io.kubernetes.cri.pod-annotations": true },
        })
    );
    let mut unpatched = config.clone();
    unpatched["plugins"].as_array_mut().unwrap().pop();
    assert_eq!(
        unpatched,
        serde_json::from_str::<Value>(BRIDGE).unwrap(),
        "everything else kept"
    );
    let text = fs::read_to_string(node.net.join("10-east.conflist")).unwrap();
    assert!(
        text.starts_with("{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"east\",\n  \"plugins\""),
        "keys in their order: {text}"
    );
    let plugin = node.bin.join("tandem-cni");
    assert_eq!(
        fs::read(&plugin).unwrap(),
        fs::read(env!("CARGO_BIN_EXE_tandem")).unwrap(),
        "the plugin is this tandem"
    );
    assert_eq!(
        fs::metadata(&plugin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::read_to_string(node.net.join("99-later.conflist")).unwrap(),
        later
    );

    // The network's installer writes its config again, without our entry.
    fs::write(node.net.join("10-east.conflist"), BRIDGE).unwrap();
    node.wait_for("the entry is back", || {
        has_entry(&node.config("10-east.conflist"))
    });
    assert!(node.check().status.success());
    let log = node.log();
    assert_eq!(
        log.matches("installed the plugin").count(),
        1,
        "copied once: {log}"
    );
    assert_eq!(
        log.matches("added the plugin to the CNI config").count(),
        2,
        "{log}"
    );

    let status = installer.terminate(&node);
    assert!(status.success(), "{status}; log:\n{}", node.log());
    assert_eq!(
        node.config("10-east.conflist"),
        serde_json::from_str::<Value>(BRIDGE).unwrap()
    );
    assert!(!plugin.exists(), "the plugin is removed");
    assert!(node.log().contains("removed"), "{}", node.log());
    assert_eq!(Node::names(&node.bin), Vec::<String>::new());
    assert_eq!(
        Node::names(&node.net),
        ["10-east.conflist", "99-later.conflist"],
        "no temporary file left"
    );

    let after = node.check();
    assert_eq!(after.status.code(), Some(1));
    let err = stderr(&after);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no plugin at") && err.contains("no tandem-cni entry in"),
        "{err}"
    );
}

#[test]
fn a_single_plugin_conf_becomes_a_conflist_once_it_appears() {
    let node = Node::new();
    let mut installer = node.start();
    node.wait_for("it waits for the config", || {
        node.log().contains("waiting for the cluster's CNI config")
    });
    let out = node.check();
    assert!(
        stderr(&out).contains(&format!("no CNI config in {}", node.net.display())),
        "{}",
        stderr(&out)
    );
    // A few passes: it said so once.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        node.log()
            .matches("waiting for the cluster's CNI config")
            .count(),
        1,
        "{}",
        node.log()
    );

    let conf = r#"{"cniVersion":"0.4.0","name":"west","type":"bridge","bridge":"cni0"}"#;
    fs::write(node.net.join("10-west.conf"), conf).unwrap();
    node.wait_for("--check passes", || node.check().status.success());
    assert_eq!(Node::names(&node.net), ["10-west.conflist"]);
    let config = node.config("10-west.conflist");
    assert_eq!(config["cniVersion"], "0.4.0");
    assert_eq!(config["name"], "west");
    assert_eq!(types(&config), ["bridge", "tandem-cni"]);
    assert_eq!(
        config["plugins"][0],
        serde_json::from_str::<Value>(conf).unwrap()
    );

    let status = installer.terminate(&node);
    assert!(status.success(), "{status}; log:\n{}", node.log());
    assert_eq!(types(&node.config("10-west.conflist")), ["bridge"]);
    assert!(!node.bin.join("tandem-cni").exists());
}

#[test]
fn a_broken_config_is_named_and_the_installer_keeps_going() {
    let node = Node::new();
    fs::write(node.net.join("10-east.conflist"), "{ not json").unwrap();
    let mut installer = node.start();
    node.wait_for("the error is logged", || {
        node.log().contains("not valid JSON")
    });
    let out = node.check();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.contains("10-east.conflist: not valid JSON"),
        "{err}"
    );
    // Fixed by the network: patched at the next pass.
    fs::write(node.net.join("10-east.conflist"), BRIDGE).unwrap();
    node.wait_for("--check passes", || node.check().status.success());
    assert!(installer.terminate(&node).success(), "{}", node.log());
}

#[test]
fn a_zero_interval_is_refused() {
    let node = Node::new();
    let out = tandem()
        .args(["cni-install", "--interval", "0s"])
        .args(node.dirs())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&out).contains("longer than zero"),
        "{}",
        stderr(&out)
    );
    assert_eq!(Node::names(&node.bin), Vec::<String>::new());
}

/// The objects of a YAML stream.
fn objects(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("YAML parses");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

#[test]
fn install_cni_prints_the_daemonset_with_the_nodes_dirs() {
    let out = tandem()
        .args([
            "install-cni",
            "--dest-cni-bin-dir",
            "/var/lib/cni/bin",
            "--dest-cni-net-dir",
            "/var/lib/cni/net.d",
            "--image",
            "registry.local/tandem:dev",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let objs = objects(&String::from_utf8(out.stdout).unwrap());
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "ServiceAccount", "DaemonSet"]);
    let pod = &objs[2]["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], "registry.local/tandem:dev");
    assert_eq!(pod["volumes"][0]["hostPath"]["path"], "/var/lib/cni/bin");
    assert_eq!(pod["volumes"][1]["hostPath"]["path"], "/var/lib/cni/net.d");

    // With its defaults, it prints the committed manifest.
    let out = tandem().arg("install-cni").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let committed = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/tandem-cni.yaml"),
    )
    .unwrap();
    let body: String = committed
        .split_inclusive('\n')
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), body);

    let out = tandem()
        .args(["install-cni", "--dest-cni-net-dir", "etc/cni"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("\"etc/cni\" is not an absolute path"),
        "{}",
        stderr(&out)
    );
}

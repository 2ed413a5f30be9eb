//! Real nodes from start to teardown: what `down` removes, what a crash
//! leaves and `up` refuses, images that are loaded (or not), and the
//! error without root.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tandem_harness::{Env, eventually, run, run_ok};
use tandem_testbed::{Testbed, node};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

fn tandem(args: &[&str], dir: &Path) -> std::process::Output {
    run(Command::new(tandem_bin()).args(args).arg("--dir").arg(dir))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Everything of the host that mentions a testbed's nodes.
fn host_traces(tb: &Testbed) -> Vec<String> {
    let mut out = node::leftovers(&tb.config);
    for pid in tandem_testbed::leftover_processes(&tb.config.dir) {
        out.push(format!("process {pid}"));
    }
    for l in tb.config.layouts() {
        let run_dir = l.run_dir().display().to_string();
        for pid in tandem_testbed::process::processes_mentioning(&run_dir) {
            out.push(format!("process {pid} (names {run_dir})"));
        }
    }
    let netns = run_ok(Command::new("ip").args(["netns", "list"]));
    for l in tb.config.layouts() {
        if netns.contains(&l.netns()) {
            out.push(format!("`ip netns` lists {}", l.netns()));
        }
    }
    let links = run_ok(Command::new("ip").args(["-o", "link"]));
    for name in tb
        .config
        .layouts()
        .iter()
        .map(|l| l.veth())
        .chain([tb.config.bridge()])
    {
        if links.contains(&format!(" {name}:")) || links.contains(&format!(" {name}@")) {
            out.push(format!("`ip link` lists {name}"));
        }
    }
    // kube-proxy's and the CNI plugins' rules live in the node's namespace:
    // none may be in the host's.
    let rules = run_ok(Command::new("nft").args(["list", "ruleset"]));
    for chain in ["KUBE-SERVICES", "CNI-"] {
        if rules.contains(chain) {
            out.push(format!("the host's ruleset has {chain}"));
        }
    }
    out
}

fn canary_pod(dir: &Path) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: canary
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: toolbox
    image: ghcr.io/tandem-io/toolbox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: host, mountPath: /host}}
  volumes:
  - name: host
    hostPath: {{path: {dir}, type: Directory}}
"#,
        dir = dir.display()
    )
}

#[tokio::test]
async fn a_crash_is_refused_by_up_and_down_removes_everything_but_host_paths() {
    // The binaries are built once, by the shared real testbed.
    Env::real(tandem_bin());
    let dir = tempfile::Builder::new()
        .prefix("tandem-lifecycle-")
        .tempdir()
        .unwrap();
    let tbdir = dir.path().join("tb");
    let canary_dir = dir.path().join("canary");
    std::fs::create_dir_all(&canary_dir).unwrap();
    std::fs::write(canary_dir.join("keep-me"), "canary").unwrap();

    let up = || {
        tandem(
            &[
                "testbed",
                "up",
                "--nodes",
                "real",
                "--clusters",
                "solo",
                "--base-port",
                "17440",
            ],
            &tbdir,
        )
    };
    let out = up();
    assert!(out.status.success(), "up: {}", stderr(&out));
    let tb = Testbed::open(&tbdir).unwrap();
    let kubectl = || {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", tb.kubeconfig_path())
            .args(["--context", "solo"]);
        c
    };
    let mut apply = kubectl()
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(canary_pod(&canary_dir).as_bytes())
        .unwrap();
    assert!(apply.wait().unwrap().success());
    run_ok(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "pod/canary",
        "--timeout=90s",
    ]));
    let seen = run_ok(kubectl().args(["exec", "canary", "--", "cat", "/host/keep-me"]));
    assert_eq!(seen, "canary", "the pod sees the host path");

    // A crash: every process of the testbed dies at once.
    for pid in tandem_testbed::leftover_processes(&tbdir) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    eventually(
        "the testbed's processes to die",
        Duration::from_secs(10),
        || async {
            let left = tandem_testbed::leftover_processes(&tbdir);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    let again = up();
    assert!(
        !again.status.success(),
        "up over a crashed testbed must refuse"
    );
    let err = stderr(&again);
    assert!(err.contains("tandem testbed down"), "{err}");

    let down = tandem(&["testbed", "down", "--purge"], &tbdir);
    assert!(down.status.success(), "down: {}", stderr(&down));
    assert_eq!(host_traces(&tb), Vec::<String>::new(), "left on the host");
    assert!(!tbdir.exists(), "--purge removes the directory");
    assert_eq!(
        std::fs::read_to_string(canary_dir.join("keep-me")).unwrap(),
        "canary",
        "a hostPath outside the testbed survives down --purge"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "0"
    );
}

#[test]
fn without_root_up_explains_and_points_to_fake_nodes() {
    use std::os::unix::fs::PermissionsExt;
    // A user's installation: tandem and its testbed tool in a directory
    // anyone may read (the build's is under root's home).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["tandem", "tandem-testbed"] {
        let from = tandem_bin().with_file_name(name);
        std::fs::copy(&from, dir.path().join(name)).unwrap();
    }
    // nobody may not write the temporary directory; the check comes first.
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(dir.path().join("tandem"))
        .args(["testbed", "up", "--nodes", "real", "--dir"])
        .arg(dir.path().join("tb")));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("root") && err.contains("--nodes fake"),
        "{err}"
    );
    assert!(!dir.path().join("tb").exists(), "nothing was created");
}

#[test]
fn a_missing_tool_is_named_with_its_package() {
    let dir = tempfile::tempdir().unwrap();
    let empty_path = tempfile::tempdir().unwrap();
    let out = run(Command::new(tandem_bin())
        .args(["testbed", "up", "--nodes", "real", "--dir"])
        .arg(dir.path().join("tb"))
        .env("PATH", empty_path.path()));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("nsenter (apt-get install util-linux)") && err.contains("--nodes fake"),
        "{err}"
    );
    assert!(!dir.path().join("tb").exists(), "nothing was created");
}

fn ns_kubectl(env: &Env, ns: &str, args: &[&str]) -> String {
    run_ok(env.kubectl("east").args(["-n", ns]).args(args))
}

#[tokio::test]
async fn an_image_that_is_not_loaded_gets_an_event_naming_the_load_command() {
    let env = Env::real(tandem_bin());
    let ns = env.namespace("nodes-image", &["east"]);
    ns.apply(
        "east",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: missing
spec:
  containers:
  - name: app
    image: example.com/not-loaded:1.0
    imagePullPolicy: Never
"#,
    );
    let message = eventually(
        "an ImageNotLoaded event",
        Duration::from_secs(60),
        || async {
            let out = ns_kubectl(
                &env,
                &ns.name,
                &[
                    "get",
                    "events",
                    "--field-selector",
                    "reason=ImageNotLoaded,involvedObject.name=missing",
                    "-o",
                    "jsonpath={.items[*].message}",
                ],
            );
            if out.is_empty() {
                Err("none yet".to_string())
            } else {
                Ok(out)
            }
        },
    )
    .await;
    assert!(
        message.contains("example.com/not-loaded:1.0") && message.contains("tandem testbed load"),
        "{message}"
    );
}

#[tokio::test]
async fn a_binary_loaded_as_an_image_runs_in_a_pod() {
    let env = Env::real(tandem_bin());
    let reference = "example.com/tandem-test/busybox:1.0";
    let out = run(Command::new(tandem_bin())
        .args([
            "testbed",
            "load",
            "--binary",
            "/bin/busybox",
            "--as",
            reference,
            "--dir",
        ])
        .arg(&env.dir));
    assert!(out.status.success(), "load: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(reference));
    let ns = env.namespace("nodes-load", &["east", "west"]);
    for c in ["east", "west"] {
        ns.apply(
            c,
            &format!(
                r#"
apiVersion: v1
kind: Pod
metadata:
  name: loaded
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: {reference}
    imagePullPolicy: Never
    args: ["echo", "hello from a loaded binary"]
"#
            ),
        );
    }
    for c in ["east", "west"] {
        let phase = eventually("the pod to succeed", Duration::from_secs(60), || async {
            let p = ns.kubectl(
                c,
                &["get", "pod", "loaded", "-o", "jsonpath={.status.phase}"],
            );
            if p == "Succeeded" || p == "Failed" {
                Ok(p)
            } else {
                Err(p)
            }
        })
        .await;
        assert_eq!(phase, "Succeeded", "{c}");
        assert_eq!(
            ns.kubectl(c, &["logs", "loaded"]).trim(),
            "hello from a loaded binary"
        );
    }
    // Not a testbed directory: a clear error.
    let bad = run(Command::new(tandem_bin())
        .args(["testbed", "load", "/nonexistent.tar", "--dir"])
        .arg(PathBuf::from("/nonexistent-testbed")));
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("tandem testbed up"),
        "{}",
        stderr(&bad)
    );
}

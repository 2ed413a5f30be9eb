//! The shared testbeds of a test run: started once through the real
//! `tandem testbed up`, or reused; a test that cannot have one fails.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use kube::Client;
use tandem_testbed::Testbed;

use crate::{TestNamespace, kubectl::kubectl_apply, run, run_ok};

/// The clusters every shared-testbed test can use.
pub const CLUSTERS: &[&str] = &["east", "west"];

/// Ports of the test testbed: apart from a user's default testbed (26440).
pub const TEST_BASE_PORT: u16 = 27440;

/// Ports of the test testbed with real nodes.
pub const REAL_TEST_BASE_PORT: u16 = 18440;

/// The test testbed's directory: `TANDEM_TEST_TESTBED_DIR`, else under the cache.
pub fn test_dir() -> PathBuf {
    std::env::var_os("TANDEM_TEST_TESTBED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tandem_testbed::toolchain::cache_root().join("test-testbed"))
}

/// The directory of the test testbed with real nodes:
/// `TANDEM_TEST_REAL_TESTBED_DIR`, else under the cache.
pub fn real_test_dir() -> PathBuf {
    std::env::var_os("TANDEM_TEST_REAL_TESTBED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tandem_testbed::toolchain::cache_root().join("test-testbed-real"))
}

/// A shared testbed's base port: `var` when set (so that two checkouts can
/// run their tests at once, each on its own testbed), else `default`.
fn base_port(var: &str, default: u16) -> u16 {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a port number")),
        Err(_) => default,
    }
}

/// Which shared testbed.
#[derive(Clone, Copy, Debug)]
struct Shared {
    nodes: &'static str,
    base_port: u16,
}

const FAKE: Shared = Shared {
    nodes: "fake",
    base_port: TEST_BASE_PORT,
};

const REAL: Shared = Shared {
    nodes: "real",
    base_port: REAL_TEST_BASE_PORT,
};

/// The shared testbed of this test run.
#[derive(Clone, Debug)]
pub struct Env {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub tandem: PathBuf,
}

static SHARED: OnceLock<Result<Env, String>> = OnceLock::new();
static SHARED_REAL: OnceLock<Result<Env, String>> = OnceLock::new();

impl Env {
    /// Starts (or reuses) the shared testbed of fake nodes with the given
    /// `tandem` binary. Panics with the reason when it cannot: a test must
    /// not pass without it.
    pub fn shared(tandem: &Path) -> Env {
        let which = Shared {
            base_port: base_port("TANDEM_TEST_BASE_PORT", FAKE.base_port),
            ..FAKE
        };
        Self::get(&SHARED, tandem, which, test_dir())
    }

    /// Starts (or reuses) the shared testbed of real nodes, where pods run.
    /// It needs root and the node prerequisites; without them the test
    /// fails and says what is missing.
    pub fn real(tandem: &Path) -> Env {
        let which = Shared {
            base_port: base_port("TANDEM_TEST_REAL_BASE_PORT", REAL.base_port),
            ..REAL
        };
        Self::get(&SHARED_REAL, tandem, which, real_test_dir())
    }

    fn get(
        cell: &OnceLock<Result<Env, String>>,
        tandem: &Path,
        which: Shared,
        dir: PathBuf,
    ) -> Env {
        let res = cell
            .get_or_init(|| start_shared(tandem, which, dir.clone()).map_err(|e| format!("{e:#}")));
        match res {
            Ok(env) => env.clone(),
            Err(e) => panic!(
                "the test testbed could not be started, so this test cannot run:\n{e}\n\
                 (run `tandem testbed up --nodes {} --dir {} --base-port {}` to see it start)",
                which.nodes,
                dir.display(),
                which.base_port
            ),
        }
    }

    /// A kube-rs client for a cluster, built from the kubeconfig as a user's would be.
    pub async fn client(&self, cluster: &str) -> Client {
        let tb = Testbed::open(&self.dir).expect("the shared testbed is recorded");
        tb.client(cluster)
            .await
            .unwrap_or_else(|e| panic!("client for {cluster}: {e}"))
    }

    /// `kubectl --context CLUSTER ...` with this testbed's kubeconfig.
    pub fn kubectl(&self, cluster: &str) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .arg("--context")
            .arg(cluster);
        cmd
    }

    /// `tandem ...` with this testbed's kubeconfig.
    pub fn tandem(&self) -> Command {
        let mut cmd = Command::new(&self.tandem);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// `tandem testbed VERB COMPONENT --cluster CLUSTER` on this testbed
    /// (`stop` or `start` one of its processes, such as `kube-apiserver`);
    /// fails the test if it fails.
    pub fn testbed_process(&self, verb: &str, component: &str, cluster: &str) {
        crate::run_ok(
            self.tandem()
                .args(["testbed", verb, component, "--cluster", cluster, "--dir"])
                .arg(&self.dir),
        );
    }

    /// `kubectl apply -f -` of a manifest that names its own namespaces.
    pub fn apply(&self, cluster: &str, manifest: &str) {
        kubectl_apply(self.kubectl(cluster), manifest, cluster);
    }

    /// `tandem ARGS | kubectl --context CLUSTER apply -f -`, as a user types it.
    pub fn apply_tandem(&self, cluster: &str, args: &[&str]) {
        let manifest = run_ok(self.tandem().args(args));
        self.apply(cluster, &manifest);
    }

    /// Prints each node's Ready condition (its status, reason, message and
    /// last heartbeat) and the testbed's component health, for a failed
    /// test's output: a node whose kubelet stopped shows as Unknown there.
    pub fn dump_nodes(&self, cluster: &str) {
        let nodes = run(self.kubectl(cluster).args([
            "get",
            "nodes",
            "-o",
            "custom-columns=NAME:.metadata.name,\
             READY:.status.conditions[?(@.type==\"Ready\")].status,\
             REASON:.status.conditions[?(@.type==\"Ready\")].reason,\
             HEARTBEAT:.status.conditions[?(@.type==\"Ready\")].lastHeartbeatTime,\
             MESSAGE:.status.conditions[?(@.type==\"Ready\")].message",
        ]));
        let status = run(Command::new(&self.tandem)
            .args(["testbed", "status", "--cluster", cluster, "--dir"])
            .arg(&self.dir));
        eprintln!(
            "===== {cluster}: nodes =====\n{}{}===== {cluster}: tandem testbed status =====\n{}{}",
            String::from_utf8_lossy(&nodes.stdout),
            String::from_utf8_lossy(&nodes.stderr),
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr),
        );
    }

    /// A fresh namespace, created in each of `clusters`.
    pub fn namespace(&self, prefix: &str, clusters: &[&str]) -> TestNamespace {
        let suffix = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                % 0xffffff
        );
        let name = format!("{}-{suffix}", prefix.to_lowercase().replace('_', "-"));
        for c in clusters {
            let out = run(self.kubectl(c).args(["create", "namespace", &name]));
            assert!(
                out.status.success(),
                "creating namespace {name} in {c}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        TestNamespace {
            name,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            env: self.clone(),
        }
    }
}

fn start_shared(tandem: &Path, which: Shared, dir: PathBuf) -> Result<Env> {
    if !tandem.is_file() {
        bail!("the tandem binary {} does not exist", tandem.display());
    }
    let up = |dir: &Path| {
        let mut cmd = Command::new(tandem);
        cmd.args(["testbed", "up", "--nodes", which.nodes])
            .args(["--clusters", &CLUSTERS.join(",")])
            .arg("--dir")
            .arg(dir)
            .arg("--base-port")
            .arg(which.base_port.to_string())
            // Progress (a first build takes minutes) goes to the terminal.
            .stderr(std::process::Stdio::inherit());
        cmd.output()
            .with_context(|| format!("running {}", tandem.display()))
    };
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let out = up(&dir)?;
        if out.status.success() {
            break;
        }
        // stderr went to the terminal; ask again for the reason.
        let status = Command::new(tandem)
            .args(["testbed", "status", "--dir"])
            .arg(&dir)
            .output()?;
        let why = String::from_utf8_lossy(&status.stderr).into_owned();
        if Instant::now() > deadline {
            bail!("`tandem testbed up` failed: {why}");
        }
        // Another test binary is starting it: wait for that.
        if lock_held(&dir) {
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        // A testbed left unhealthy or stale by an earlier run: clear it once.
        eprintln!("test testbed in {} is stale; restarting it", dir.display());
        let down = Command::new(tandem)
            .args(["testbed", "down", "--dir"])
            .arg(&dir)
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !down.status.success() {
            bail!("`tandem testbed down` failed on a stale test testbed");
        }
        let out = up(&dir)?;
        if !out.status.success() {
            bail!(
                "`tandem testbed up` failed twice (its error is printed above); logs are under {}",
                dir.display()
            );
        }
        break;
    }
    Ok(Env {
        kubeconfig: dir.join("kubeconfig"),
        dir,
        tandem: tandem.to_path_buf(),
    })
}

fn lock_held(dir: &Path) -> bool {
    std::fs::File::open(dir.join(".lock"))
        .map(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
        .unwrap_or(false)
}

impl Env {
    /// A namespace with a fixed name (a manifest names it), created fresh:
    /// a leftover of an earlier run is deleted first.
    pub fn fixed_namespace(&self, name: &str, clusters: &[&str]) -> TestNamespace {
        for c in clusters {
            let _ = run(self.kubectl(c).args([
                "delete",
                "namespace",
                name,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=60s",
            ]));
            let out = run(self.kubectl(c).args(["create", "namespace", name]));
            assert!(
                out.status.success(),
                "creating namespace {name} in {c}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        TestNamespace {
            name: name.to_string(),
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            env: self.clone(),
        }
    }

    /// Writes to `path` a kubeconfig of context `cluster` that acts as the
    /// ServiceAccount `namespace/account` (with a token of an hour): what a
    /// user or a component with only that account's rights would use.
    pub fn service_account_kubeconfig(
        &self,
        cluster: &str,
        namespace: &str,
        account: &str,
        path: &Path,
    ) {
        let token = run_ok(self.kubectl(cluster).args([
            "-n",
            namespace,
            "create",
            "token",
            account,
            "--duration=1h",
        ]));
        let server = run_ok(self.kubectl(cluster).args([
            "config",
            "view",
            "--minify",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.server} {.clusters[0].cluster.certificate-authority-data}",
        ]));
        let (server, ca) = server.split_once(' ').expect("server and CA");
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": account, "user": {"token": token.trim()}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": account}}],
            "current-context": cluster,
        });
        std::fs::write(path, config.to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

//! The integration-test harness.
//!
//! - [`Env::shared`] starts the test testbed once per test run, through the
//!   real `tandem testbed up`, or reuses the one that is running.
//! - [`Env::namespace`] gives each test its own namespace in the clusters it
//!   names; on failure its objects are dumped, and it is always deleted.
//! - If the testbed cannot start, the test fails and says why: nothing is
//!   skipped.
//! - [`failover`] holds the fixtures of the failover controller's tests.

#![forbid(unsafe_code)]

pub mod failover;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use kube::Client;
use tandem_testbed::Testbed;

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

    /// `kubectl apply -f -` of a manifest that names its own namespaces.
    pub fn apply(&self, cluster: &str, manifest: &str) {
        kubectl_apply(self.kubectl(cluster), manifest, cluster);
    }

    /// `tandem ARGS | kubectl --context CLUSTER apply -f -`, as a user types it.
    pub fn apply_tandem(&self, cluster: &str, args: &[&str]) {
        let manifest = run_ok(self.tandem().args(args));
        self.apply(cluster, &manifest);
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

/// The workshop's certificates, made in `dir` with its own commands (with
/// `tandem` for `step`): the trust anchor `root.crt`/`root.key` and, for
/// each cluster, the issuer `<cluster>-issuer.crt`/`.key`.
pub fn workshop_certificates(tandem: &Path, dir: &Path, clusters: &[&str]) {
    run_ok(Command::new(tandem).current_dir(dir).args([
        "certificate",
        "create",
        "root.linkerd.cluster.local",
        "root.crt",
        "root.key",
        "--profile",
        "root-ca",
        "--no-password",
        "--insecure",
    ]));
    for c in clusters {
        run_ok(Command::new(tandem).current_dir(dir).args([
            "certificate",
            "create",
            "identity.linkerd.cluster.local",
            &format!("{c}-issuer.crt"),
            &format!("{c}-issuer.key"),
            "--profile",
            "intermediate-ca",
            "--ca",
            "root.crt",
            "--ca-key",
            "root.key",
            "--not-after",
            "8760h",
            "--no-password",
            "--insecure",
        ]));
    }
}

/// Runs a command, panicking only if it cannot be started at all.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl ... apply -f -` with `manifest` on stdin; must succeed.
fn kubectl_apply(mut cmd: Command, manifest: &str, what: &str) {
    use std::io::Write;
    let mut child = cmd
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("manifest written");
    let out = child.wait_with_output().expect("kubectl finishes");
    assert!(
        out.status.success(),
        "kubectl apply in {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace of one test, in one or more clusters.
pub struct TestNamespace {
    pub name: String,
    pub clusters: Vec<String>,
    env: Env,
}

impl TestNamespace {
    /// `kubectl apply -f -` of a manifest into this namespace.
    pub fn apply(&self, cluster: &str, manifest: &str) {
        let mut cmd = self.env.kubectl(cluster);
        cmd.args(["-n", &self.name]);
        kubectl_apply(cmd, manifest, &format!("{cluster}/{}", self.name));
    }

    /// `kubectl -n NS ...` in one cluster; must succeed.
    pub fn kubectl(&self, cluster: &str, args: &[&str]) -> String {
        run_ok(
            self.env
                .kubectl(cluster)
                .arg("-n")
                .arg(&self.name)
                .args(args),
        )
    }

    fn dump(&self) {
        for c in &self.clusters {
            let out = run(self.env.kubectl(c).args([
                "get",
                "all,endpointslices,events,configmaps,serviceaccounts",
                "-n",
                &self.name,
                "-o",
                "yaml",
            ]));
            eprintln!(
                "===== objects of namespace {} in cluster {c} =====\n{}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        for c in &self.clusters {
            let _ = run(self.env.kubectl(c).args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ]));
        }
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with the
/// last state seen. This is a deadline for an expected outcome, not a measure
/// of speed (benchmarks measure speed).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(state) => last = state,
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: not reached within {}s; last seen: {last}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A testbed of one test's own, for tests that change cluster-wide state
/// (CRDs) or stop components. Stopped and removed when dropped.
pub struct PrivateTestbed {
    pub env: Env,
    _dir: tempfile::TempDir,
}

impl PrivateTestbed {
    /// Starts `clusters` on ports from `base_port` (keep it below 32768 and
    /// apart from other tests'). Panics with the reason if it cannot start.
    pub fn start(tandem: &Path, clusters: &[&str], base_port: u16) -> Self {
        // The binaries are built once, by the shared testbed's first start.
        Env::shared(tandem);
        let dir = tempfile::Builder::new()
            .prefix("tandem-private-testbed-")
            .tempdir()
            .expect("a temporary directory");
        let out = run(Command::new(tandem)
            .args([
                "testbed",
                "up",
                "--nodes",
                "fake",
                "--clusters",
                &clusters.join(","),
            ])
            .arg("--base-port")
            .arg(base_port.to_string())
            .arg("--dir")
            .arg(dir.path()));
        assert!(
            out.status.success(),
            "a private testbed ({}) could not start:\n{}",
            clusters.join(","),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            env: Env {
                kubeconfig: dir.path().join("kubeconfig"),
                dir: dir.path().to_path_buf(),
                tandem: tandem.to_path_buf(),
            },
            _dir: dir,
        }
    }
}

impl Drop for PrivateTestbed {
    fn drop(&mut self) {
        let out = run(Command::new(&self.env.tandem)
            .args(["testbed", "down", "--purge", "--dir"])
            .arg(&self.env.dir));
        if !out.status.success() {
            eprintln!(
                "stopping the private testbed in {} failed:\n{}",
                self.env.dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A free port on 127.0.0.1 (for admin servers of processes under test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A plain HTTP/1.1 GET on loopback: (status, body), or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_addr(&format!("127.0.0.1:{port}"), path)
}

/// A plain HTTP/1.1 GET of `path` from `addr` (`ip:port`): status and body.
pub fn http_get_addr(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A `tandem` process under test (a controller): its output goes to a log
/// file, printed if the test fails; it is killed, by pid, when dropped.
pub struct Process {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
    pub name: String,
    /// The admin port it serves /ready and /metrics on.
    pub admin_port: u16,
}

impl Process {
    /// Starts `tandem ARGS --admin-addr 127.0.0.1:PORT` with the env's kubeconfig.
    pub fn start(env: &Env, name: &str, args: &[&str]) -> Self {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let admin_port = free_port();
        let child = Command::new(&env.tandem)
            .args(args)
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
            .env("KUBECONFIG", &env.kubeconfig)
            .env("TANDEM_LOG", "info,kube_client::client::builder=off")
            .stdin(std::process::Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            child,
            log,
            name: name.to_string(),
            admin_port,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until /ready answers 200; panics with the log otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log_text());
            }
            if http_get(self.admin_port, "/ready").is_some_and(|(s, _)| s == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{} not ready within {}s:\n{}",
            self.name,
            timeout.as_secs(),
            self.log_text()
        );
    }

    /// The value of a metric line (`name{labels} value`) whose text starts with `prefix`.
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, body) = http_get(self.admin_port, "/metrics")?;
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// SIGKILL, as a crash or an OOM kill would end it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("===== log of {} =====\n{}", self.name, self.log_text());
        }
    }
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
}

//! Starting, checking and stopping a testbed.

use std::{
    collections::BTreeMap,
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use serde::{Deserialize, Serialize};

use crate::{
    ClusterLayout, Component, Config, Error, Nodes, Progress, Toolchain,
    component::{self, KWOK_STAGES},
    kubeconfig,
    node::{self, addons},
    pki::{Pki, write_private},
    process::{self, ProcessId},
    toolchain,
};

const STATE_FILE: &str = "testbed.json";
/// 2: real nodes, and every address in 198.18.0.0/15.
const STATE_VERSION: u32 = 2;

/// `TANDEM_TESTBED_DIR`, else `$XDG_STATE_HOME/tandem/testbed`, else
/// `~/.local/state/tandem/testbed`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TANDEM_TESTBED_DIR") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".local")
                .join("state")
        });
    base.join("tandem").join("testbed")
}

/// What `DIR/testbed.json` records: enough to find and stop everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub kube_version: String,
    pub bin_dir: PathBuf,
    pub base_port: u16,
    pub clusters: Vec<String>,
    pub nodes: Nodes,
    /// The network slot (real nodes): bridge `tandem<slot>`.
    pub slot: u8,
}

impl State {
    fn config(&self, dir: &Path) -> Result<Config, Error> {
        Config::new(
            dir.to_path_buf(),
            self.base_port,
            self.clusters.clone(),
            self.nodes,
        )?
        .with_slot(self.slot)
    }
}

/// What `up` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpOutcome {
    Started,
    AlreadyRunning,
}

/// Health of one component.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentStatus {
    pub component: Component,
    pub pid: Option<u32>,
    pub running: bool,
    pub healthy: bool,
    pub endpoint: String,
    pub rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    pub context: String,
    pub server: String,
    pub nodes: Nodes,
    pub node_ip: String,
    pub pod_cidr: String,
    pub service_cidr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb_pool: Option<String>,
    pub components: Vec<ComponentStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub kube_version: String,
    pub clusters: Vec<ClusterStatus>,
}

impl Status {
    pub fn healthy(&self) -> bool {
        self.clusters
            .iter()
            .all(|c| c.components.iter().all(|s| s.healthy))
    }

    pub fn rss_bytes(&self) -> u64 {
        self.clusters
            .iter()
            .flat_map(|c| &c.components)
            .filter_map(|s| s.rss_bytes)
            .sum()
    }
}

/// A testbed directory.
#[derive(Clone, Debug)]
pub struct Testbed {
    pub config: Config,
    pub state: State,
}

/// Holds `DIR/.lock` while a command changes the testbed.
struct DirLock(#[allow(dead_code)] fs::File);

fn lock_dir(dir: &Path) -> Result<DirLock, Error> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(".lock");
    let file = fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock(file)),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Busy {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

fn read_state(dir: &Path) -> Result<Option<State>, Error> {
    let path = dir.join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let stale = |why: String| Error::StaleState {
        dir: dir.to_path_buf(),
        detail: format!(
            "{STATE_FILE} {why}; remove the directory or run `tandem testbed down --purge --dir {}`",
            dir.display()
        ),
    };
    let version: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| stale(format!("is unreadable ({e})")))?;
    if version["version"] != STATE_VERSION {
        return Err(stale(format!(
            "is from another version of the testbed (state version {}, this one reads {STATE_VERSION})",
            version["version"]
        )));
    }
    serde_json::from_value(version)
        .map(Some)
        .map_err(|e| stale(format!("is unreadable ({e})")))
}

impl Testbed {
    /// Opens the testbed recorded in `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let state = read_state(dir)?.ok_or_else(|| Error::NotFound {
            dir: dir.to_path_buf(),
        })?;
        let config = state.config(dir)?;
        Ok(Self { config, state })
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.config.kubeconfig_path()
    }

    fn toolchain(&self) -> Toolchain {
        Toolchain {
            bin_dir: self.state.bin_dir.clone(),
            kube_version: self.state.kube_version.clone(),
        }
    }

    /// Each component's pid, as its pid file says, with whether it runs.
    fn processes(&self) -> Vec<(ClusterLayout, Component, Option<ProcessId>)> {
        let mut out = vec![];
        for l in self.config.layouts() {
            for c in Component::started(self.config.nodes) {
                let id = process::read_pid_file(&l.pid_path(c));
                out.push((l.clone(), c, id));
            }
        }
        out
    }

    /// A client for one cluster, as a user would make it from the kubeconfig.
    pub async fn client(&self, cluster: &str) -> Result<Client, Error> {
        self.config.layout(cluster)?;
        let config = admin_config(&self.kubeconfig_path(), cluster).await?;
        Client::try_from(config).map_err(|e| cluster_err(cluster, e))
    }

    // === up ===

    /// Starts the clusters of `config`, or finds them already running.
    pub async fn up(config: Config, progress: &dyn Progress) -> Result<(Self, UpOutcome), Error> {
        let _lock = lock_dir(&config.dir)?;
        if let Some(state) = read_state(&config.dir)? {
            if state.clusters != config.clusters
                || state.base_port != config.base_port
                || state.nodes != config.nodes
            {
                return Err(Error::StaleState {
                    dir: config.dir.clone(),
                    detail: format!(
                        "it holds a testbed of clusters {} on base port {} with {} nodes, not {} on {} with {} nodes.\n  Run `tandem testbed down --purge --dir {}` to remove it, or use another --dir",
                        state.clusters.join(","),
                        state.base_port,
                        state.nodes.name(),
                        config.clusters.join(","),
                        config.base_port,
                        config.nodes.name(),
                        config.dir.display()
                    ),
                });
            }
            let tb = Testbed {
                config: state.config(&config.dir)?,
                state,
            };
            let procs = tb.processes();
            let recorded: Vec<_> = procs.iter().filter(|(_, _, id)| id.is_some()).collect();
            let alive: Vec<_> = recorded
                .iter()
                .filter(|(_, _, id)| id.is_some_and(|id| id.is_alive()))
                .collect();
            if !recorded.is_empty() && alive.len() == procs.len() {
                let status = tb.status().await;
                if status.healthy() {
                    progress.step("the testbed is already running");
                    if tb.config.nodes == Nodes::Real {
                        // The images of this tandem, which may be newer than
                        // the running testbed's.
                        let tc = tb.toolchain();
                        for l in tb.config.layouts() {
                            let (layout, toolchain) = (l.clone(), tc.clone());
                            let n = tokio::task::spawn_blocking(move || {
                                node::load_images(&layout, &toolchain)
                            })
                            .await
                            .map_err(|e| cluster_err(&l.name, format!("loading images: {e}")))??;
                            if n > 0 {
                                progress.step(&format!("{}: loaded {n} newer image(s)", l.name));
                            }
                        }
                    }
                    return Ok((tb, UpOutcome::AlreadyRunning));
                }
                return Err(Error::StaleState {
                    dir: config.dir.clone(),
                    detail: format!(
                        "the testbed runs but is unhealthy ({}).\n  Run `tandem testbed down --dir {dir}` and `tandem testbed up --dir {dir}` to restart it",
                        unhealthy_list(&status),
                        dir = config.dir.display()
                    ),
                });
            }
            if !recorded.is_empty() {
                let dead: Vec<String> = recorded
                    .iter()
                    .filter(|(_, _, id)| !id.is_some_and(|id| id.is_alive()))
                    .map(|(l, c, _)| format!("{}/{c}", l.name))
                    .collect();
                return Err(Error::StaleState {
                    dir: config.dir.clone(),
                    detail: format!(
                        "it holds a testbed that did not stop cleanly (not running: {}).\n  Run `tandem testbed down --dir {dir}` to clear it (cluster data is kept), then `tandem testbed up` again",
                        dead.join(", "),
                        dir = config.dir.display()
                    ),
                });
            }
        }

        let mut config = config;
        if config.nodes == Nodes::Real {
            node::check_prerequisites()?;
            // Keep the slot of an earlier run, so the addresses stay the same.
            let slot = match read_state(&config.dir)? {
                Some(state) => state.slot,
                None => node::choose_slot(&config.dir)?,
            };
            config = config.with_slot(slot)?;
            node::refuse_leftovers(&config)?;
        }
        check_ports(&config)?;
        let tc = Toolchain::ensure_groups(progress, groups(config.nodes))?;
        let state = State {
            version: STATE_VERSION,
            kube_version: tc.kube_version.clone(),
            bin_dir: tc.bin_dir.clone(),
            base_port: config.base_port,
            clusters: config.clusters.clone(),
            nodes: config.nodes,
            slot: config.slot,
        };
        let tb = Testbed { config, state };
        let state_path = tb.config.dir.join(STATE_FILE);
        let state_json = serde_json::to_string_pretty(&tb.state).expect("state serializes");
        fs::write(&state_path, state_json).map_err(|e| Error::io(&state_path, e))?;

        match tb.start_all(progress).await {
            Ok(()) => Ok((tb, UpOutcome::Started)),
            Err(e) => {
                progress.step("start failed; stopping what was started");
                let _ = tb.stop_all(&crate::Quiet);
                Err(e)
            }
        }
    }

    async fn start_all(&self, progress: &dyn Progress) -> Result<(), Error> {
        let layouts = self.config.layouts();
        for l in &layouts {
            self.prepare(l)?;
        }
        let kubeconfig = kubeconfig::user_kubeconfig(&layouts)?;
        let path = self.kubeconfig_path();
        write_private(&path, &kubeconfig)?;
        if self.config.nodes == Nodes::Real {
            node::setup_host(&self.config, progress)?;
            let tc = self.toolchain();
            for l in &layouts {
                node::write_files(l, &tc)?;
            }
        }

        let tc = self.toolchain();
        let starts = layouts.iter().map(|l| self.start_cluster(l, &tc, progress));
        let results = futures::future::join_all(starts).await;
        results.into_iter().collect::<Result<Vec<()>, Error>>()?;
        Ok(())
    }

    /// Certificates, kubeconfigs and kwok's stages for one cluster.
    fn prepare(&self, l: &ClusterLayout) -> Result<(), Error> {
        fs::create_dir_all(&l.dir).map_err(|e| Error::io(&l.dir, e))?;
        Pki::new(l).ensure(l)?;
        for c in Component::started(l.nodes).into_iter().filter(|c| {
            !matches!(
                c,
                Component::Etcd | Component::KubeApiserver | Component::Containerd
            )
        }) {
            let body = kubeconfig::component_kubeconfig(l, c)?;
            write_private(&l.component_kubeconfig(c), &body)?;
        }
        let stages = component::kwok_config_path(l);
        fs::write(&stages, KWOK_STAGES).map_err(|e| Error::io(&stages, e))
    }

    async fn start_cluster(
        &self,
        l: &ClusterLayout,
        tc: &Toolchain,
        progress: &dyn Progress,
    ) -> Result<(), Error> {
        let start = Instant::now();
        let base = admin_config(&self.kubeconfig_path(), &l.name).await?;
        for c in Component::started(l.nodes) {
            let t = Instant::now();
            let id = component::spec(l, tc, c).spawn()?;
            wait_healthy(l, c, id, &base, startup_timeout(c)).await?;
            progress.step(&format!(
                "{}: {c} healthy in {:.1}s",
                l.name,
                t.elapsed().as_secs_f64()
            ));
            if c == Component::Containerd {
                // Before the kubelet starts: it would try to pull the
                // pinned sandbox image, which cannot succeed here.
                let t = Instant::now();
                let (layout, toolchain) = (l.clone(), tc.clone());
                let images =
                    tokio::task::spawn_blocking(move || node::load_images(&layout, &toolchain))
                        .await
                        .map_err(|e| cluster_err(&l.name, format!("loading images: {e}")))??;
                progress.step(&format!(
                    "{}: loaded {} image(s) into containerd in {:.1}s",
                    l.name,
                    images,
                    t.elapsed().as_secs_f64()
                ));
            }
        }
        let client = Client::try_from(base).map_err(|e| cluster_err(&l.name, e))?;
        register_node(&client, l).await?;
        install_gateway_api(&client, l, tc).await?;
        wait_until(
            &l.name,
            "the node to become Ready",
            Duration::from_secs(60),
            || node_ready(&client, l),
        )
        .await?;
        wait_until(
            &l.name,
            "the default ServiceAccount (made by kube-controller-manager)",
            Duration::from_secs(60),
            || default_sa_exists(&client),
        )
        .await?;
        if l.nodes == Nodes::Real {
            let image = addons::coredns_image(&toolchain::coredns_version());
            addons::apply(&client, l, &addons::coredns_objects(l, &image)).await?;
            wait_until(
                &l.name,
                "CoreDNS to become Ready",
                Duration::from_secs(90),
                || addons::coredns_ready(&client),
            )
            .await?;
        }
        progress.step(&format!(
            "{}: ready in {:.1}s ({}, pods {}, services {})",
            l.name,
            start.elapsed().as_secs_f64(),
            l.apiserver_url(),
            l.pod_cidr(),
            l.service_cidr()
        ));
        Ok(())
    }

    // === single components ===

    /// Stops one component (for tests of restarts and outages).
    pub fn stop_component(&self, cluster: &str, c: Component) -> Result<(), Error> {
        let l = self.config.layout(cluster)?;
        if let Some(id) = process::read_pid_file(&l.pid_path(c)) {
            id.stop(stop_grace(c))?;
        }
        let _ = fs::remove_file(l.pid_path(c));
        Ok(())
    }

    /// Starts one component again and waits until it is healthy.
    pub async fn start_component(&self, cluster: &str, c: Component) -> Result<(), Error> {
        let l = self.config.layout(cluster)?;
        if process::read_pid_file(&l.pid_path(c)).is_some_and(|id| id.is_alive()) {
            return Ok(());
        }
        let base = admin_config(&self.kubeconfig_path(), cluster).await?;
        let id = component::spec(&l, &self.toolchain(), c).spawn()?;
        wait_healthy(&l, c, id, &base, startup_timeout(c)).await
    }

    // === images ===

    /// Imports an image archive into the containerd of each named cluster's
    /// node (every cluster when none is named); returns the references the
    /// archive held.
    pub fn load(&self, archive: &Path, clusters: &[String]) -> Result<Vec<String>, Error> {
        if self.config.nodes != Nodes::Real {
            return Err(Error::InvalidConfig(format!(
                "the testbed in {} has fake nodes, which run no containers: there is nothing to load an image into",
                self.config.dir.display()
            )));
        }
        let layouts: Vec<ClusterLayout> = if clusters.is_empty() {
            self.config.layouts()
        } else {
            clusters
                .iter()
                .map(|c| self.config.layout(c))
                .collect::<Result<_, _>>()?
        };
        let tc = self.toolchain();
        let ctr = tc.artifact(toolchain::CTR);
        let mut loaded = vec![];
        for l in &layouts {
            let before = crate::image::ctr::list(&ctr, &l.containerd_socket())?;
            crate::image::ctr::import(&ctr, &l.containerd_socket(), archive)?;
            let after = crate::image::ctr::list(&ctr, &l.containerd_socket())?;
            loaded = after.into_iter().filter(|r| !before.contains(r)).collect();
        }
        if loaded.is_empty() {
            // Re-loading an image already there changes nothing, and says so.
            let id = crate::image::read_image_id(archive)?;
            loaded.push(id.reference);
        }
        Ok(loaded)
    }

    // === down ===

    /// Stops every process of the testbed in `dir`; with `purge`, removes the
    /// directory too. Returns the processes that were stopped.
    pub fn down(dir: &Path, purge: bool, progress: &dyn Progress) -> Result<Vec<String>, Error> {
        let _lock = lock_dir(dir)?;
        let stopped = match read_state(dir) {
            Ok(Some(state)) => {
                let config = state.config(dir)?;
                Testbed { config, state }.stop_all(progress)?
            }
            Ok(None) => vec![],
            Err(e) if purge => {
                progress.step(&format!("ignoring unreadable state: {e}"));
                vec![]
            }
            Err(e) => return Err(e),
        };
        // Anything of ours still running, though no pid file names it (a
        // crashed `up`, a deleted pid file), is found by its command line.
        let mut strays = vec![];
        for pid in stray_processes(dir) {
            let id = ProcessId { pid, start_time: 0 };
            id.stop(Duration::from_secs(10))?;
            strays.push(format!("stray process {pid}"));
        }
        if !strays.is_empty() {
            progress.step(&format!("stopped {}", strays.join(", ")));
        }
        if purge {
            drop(_lock);
            // Never through a mount: the kubelet's root and pod volumes are.
            node::mounts::remove_dir_safely(dir)?;
        }
        Ok(stopped.into_iter().chain(strays).collect())
    }

    /// Stops everything in reverse start order. With real nodes, the nodes
    /// go first and are torn down (their pods killed) before the control
    /// planes stop: a pod still watching its apiserver would hold the
    /// apiserver's graceful shutdown for its whole grace period.
    fn stop_all(&self, progress: &dyn Progress) -> Result<Vec<String>, Error> {
        let mut stopped = self.stop_where(progress, |c| c.is_node() || c == Component::Kwok)?;
        if self.config.nodes == Nodes::Real {
            node::teardown(&self.config, progress)?;
        }
        stopped.extend(self.stop_where(progress, |_| true)?);
        Ok(stopped)
    }

    /// Stops the components that `which` picks, in reverse start order,
    /// every cluster.
    fn stop_where(
        &self,
        progress: &dyn Progress,
        which: impl Fn(Component) -> bool,
    ) -> Result<Vec<String>, Error> {
        let mut stopped = vec![];
        for l in self.config.layouts() {
            for c in Component::started(l.nodes)
                .into_iter()
                .rev()
                .filter(|c| which(*c))
            {
                let pid_path = l.pid_path(c);
                if let Some(id) = process::read_pid_file(&pid_path) {
                    if id.is_alive() {
                        id.stop(stop_grace(c))?;
                        progress.step(&format!("{}: stopped {c} (pid {})", l.name, id.pid));
                        stopped.push(format!("{}/{c}", l.name));
                    }
                    let _ = fs::remove_file(&pid_path);
                }
            }
        }
        Ok(stopped)
    }

    // === status ===

    pub async fn status(&self) -> Status {
        let mut clusters = vec![];
        for l in self.config.layouts() {
            let base = admin_config(&self.kubeconfig_path(), &l.name).await;
            let mut components = vec![];
            for c in Component::started(l.nodes) {
                let id = process::read_pid_file(&l.pid_path(c));
                let running = id.is_some_and(|id| id.is_alive());
                let endpoint = component::health_url(&l, c);
                let health = match (&base, running) {
                    (_, false) => Err("not running".to_string()),
                    (Ok(base), true) => probe(base, &endpoint).await,
                    (Err(e), true) => Err(e.to_string()),
                };
                components.push(ComponentStatus {
                    component: c,
                    pid: id.filter(|id| id.is_alive()).map(|id| id.pid),
                    running,
                    healthy: health.is_ok(),
                    endpoint,
                    rss_bytes: id.filter(|id| id.is_alive()).and_then(|id| id.rss_bytes()),
                    error: health.err(),
                });
            }
            clusters.push(ClusterStatus {
                context: l.name.clone(),
                server: l.apiserver_url(),
                nodes: l.nodes,
                node_ip: l.node_ip().to_string(),
                pod_cidr: l.pod_cidr(),
                service_cidr: l.service_cidr(),
                lb_pool: (l.nodes == Nodes::Real).then(|| l.lb_pool()),
                name: l.name,
                components,
            });
        }
        Status {
            dir: self.config.dir.clone(),
            kubeconfig: self.kubeconfig_path(),
            kube_version: self.state.kube_version.clone(),
            clusters,
        }
    }
}

/// What a testbed with these nodes needs built.
pub fn groups(nodes: Nodes) -> &'static [toolchain::Group] {
    match nodes {
        Nodes::Real => &toolchain::Group::ALL,
        Nodes::Fake => &[toolchain::Group::ControlPlane],
    }
}

fn unhealthy_list(status: &Status) -> String {
    status
        .clusters
        .iter()
        .flat_map(|c| {
            c.components
                .iter()
                .filter(|s| !s.healthy)
                .map(move |s| format!("{}/{}", c.name, s.component))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Processes of testbed binaries whose command line names `dir`.
fn stray_processes(dir: &Path) -> Vec<u32> {
    // With the separator, so that DIR does not match DIR2's processes.
    let needle = format!("{}/", dir.display());
    process::processes_mentioning(&needle)
        .into_iter()
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
                .is_some_and(|name| {
                    let name = name.trim_end_matches(" (deleted)");
                    Component::ALL.iter().any(|c| c.binary() == name)
                })
        })
        .collect()
}

/// Every process of the testbed in `dir` that is still running; empty after
/// a clean `down`.
pub fn leftover_processes(dir: &Path) -> Vec<u32> {
    stray_processes(dir)
}

fn check_ports(config: &Config) -> Result<(), Error> {
    for l in config.layouts() {
        for (c, port) in l.ports() {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(Error::PortInUse {
                    port,
                    component: c.to_string(),
                    cluster: l.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// How long `down` waits after SIGTERM before SIGKILL. kube-apiserver with
/// real nodes shuts its controllers down and stops listening at once, then
/// lingers (seen with 1.34); its data is in etcd, which stops after it.
fn stop_grace(c: Component) -> Duration {
    match c {
        Component::KubeApiserver => Duration::from_secs(3),
        _ => Duration::from_secs(10),
    }
}

fn startup_timeout(c: Component) -> Duration {
    match c {
        // The apiserver installs its bootstrap objects before /readyz passes;
        // on a loaded 2-core machine that can take a while.
        Component::KubeApiserver => Duration::from_secs(120),
        _ => Duration::from_secs(60),
    }
}

fn cluster_err(cluster: &str, e: impl std::fmt::Display) -> Error {
    Error::Cluster {
        cluster: cluster.to_string(),
        detail: e.to_string(),
    }
}

/// The admin's client configuration for `cluster` (or the current context).
async fn admin_config(kubeconfig: &Path, cluster: &str) -> Result<kube::Config, Error> {
    let context = (!cluster.is_empty()).then_some(cluster);
    let mut config = tandem_util::client::config_from_file(kubeconfig, context)
        .await
        .map_err(|e| cluster_err(cluster, e))?;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    Ok(config)
}

/// GETs a health URL with the cluster's CA and admin certificate; a
/// `unix://` URL only has to accept a connection.
async fn probe(base: &kube::Config, url: &str) -> Result<(), String> {
    if let Some(path) = url.strip_prefix("unix://") {
        return match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::UnixStream::connect(path),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{path}: {e}")),
            Err(_) => Err(format!("{path}: timed out")),
        };
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let mut config = base.clone();
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    config.cluster_url = format!("{}://{authority}", uri.scheme_str().unwrap_or("https"))
        .parse()
        .map_err(|e| format!("{url}: {e}"))?;
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let req = http::Request::get(uri.path())
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

async fn wait_healthy(
    l: &ClusterLayout,
    c: Component,
    id: ProcessId,
    base: &kube::Config,
    timeout: Duration,
) -> Result<(), Error> {
    let url = component::health_url(l, c);
    let deadline = Instant::now() + timeout;
    let failed = |detail: String| Error::ComponentFailed {
        cluster: l.name.clone(),
        component: c.to_string(),
        detail,
        log: l.log_path(c),
        log_tail: toolchain::tail(&l.log_path(c), 20),
    };
    loop {
        if !id.is_alive() {
            return Err(failed(format!("process {} exited", id.pid)));
        }
        let last = probe(base, &url).await;
        if last.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "{url} still failing after {}s: {}",
                timeout.as_secs(),
                last.unwrap_err()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_until<F, Fut>(
    cluster: &str,
    what: &str,
    timeout: Duration,
    mut f: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, kube::Error>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match f().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!(" (last error: {e})"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::Cluster {
        cluster: cluster.to_string(),
        detail: format!(
            "timed out after {}s waiting for {what}{last}",
            timeout.as_secs()
        ),
    })
}

/// Creates the cluster's kwok node; kwok then makes it Ready. Beside a real
/// node it is tainted, as kwok's convention is, so that only pods that
/// tolerate it (benchmarks of many pods) land there.
async fn register_node(client: &Client, l: &ClusterLayout) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let name = l.kwok_node_name();
    let taints = (l.nodes == Nodes::Real).then(|| {
        vec![k8s_openapi::api::core::v1::Taint {
            key: component::KWOK_TAINT.to_string(),
            value: Some("fake".to_string()),
            effect: "NoSchedule".to_string(),
            ..Default::default()
        }]
    });
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), name.clone()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                ("kubernetes.io/arch".to_string(), "amd64".to_string()),
                ("type".to_string(), "kwok".to_string()),
                ("topology.kubernetes.io/zone".to_string(), l.name.clone()),
            ])),
            annotations: Some(BTreeMap::from([(
                component::KWOK_NODE_ANNOTATION.to_string(),
                "fake".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::core::v1::NodeSpec {
            pod_cidr: Some(l.kwok_pod_cidr()),
            pod_cidrs: Some(vec![l.kwok_pod_cidr()]),
            taints,
            ..Default::default()
        }),
        status: None,
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(cluster_err(&l.name, format!("creating node {name}: {e}"))),
    }
}

/// The Gateway API's standard CRDs (HTTPRoute among them), from the Go
/// module, applied server-side so that a restart re-applies them harmlessly.
async fn install_gateway_api(
    client: &Client,
    l: &ClusterLayout,
    tc: &Toolchain,
) -> Result<(), Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let dir = tc.artifact(toolchain::GATEWAY_API_CRDS);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let docs: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&text)
            .map_err(|e| cluster_err(&l.name, format!("{}: {e}", file.display())))?;
        for crd in docs {
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.patch(
                &name,
                &kube::api::PatchParams::apply("tandem-testbed").force(),
                &kube::api::Patch::Apply(&crd),
            )
            .await
            .map_err(|e| cluster_err(&l.name, format!("applying CRD {name}: {e}")))?;
        }
    }
    Ok(())
}

async fn node_ready(client: &Client, l: &ClusterLayout) -> Result<bool, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(&l.node_name()).await?;
    Ok(node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn default_sa_exists(client: &Client) -> Result<bool, kube::Error> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    Ok(sas.get_opt("default").await?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_named_with_its_owner() {
        // A base below the ephemeral range whose ports are free now; then the
        // second cluster's apiserver port is taken.
        let (config, listener) = (19_400u16..19_900)
            .step_by(20)
            .find_map(|base| {
                let config = Config::new(
                    "/tb".into(),
                    base,
                    vec!["east".into(), "west".into()],
                    Nodes::Fake,
                )
                .ok()?;
                check_ports(&config).ok()?;
                let west = config.layout("west").ok()?;
                let listener =
                    TcpListener::bind(("127.0.0.1", west.port(Component::KubeApiserver))).ok()?;
                Some((config, listener))
            })
            .expect("some base port between 19400 and 19900 has free ports");
        let port = listener.local_addr().unwrap().port();
        match check_ports(&config) {
            Err(Error::PortInUse {
                port: p,
                component,
                cluster,
            }) => {
                assert_eq!(p, port);
                assert_eq!(component, "kube-apiserver");
                assert_eq!(cluster, "west");
            }
            other => panic!("expected PortInUse, got {other:?}"),
        }
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), None);
        let state = State {
            version: STATE_VERSION,
            kube_version: "v1.34.4".into(),
            bin_dir: "/bin".into(),
            base_port: 26440,
            clusters: vec!["east".into()],
            nodes: Nodes::Real,
            slot: 3,
        };
        fs::write(
            dir.path().join(STATE_FILE),
            serde_json::to_string(&state).unwrap(),
        )
        .unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), Some(state));
        fs::write(dir.path().join(STATE_FILE), "{garbage").unwrap();
        let err = read_state(dir.path()).unwrap_err().to_string();
        assert!(err.contains("down --purge"), "{err}");
    }

    #[test]
    fn a_second_command_on_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_dir(dir.path()).unwrap();
        assert!(matches!(lock_dir(dir.path()), Err(Error::Busy { .. })));
    }
}

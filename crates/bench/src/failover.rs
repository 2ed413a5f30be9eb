//! `tandem-bench failover`: the failover controller's reaction time and memory.
//!
//! 1. Applies the TrafficSplit CRD (`tandem smi install | kubectl apply -f -`).
//! 2. Creates `2 × splits` headless Services without selectors, one EndpointSlice each
//!    (written by the benchmark alone), and `splits` TrafficSplits.
//! 3. Starts `tandem failover run` and waits until it has recorded the state
//!    `primary` on every split.
//! 4. Flips primaries unready and ready again, one flip at a time, and times
//!    each from the EndpointSlice patch acknowledged to the split's new
//!    weights seen by a watch. The controller's own reaction histogram is
//!    read before and after.
//! 5. Reads the controller's RSS, then adds splits up to `rss_splits` (sharing
//!    the services) and reads it again.
//! 6. Restarts the controller with every split's state to record again and
//!    times flips in its first `restart_secs` ([`crate::restart`]).

use std::{
    collections::HashMap,
    future::Future,
    ops::Range,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, process::Command, sync::mpsc, task::JoinHandle, time::Instant};

use crate::{
    controller::Controller,
    objects::{self, CONTROLLED_BY_LABEL},
    restart,
    stats::{self, Histogram, Summary},
};

pub(crate) const IN_FLIGHT: usize = 32;
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const SETTLE: Duration = Duration::from_secs(5);
pub(crate) const FIELD_MANAGER: &str = "tandem-bench";
const REACTION_HISTOGRAM: &str = "tandem_failover_reaction_seconds";
const WRITE_ERRORS: &str = "tandem_failover_write_errors_total";
pub(crate) const REACTION_TARGET_MS: f64 = 100.0;
const RSS_TARGET_KIB: u64 = 40 * 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The testbed's kubeconfig.
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
    /// The kubeconfig context of the cluster to use.
    #[arg(long, value_name = "NAME")]
    context: String,
    /// The tandem binary under test (a release build).
    #[arg(long, value_name = "FILE")]
    tandem: PathBuf,
    /// kubectl, to apply the TrafficSplit CRD.
    #[arg(long, value_name = "FILE", default_value = "kubectl")]
    kubectl: PathBuf,
    /// The namespace of every object the benchmark creates.
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// TrafficSplits present during the flips; each has two Services of its own.
    #[arg(long, default_value_t = 1000)]
    splits: usize,
    /// Flips, either direction (a failover and its failback are two); rounded up to even.
    #[arg(long, default_value_t = 200)]
    flips: usize,
    /// Pause after each flip is seen, so that each starts on an idle controller.
    #[arg(long, default_value_t = 100)]
    gap_ms: u64,
    /// Longest a flip may take before the benchmark fails, in seconds.
    #[arg(long, default_value_t = 10)]
    flip_timeout_secs: u64,
    /// TrafficSplits in total for the second memory reading (the extra ones
    /// share the Services); 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    rss_splits: usize,
    /// Then restart the controller with every split's state to record again
    /// and time flips during this many seconds from its start; 0 skips it.
    #[arg(long, default_value_t = 60)]
    restart_secs: u64,
    /// Unrelated endpoint changes per second during the restart.
    #[arg(long, default_value_t = 100)]
    noise_per_sec: u32,
    /// Also write the JSON summary to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The controller's log (at info). Default: a file in the temp directory.
    #[arg(long, value_name = "FILE")]
    controller_log: Option<PathBuf>,
}

impl Args {
    fn validate(&mut self) -> Result<()> {
        if self.splits == 0 || 2 * self.splits > objects::MAX_SERVICES {
            bail!(
                "--splits must be between 1 and {}",
                objects::MAX_SERVICES / 2
            );
        }
        if self.flips < 2 {
            bail!("--flips must be at least 2 (the issue asks for at least 100)");
        }
        self.flips += self.flips % 2;
        if self.rss_splits != 0 && self.rss_splits < self.splits {
            bail!(
                "--rss-splits must be 0 or at least --splits ({})",
                self.splits
            );
        }
        if self.flip_timeout_secs == 0 {
            bail!("--flip-timeout-secs must be positive");
        }
        Ok(())
    }
}

/// Progress lines on stderr, timed from the start.
pub(crate) struct Progress {
    start: Instant,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    pub(crate) fn say(&self, msg: impl std::fmt::Display) {
        eprintln!("[{:6.1}s] {msg}", self.start.elapsed().as_secs_f64());
    }
}

pub async fn run(mut args: Args) -> Result<()> {
    args.validate()?;
    let p = Progress::new();
    let machine = Machine::read();
    p.say(format_args!("machine: {}", machine.describe()));
    let client = client(&args.kubeconfig, &args.context).await?;
    let ns = args.namespace.as_str();

    // === setup ===
    install_crd(&args).await?;
    wait_served(&client).await?;
    p.say("the TrafficSplit CRD is served");
    create_namespace(&client, ns).await?;
    let setup_start = Instant::now();
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let splits: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &objects::traffic_split_api());
    let n_services = 2 * args.splits;
    create_objects(&p, "Services", &services, 0..n_services, |k| {
        objects::headless_service(ns, k)
    })
    .await?;
    create_objects(&p, "EndpointSlices", &slices, 0..n_services, |k| {
        objects::endpoint_slice(ns, k)
    })
    .await?;
    create_objects(&p, "TrafficSplits", &splits, 0..args.splits, |j| {
        objects::traffic_split(ns, j, args.splits)
    })
    .await?;
    let setup = setup_start.elapsed();

    // === the controller ===
    let mut watch = SplitWatch::start(client.clone(), ns);
    let log = args
        .controller_log
        .clone()
        .unwrap_or_else(crate::default_log);
    let started = Instant::now();
    let mut ctl = Controller::start(&args.tandem, &args.kubeconfig, &args.context, &log)?;
    p.say(format_args!(
        "controller started (pid {}, admin http://{}, log {})",
        ctl.pid(),
        ctl.admin,
        log.display()
    ));
    ctl.wait_ready(Duration::from_secs(120)).await?;
    let ready_after = started.elapsed();
    p.say(format_args!(
        "controller ready in {:.1} s",
        ready_after.as_secs_f64()
    ));
    watch
        .wait_primary(&p, &mut ctl, args.splits, Duration::from_secs(300))
        .await?;
    let all_primary_after = started.elapsed();
    p.say(format_args!(
        "all {} splits recorded as primary, {:.1} s after the start",
        args.splits,
        all_primary_after.as_secs_f64()
    ));

    // === flips ===
    let before = ctl.metrics().await?;
    let flips = flip(&p, &slices, &mut watch, &mut ctl, &args).await?;
    let after = ctl.metrics().await?;
    let internal = match (
        Histogram::parse(&before, REACTION_HISTOGRAM),
        Histogram::parse(&after, REACTION_HISTOGRAM),
    ) {
        (Some(b), Some(a)) => a.since(&b),
        _ => bail!("the controller's /metrics has no {REACTION_HISTOGRAM} histogram"),
    };
    let write_errors =
        stats::counter_total(&after, WRITE_ERRORS) - stats::counter_total(&before, WRITE_ERRORS);
    watch.stop_forwarding();

    // === memory ===
    tokio::time::sleep(SETTLE).await;
    ctl.check_running()?;
    let small = Memory::read(&ctl, args.splits, n_services).await?;
    p.say(format_args!("memory: {}", small.describe()));
    let large = if args.rss_splits > args.splits {
        create_objects(
            &p,
            "more TrafficSplits",
            &splits,
            args.splits..args.rss_splits,
            |j| objects::traffic_split(ns, j, args.splits),
        )
        .await?;
        watch
            .wait_primary(&p, &mut ctl, args.rss_splits, Duration::from_secs(600))
            .await?;
        tokio::time::sleep(SETTLE).await;
        ctl.check_running()?;
        let m = Memory::read(&ctl, args.rss_splits, n_services).await?;
        p.say(format_args!("memory: {}", m.describe()));
        Some(m)
    } else {
        None
    };
    let restart = if args.restart_secs > 0 {
        ctl.stop().await?;
        let mut restart_log = log.clone().into_os_string();
        restart_log.push(".restart");
        let setup = restart::Setup {
            p: &p,
            tandem: &args.tandem,
            kubeconfig: &args.kubeconfig,
            context: &args.context,
            log: Path::new(&restart_log),
            ns,
            pairs: args.splits,
            splits: args.rss_splits.max(args.splits),
            secs: args.restart_secs,
            noise_per_sec: args.noise_per_sec,
            gap: Duration::from_millis(args.gap_ms),
            limit: Duration::from_secs(args.flip_timeout_secs),
        };
        let (outcome, restarted) = restart::run(setup, client.clone(), &mut watch).await?;
        ctl = restarted;
        Some(outcome)
    } else {
        None
    };
    let watch_errors = watch.errors();
    drop(watch);
    ctl.stop().await?;
    let machine_after = Machine::read();

    // === report ===
    let report = Report {
        args: &args,
        machine,
        load_after: machine_after.load,
        setup,
        ready_after,
        all_primary_after,
        flips,
        internal,
        write_errors,
        watch_errors,
        small,
        large,
        restart,
    };
    print!("{}", report.text());
    crate::emit_json(&report.to_json(), args.json.as_deref())?;
    Ok(())
}

// === setup ===

pub(crate) async fn client(kubeconfig: &Path, context: &str) -> Result<Client> {
    Ok(tandem_util::client::from_file(kubeconfig, Some(context)).await?)
}

pub(crate) fn post() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

async fn install_crd(args: &Args) -> Result<()> {
    install_split_crd(&args.tandem, &args.kubectl, &args.kubeconfig, &args.context).await
}

/// `tandem smi install | kubectl apply -f -`.
pub(crate) async fn install_split_crd(
    tandem: &Path,
    kubectl: &Path,
    kubeconfig: &Path,
    context: &str,
) -> Result<()> {
    let crd = Command::new(tandem)
        .args(["smi", "install"])
        .output()
        .await
        .with_context(|| format!("running {} smi install", tandem.display()))?;
    if !crd.status.success() {
        bail!(
            "tandem smi install failed: {}",
            String::from_utf8_lossy(&crd.stderr).trim()
        );
    }
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", context, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {} (is kubectl on PATH?)", kubectl.display()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin for kubectl"))?;
    stdin
        .write_all(&crd.stdout)
        .await
        .context("writing the CRD to kubectl")?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| anyhow!("kubectl apply of the TrafficSplit CRD took over 60 s"))?
        .context("waiting for kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl apply of the TrafficSplit CRD failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(crate) async fn wait_served(client: &Client) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(g) = kube::discovery::group(client, objects::SPLIT_GROUP).await
            && g.versions().any(|v| v == objects::SPLIT_VERSION)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{}/{} TrafficSplits were not served within 60 s of applying the CRD",
                objects::SPLIT_GROUP,
                objects::SPLIT_VERSION
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn create_namespace(client: &Client, ns: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let obj = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&post(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {ns}")),
    }
}

/// Creates objects `range` with `create`, `IN_FLIGHT` at a time. An object
/// that exists already counts as created; busy answers are retried a few times.
pub(crate) async fn create_all<F, Fut>(
    p: &Progress,
    what: &str,
    range: Range<usize>,
    create: F,
) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    let start = Instant::now();
    let total = range.len();
    let step = (total / 5).max(1);
    let create = &create;
    let mut results = futures::stream::iter(range)
        .map(|i| async move { (i, create_one(|| create(i)).await) })
        .buffer_unordered(IN_FLIGHT);
    let mut done = 0;
    while let Some((i, result)) = results.next().await {
        result.with_context(|| format!("creating {what} #{i}"))?;
        done += 1;
        if done % step == 0 || done == total {
            p.say(format_args!("{what}: {done}/{total}"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    p.say(format_args!(
        "{what}: {total} created in {secs:.1} s ({:.0}/s)",
        total as f64 / secs.max(1e-3)
    ));
    Ok(())
}

/// Creates `make(i)` through `api` for each `i` of `range`, as
/// [`create_all`] does.
pub(crate) async fn create_objects<K, F>(
    p: &Progress,
    what: &str,
    api: &Api<K>,
    range: Range<usize>,
    make: F,
) -> Result<()>
where
    K: Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
    F: Fn(usize) -> K,
{
    create_all(p, what, range, |i| {
        let obj = make(i);
        async move { api.create(&post(), &obj).await.map(drop) }
    })
    .await
}

pub(crate) async fn create_one<F, Fut>(create: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        let err = match tokio::time::timeout(REQUEST_TIMEOUT, create()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => return Ok(()),
            // 404: a CRD just established may not be served everywhere yet.
            Ok(Err(kube::Error::Api(s))) if matches!(s.code, 404 | 429 | 500..=599) => {
                anyhow!("{} ({})", s.message, s.code)
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow!("no answer within {REQUEST_TIMEOUT:?}"),
        };
        if attempt == ATTEMPTS {
            return Err(err.context(format!("after {ATTEMPTS} attempts")));
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        attempt += 1;
    }
}

// === the watch ===

/// A split as last seen.
#[derive(Debug)]
struct Seen {
    state: Option<String>,
}

/// A split's weights as seen at an instant.
#[derive(Debug)]
struct Change {
    name: String,
    weights: Vec<u64>,
    at: Instant,
}

/// A watch on the benchmark's TrafficSplits: the state of each, and while
/// forwarding, every change on a channel, time-stamped on arrival.
pub(crate) struct SplitWatch {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    changes: mpsc::UnboundedReceiver<Change>,
    forward: Arc<AtomicBool>,
    errors: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl SplitWatch {
    fn start(client: Client, ns: &str) -> Self {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client, ns, &objects::traffic_split_api());
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let forward = Arc::new(AtomicBool::new(true));
        let errors = Arc::new(AtomicUsize::new(0));
        let (tx, changes) = mpsc::unbounded_channel();
        let task = tokio::spawn({
            let seen = seen.clone();
            let forward = forward.clone();
            let errors = errors.clone();
            async move {
                let mut stream =
                    watcher::watcher(api, watcher::Config::default().labels(CONTROLLED_BY_LABEL))
                        .default_backoff()
                        .boxed();
                while let Some(event) = stream.next().await {
                    let at = Instant::now();
                    let obj = match event {
                        Ok(Event::Apply(o) | Event::InitApply(o)) => o,
                        Ok(Event::Delete(o)) => {
                            if let Some(name) = o.metadata.name {
                                lock(&seen).remove(&name);
                            }
                            continue;
                        }
                        Ok(Event::Init | Event::InitDone) => continue,
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("warning: the TrafficSplit watch failed: {e}; retrying");
                            }
                            continue;
                        }
                    };
                    let Some(name) = obj.metadata.name.clone() else {
                        continue;
                    };
                    let state = objects::state(&obj);
                    if forward.load(Ordering::Relaxed) {
                        let weights = objects::weights(&obj);
                        let _ = tx.send(Change {
                            name: name.clone(),
                            weights,
                            at,
                        });
                    }
                    lock(&seen).insert(name, Seen { state });
                }
            }
        });
        Self {
            seen,
            changes,
            forward,
            errors,
            task,
        }
    }

    fn primary_count(&self) -> usize {
        lock(&self.seen)
            .values()
            .filter(|s| s.state.as_deref() == Some("primary"))
            .count()
    }

    /// Waits until `n` splits carry the state annotation `primary`.
    pub(crate) async fn wait_primary(
        &mut self,
        p: &Progress,
        ctl: &mut Controller,
        n: usize,
        timeout: Duration,
    ) -> Result<()> {
        let start = Instant::now();
        let mut last_report = start;
        loop {
            let count = self.primary_count();
            if count >= n {
                return Ok(());
            }
            ctl.check_running()?;
            if start.elapsed() >= timeout {
                bail!("only {count} of {n} splits were recorded as primary within {timeout:?}");
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                p.say(format_args!("{count}/{n} splits recorded as primary"));
                last_report = Instant::now();
            }
            // Changes are not needed here; keep the channel short.
            while self.changes.try_recv().is_ok() {}
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn drain(&mut self) {
        while self.changes.try_recv().is_ok() {}
    }

    pub(crate) fn start_forwarding(&mut self) {
        self.drain();
        self.forward.store(true, Ordering::Relaxed);
    }

    pub(crate) fn stop_forwarding(&mut self) {
        self.forward.store(false, Ordering::Relaxed);
        self.drain();
    }

    fn errors(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for SplitWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// === flips ===

/// Each flip: how long from the patch sent, and from it acknowledged, to the
/// new weights seen.
#[derive(Debug, Default)]
pub(crate) struct Flips {
    pub(crate) from_ack: Vec<Duration>,
    pub(crate) from_send: Vec<Duration>,
    pub(crate) patch: Vec<Duration>,
    pub(crate) failover: Vec<Duration>,
    pub(crate) failback: Vec<Duration>,
    /// Weights seen before the patch was acknowledged.
    pub(crate) before_ack: usize,
}

async fn flip(
    p: &Progress,
    slices: &Api<EndpointSlice>,
    watch: &mut SplitWatch,
    ctl: &mut Controller,
    args: &Args,
) -> Result<Flips> {
    let limit = Duration::from_secs(args.flip_timeout_secs);
    let mut out = Flips::default();
    p.say(format_args!(
        "flipping: {} flips over {} splits, one at a time, {} ms apart",
        args.flips,
        (args.flips / 2).min(args.splits),
        args.gap_ms
    ));
    for f in 0..args.flips {
        let j = (f / 2) % args.splits;
        let down = f % 2 == 0;
        let k = objects::primary_of(j, args.splits);
        let t = flip_one(
            slices,
            watch,
            ctl,
            FlipOf {
                f,
                service: k,
                split: &objects::split_name(j),
                down,
            },
            limit,
        )
        .await?;
        out.record(&t, down);
        if ((f + 1) % 50 == 0 || f + 1 == args.flips)
            && let Some(s) = Summary::of(&out.from_ack)
        {
            p.say(format_args!(
                "flips: {}/{} (so far p50 {:.1} ms, max {:.1} ms)",
                f + 1,
                args.flips,
                s.p50,
                s.max
            ));
        }
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    Ok(out)
}

/// One flip: which one, which Service's endpoint, which split must follow.
pub(crate) struct FlipOf<'a> {
    pub(crate) f: usize,
    pub(crate) service: usize,
    pub(crate) split: &'a str,
    /// A failover (the primary goes unready), or a failback.
    pub(crate) down: bool,
}

/// How long one flip took.
pub(crate) struct FlipTime {
    /// From the slice patch acknowledged to the new weights seen.
    pub(crate) from_ack: Duration,
    pub(crate) from_send: Duration,
    pub(crate) patch: Duration,
    pub(crate) before_ack: bool,
}

impl Flips {
    pub(crate) fn record(&mut self, t: &FlipTime, down: bool) {
        if t.before_ack {
            self.before_ack += 1;
        }
        self.from_ack.push(t.from_ack);
        self.from_send.push(t.from_send);
        self.patch.push(t.patch);
        if down {
            self.failover.push(t.from_ack);
        } else {
            self.failback.push(t.from_ack);
        }
    }
}

/// Patches a Service's endpoint unready (or ready again) and waits until the
/// split's weights follow, as the split watch sees them.
pub(crate) async fn flip_one(
    slices: &Api<EndpointSlice>,
    watch: &mut SplitWatch,
    ctl: &mut Controller,
    of: FlipOf<'_>,
    limit: Duration,
) -> Result<FlipTime> {
    let FlipOf {
        f,
        service: k,
        split,
        down,
    } = of;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let want: [u64; 2] = if down { [0, 1] } else { [1, 0] };
    let what = if down { "failover" } else { "failback" };
    watch.drain();
    let sent = Instant::now();
    let deadline = sent + limit;
    tokio::time::timeout_at(
        deadline,
        slices.patch(
            &objects::service_name(k),
            &params,
            &Patch::Merge(objects::readiness_patch(k, !down)),
        ),
    )
    .await
    .map_err(|_| anyhow!("flip {f}: patching EndpointSlice svc-{k} took over {limit:?}"))?
    .with_context(|| format!("flip {f}: patching EndpointSlice svc-{k}"))?;
    let acked = Instant::now();
    let seen = loop {
        let change = tokio::time::timeout_at(deadline, watch.changes.recv())
            .await
            .map_err(|_| {
                let running = ctl.check_running().err();
                anyhow!(
                    "flip {f} ({what} of {split}) was not seen within {limit:?}{}",
                    running.map(|e| format!(": {e}")).unwrap_or_default()
                )
            })?
            .ok_or_else(|| anyhow!("the TrafficSplit watch ended"))?;
        if change.name == split && change.weights == want {
            break change.at;
        }
    };
    Ok(FlipTime {
        from_ack: seen.saturating_duration_since(acked),
        from_send: seen.saturating_duration_since(sent),
        patch: acked - sent,
        before_ack: seen < acked,
    })
}

// === memory and machine ===

struct Memory {
    splits: usize,
    services: usize,
    rss_kib: u64,
    hwm_kib: u64,
    /// The size of the controller's /metrics page: it has series per split.
    metrics_bytes: usize,
}

impl Memory {
    async fn read(ctl: &Controller, splits: usize, services: usize) -> Result<Self> {
        let (rss_kib, hwm_kib) = ctl.memory_kib()?;
        let metrics_bytes = ctl.metrics().await?.len();
        Ok(Self {
            splits,
            services,
            rss_kib,
            hwm_kib,
            metrics_bytes,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} TrafficSplits, {} Services: VmRSS {:.1} MiB (VmHWM {:.1} MiB; /metrics is {:.1} MiB)",
            self.splits,
            self.services,
            mib(self.rss_kib),
            mib(self.hwm_kib),
            self.metrics_bytes as f64 / 1048576.0
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "splits": self.splits,
            "services": self.services,
            "endpoint_slices": self.services,
            "vm_rss_kib": self.rss_kib,
            "vm_hwm_kib": self.hwm_kib,
            "vm_rss_mib": stats::round(mib(self.rss_kib)),
            "vm_hwm_mib": stats::round(mib(self.hwm_kib)),
            "metrics_bytes": self.metrics_bytes,
        })
    }
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) mem_total_mib: u64,
    pub(crate) load: String,
}

impl Machine {
    pub(crate) fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        let load = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            mem_total_mib,
            load,
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} CPUs ({}), {:.1} GiB, load average {} (anything else running skews the figures)",
            self.cpus,
            self.cpu_model,
            self.mem_total_mib as f64 / 1024.0,
            self.load
        )
    }
}

// === report ===

struct Report<'a> {
    args: &'a Args,
    machine: Machine,
    load_after: String,
    setup: Duration,
    ready_after: Duration,
    all_primary_after: Duration,
    flips: Flips,
    internal: Histogram,
    write_errors: f64,
    watch_errors: usize,
    small: Memory,
    large: Option<Memory>,
    restart: Option<restart::Outcome>,
}

pub(crate) fn summary(samples: &[Duration]) -> Value {
    Summary::of(samples).map_or(Value::Null, |s| s.to_json())
}

impl Report<'_> {
    fn reaction_met(&self) -> Option<bool> {
        Summary::of(&self.flips.from_ack).map(|s| s.p99 < REACTION_TARGET_MS)
    }

    fn rss_met(&self) -> Option<bool> {
        self.large.as_ref().map(|m| m.rss_kib < RSS_TARGET_KIB)
    }

    fn to_json(&self) -> Value {
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        json!({
            "benchmark": "failover",
            "unix_time": unix_time,
            "machine": {
                "cpus": self.machine.cpus,
                "cpu_model": self.machine.cpu_model,
                "mem_total_mib": self.machine.mem_total_mib,
                "load_before": self.machine.load,
                "load_after": self.load_after,
            },
            "setup": {
                "splits": self.args.splits,
                "services": 2 * self.args.splits,
                "endpoint_slices": 2 * self.args.splits,
                "created_in_s": stats::round(self.setup.as_secs_f64()),
                "controller_ready_s": stats::round(self.ready_after.as_secs_f64()),
                "all_primary_s": stats::round(self.all_primary_after.as_secs_f64()),
            },
            "flips": {
                "count": self.flips.from_ack.len(),
                "gap_ms": self.args.gap_ms,
                "seen_before_patch_ack": self.flips.before_ack,
                "end_to_end": summary(&self.flips.from_ack),
                "end_to_end_from_patch_sent": summary(&self.flips.from_send),
                "patch_round_trip": summary(&self.flips.patch),
                "failover": summary(&self.flips.failover),
                "failback": summary(&self.flips.failback),
                "controller_reaction_seconds": self.internal.to_json_ms(),
                "controller_write_errors": self.write_errors,
                "watch_errors": self.watch_errors,
            },
            "rss": {
                "with_flip_splits": self.small.to_json(),
                "with_rss_splits": self.large.as_ref().map(Memory::to_json),
            },
            "restart": self.restart.as_ref().map(restart::Outcome::to_json),
            "targets": {
                "reaction_p99_under_100ms": self.reaction_met(),
                "restart_reaction_p99_under_100ms": self.restart.as_ref().and_then(restart::Outcome::reaction_met),
                "rss_under_40mib": self.rss_met(),
            },
        })
    }

    fn text(&self) -> String {
        let mut t = String::new();
        let line = |t: &mut String, s: String| {
            t.push_str(&s);
            t.push('\n');
        };
        let fmt = |s: Option<Summary>| match s {
            Some(s) => format!(
                "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms (n {})",
                s.p50, s.p90, s.p99, s.max, s.mean, s.n
            ),
            None => "no samples".into(),
        };
        let yes = |m: Option<bool>| match m {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        line(&mut t, String::new());
        line(&mut t, "== failover controller benchmark ==".into());
        line(
            &mut t,
            format!(
                "machine:  {}; load average after {}",
                self.machine.describe(),
                self.load_after
            ),
        );
        line(
            &mut t,
            format!(
                "setup:    {} TrafficSplits, {} Services, {} EndpointSlices (created in {:.1} s); controller ready {:.1} s and all splits primary {:.1} s after its start",
                self.args.splits,
                2 * self.args.splits,
                2 * self.args.splits,
                self.setup.as_secs_f64(),
                self.ready_after.as_secs_f64(),
                self.all_primary_after.as_secs_f64()
            ),
        );
        line(
            &mut t,
            format!(
                "flips:    {} (half failovers, half failbacks), one at a time, {} ms apart",
                self.flips.from_ack.len(),
                self.args.gap_ms
            ),
        );
        line(
            &mut t,
            format!(
                "reaction, end to end (slice patch acknowledged -> new weights seen by a watch): {}",
                fmt(Summary::of(&self.flips.from_ack))
            ),
        );
        line(
            &mut t,
            format!("  failovers: {}", fmt(Summary::of(&self.flips.failover))),
        );
        line(
            &mut t,
            format!("  failbacks: {}", fmt(Summary::of(&self.flips.failback))),
        );
        line(
            &mut t,
            format!(
                "  from the patch sent instead: {}",
                fmt(Summary::of(&self.flips.from_send))
            ),
        );
        line(
            &mut t,
            format!(
                "  the slice patch itself:      {}",
                fmt(Summary::of(&self.flips.patch))
            ),
        );
        let q = |q: f64| {
            self.internal
                .quantile(q)
                .map_or("-".to_string(), |s| format!("{:.1} ms", s * 1e3))
        };
        line(
            &mut t,
            format!(
                "reaction, controller's {REACTION_HISTOGRAM} (slice event received -> weights written), over the flips: n {}, mean {}, p50 ~{}, p90 ~{}, p99 ~{} (interpolated in power-of-2 buckets)",
                self.internal.count,
                if self.internal.count > 0.0 {
                    format!("{:.1} ms", self.internal.sum / self.internal.count * 1e3)
                } else {
                    "-".into()
                },
                q(0.5),
                q(0.9),
                q(0.99)
            ),
        );
        line(
            &mut t,
            format!(
                "write errors during the flips: {}; weights seen before the patch answer: {}; watch errors: {}",
                self.write_errors, self.flips.before_ack, self.watch_errors
            ),
        );
        line(&mut t, format!("RSS:      {}", self.small.describe()));
        if let Some(m) = &self.large {
            line(&mut t, format!("RSS:      {}", m.describe()));
        }
        if let Some(r) = &self.restart {
            for l in r.text(&fmt) {
                line(&mut t, l);
            }
        }
        let rss_target = match &self.large {
            Some(m) => format!(
                "RSS with {} splits < 40 MiB: {}",
                m.splits,
                yes(self.rss_met())
            ),
            None => "RSS < 40 MiB: not measured (--rss-splits 0)".into(),
        };
        line(
            &mut t,
            format!(
                "targets:  reaction p99 < 100 ms: {}; after a restart: {}; {rss_target}",
                yes(self.reaction_met()),
                yes(self
                    .restart
                    .as_ref()
                    .and_then(restart::Outcome::reaction_met)),
            ),
        );
        t
    }
}

//! `tandem-bench mirror`: the service mirror's speed and memory, between two
//! clusters of a testbed. The local cluster (`east`) mirrors the remote one
//! (`west`).
//!
//! 1. Installs what a Link needs, with the commands users type:
//!    `tandem certificate create` (a root and an issuer per cluster),
//!    `tandem install --crds`, `tandem install --identity-*` and
//!    `tandem multicluster install` in both clusters, each piped to
//!    `kubectl apply -f -`. It waits for the remote-access token, then pipes
//!    `tandem multicluster --context=west link ...` to the local cluster.
//! 2. The floor, a yardstick measured in the same run: in the local cluster,
//!    creates N Services and their EndpointSlices directly, as many at a
//!    time as the labelling, and times it; then deletes them and waits until
//!    they are gone.
//!    In the remote cluster, creates N Services without selectors. Each gets
//!    one EndpointSlice, written by the benchmark alone, with one ready
//!    endpoint. None is exported yet.
//! 3. Starts `tandem gateway` (the remote gateway's probe endpoint) and
//!    `tandem multicluster mirror`. It waits until the mirror is ready, holds
//!    the Link's finalizer and has seen a gateway probe pass.
//! 4. Labels all N Services `mirror.linkerd.io/exported=true`, a bounded
//!    number at a time. It times from the first label request until a watch
//!    in the local cluster sees all N mirror EndpointSlices with a ready
//!    endpoint.
//! 5. Flips remote endpoints unready and ready again, one flip at a time. It
//!    times each from the remote patch acknowledged to the watch seeing the
//!    mirror slice's endpoint flip.
//! 6. Reads the mirror's RSS.

use std::{
    collections::HashMap,
    ffi::OsString,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Namespace, Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use serde_json::{Value, json};
use tokio::{
    io::AsyncWriteExt,
    process::Command,
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, sleep, timeout, timeout_at},
};

use crate::{
    controller::{self, Controller},
    failover::{
        FIELD_MANAGER, Machine, Progress, REQUEST_TIMEOUT, SETTLE, client, create_namespace,
        create_objects, mib, post,
    },
    objects,
    stats::{self, Summary},
};

/// The multicluster namespace `tandem multicluster install` creates.
const MC_NAMESPACE: &str = "tandem-multicluster";
/// The Secret that kube-controller-manager fills with the remote-access token.
const TOKEN_SECRET: &str = "tandem-service-mirror-remote-access-default-token";
/// The gateway's probe port, as `tandem multicluster install` declares it.
const PROBE_PORT: u16 = 4191;
const EXPORT_LABEL: &str = "mirror.linkerd.io/exported";
/// The label the mirror puts on its EndpointSlices.
const MIRROR_SLICE_SELECTOR: &str =
    "endpointslice.kubernetes.io/managed-by=service-mirror.multicluster.tandem.io";
const LINK_FINALIZER: &str = "multicluster.tandem.io/mirrors";
const WRITES: &str = "tandem_mirror_mirror_writes_total";
const WRITE_ERRORS: &str = "tandem_mirror_mirror_write_errors_total";
const PROBES: &str = "tandem_mirror_gateway_probes_total";
const GATEWAY_ALIVE: &str = "tandem_mirror_gateway_alive";
const MIRRORED: &str = "tandem_mirror_mirrored_services";
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
const MIRRORING_TARGET: Duration = Duration::from_secs(3);
const FLIP_TARGET_MS: f64 = 50.0;
/// A flip this slow is reported as it happens.
const SLOW_FLIP: Duration = Duration::from_millis(50);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The testbed's kubeconfig, with a context per cluster.
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
    /// The cluster that runs the mirror and gets the mirrors.
    #[arg(long, value_name = "NAME", default_value = "east")]
    local_context: String,
    /// The linked cluster, whose Services are exported; also the Link's
    /// cluster name (mirrors are `<svc>-<name>`).
    #[arg(long, value_name = "NAME", default_value = "west")]
    remote_context: String,
    /// The remote API server URL written into the Link's credentials.
    /// Default: the one in the kubeconfig.
    #[arg(long, value_name = "URL")]
    remote_api_server: Option<String>,
    /// The tandem binary under test (a release build).
    #[arg(long, value_name = "FILE")]
    tandem: PathBuf,
    /// kubectl, to apply what tandem prints.
    #[arg(long, value_name = "FILE", default_value = "kubectl")]
    kubectl: PathBuf,
    /// The namespace of the benchmark's Services, in both clusters.
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// The remote gateway's address: `tandem gateway` serves its probe on
    /// this IP, port 4191.
    #[arg(long, value_name = "IP", default_value = "127.20.30.1")]
    gateway_ip: Ipv4Addr,
    /// Services exported at once.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Export label requests in flight at a time.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Longest the mirroring may take before the benchmark fails, in seconds.
    #[arg(long, default_value_t = 300)]
    mirror_timeout_secs: u64,
    /// Readiness flips, either direction (unready and back are two); rounded up to even.
    #[arg(long, default_value_t = 200)]
    flips: usize,
    /// Pause after each flip is seen, so that each starts on an idle mirror.
    #[arg(long, default_value_t = 100)]
    gap_ms: u64,
    /// Longest a flip may take before the benchmark fails, in seconds.
    #[arg(long, default_value_t = 10)]
    flip_timeout_secs: u64,
    /// The mirror's log filter (`--log`). Default: none given, so tandem's
    /// default, as the Deployment that `link` prints runs it.
    #[arg(long, value_name = "FILTER")]
    mirror_log: Option<String>,
    /// Certificates and the logs of the mirror and the gateway. Default: a
    /// new directory in the temp directory.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Also write the JSON summary to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

impl Args {
    fn validate(&mut self) -> Result<()> {
        if self.services == 0 || self.services > objects::MAX_SERVICES {
            bail!("--services must be between 1 and {}", objects::MAX_SERVICES);
        }
        if self.flips < 2 {
            bail!("--flips must be at least 2 (the issue asks for at least 100)");
        }
        self.flips += self.flips % 2;
        if self.in_flight == 0 {
            bail!("--in-flight must be positive");
        }
        if self.flip_timeout_secs == 0 || self.mirror_timeout_secs == 0 {
            bail!("--flip-timeout-secs and --mirror-timeout-secs must be positive");
        }
        if self.local_context == self.remote_context {
            bail!("--local-context and --remote-context must be different clusters");
        }
        Ok(())
    }

    fn cluster(&self) -> &str {
        &self.remote_context
    }
}

pub async fn run(mut args: Args) -> Result<()> {
    args.validate()?;
    let p = Progress::new();
    let machine = Machine::read();
    p.say(format_args!("machine: {}", machine.describe()));
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tandem-bench-mirror-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work)
        .with_context(|| format!("creating the work directory {}", work.display()))?;
    let local = client(&args.kubeconfig, &args.local_context).await?;
    let remote = client(&args.kubeconfig, &args.remote_context).await?;
    let ns = args.namespace.as_str();
    let cli = Cli {
        tandem: &args.tandem,
        kubectl: &args.kubectl,
        kubeconfig: &args.kubeconfig,
        dir: &work,
    };

    // === the link, as users make it ===
    let install_start = Instant::now();
    install(&p, &cli, &args).await?;
    wait_token(&remote, &args.remote_context).await?;
    p.say("the remote-access token is filled in");
    let api_server = match &args.remote_api_server {
        Some(url) => url.clone(),
        None => kube_url(&args.kubeconfig, &args.remote_context).await?,
    };
    let gateway_ip = args.gateway_ip.to_string();
    cli.pipe(
        &args.remote_context,
        &[
            "multicluster",
            "link",
            "--cluster-name",
            args.cluster(),
            "--api-server-address",
            &api_server,
            "--gateway-addresses",
            &gateway_ip,
        ],
        &args.local_context,
    )
    .await?;
    p.say(format_args!(
        "linked: {} mirrors {} ({api_server}, gateway {gateway_ip})",
        args.local_context, args.remote_context
    ));
    let installed_in = install_start.elapsed();

    // === the remote services, not exported yet ===
    create_namespace(&local, ns).await?;
    create_namespace(&remote, ns).await?;
    // A testbed cluster's own service range is a /24: too small for 1,000
    // Services and as many mirrors.
    for (client, context) in [
        (&local, &args.local_context),
        (&remote, &args.remote_context),
    ] {
        widen_service_range(client)
            .await
            .with_context(|| format!("widening the service range of {context}"))?;
    }
    let n = args.services;
    // === the API server's own pace for the same writes, as a yardstick ===
    let floor = floor(&p, &local, n, args.in_flight).await?;
    let services: Api<Service> = Api::namespaced(remote.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(remote.clone(), ns);
    create_objects(&p, "remote Services", &services, 0..n, |k| {
        objects::service(ns, k)
    })
    .await?;
    create_objects(&p, "remote EndpointSlices", &slices, 0..n, |k| {
        objects::endpoint_slice(ns, k)
    })
    .await?;

    // === the gateway and the mirror ===
    let gateway_admin = SocketAddr::from((args.gateway_ip, PROBE_PORT));
    let mut gateway = Controller::spawn(
        "the gateway",
        &args.tandem,
        &os(&[
            "gateway",
            "--probe-only",
            "--admin-addr",
            &gateway_admin.to_string(),
        ]),
        gateway_admin,
        &work.join("gateway.log"),
    )?;
    gateway.wait_ready(Duration::from_secs(30)).await?;
    p.say(format_args!(
        "gateway probe endpoint up (pid {}, http://{gateway_admin}/ready)",
        gateway.pid()
    ));
    let mirror_admin = controller::free_port().context("finding a free port for the mirror")?;
    let mut mirror_args = vec![
        OsString::from("--kubeconfig"),
        args.kubeconfig.clone().into(),
        "--context".into(),
        args.local_context.clone().into(),
    ];
    if let Some(filter) = &args.mirror_log {
        mirror_args.extend(["--log".into(), filter.into()]);
    }
    mirror_args.extend(os(&[
        "multicluster",
        "mirror",
        "--link",
        args.cluster(),
        "--admin-addr",
        &mirror_admin.to_string(),
    ]));
    let mirror_log = work.join("mirror.log");
    let started = Instant::now();
    let mut mirror = Controller::spawn(
        "the service mirror",
        &args.tandem,
        &mirror_args,
        mirror_admin,
        &mirror_log,
    )?;
    p.say(format_args!(
        "service mirror started (pid {}, admin http://{mirror_admin}, log {})",
        mirror.pid(),
        mirror_log.display()
    ));
    mirror.wait_ready(Duration::from_secs(120)).await?;
    wait_synced(&local, &mut mirror, args.cluster()).await?;
    let synced_after = started.elapsed();
    p.say(format_args!(
        "service mirror ready, holding the Link's finalizer and seeing the gateway alive, {:.1} s after its start",
        synced_after.as_secs_f64()
    ));

    // === mirroring ===
    let mut watch = SliceWatch::start(local.clone(), ns);
    watch.wait_listed(Duration::from_secs(30)).await?;
    let mut state = MirrorState::default();
    for c in watch.drain() {
        state.apply(&c);
    }
    if state.slices() != 0 {
        bail!(
            "{} mirror EndpointSlices exist in {} before any export: start from a fresh testbed",
            state.slices(),
            args.local_context
        );
    }
    let before = mirror.metrics().await?;
    p.say(format_args!(
        "exporting {n} Services ({} label requests in flight)",
        args.in_flight
    ));
    let labelled = label_all(&services, n, args.in_flight).await?;
    p.say(format_args!(
        "all {n} labelled in {:.2} s",
        (labelled.last_ack - labelled.first_sent).as_secs_f64()
    ));
    let mirrored = wait_mirrored(
        &p,
        &mut watch,
        &mut state,
        &mut mirror,
        n,
        labelled.first_sent + Duration::from_secs(args.mirror_timeout_secs),
    )
    .await?;
    let after = mirror.metrics().await?;
    let mirroring = Mirroring {
        labelled,
        mirrored,
        floor,
        writes: stats::series_total(&after, WRITES, &[])
            - stats::series_total(&before, WRITES, &[]),
        write_errors: stats::series_total(&after, WRITE_ERRORS, &[])
            - stats::series_total(&before, WRITE_ERRORS, &[]),
    };
    p.say(format_args!(
        "all {n} mirrored with a ready endpoint: {:.2} s after the first label request, {:.2} s after the last label's answer",
        mirroring.since_first_label().as_secs_f64(),
        mirroring.since_last_ack().as_secs_f64()
    ));
    sleep(SETTLE).await;
    mirror.check_running()?;
    let after_mirroring = Memory::read(&mirror, n)?;
    p.say(format_args!(
        "service mirror memory: {}",
        after_mirroring.describe()
    ));

    // === flips, with the Link's status written meanwhile ===
    let status_writes = StatusWrites::watch(&local, args.cluster());
    let before = mirror.metrics().await?;
    let flips = flip(&p, &slices, &mut watch, &mut mirror, &args).await?;
    let after = mirror.metrics().await?;
    let status_writes = status_writes.count();
    p.say(format_args!(
        "the Link's status was written {status_writes} time(s) during the flips (heartbeat included)"
    ));
    let flip_writes =
        stats::series_total(&after, WRITES, &[]) - stats::series_total(&before, WRITES, &[]);
    let flip_write_errors = stats::series_total(&after, WRITE_ERRORS, &[])
        - stats::series_total(&before, WRITE_ERRORS, &[]);
    sleep(SETTLE).await;
    mirror.check_running()?;
    let after_flips = Memory::read(&mirror, n)?;
    let mirrored_gauge = stats::series_total(
        &mirror.metrics().await?,
        MIRRORED,
        &[("cluster", args.cluster())],
    );
    p.say(format_args!(
        "service mirror memory: {}",
        after_flips.describe()
    ));
    let watch_errors = watch.errors();
    drop(watch);
    mirror.stop().await?;
    gateway.stop().await?;
    let machine_after = Machine::read();

    // === report ===
    let report = Report {
        args: &args,
        machine,
        load_after: machine_after.load,
        installed_in,
        synced_after,
        mirroring,
        flips,
        flip_writes,
        flip_write_errors,
        status_writes,
        watch_errors,
        mirrored_gauge,
        after_mirroring,
        after_flips,
    };
    print!("{}", report.text());
    crate::emit_json(&report.to_json(), args.json.as_deref())?;
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

// === the CLI, as users run it ===

/// `tandem` and `kubectl` on the testbed, in the work directory.
struct Cli<'a> {
    tandem: &'a Path,
    kubectl: &'a Path,
    kubeconfig: &'a Path,
    dir: &'a Path,
}

impl Cli<'_> {
    /// `tandem [--kubeconfig K --context CTX] ARGS`: its stdout.
    async fn tandem(&self, context: Option<&str>, args: &[&str]) -> Result<Vec<u8>> {
        let mut cmd = Command::new(self.tandem);
        if let Some(ctx) = context {
            cmd.arg("--kubeconfig")
                .arg(self.kubeconfig)
                .args(["--context", ctx]);
        }
        let shown = format!(
            "tandem {}{}",
            context
                .map(|c| format!("--context {c} "))
                .unwrap_or_default(),
            args.join(" ")
        );
        let out = timeout(
            CLI_TIMEOUT,
            cmd.args(args)
                .current_dir(self.dir)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| anyhow!("`{shown}` took over {CLI_TIMEOUT:?}"))?
        .with_context(|| format!("running `{shown}` ({})", self.tandem.display()))?;
        if !out.status.success() {
            bail!(
                "`{shown}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// `kubectl --context CTX apply -f -`, tried again a few times (a CRD
    /// applied a moment ago may not be served yet).
    async fn apply(&self, context: &str, what: &str, manifest: &[u8]) -> Result<()> {
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        loop {
            let err = match self.apply_once(context, manifest).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if attempt == ATTEMPTS {
                return Err(err.context(format!(
                    "`{what} | kubectl --context {context} apply -f -`, {ATTEMPTS} attempts"
                )));
            }
            sleep(Duration::from_secs(2)).await;
            attempt += 1;
        }
    }

    async fn apply_once(&self, context: &str, manifest: &[u8]) -> Result<()> {
        let mut kubectl = Command::new(self.kubectl)
            .arg("--kubeconfig")
            .arg(self.kubeconfig)
            .args(["--context", context, "apply", "-f", "-"])
            .current_dir(self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {} (is kubectl on PATH?)", self.kubectl.display()))?;
        let mut stdin = kubectl
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin for kubectl"))?;
        stdin
            .write_all(manifest)
            .await
            .context("writing to kubectl")?;
        drop(stdin);
        let out = timeout(CLI_TIMEOUT, kubectl.wait_with_output())
            .await
            .map_err(|_| anyhow!("kubectl apply took over {CLI_TIMEOUT:?}"))?
            .context("waiting for kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `tandem --context FROM ARGS | kubectl --context TO apply -f -`.
    async fn pipe(&self, from: &str, args: &[&str], to: &str) -> Result<()> {
        let manifest = self.tandem(Some(from), args).await?;
        let what = format!("tandem --context {from} {}", args.join(" "));
        self.apply(to, &what, &manifest).await
    }
}

/// Certificates, then the CRDs, the core control plane and multicluster in
/// both clusters.
async fn install(p: &Progress, cli: &Cli<'_>, args: &Args) -> Result<()> {
    let cert = |extra: &[&str]| {
        let mut all = vec!["certificate", "create"];
        all.extend(extra);
        all.extend(["--no-password", "--insecure", "--force"]);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let root = cert(&[
        "root.linkerd.cluster.local",
        "root.crt",
        "root.key",
        "--profile",
        "root-ca",
    ]);
    cli.tandem(None, &root.iter().map(String::as_str).collect::<Vec<_>>())
        .await?;
    let clusters = [args.local_context.as_str(), args.remote_context.as_str()];
    for c in clusters {
        let crt = format!("{c}-issuer.crt");
        let key = format!("{c}-issuer.key");
        let issuer = cert(&[
            "identity.linkerd.cluster.local",
            &crt,
            &key,
            "--profile",
            "intermediate-ca",
            "--ca",
            "root.crt",
            "--ca-key",
            "root.key",
            "--not-after",
            "8760h",
        ]);
        cli.tandem(None, &issuer.iter().map(String::as_str).collect::<Vec<_>>())
            .await?;
    }
    p.say(format_args!(
        "certificates: a root and an issuer per cluster in {}",
        cli.dir.display()
    ));
    for c in clusters {
        cli.pipe(c, &["install", "--crds"], c).await?;
        let crt = format!("{c}-issuer.crt");
        let key = format!("{c}-issuer.key");
        cli.pipe(
            c,
            &[
                "install",
                "--identity-trust-anchors-file",
                "root.crt",
                "--identity-issuer-certificate-file",
                &crt,
                "--identity-issuer-key-file",
                &key,
            ],
            c,
        )
        .await?;
        cli.pipe(c, &["multicluster", "install"], c).await?;
        p.say(format_args!(
            "installed in {c}: the CRDs, the control plane, multicluster"
        ));
    }
    Ok(())
}

/// Waits until kube-controller-manager has filled in the remote-access token.
async fn wait_token(remote: &Client, context: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(remote.clone(), MC_NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = timeout(REQUEST_TIMEOUT, api.get_opt(TOKEN_SECRET)).await;
        if let Ok(Ok(Some(s))) = &got
            && s.data
                .as_ref()
                .and_then(|d| d.get("token"))
                .is_some_and(|t| !t.0.is_empty())
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "Secret {MC_NAMESPACE}/{TOKEN_SECRET} in {context} had no token 60 s after `tandem multicluster install` (is kube-controller-manager running?); last answer: {}",
                match got {
                    Ok(Ok(Some(_))) => "no token yet".to_string(),
                    Ok(Ok(None)) => "no such Secret".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_string(),
                }
            );
        }
        sleep(Duration::from_millis(250)).await;
    }
}

/// The API server URL of a context, as the kubeconfig has it.
async fn kube_url(kubeconfig: &Path, context: &str) -> Result<String> {
    let config = tandem_util::client::config_from_file(kubeconfig, Some(context)).await?;
    Ok(config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string())
}

/// An extra service range for the benchmark's Services.
const BENCH_SERVICE_CIDR: &str = "198.19.160.0/20";

/// Adds [`BENCH_SERVICE_CIDR`] as a ServiceCIDR and waits until it is ready.
async fn widen_service_range(client: &Client) -> Result<()> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "networking.k8s.io",
        "v1",
        "ServiceCIDR",
    ));
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let object = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "ServiceCIDR",
        "metadata": {"name": "tandem-bench"},
        "spec": {"cidrs": [BENCH_SERVICE_CIDR]},
    });
    timeout(
        REQUEST_TIMEOUT,
        api.patch(
            "tandem-bench",
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&object),
        ),
    )
    .await
    .context("timed out")??;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = timeout(REQUEST_TIMEOUT, api.get("tandem-bench"))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|o| o.data["status"]["conditions"].as_array().cloned())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the ServiceCIDR {BENCH_SERVICE_CIDR} is not ready after 30 s");
        }
        sleep(Duration::from_millis(200)).await;
    }
}

fn link_api() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "multicluster.tandem.io",
        "v1alpha1",
        "Link",
    ))
}

/// Waits until the mirror holds the Link's finalizer (before that it writes
/// no mirror) and has seen the gateway's probe pass.
async fn wait_synced(local: &Client, mirror: &mut Controller, cluster: &str) -> Result<()> {
    let links: Api<DynamicObject> = Api::namespaced_with(local.clone(), MC_NAMESPACE, &link_api());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        mirror.check_running()?;
        let finalizer = match timeout(REQUEST_TIMEOUT, links.get_opt(cluster)).await {
            Ok(Ok(Some(l))) => l
                .metadata
                .finalizers
                .is_some_and(|f| f.iter().any(|f| f == LINK_FINALIZER)),
            _ => false,
        };
        let metrics = mirror.metrics().await.unwrap_or_default();
        let probed = stats::series_total(
            &metrics,
            PROBES,
            &[("cluster", cluster), ("successful", "true")],
        ) >= 1.0;
        let alive = stats::series_total(&metrics, GATEWAY_ALIVE, &[("cluster", cluster)]) >= 1.0;
        if finalizer && probed && alive {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "60 s after it was ready, the service mirror still lacked: {}",
                [
                    (!finalizer).then_some("the Link's finalizer"),
                    (!probed).then_some("a passing gateway probe"),
                    (!alive).then_some("the gateway alive"),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ")
            );
        }
        sleep(Duration::from_millis(200)).await;
    }
}

// === exporting ===

/// The merge patch that exports a Service.
fn export_patch() -> Value {
    json!({ "metadata": { "labels": { EXPORT_LABEL: "true" } } })
}

/// The name of the mirror EndpointSlice of remote Service `k`.
fn mirror_slice_name(k: usize, cluster: &str) -> String {
    format!("{}-{cluster}-gateway", objects::service_name(k))
}

/// The namespace of the floor's objects, in the local cluster.
const FLOOR_NAMESPACE: &str = "bench-floor";

/// The API server's own pace for what mirroring `n` Services writes: `n`
/// Services and their EndpointSlices created directly in the local cluster
/// (each Service, then its slice, as the mirror does), `in_flight` at a
/// time, before the mirror runs. The mirroring is compared with it, both
/// measured in the same run on the same machine. Then the namespace is
/// deleted and its Services waited out: Kubernetes counts every allocated
/// cluster IP at each allocation, so the mirroring must meet as few as the
/// floor did.
async fn floor(p: &Progress, local: &Client, n: usize, in_flight: usize) -> Result<Duration> {
    let ns = FLOOR_NAMESPACE;
    create_namespace(local, ns).await?;
    let services: Api<Service> = Api::namespaced(local.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(local.clone(), ns);
    let (services, slices) = (&services, &slices);
    p.say(format_args!(
        "floor: creating {n} Services and their EndpointSlices directly ({in_flight} in flight)"
    ));
    let start = Instant::now();
    let mut results = futures::stream::iter(0..n)
        .map(|k| async move {
            let service = crate::failover::create_one(|| async {
                services
                    .create(&post(), &objects::service(ns, k))
                    .await
                    .map(drop)
            })
            .await;
            let slice = match service {
                Ok(()) => {
                    crate::failover::create_one(|| async {
                        slices
                            .create(&post(), &objects::endpoint_slice(ns, k))
                            .await
                            .map(drop)
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            (k, slice)
        })
        .buffer_unordered(in_flight);
    while let Some((k, r)) = results.next().await {
        r.with_context(|| {
            format!(
                "floor: creating Service {} and its slice",
                objects::service_name(k)
            )
        })?;
    }
    let took = start.elapsed();
    p.say(format_args!(
        "floor: {n} Services and slices in {:.2} s; deleting them",
        took.as_secs_f64()
    ));
    let namespaces: Api<Namespace> = Api::all(local.clone());
    timeout(
        REQUEST_TIMEOUT,
        namespaces.delete(ns, &DeleteParams::default()),
    )
    .await
    .context("floor: deleting its namespace timed out")?
    .with_context(|| format!("floor: deleting the namespace {ns}"))?;
    let deadline = Instant::now() + FLOOR_CLEANUP;
    loop {
        let gone = matches!(
            timeout(REQUEST_TIMEOUT, namespaces.get_opt(ns)).await,
            Ok(Ok(None))
        );
        if gone {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "floor: the namespace {ns} and its {n} Services are not gone after {} s",
                FLOOR_CLEANUP.as_secs()
            );
        }
        sleep(Duration::from_millis(500)).await;
    }
    p.say("floor: deleted");
    Ok(took)
}

/// How long the floor's namespace may take to go.
const FLOOR_CLEANUP: Duration = Duration::from_secs(180);

/// When the labelling started and ended.
#[derive(Debug)]
struct Labelled {
    first_sent: Instant,
    last_ack: Instant,
    requests: Vec<Duration>,
}

/// Labels Services `0..n` exported, `in_flight` requests at a time; busy
/// answers are retried a few times.
async fn label_all(services: &Api<Service>, n: usize, in_flight: usize) -> Result<Labelled> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patch = Patch::Merge(export_patch());
    let (params, patch) = (&params, &patch);
    let first_sent = Instant::now();
    let mut results = futures::stream::iter(0..n)
        .map(|k| async move {
            let sent = Instant::now();
            let name = objects::service_name(k);
            let r = crate::failover::create_one(|| async {
                services.patch(&name, params, patch).await.map(drop)
            })
            .await;
            (k, r, sent, Instant::now())
        })
        .buffer_unordered(in_flight);
    let mut last_ack = first_sent;
    let mut requests = Vec::with_capacity(n);
    while let Some((k, r, sent, acked)) = results.next().await {
        r.with_context(|| format!("labelling Service {} exported", objects::service_name(k)))?;
        last_ack = last_ack.max(acked);
        requests.push(acked - sent);
    }
    Ok(Labelled {
        first_sent,
        last_ack,
        requests,
    })
}

/// How far the mirroring got, and when.
#[derive(Debug)]
struct Mirrored {
    first_ready: Instant,
    half_ready: Instant,
    all_ready: Instant,
}

/// Waits until the watch has seen `n` mirror slices with a ready endpoint.
async fn wait_mirrored(
    p: &Progress,
    watch: &mut SliceWatch,
    state: &mut MirrorState,
    mirror: &mut Controller,
    n: usize,
    deadline: Instant,
) -> Result<Mirrored> {
    let mut first = None;
    let mut half = None;
    let mut next_report = Instant::now() + Duration::from_secs(2);
    loop {
        match timeout_at(deadline.min(next_report), watch.changes.recv()).await {
            Ok(Some(c)) => {
                state.apply(&c);
                let ready = state.ready();
                if ready >= 1 && first.is_none() {
                    first = Some(c.at);
                }
                if 2 * ready >= n && half.is_none() {
                    half = Some(c.at);
                }
                if ready >= n {
                    return Ok(Mirrored {
                        first_ready: first.unwrap_or(c.at),
                        half_ready: half.unwrap_or(c.at),
                        all_ready: c.at,
                    });
                }
            }
            Ok(None) => bail!("the local EndpointSlice watch ended"),
            Err(_) => {
                mirror.check_running()?;
                if Instant::now() >= deadline {
                    bail!(
                        "only {} of {n} mirror EndpointSlices had a ready endpoint ({} exist) when the time ran out",
                        state.ready(),
                        state.slices()
                    );
                }
                p.say(format_args!(
                    "{}/{n} mirror slices ready ({} exist)",
                    state.ready(),
                    state.slices()
                ));
                next_report = Instant::now() + Duration::from_secs(2);
            }
        }
    }
}

// === the watch ===

/// A mirror slice as seen at an instant: whether it has a ready endpoint,
/// `None` when deleted.
#[derive(Debug)]
struct Change {
    name: String,
    ready: Option<bool>,
    at: Instant,
}

/// Whether a slice has an endpoint that is ready.
fn has_ready_endpoint(slice: &EndpointSlice) -> bool {
    slice.endpoints.iter().any(|e| {
        e.conditions
            .as_ref()
            .is_some_and(|c| c.ready == Some(true) && c.terminating != Some(true))
    })
}

/// Each mirror slice's readiness, and how many are ready.
#[derive(Debug, Default)]
struct MirrorState {
    ready: HashMap<String, bool>,
    ready_count: usize,
}

impl MirrorState {
    fn apply(&mut self, c: &Change) {
        let old = match c.ready {
            Some(r) => self.ready.insert(c.name.clone(), r),
            None => self.ready.remove(&c.name),
        };
        if old == Some(true) {
            self.ready_count -= 1;
        }
        if c.ready == Some(true) {
            self.ready_count += 1;
        }
    }

    fn ready(&self) -> usize {
        self.ready_count
    }

    fn slices(&self) -> usize {
        self.ready.len()
    }
}

/// A watch on the mirror's EndpointSlices in the local namespace: every
/// change on a channel, time-stamped on arrival.
struct SliceWatch {
    changes: mpsc::UnboundedReceiver<Change>,
    listed: Arc<AtomicBool>,
    errors: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl SliceWatch {
    fn start(client: Client, ns: &str) -> Self {
        let api: Api<EndpointSlice> = Api::namespaced(client, ns);
        let listed = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicUsize::new(0));
        let (tx, changes) = mpsc::unbounded_channel();
        let task = tokio::spawn({
            let listed = listed.clone();
            let errors = errors.clone();
            async move {
                let mut stream = watcher::watcher(
                    api,
                    watcher::Config::default().labels(MIRROR_SLICE_SELECTOR),
                )
                .default_backoff()
                .boxed();
                while let Some(event) = stream.next().await {
                    let at = Instant::now();
                    let (obj, ready) = match event {
                        Ok(Event::Apply(o) | Event::InitApply(o)) => {
                            let r = has_ready_endpoint(&o);
                            (o, Some(r))
                        }
                        Ok(Event::Delete(o)) => (o, None),
                        Ok(Event::Init) => continue,
                        Ok(Event::InitDone) => {
                            listed.store(true, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!(
                                    "warning: the mirror EndpointSlice watch failed: {e}; retrying"
                                );
                            }
                            continue;
                        }
                    };
                    let Some(name) = obj.metadata.name else {
                        continue;
                    };
                    if tx.send(Change { name, ready, at }).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            changes,
            listed,
            errors,
            task,
        }
    }

    async fn wait_listed(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while !self.listed.load(Ordering::Relaxed) {
            if Instant::now() >= deadline {
                bail!("the local EndpointSlice watch had not listed within {limit:?}");
            }
            sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn drain(&mut self) -> Vec<Change> {
        let mut v = vec![];
        while let Ok(c) = self.changes.try_recv() {
            v.push(c);
        }
        v
    }

    fn errors(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for SliceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === flips ===

/// Counts the Link's status writes (each stamps a new heartbeat time) while
/// it lives, so that the flips are known to be measured with the status
/// writer running.
struct StatusWrites {
    count: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl StatusWrites {
    fn watch(local: &Client, cluster: &str) -> Self {
        let links: Api<DynamicObject> =
            Api::namespaced_with(local.clone(), MC_NAMESPACE, &link_api());
        let config = watcher::Config::default().fields(&format!("metadata.name={cluster}"));
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher::watcher(links, config).default_backoff().boxed();
            let mut last: Option<Value> = None;
            while let Some(event) = events.next().await {
                let (Ok(Event::Apply(l)) | Ok(Event::InitApply(l))) = event else {
                    continue;
                };
                let beat = l.data["status"]["lastHeartbeatTime"].clone();
                if last.as_ref().is_some_and(|b| *b != beat) {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                last = Some(beat);
            }
        });
        Self { count, task }
    }

    /// How many writes were seen; the watch stops.
    fn count(self) -> usize {
        self.task.abort();
        self.count.load(Ordering::Relaxed)
    }
}

/// Each flip: from the remote patch sent, and acknowledged, to the mirror
/// slice's flip seen.
#[derive(Debug, Default)]
struct Flips {
    from_ack: Vec<Duration>,
    from_send: Vec<Duration>,
    patch: Vec<Duration>,
    unready: Vec<Duration>,
    ready: Vec<Duration>,
    /// Flips seen before the patch was acknowledged.
    before_ack: usize,
}

async fn flip(
    p: &Progress,
    slices: &Api<EndpointSlice>,
    watch: &mut SliceWatch,
    mirror: &mut Controller,
    args: &Args,
) -> Result<Flips> {
    let limit = Duration::from_secs(args.flip_timeout_secs);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut out = Flips::default();
    p.say(format_args!(
        "flipping: {} flips over {} services, one at a time, {} ms apart",
        args.flips,
        (args.flips / 2).min(args.services),
        args.gap_ms
    ));
    for f in 0..args.flips {
        let k = (f / 2) % args.services;
        let down = f % 2 == 0;
        let want = !down;
        let name = mirror_slice_name(k, args.cluster());
        let what = if down { "unready" } else { "ready" };
        watch.drain();
        let sent = Instant::now();
        let deadline = sent + limit;
        timeout_at(
            deadline,
            slices.patch(
                &objects::service_name(k),
                &params,
                &Patch::Merge(objects::readiness_patch(k, want)),
            ),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "flip {f}: patching the remote EndpointSlice {} took over {limit:?}",
                objects::service_name(k)
            )
        })?
        .with_context(|| {
            format!(
                "flip {f}: patching the remote EndpointSlice {}",
                objects::service_name(k)
            )
        })?;
        let acked = Instant::now();
        let seen = loop {
            let change = timeout_at(deadline, watch.changes.recv())
                .await
                .map_err(|_| {
                    let running = mirror.check_running().err();
                    anyhow!(
                        "flip {f} ({what}) was not seen on {name} within {limit:?}{}",
                        running.map(|e| format!(": {e}")).unwrap_or_default()
                    )
                })?
                .ok_or_else(|| anyhow!("the local EndpointSlice watch ended"))?;
            if change.name == name && change.ready == Some(want) {
                break change.at;
            }
        };
        let from_ack = seen.saturating_duration_since(acked);
        if seen < acked {
            out.before_ack += 1;
        }
        if from_ack >= SLOW_FLIP {
            p.say(format_args!(
                "flip {f} ({what} of {name}) was slow: {:.1} ms after the patch answer",
                from_ack.as_secs_f64() * 1e3
            ));
        }
        out.from_ack.push(from_ack);
        out.from_send.push(seen.saturating_duration_since(sent));
        out.patch.push(acked - sent);
        if down {
            out.unready.push(from_ack);
        } else {
            out.ready.push(from_ack);
        }
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
        sleep(Duration::from_millis(args.gap_ms)).await;
    }
    Ok(out)
}

// === memory ===

struct Memory {
    services: usize,
    rss_kib: u64,
    hwm_kib: u64,
}

impl Memory {
    fn read(mirror: &Controller, services: usize) -> Result<Self> {
        let (rss_kib, hwm_kib) = mirror.memory_kib()?;
        Ok(Self {
            services,
            rss_kib,
            hwm_kib,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} mirrored Services: VmRSS {:.1} MiB (VmHWM {:.1} MiB)",
            self.services,
            mib(self.rss_kib),
            mib(self.hwm_kib)
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "services": self.services,
            "vm_rss_kib": self.rss_kib,
            "vm_hwm_kib": self.hwm_kib,
            "vm_rss_mib": stats::round(mib(self.rss_kib)),
            "vm_hwm_mib": stats::round(mib(self.hwm_kib)),
        })
    }
}

// === report ===

struct Mirroring {
    labelled: Labelled,
    mirrored: Mirrored,
    /// The same writes made directly: see [`floor`].
    floor: Duration,
    writes: f64,
    write_errors: f64,
}

impl Mirroring {
    fn since_first_label(&self) -> Duration {
        self.mirrored
            .all_ready
            .saturating_duration_since(self.labelled.first_sent)
    }

    fn since_last_ack(&self) -> Duration {
        self.mirrored
            .all_ready
            .saturating_duration_since(self.labelled.last_ack)
    }

    fn labelling(&self) -> Duration {
        self.labelled.last_ack - self.labelled.first_sent
    }

    fn first_ready(&self) -> Duration {
        self.mirrored
            .first_ready
            .saturating_duration_since(self.labelled.first_sent)
    }

    fn half_ready(&self) -> Duration {
        self.mirrored
            .half_ready
            .saturating_duration_since(self.labelled.first_sent)
    }

    fn met(&self) -> bool {
        self.since_first_label() < MIRRORING_TARGET
    }

    /// The mirroring's time over the floor's, both measured in this run.
    fn over_floor(&self) -> f64 {
        self.since_first_label().as_secs_f64() / self.floor.as_secs_f64().max(1e-3)
    }
}

struct Report<'a> {
    args: &'a Args,
    machine: Machine,
    load_after: String,
    installed_in: Duration,
    synced_after: Duration,
    mirroring: Mirroring,
    flips: Flips,
    flip_writes: f64,
    flip_write_errors: f64,
    /// The Link's status writes seen during the flips.
    status_writes: usize,
    watch_errors: usize,
    mirrored_gauge: f64,
    after_mirroring: Memory,
    after_flips: Memory,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

impl Report<'_> {
    fn summary(samples: &[Duration]) -> Value {
        Summary::of(samples).map_or(Value::Null, |s| s.to_json())
    }

    /// The p99 target, measured while the status was written (else the
    /// measure does not count).
    fn flips_met(&self) -> Option<bool> {
        Summary::of(&self.flips.from_ack).map(|s| s.p99 < FLIP_TARGET_MS && self.status_writes > 0)
    }

    fn to_json(&self) -> Value {
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let m = &self.mirroring;
        json!({
            "benchmark": "mirror",
            "unix_time": unix_time,
            "machine": {
                "cpus": self.machine.cpus,
                "cpu_model": self.machine.cpu_model,
                "mem_total_mib": self.machine.mem_total_mib,
                "load_before": self.machine.load,
                "load_after": self.load_after,
            },
            "setup": {
                "services": self.args.services,
                "install_and_link_s": secs(self.installed_in),
                "mirror_synced_s": secs(self.synced_after),
            },
            "mirroring": {
                "services": self.args.services,
                "label_requests_in_flight": self.args.in_flight,
                "labelling_s": secs(m.labelling()),
                "label_request": Self::summary(&m.labelled.requests),
                "first_ready_s": secs(m.first_ready()),
                "half_ready_s": secs(m.half_ready()),
                "all_ready_from_first_label_s": secs(m.since_first_label()),
                "all_ready_from_last_label_ack_s": secs(m.since_last_ack()),
                "floor_s": secs(m.floor),
                "over_floor": stats::round(m.over_floor()),
                "mirror_writes": m.writes,
                "mirror_write_errors": m.write_errors,
            },
            "flips": {
                "count": self.flips.from_ack.len(),
                "gap_ms": self.args.gap_ms,
                "seen_before_patch_ack": self.flips.before_ack,
                "end_to_end": Self::summary(&self.flips.from_ack),
                "end_to_end_from_patch_sent": Self::summary(&self.flips.from_send),
                "patch_round_trip": Self::summary(&self.flips.patch),
                "to_unready": Self::summary(&self.flips.unready),
                "to_ready": Self::summary(&self.flips.ready),
                "mirror_writes": self.flip_writes,
                "mirror_write_errors": self.flip_write_errors,
                "link_status_writes": self.status_writes,
                "watch_errors": self.watch_errors,
            },
            "rss": {
                "after_mirroring": self.after_mirroring.to_json(),
                "after_flips": self.after_flips.to_json(),
            },
            "mirrored_services_gauge": self.mirrored_gauge,
            "targets": {
                "mirroring_under_3s": m.met(),
                "readiness_p99_under_50ms_with_status_writes": self.flips_met(),
            },
        })
    }

    fn text(&self) -> String {
        let m = &self.mirroring;
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
        let n = self.args.services;
        let lines = [
            String::new(),
            "== service mirror benchmark ==".into(),
            format!(
                "machine:   {}; load average after {}",
                self.machine.describe(),
                self.load_after
            ),
            format!(
                "setup:     install and link {:.1} s; mirror ready, finalizer held and gateway alive {:.1} s after its start",
                self.installed_in.as_secs_f64(),
                self.synced_after.as_secs_f64()
            ),
            format!(
                "mirroring: {n} Services labelled exported in {:.2} s ({} requests in flight; a request {})",
                m.labelling().as_secs_f64(),
                self.args.in_flight,
                fmt(Summary::of(&m.labelled.requests))
            ),
            format!(
                "  all {n} mirror slices with a ready endpoint: {:.2} s after the first label request, {:.2} s after the last label's answer",
                m.since_first_label().as_secs_f64(),
                m.since_last_ack().as_secs_f64()
            ),
            format!(
                "  the API server's floor, the same {n} Services and slices created directly ({} in flight, before the mirror ran): {:.2} s; the mirroring took {:.2}x that",
                self.args.in_flight,
                m.floor.as_secs_f64(),
                m.over_floor()
            ),
            format!(
                "  the first ready after {:.2} s, half after {:.2} s; {} mirror writes, {} write errors; mirrored_services gauge {}",
                m.first_ready().as_secs_f64(),
                m.half_ready().as_secs_f64(),
                m.writes,
                m.write_errors,
                self.mirrored_gauge
            ),
            format!(
                "flips:     {} (half to unready, half back), one at a time, {} ms apart",
                self.flips.from_ack.len(),
                self.args.gap_ms
            ),
            format!(
                "readiness, end to end (remote slice patch acknowledged -> mirror slice flip seen by a watch): {}",
                fmt(Summary::of(&self.flips.from_ack))
            ),
            format!("  to unready: {}", fmt(Summary::of(&self.flips.unready))),
            format!("  to ready:   {}", fmt(Summary::of(&self.flips.ready))),
            format!(
                "  from the patch sent instead: {}",
                fmt(Summary::of(&self.flips.from_send))
            ),
            format!(
                "  the remote patch itself:     {}",
                fmt(Summary::of(&self.flips.patch))
            ),
            format!(
                "  mirror writes during the flips: {} ({} errors); Link status writes meanwhile: {}; flips seen before the patch answer: {}; watch errors: {}",
                self.flip_writes,
                self.flip_write_errors,
                self.status_writes,
                self.flips.before_ack,
                self.watch_errors
            ),
            format!(
                "RSS:       after mirroring: {}",
                self.after_mirroring.describe()
            ),
            format!(
                "RSS:       after the flips: {}",
                self.after_flips.describe()
            ),
            format!(
                "targets:   {n} mirrored in < 3 s: {} ({:.2} s); readiness p99 < 50 ms with the status written meanwhile: {}",
                yes(Some(m.met())),
                m.since_first_label().as_secs_f64(),
                yes(self.flips_met())
            ),
        ];
        let mut t = lines.join("\n");
        t.push('\n');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    #[test]
    fn mirror_slices_are_named_after_the_mirror() {
        assert_eq!(mirror_slice_name(7, "west"), "svc-7-west-gateway");
        assert_eq!(export_patch()["metadata"]["labels"][EXPORT_LABEL], "true");
    }

    #[test]
    fn a_slice_is_ready_when_an_endpoint_is_ready_and_not_terminating() {
        let mut s = objects::endpoint_slice("bench", 0);
        assert!(has_ready_endpoint(&s));
        s.endpoints[0].conditions.as_mut().unwrap().ready = Some(false);
        assert!(!has_ready_endpoint(&s));
        s.endpoints.push(Endpoint {
            addresses: vec!["127.0.0.9".into()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(true),
            }),
            ..Default::default()
        });
        assert!(!has_ready_endpoint(&s));
        s.endpoints.clear();
        assert!(!has_ready_endpoint(&s));
    }

    #[test]
    fn the_state_counts_ready_slices_through_flips_and_deletes() {
        let at = Instant::now();
        let c = |name: &str, ready: Option<bool>| Change {
            name: name.into(),
            ready,
            at,
        };
        let mut s = MirrorState::default();
        s.apply(&c("a", Some(false)));
        assert_eq!((s.ready(), s.slices()), (0, 1));
        s.apply(&c("a", Some(true)));
        s.apply(&c("a", Some(true)));
        s.apply(&c("b", Some(true)));
        assert_eq!((s.ready(), s.slices()), (2, 2));
        s.apply(&c("b", Some(false)));
        assert_eq!(s.ready(), 1);
        s.apply(&c("a", None));
        s.apply(&c("gone", None));
        assert_eq!((s.ready(), s.slices()), (0, 1));
    }
}

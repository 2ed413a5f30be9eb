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

mod export;
mod flip;
mod floor;
mod link;
mod report;
mod watch;

use std::{
    ffi::OsString,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::Api;
use tokio::time::{Instant, sleep};

use self::{
    export::{label_all, wait_mirrored},
    flip::flip,
    floor::floor,
    link::{install, kube_url, wait_synced, wait_token, widen_service_range},
    report::{Memory, Mirroring, Report},
    watch::{MirrorState, SliceWatch, StatusWrites},
};
use crate::{
    api::{client, create_namespace, create_objects},
    cli::Cli,
    controller::{self, Controller},
    objects,
    report::{Machine, Progress, SETTLE},
    stats,
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

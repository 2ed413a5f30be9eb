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

mod flip;
mod report;
mod watch;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Result, bail};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, api::DynamicObject};
use tokio::time::{Instant, sleep};

use self::{
    flip::flip,
    report::{Memory, Report},
};
pub(crate) use self::{
    flip::{FlipOf, flip_one},
    watch::SplitWatch,
};
use crate::{
    api::{client, create_namespace, create_objects, wait_served},
    cli::install_split_crd,
    controller::Controller,
    objects,
    report::{Machine, Progress, SETTLE},
    restart,
    stats::{self, Histogram},
};

const REACTION_HISTOGRAM: &str = "tandem_failover_reaction_seconds";
const WRITE_ERRORS: &str = "tandem_failover_write_errors_total";
/// The reaction target of issue 10: p99 of a flip, end to end.
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

pub async fn run(mut args: Args) -> Result<()> {
    args.validate()?;
    let p = Progress::new();
    let machine = Machine::read();
    p.say(format_args!("machine: {}", machine.describe()));
    let client = client(&args.kubeconfig, &args.context).await?;
    let ns = args.namespace.as_str();

    // === setup ===
    install_split_crd(&args.tandem, &args.kubectl, &args.kubeconfig, &args.context).await?;
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
    sleep(SETTLE).await;
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
        sleep(SETTLE).await;
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

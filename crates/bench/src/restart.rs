//! `tandem-bench failover`'s restart phase: flips in the first seconds after
//! the controller restarts with a backlog of state-only writes (the issue's
//! "a real outage often comes with a restart").
//!
//! 1. Stops the controller, and removes tandem's state annotations from
//!    every split, so that the restarted controller has a state-only write
//!    to make on each (as when it takes over splits linkerd-failover managed).
//! 2. Creates [`SOLO`] more splits, each on a pair of Services of its own,
//!    so that a flip moves exactly one split.
//! 3. Starts unrelated endpoint changes, `--noise-per-sec` of them: the
//!    fallback endpoints of the first splits move address and stay ready.
//! 4. Restarts the controller and, from its `/ready` on, flips the solo
//!    splits one at a time until `--restart-secs` after its start, each
//!    timed as the steady-state flips are.
//! 5. Waits until every split carries its state again (the backlog done)
//!    and reads the controller's memory.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api,
    api::{DynamicObject, Patch},
};
use serde_json::{Value, json};
use tokio::{task::JoinHandle, time::Instant};

use crate::{
    api::{create_all, create_objects, patch_params},
    controller::Controller,
    failover::{FlipOf, REACTION_TARGET_MS, SplitWatch, flip_one},
    flips::Flips,
    objects,
    report::{Progress, Rss, SETTLE, describe, summary},
    stats::{Summary, round},
};

/// Splits with Services of their own, flipped during the restart.
pub const SOLO: usize = 100;

/// What the restart phase needs from the run before it.
pub struct Setup<'a> {
    pub p: &'a Progress,
    pub tandem: &'a Path,
    pub kubeconfig: &'a Path,
    pub context: &'a str,
    pub log: &'a Path,
    pub ns: &'a str,
    /// Pairs of Services of the first phase (`--splits`).
    pub pairs: usize,
    /// Splits there are now (`split-0` ...).
    pub splits: usize,
    pub secs: u64,
    pub noise_per_sec: u32,
    pub gap: Duration,
    pub limit: Duration,
}

pub struct Outcome {
    pub splits: usize,
    pub secs: u64,
    pub ready_after: Duration,
    pub flips: Flips,
    pub noise_per_sec: u32,
    pub noise_sent: usize,
    pub noise_errors: usize,
    /// From the start to every split carrying its state again.
    pub all_recorded_after: Duration,
    /// The controller's memory once the backlog is done.
    pub rss: Rss,
}

/// Runs the phase on a stopped controller; returns the restarted one.
pub async fn run(
    s: Setup<'_>,
    client: kube::Client,
    watch: &mut SplitWatch,
) -> Result<(Outcome, Controller)> {
    let (p, ns) = (s.p, s.ns);
    let splits: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &objects::traffic_split_api());
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);

    // === a backlog of state-only writes ===
    let unrecord = json!({"metadata": {"annotations": {
        objects::STATE_ANNOTATION: null,
        objects::LAST_TRANSITION_TIME_ANNOTATION: null,
    }}});
    create_all(p, "state annotations removed", 0..s.splits, |j| {
        let api = splits.clone();
        let patch = unrecord.clone();
        async move {
            api.patch(
                &objects::split_name(j),
                &patch_params(),
                &Patch::Merge(&patch),
            )
            .await
            .map(drop)
        }
    })
    .await?;
    let base = 2 * s.pairs;
    create_objects(p, "solo Services", &services, base..base + 2 * SOLO, |k| {
        objects::headless_service(ns, k)
    })
    .await?;
    create_objects(
        p,
        "solo EndpointSlices",
        &slices,
        base..base + 2 * SOLO,
        |k| objects::endpoint_slice(ns, k),
    )
    .await?;
    create_objects(p, "solo TrafficSplits", &splits, 0..SOLO, |i| {
        objects::split_between(ns, &solo_name(i), base + 2 * i, base + 2 * i + 1)
    })
    .await?;

    // === restart, under unrelated endpoint changes ===
    let noise = Noise::start(slices.clone(), s.pairs, s.noise_per_sec);
    let started = Instant::now();
    let mut ctl = Controller::start(s.tandem, s.kubeconfig, s.context, s.log)?;
    p.say(format_args!(
        "controller restarted (pid {}) with {} splits to record; {} unrelated endpoint changes/s",
        ctl.pid(),
        s.splits + SOLO,
        s.noise_per_sec
    ));
    ctl.wait_ready(Duration::from_secs(120)).await?;
    let ready_after = started.elapsed();
    p.say(format_args!(
        "ready {:.1} s after the restart; flipping until {} s",
        ready_after.as_secs_f64(),
        s.secs
    ));
    watch.start_forwarding();
    let mut flips = Flips::default();
    let window = Duration::from_secs(s.secs);
    let mut f = 0;
    while started.elapsed() < window {
        let i = (f / 2) % SOLO;
        let down = f % 2 == 0;
        let of = FlipOf {
            f,
            service: base + 2 * i,
            split: &solo_name(i),
            down,
        };
        let t = flip_one(&slices, watch, &mut ctl, of, s.limit).await?;
        flips.record(&t, down);
        f += 1;
        tokio::time::sleep(s.gap).await;
    }
    // End on failbacks, so that every split settles on `primary`.
    if f % 2 == 1 {
        let i = (f / 2) % SOLO;
        let of = FlipOf {
            f,
            service: base + 2 * i,
            split: &solo_name(i),
            down: false,
        };
        flip_one(&slices, watch, &mut ctl, of, s.limit).await?;
    }
    watch.stop_forwarding();
    if let Some(sum) = Summary::of(&flips.from_ack) {
        p.say(format_args!(
            "restart flips: {} (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
            sum.n, sum.p50, sum.p99, sum.max
        ));
    }
    let (noise_sent, noise_errors) = noise.stop();

    // === the backlog done ===
    watch
        .wait_primary(p, &mut ctl, s.splits + SOLO, Duration::from_secs(900))
        .await?;
    let all_recorded_after = started.elapsed();
    p.say(format_args!(
        "every split recorded again {:.1} s after the restart",
        all_recorded_after.as_secs_f64()
    ));
    tokio::time::sleep(SETTLE).await;
    ctl.check_running()?;
    let rss = Rss::read(&ctl)?;
    let outcome = Outcome {
        splits: s.splits + SOLO,
        secs: s.secs,
        ready_after,
        flips,
        noise_per_sec: s.noise_per_sec,
        noise_sent,
        noise_errors,
        all_recorded_after,
        rss,
    };
    Ok((outcome, ctl))
}

fn solo_name(i: usize) -> String {
    format!("restart-{i}")
}

/// Unrelated endpoint changes at a steady rate: the fallback Service of
/// pair `i` (ready all along) moves its endpoint's address back and forth.
struct Noise {
    task: JoinHandle<()>,
    sent: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
}

impl Noise {
    fn start(slices: Api<EndpointSlice>, pairs: usize, per_sec: u32) -> Self {
        let sent = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (sent, errors) = (sent.clone(), errors.clone());
            async move {
                if per_sec == 0 {
                    return;
                }
                let mut tick = tokio::time::interval(Duration::from_secs(1) / per_sec);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                for n in 0usize.. {
                    tick.tick().await;
                    let k = 2 * (n % pairs) + 1;
                    let moved = (n / pairs).is_multiple_of(2);
                    let (api, sent, errors) = (slices.clone(), sent.clone(), errors.clone());
                    // Not awaited here: the rate holds even when a patch is slow.
                    tokio::spawn(async move {
                        let patch = objects::move_patch(k, moved);
                        let res = api
                            .patch(
                                &objects::service_name(k),
                                &patch_params(),
                                &Patch::Merge(&patch),
                            )
                            .await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        if res.is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            }
        });
        Self { task, sent, errors }
    }

    /// Stops; returns the changes made and how many failed.
    fn stop(self) -> (usize, usize) {
        self.task.abort();
        (
            self.sent.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Noise {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === report ===

impl Outcome {
    pub fn reaction_met(&self) -> Option<bool> {
        Summary::of(&self.flips.from_ack).map(|s| s.p99 < REACTION_TARGET_MS)
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "splits": self.splits,
            "window_s": self.secs,
            "ready_after_s": round(self.ready_after.as_secs_f64()),
            "flips": self.flips.from_ack.len(),
            "end_to_end": summary(&self.flips.from_ack),
            "failover": summary(&self.flips.down),
            "failback": summary(&self.flips.up),
            "noise_per_sec": self.noise_per_sec,
            "noise_sent": self.noise_sent,
            "noise_errors": self.noise_errors,
            "all_recorded_after_s": round(self.all_recorded_after.as_secs_f64()),
        });
        self.rss.add_to(&mut v);
        v
    }

    pub fn text(&self) -> Vec<String> {
        vec![
            format!(
                "restart:  {} splits to record; ready {:.1} s after the restart; {} flips in the first {} s, under {} unrelated endpoint changes/s ({} made, {} failed)",
                self.splits,
                self.ready_after.as_secs_f64(),
                self.flips.from_ack.len(),
                self.secs,
                self.noise_per_sec,
                self.noise_sent,
                self.noise_errors
            ),
            format!(
                "  reaction after the restart, end to end: {}",
                describe(Summary::of(&self.flips.from_ack))
            ),
            format!(
                "  every split recorded again {:.1} s after the restart; then {}",
                self.all_recorded_after.as_secs_f64(),
                self.rss.describe()
            ),
        ]
    }
}

//! Flips: a primary's endpoint made unready (a failover) or ready again (a
//! failback), each timed until the split's weights follow.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, api::Patch};
use tokio::time::{Instant, sleep, timeout_at};

use super::{Args, SplitWatch};
use crate::{
    api::patch_params,
    controller::Controller,
    flips::{FlipTime, Flips},
    objects,
    report::Progress,
};

pub(super) async fn flip(
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
        out.progress(p, args.flips);
        sleep(Duration::from_millis(args.gap_ms)).await;
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
    let params = patch_params();
    let want: [u64; 2] = if down { [0, 1] } else { [1, 0] };
    let what = if down { "failover" } else { "failback" };
    watch.drain();
    let sent = Instant::now();
    let deadline = sent + limit;
    timeout_at(
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
        let change = timeout_at(deadline, watch.next())
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
    Ok(FlipTime::new(sent, acked, seen))
}

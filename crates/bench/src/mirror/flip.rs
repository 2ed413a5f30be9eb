//! Readiness flips: a remote endpoint made unready or ready again, one at a
//! time, each timed until the watch sees the mirror slice follow.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, api::Patch};
use tokio::time::{Instant, sleep, timeout_at};

use super::{Args, SLOW_FLIP, export::mirror_slice_name, watch::SliceWatch};
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
    watch: &mut SliceWatch,
    mirror: &mut Controller,
    args: &Args,
) -> Result<Flips> {
    let limit = Duration::from_secs(args.flip_timeout_secs);
    let params = patch_params();
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
            let change = timeout_at(deadline, watch.next())
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
        let t = FlipTime::new(sent, acked, seen);
        if t.from_ack >= SLOW_FLIP {
            p.say(format_args!(
                "flip {f} ({what} of {name}) was slow: {:.1} ms after the patch answer",
                t.from_ack.as_secs_f64() * 1e3
            ));
        }
        out.record(&t, down);
        out.progress(p, args.flips);
        sleep(Duration::from_millis(args.gap_ms)).await;
    }
    Ok(out)
}

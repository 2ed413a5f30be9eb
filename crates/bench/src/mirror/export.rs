//! Exporting: every remote Service labelled, a bounded number at a time,
//! and the wait until the local watch sees all their mirrors ready.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::{Api, api::Patch};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout_at};

use super::{
    EXPORT_LABEL,
    watch::{MirrorState, SliceWatch},
};
use crate::{
    api::{create_one, patch_params},
    controller::Controller,
    objects,
    report::Progress,
};

/// The merge patch that exports a Service.
pub(super) fn export_patch() -> Value {
    json!({ "metadata": { "labels": { EXPORT_LABEL: "true" } } })
}

/// The name of the mirror EndpointSlice of remote Service `k`.
pub(super) fn mirror_slice_name(k: usize, cluster: &str) -> String {
    format!("{}-{cluster}-gateway", objects::service_name(k))
}

/// When the labelling started and ended.
#[derive(Debug)]
pub(super) struct Labelled {
    pub(super) first_sent: Instant,
    pub(super) last_ack: Instant,
    pub(super) requests: Vec<Duration>,
}

/// Labels Services `0..n` exported, `in_flight` requests at a time; busy
/// answers are retried a few times.
pub(super) async fn label_all(
    services: &Api<Service>,
    n: usize,
    in_flight: usize,
) -> Result<Labelled> {
    let params = patch_params();
    let patch = Patch::Merge(export_patch());
    let (params, patch) = (&params, &patch);
    let first_sent = Instant::now();
    let mut results = futures::stream::iter(0..n)
        .map(|k| async move {
            let sent = Instant::now();
            let name = objects::service_name(k);
            let r =
                create_one(|| async { services.patch(&name, params, patch).await.map(drop) }).await;
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
pub(super) struct Mirrored {
    pub(super) first_ready: Instant,
    pub(super) half_ready: Instant,
    pub(super) all_ready: Instant,
}

/// Waits until the watch has seen `n` mirror slices with a ready endpoint.
pub(super) async fn wait_mirrored(
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
        match timeout_at(deadline.min(next_report), watch.next()).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_slices_are_named_after_the_mirror() {
        assert_eq!(mirror_slice_name(7, "west"), "svc-7-west-gateway");
        assert_eq!(export_patch()["metadata"]["labels"][EXPORT_LABEL], "true");
    }
}

//! The mirror benchmark's report: memory readings, the mirroring's times,
//! the text summary and its JSON.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    Args, FLIP_TARGET_MS, MIRRORING_TARGET,
    export::{Labelled, Mirrored},
};
use crate::{
    controller::Controller,
    flips::Flips,
    report::{Machine, Rss, describe, secs, summary, unix_time, verdict},
    stats::{self, Summary},
};

/// The mirror's memory with `services` Services mirrored.
pub(super) struct Memory {
    services: usize,
    rss: Rss,
}

impl Memory {
    pub(super) fn read(mirror: &Controller, services: usize) -> Result<Self> {
        Ok(Self {
            services,
            rss: Rss::read(mirror)?,
        })
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "{} mirrored Services: {}",
            self.services,
            self.rss.describe()
        )
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "services": self.services });
        self.rss.add_to(&mut v);
        v
    }
}

pub(super) struct Mirroring {
    pub(super) labelled: Labelled,
    pub(super) mirrored: Mirrored,
    /// The same writes made directly: see [`super::floor::floor`].
    pub(super) floor: Duration,
    pub(super) writes: f64,
    pub(super) write_errors: f64,
}

impl Mirroring {
    pub(super) fn since_first_label(&self) -> Duration {
        self.mirrored
            .all_ready
            .saturating_duration_since(self.labelled.first_sent)
    }

    pub(super) fn since_last_ack(&self) -> Duration {
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

pub(super) struct Report<'a> {
    pub(super) args: &'a Args,
    pub(super) machine: Machine,
    pub(super) load_after: String,
    pub(super) installed_in: Duration,
    pub(super) synced_after: Duration,
    pub(super) mirroring: Mirroring,
    pub(super) flips: Flips,
    pub(super) flip_writes: f64,
    pub(super) flip_write_errors: f64,
    /// The Link's status writes seen during the flips.
    pub(super) status_writes: usize,
    pub(super) watch_errors: usize,
    pub(super) mirrored_gauge: f64,
    pub(super) after_mirroring: Memory,
    pub(super) after_flips: Memory,
}

impl Report<'_> {
    /// The p99 target, measured while the status was written (else the
    /// measure does not count).
    fn flips_met(&self) -> Option<bool> {
        Summary::of(&self.flips.from_ack).map(|s| s.p99 < FLIP_TARGET_MS && self.status_writes > 0)
    }

    pub(super) fn to_json(&self) -> Value {
        let m = &self.mirroring;
        json!({
            "benchmark": "mirror",
            "unix_time": unix_time(),
            "machine": self.machine.to_json(&self.load_after),
            "setup": {
                "services": self.args.services,
                "install_and_link_s": secs(self.installed_in),
                "mirror_synced_s": secs(self.synced_after),
            },
            "mirroring": {
                "services": self.args.services,
                "label_requests_in_flight": self.args.in_flight,
                "labelling_s": secs(m.labelling()),
                "label_request": summary(&m.labelled.requests),
                "first_ready_s": secs(m.first_ready()),
                "half_ready_s": secs(m.half_ready()),
                "all_ready_from_first_label_s": secs(m.since_first_label()),
                "all_ready_from_last_label_ack_s": secs(m.since_last_ack()),
                "floor_s": secs(m.floor),
                "over_floor": stats::round(m.over_floor()),
                "mirror_writes": m.writes,
                "mirror_write_errors": m.write_errors,
            },
            "flips": self.flips.to_json(
                self.args.gap_ms,
                "to_unready",
                "to_ready",
                json!({
                    "mirror_writes": self.flip_writes,
                    "mirror_write_errors": self.flip_write_errors,
                    "link_status_writes": self.status_writes,
                    "watch_errors": self.watch_errors,
                }),
            ),
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

    pub(super) fn text(&self) -> String {
        let m = &self.mirroring;
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
                describe(Summary::of(&m.labelled.requests))
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
                describe(Summary::of(&self.flips.from_ack))
            ),
            format!("  to unready: {}", describe(Summary::of(&self.flips.down))),
            format!("  to ready:   {}", describe(Summary::of(&self.flips.up))),
            format!(
                "  from the patch sent instead: {}",
                describe(Summary::of(&self.flips.from_send))
            ),
            format!(
                "  the remote patch itself:     {}",
                describe(Summary::of(&self.flips.patch))
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
                verdict(Some(m.met())),
                m.since_first_label().as_secs_f64(),
                verdict(self.flips_met())
            ),
        ];
        let mut t = lines.join("\n");
        t.push('\n');
        t
    }
}

//! The failover benchmark's report: memory readings, the text summary and
//! its JSON.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::{Args, REACTION_HISTOGRAM, REACTION_TARGET_MS, RSS_TARGET_KIB};
use crate::{
    controller::Controller,
    flips::Flips,
    report::{Machine, Rss, describe, unix_time, verdict},
    restart,
    stats::{self, Histogram, Summary},
};

/// The controller's memory with `splits` splits over `services` Services.
pub(super) struct Memory {
    pub(super) splits: usize,
    services: usize,
    rss: Rss,
    /// The size of the controller's /metrics page: it has series per split.
    metrics_bytes: usize,
}

impl Memory {
    pub(super) async fn read(ctl: &Controller, splits: usize, services: usize) -> Result<Self> {
        let rss = Rss::read(ctl)?;
        let metrics_bytes = ctl.metrics().await?.len();
        Ok(Self {
            splits,
            services,
            rss,
            metrics_bytes,
        })
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "{} TrafficSplits, {} Services: {}; /metrics is {:.1} MiB)",
            self.splits,
            self.services,
            self.rss.describe_open(),
            self.metrics_bytes as f64 / 1048576.0
        )
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "splits": self.splits,
            "services": self.services,
            "endpoint_slices": self.services,
            "metrics_bytes": self.metrics_bytes,
        });
        self.rss.add_to(&mut v);
        v
    }
}

pub(super) struct Report<'a> {
    pub(super) args: &'a Args,
    pub(super) machine: Machine,
    pub(super) load_after: String,
    pub(super) setup: Duration,
    pub(super) ready_after: Duration,
    pub(super) all_primary_after: Duration,
    pub(super) flips: Flips,
    pub(super) internal: Histogram,
    pub(super) write_errors: f64,
    pub(super) watch_errors: usize,
    pub(super) small: Memory,
    pub(super) large: Option<Memory>,
    pub(super) restart: Option<restart::Outcome>,
}

impl Report<'_> {
    fn reaction_met(&self) -> Option<bool> {
        Summary::of(&self.flips.from_ack).map(|s| s.p99 < REACTION_TARGET_MS)
    }

    fn rss_met(&self) -> Option<bool> {
        self.large.as_ref().map(|m| m.rss.rss_kib < RSS_TARGET_KIB)
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "benchmark": "failover",
            "unix_time": unix_time(),
            "machine": self.machine.to_json(&self.load_after),
            "setup": {
                "splits": self.args.splits,
                "services": 2 * self.args.splits,
                "endpoint_slices": 2 * self.args.splits,
                "created_in_s": stats::round(self.setup.as_secs_f64()),
                "controller_ready_s": stats::round(self.ready_after.as_secs_f64()),
                "all_primary_s": stats::round(self.all_primary_after.as_secs_f64()),
            },
            "flips": self.flips.to_json(
                self.args.gap_ms,
                "failover",
                "failback",
                json!({
                    "controller_reaction_seconds": self.internal.to_json_ms(),
                    "controller_write_errors": self.write_errors,
                    "watch_errors": self.watch_errors,
                }),
            ),
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

    pub(super) fn text(&self) -> String {
        let mut t = String::new();
        let line = |t: &mut String, s: String| {
            t.push_str(&s);
            t.push('\n');
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
                describe(Summary::of(&self.flips.from_ack))
            ),
        );
        line(
            &mut t,
            format!("  failovers: {}", describe(Summary::of(&self.flips.down))),
        );
        line(
            &mut t,
            format!("  failbacks: {}", describe(Summary::of(&self.flips.up))),
        );
        line(
            &mut t,
            format!(
                "  from the patch sent instead: {}",
                describe(Summary::of(&self.flips.from_send))
            ),
        );
        line(
            &mut t,
            format!(
                "  the slice patch itself:      {}",
                describe(Summary::of(&self.flips.patch))
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
            for l in r.text() {
                line(&mut t, l);
            }
        }
        let rss_target = match &self.large {
            Some(m) => format!(
                "RSS with {} splits < 40 MiB: {}",
                m.splits,
                verdict(self.rss_met())
            ),
            None => "RSS < 40 MiB: not measured (--rss-splits 0)".into(),
        };
        line(
            &mut t,
            format!(
                "targets:  reaction p99 < 100 ms: {}; after a restart: {}; {rss_target}",
                verdict(self.reaction_met()),
                verdict(
                    self.restart
                        .as_ref()
                        .and_then(restart::Outcome::reaction_met)
                ),
            ),
        );
        t
    }
}

//! Flips timed one at a time: a readiness change written, and the moment a
//! watch sees what must follow it. The failover and mirror benchmarks both
//! record them here.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    report::{Progress, summary},
    stats::Summary,
};

/// How long one flip took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct FlipTime {
    /// From the patch acknowledged to the change seen.
    pub(crate) from_ack: Duration,
    /// From the patch sent to the change seen.
    pub(crate) from_send: Duration,
    /// The patch's own round trip.
    pub(crate) patch: Duration,
    /// The change was seen before the patch's answer arrived.
    pub(crate) before_ack: bool,
}

impl FlipTime {
    /// The times of a flip whose patch was sent at `sent`, answered at
    /// `acked`, and whose effect was seen at `seen`.
    pub(crate) fn new(sent: Instant, acked: Instant, seen: Instant) -> Self {
        Self {
            from_ack: seen.saturating_duration_since(acked),
            from_send: seen.saturating_duration_since(sent),
            patch: acked.saturating_duration_since(sent),
            before_ack: seen < acked,
        }
    }
}

/// Every flip's times, and apart those that took readiness away (a
/// failover, a slice unready) and those that gave it back.
#[derive(Debug, Default)]
pub(crate) struct Flips {
    pub(crate) from_ack: Vec<Duration>,
    pub(crate) from_send: Vec<Duration>,
    pub(crate) patch: Vec<Duration>,
    pub(crate) down: Vec<Duration>,
    pub(crate) up: Vec<Duration>,
    /// Flips seen before their patch was acknowledged.
    pub(crate) before_ack: usize,
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
            self.down.push(t.from_ack);
        } else {
            self.up.push(t.from_ack);
        }
    }

    /// The JSON summary's flip fields, the two directions named `down` and
    /// `up`, with a benchmark's own fields (`extra`, an object) added.
    pub(crate) fn to_json(&self, gap_ms: u64, down: &str, up: &str, extra: Value) -> Value {
        let mut v = json!({
            "count": self.from_ack.len(),
            "gap_ms": gap_ms,
            "seen_before_patch_ack": self.before_ack,
            "end_to_end": summary(&self.from_ack),
            "end_to_end_from_patch_sent": summary(&self.from_send),
            "patch_round_trip": summary(&self.patch),
        });
        v[down] = summary(&self.down);
        v[up] = summary(&self.up);
        if let Value::Object(fields) = extra {
            for (k, f) in fields {
                v[k] = f;
            }
        }
        v
    }

    /// A progress line every 50 flips, and after the last of `total`.
    pub(crate) fn progress(&self, p: &Progress, total: usize) {
        let done = self.from_ack.len();
        if (done.is_multiple_of(50) || done == total)
            && let Some(s) = Summary::of(&self.from_ack)
        {
            p.say(format_args!(
                "flips: {done}/{total} (so far p50 {:.1} ms, max {:.1} ms)",
                s.p50, s.max
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flip_is_timed_from_the_answer_and_from_the_send() {
        let sent = Instant::now();
        let ms = Duration::from_millis;
        let t = FlipTime::new(sent, sent + ms(3), sent + ms(10));
        assert_eq!(
            (t.from_ack, t.from_send, t.patch, t.before_ack),
            (ms(7), ms(10), ms(3), false)
        );
        // Seen before the answer: zero from the answer, and counted.
        let early = FlipTime::new(sent, sent + ms(5), sent + ms(4));
        assert_eq!((early.from_ack, early.before_ack), (Duration::ZERO, true));

        let mut flips = Flips::default();
        flips.record(&t, true);
        flips.record(&early, false);
        assert_eq!(flips.from_ack, [ms(7), Duration::ZERO]);
        assert_eq!((flips.down.len(), flips.up.len()), (1, 1));
        assert_eq!(flips.before_ack, 1);
    }

    #[test]
    fn the_json_names_the_directions_and_keeps_a_benchmarks_fields() {
        let sent = Instant::now();
        let mut flips = Flips::default();
        flips.record(
            &FlipTime::new(sent, sent, sent + Duration::from_millis(4)),
            true,
        );
        let v = flips.to_json(100, "failover", "failback", json!({"watch_errors": 0}));
        assert_eq!(v["count"], 1);
        assert_eq!(v["gap_ms"], 100);
        assert_eq!(v["failover"]["p99_ms"], 4.0);
        assert_eq!(v["failback"], Value::Null);
        assert_eq!(v["watch_errors"], 0);
        assert_eq!(v["end_to_end"]["n"], 1);
    }
}

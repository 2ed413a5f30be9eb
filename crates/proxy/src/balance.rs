//! Endpoint choice: power of two choices over peak-EWMA load, and the
//! per-request weighted split between backends.
//!
//! A small implementation rather than tower's `p2c::Balance` over
//! `PeakEwmaDiscover`: the proxy needs to exclude endpoints a request already
//! failed on (retries), which tower's balancer does not expose.

use std::time::Duration;

use rand::{Rng, distr::Distribution, distr::weighted::WeightedIndex};
use tokio::time::Instant;

/// Linkerd's defaults: a new endpoint is assumed to answer in 30 ms, and
/// older observations fade with a 10 s time constant.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
pub const DECAY: Duration = Duration::from_secs(10);
/// The round trip a failed connection counts as.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// The load of one endpoint: a round-trip estimate that jumps up to any
/// slower observation at once and decays down slowly, times the requests
/// in flight plus one.
#[derive(Clone, Debug)]
pub struct PeakEwma {
    rtt_ns: f64,
    stamp: Instant,
    pending: u32,
}

impl PeakEwma {
    pub fn new(now: Instant) -> Self {
        PeakEwma {
            rtt_ns: DEFAULT_RTT.as_nanos() as f64,
            stamp: now,
            pending: 0,
        }
    }

    pub fn load(&self) -> f64 {
        self.rtt_ns * f64::from(self.pending + 1)
    }

    pub fn start(&mut self) {
        self.pending += 1;
    }

    /// A request finished after `rtt` (its response headers arrived).
    pub fn end(&mut self, rtt: Duration, now: Instant) {
        self.pending = self.pending.saturating_sub(1);
        let rtt = rtt.as_nanos() as f64;
        if rtt > self.rtt_ns {
            self.rtt_ns = rtt;
        } else {
            let elapsed = now.saturating_duration_since(self.stamp).as_nanos() as f64;
            let w = (-elapsed / DECAY.as_nanos() as f64).exp();
            self.rtt_ns = self.rtt_ns * w + rtt * (1.0 - w);
        }
        self.stamp = now;
    }

    /// A request went away unanswered (its client gave up): no estimate.
    pub fn abandon(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// A request failed before any answer: the endpoint looks as slow as
    /// [`FAILURE_PENALTY`], so that P2C avoids it until that decays.
    pub fn fail(&mut self, now: Instant) {
        self.end(FAILURE_PENALTY, now);
    }
}

/// Picks the less loaded of two distinct random candidates.
pub fn p2c(loads: &[f64], rng: &mut impl Rng) -> Option<usize> {
    match loads.len() {
        0 => None,
        1 => Some(0),
        n => {
            let a = rng.random_range(0..n);
            let b = (a + rng.random_range(1..n)) % n;
            Some(if loads[b] < loads[a] { b } else { a })
        }
    }
}

/// A weighted choice over backends; weight-0 entries are never picked.
#[derive(Clone, Debug)]
pub struct Split {
    index: Option<WeightedIndex<u32>>,
}

impl Split {
    pub fn new(weights: &[u32]) -> Self {
        Split {
            index: WeightedIndex::new(weights).ok(),
        }
    }

    pub fn pick(&self, rng: &mut impl Rng) -> Option<usize> {
        self.index.as_ref().map(|i| i.sample(rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down() {
        let mut e = PeakEwma::new(Instant::now());
        assert_eq!(e.load(), 30e6);
        e.start();
        assert_eq!(e.load(), 60e6, "a pending request doubles the load");
        e.end(Duration::from_millis(100), Instant::now());
        assert_eq!(e.load(), 100e6, "a slower answer is taken at once");
        tokio::time::advance(DECAY).await;
        e.start();
        e.end(Duration::from_millis(10), Instant::now());
        // After one time constant, e^-1 of the old estimate remains.
        let want = 100e6 * (-1f64).exp() + 10e6 * (1.0 - (-1f64).exp());
        assert!((e.load() - want).abs() < 1.0, "{} vs {want}", e.load());
        e.start();
        e.abandon();
        assert!(
            (e.load() - want).abs() < 1.0,
            "abandoning leaves the estimate"
        );
        e.start();
        e.fail(Instant::now());
        assert_eq!(e.load(), 1e9, "a failure counts as a 1 s answer");
    }

    #[test]
    fn p2c_prefers_the_lighter_and_handles_small_sets() {
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(p2c(&[], &mut rng), None);
        assert_eq!(p2c(&[5.0], &mut rng), Some(0));
        for _ in 0..100 {
            assert_eq!(p2c(&[9.0, 1.0], &mut rng), Some(1));
        }
        let mut hits = [0; 3];
        for _ in 0..3000 {
            hits[p2c(&[1.0, 2.0, 3.0], &mut rng).unwrap()] += 1;
        }
        // The heaviest is never the lighter of two distinct candidates.
        assert_eq!(hits[2], 0, "{hits:?}");
        assert!(hits[0] > hits[1], "{hits:?}");
    }

    #[test]
    fn split_honours_weights_and_never_picks_zero() {
        let mut rng = StdRng::seed_from_u64(1);
        let s = Split::new(&[0, 3, 1]);
        let mut hits = [0; 3];
        for _ in 0..4000 {
            hits[s.pick(&mut rng).unwrap()] += 1;
        }
        assert_eq!(hits[0], 0);
        assert!((2800..3200).contains(&hits[1]), "{hits:?}");
        assert_eq!(Split::new(&[0, 0]).pick(&mut rng), None);
        assert_eq!(Split::new(&[]).pick(&mut rng), None);
    }
}

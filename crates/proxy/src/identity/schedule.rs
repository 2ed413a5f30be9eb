//! When to ask for the next certificate: a pure function of the time.

use std::time::{Duration, SystemTime};

/// Linkerd's bounds: never sooner than 10 s, never later than 24 h.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);

/// The renewal schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The shortest wait, and the wait after a failure.
    pub min_refresh: Duration,
    /// The longest wait.
    pub max_refresh: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            min_refresh: MIN_REFRESH,
            max_refresh: MAX_REFRESH,
        }
    }
}

impl Schedule {
    /// How long to wait, at `now`, before renewing a certificate that
    /// expires at `not_after`: 70% of what is left, clamped to
    /// [min_refresh, max_refresh]. An expired one is renewed after
    /// min_refresh.
    pub fn refresh_in(&self, now: SystemTime, not_after: SystemTime) -> Duration {
        let left = not_after.duration_since(now).unwrap_or_default();
        left.mul_f64(0.7)
            .clamp(self.min_refresh, self.max_refresh.max(self.min_refresh))
    }

    /// How long to wait after a failed attempt.
    pub fn retry_in(&self) -> Duration {
        self.min_refresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seventy_percent_clamped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Schedule::default();
        let secs = Duration::from_secs;
        let cases = [
            // (left until not_after, want)
            (secs(24 * 3600 + 40), secs(60508)), // a fresh 24 h leaf: 16.8 h
            (secs(100), secs(70)),
            (secs(14), secs(10)),                // 9.8 s → the 10 s floor
            (secs(0), secs(10)),                 // expiring now
            (secs(30 * 24 * 3600), MAX_REFRESH), // a month: the 24 h ceiling
        ];
        for (left, want) in cases {
            assert_eq!(s.refresh_in(now, now + left), want, "{left:?}");
        }
        // Already expired.
        assert_eq!(s.refresh_in(now, now - secs(5)), secs(10));
        assert_eq!(s.retry_in(), secs(10));

        let short = Schedule {
            min_refresh: secs(1),
            max_refresh: secs(3),
        };
        assert_eq!(short.refresh_in(now, now + secs(100)), secs(3));
        assert_eq!(
            short.refresh_in(now, now + secs(2)),
            Duration::from_millis(1400)
        );
    }
}

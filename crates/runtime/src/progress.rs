//! Whether the single writer makes progress, for `/live`.
//!
//! Every API call is bounded ([`tandem_util::call`]), so the writer should always
//! move on. If it ever doesn't (a bug, a call left unbounded), its replica
//! keeps renewing the Lease while writing nothing, and no standby can take
//! over. So `/live` fails once work has waited longer than a bound with
//! nothing done, and the kubelet restarts the container.

use std::time::Duration;

use tokio::time::Instant;

/// How long work may wait with no progress before `/live` fails: several
/// times the longest a decision with its calls can take (a write and an
/// event, each bounded by [`tandem_util::call::CALL_TIMEOUT`]).
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// The writer's progress clock. Pure: time comes in as `now`.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    stall_after: Duration,
    /// Since when work has waited with nothing done; `None` when idle.
    waiting_since: Option<Instant>,
}

impl Progress {
    pub fn new(stall_after: Duration) -> Self {
        Self {
            stall_after,
            waiting_since: None,
        }
    }

    /// The writer has work it may do now: the clock runs, if it did not.
    pub fn pending(&mut self, now: Instant) {
        self.waiting_since.get_or_insert(now);
    }

    /// The writer finished one piece of work: the clock starts again.
    pub fn progressed(&mut self, now: Instant) {
        if self.waiting_since.is_some() {
            self.waiting_since = Some(now);
        }
    }

    /// Nothing is left that the writer may do (none pending, not leading,
    /// or not synced yet): the clock stops.
    pub fn idle(&mut self) {
        self.waiting_since = None;
    }

    /// `Err(how long)` when work has waited longer than the bound with
    /// nothing done.
    pub fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.waiting_since {
            Some(since) if now.saturating_duration_since(since) > self.stall_after => {
                Err(now.saturating_duration_since(since))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const BOUND: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn pending_work_with_no_progress_fails_after_the_bound() {
        let mut p = Progress::new(BOUND);
        assert_eq!(p.check(Instant::now()), Ok(()), "idle is live");
        advance(BOUND * 3).await;
        assert_eq!(p.check(Instant::now()), Ok(()), "idle for long is live");

        p.pending(Instant::now());
        advance(BOUND).await;
        assert_eq!(p.check(Instant::now()), Ok(()), "at the bound");
        // More work queued meanwhile does not restart the clock.
        p.pending(Instant::now());
        advance(Duration::from_secs(1)).await;
        assert_eq!(p.check(Instant::now()), Err(BOUND + Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn each_piece_of_work_done_restarts_the_clock() {
        let mut p = Progress::new(BOUND);
        p.pending(Instant::now());
        // A long queue, each piece taking most of the bound: still live.
        for _ in 0..10 {
            advance(BOUND - Duration::from_secs(1)).await;
            assert_eq!(p.check(Instant::now()), Ok(()));
            p.progressed(Instant::now());
        }
        p.idle();
        advance(BOUND * 2).await;
        assert_eq!(p.check(Instant::now()), Ok(()));
        // Progress while idle does not start the clock.
        p.progressed(Instant::now());
        advance(BOUND * 2).await;
        assert_eq!(p.check(Instant::now()), Ok(()));
    }
}

//! When the writer decides what: the run loop over the [`Queue`], with
//! each split's priority judged as it is queued and again as it is taken.

use std::time::Duration;

use tandem_core::failover;
use tandem_lease::Leadership;
use tandem_runtime::queue::{Priority, Queue, Work};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{Outcome, STATE_WRITE_GAP, Writer};
use crate::{
    controller::{Shared, Trigger},
    resource::Key,
};

impl Writer {
    pub(crate) async fn run(
        mut self,
        triggers: mpsc::UnboundedReceiver<Trigger>,
        mut leadership: watch::Receiver<Leadership>,
        readiness: tandem_admin::Readiness,
        resync_period: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), &'static str> {
        let mut resync = tokio::time::interval(resync_period);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        self.triggers = Some(triggers);
        loop {
            let due = self.queue.next_due();
            // A gap already past wakes the loop at once: the time between
            // the break below and here may well exceed the gap.
            let paced = self.paced_until.filter(|_| !self.queue.is_empty());
            tokio::select! {
                t = recv(&mut self.triggers) => match t {
                    Some(t) => self.push(t),
                    None => return Err("the work queue closed"),
                },
                _ = resync.tick() => self.push_all(),
                _ = self.shared.wake.notified() => {}
                res = leadership.changed() => if res.is_err() {
                    return Err("leader election stopped");
                },
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
                _ = sleep_until(due), if due.is_some() => {}
                _ = sleep_until(paced), if paced.is_some() => {}
            }
            let synced = self.shared.synced();
            readiness.set(synced);
            let leader = leadership.borrow().is_leader();
            self.shared.metrics.leader.set(i64::from(leader));
            if leader && !was_leader {
                tracing::info!("leading: deciding every split from the current state");
                self.push_all();
            }
            was_leader = leader;
            if !leader {
                // A follower keeps its index warm but never writes.
                self.queue = Queue::new();
                self.urgent_at.clear();
                self.stash.clear();
                while try_recv(&mut self.triggers).is_some() {}
                self.shared.progress().idle();
                continue;
            }
            if !synced {
                // Deciding before readiness is known would see every backend down.
                self.take_in();
                self.shared.progress().idle();
                continue;
            }
            // One split at a time, taking in new triggers before each: a
            // flip that arrives meanwhile is the next one written.
            loop {
                self.take_in();
                if !leadership.borrow().is_leader() || *shutdown.borrow() {
                    break;
                }
                let now = Instant::now();
                let Some(work) = self.queue.pop(now) else {
                    break;
                };
                self.shared.progress().pending(now);
                let Some(priority) = self.priority(&work.key) else {
                    self.queue.forget(&work.key);
                    continue;
                };
                match self.paced_until {
                    Some(t) if t > now && priority == Priority::Normal => {
                        // Its turn comes after the gap, unless a flip comes first.
                        self.queue.push(work.key, Priority::Normal, work.since);
                        break;
                    }
                    // Passed: no wake-up for it any more.
                    Some(t) if t <= now => self.paced_until = None,
                    _ => {}
                }
                self.work(work).await;
                self.shared.progress().progressed(Instant::now());
            }
            if self.queue.is_empty() {
                self.shared.progress().idle();
            }
        }
    }

    /// Decides one split taken from the queue, and schedules what follows.
    async fn work(&mut self, work: Work<Key>) {
        let Work { key, since, .. } = work;
        // The reaction is timed from what made the split urgent, not from
        // a routine push that queued it earlier.
        let at = self.urgent_at.remove(&key).unwrap_or(since);
        match self.reconcile(&key, at).await {
            Outcome::Nothing => {}
            Outcome::WroteState => {
                self.paced_until = Some(Instant::now() + STATE_WRITE_GAP);
            }
            // Queued again by `reconcile`.
            Outcome::Retry { .. } => {}
            // A flip came while it was written: its turn comes again.
            Outcome::Yielded => self.queue.push(key, Priority::Normal, since),
            Outcome::Damped { after } => {
                let queue = self.shared.queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = queue.send(Trigger { key, at: since });
                });
            }
        }
    }

    /// Queues the triggers that came meanwhile: those a yielding write saw
    /// first, then the channel's.
    fn take_in(&mut self) {
        for t in std::mem::take(&mut self.stash) {
            self.push(t);
        }
        while let Some(t) = try_recv(&mut self.triggers) {
            self.push(t);
        }
    }

    /// Queues a triggered split with its priority; a split that is gone is
    /// forgotten, with everything the queue kept about it.
    pub(super) fn push(&mut self, t: Trigger) {
        match self.priority(&t.key) {
            Some(p) => {
                if p == Priority::Urgent {
                    self.urgent_at.entry(t.key.clone()).or_insert(t.at);
                }
                self.queue.push(t.key, p, t.at)
            }
            None => {
                self.urgent_at.remove(&t.key);
                self.queue.forget(&t.key)
            }
        }
    }

    fn push_all(&mut self) {
        let now = Instant::now();
        let keys = self.shared.index().keys();
        for key in keys {
            self.push(Trigger { key, at: now });
        }
    }

    /// How urgent deciding `key` is now: [`Priority::Urgent`] when its
    /// decided weights differ from the written ones. `None` once the split
    /// is gone.
    pub(crate) fn priority(&self, key: &Key) -> Option<Priority> {
        priority(&self.shared, self.start, key)
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How urgent deciding `key` is now: [`Priority::Urgent`] when its decided
/// weights differ from the written ones. `None` once the split is gone.
pub(super) fn priority(shared: &Shared, start: Instant, key: &Key) -> Option<Priority> {
    let index = shared.index();
    let entry = index.get(key)?;
    let memory = index.state(key).map(|s| s.memory.as_slice()).unwrap_or(&[]);
    let now = start.elapsed();
    let moves = entry.unreadable.is_none()
        && entry.groups.iter().enumerate().any(|(i, g)| {
            let m = memory.get(i).copied().unwrap_or_default();
            failover::decide(g, index.cluster_domain(), &|s| index.is_ready(s), &m, now)
                .is_ok_and(|d| d.changed)
        });
    Some(if moves {
        Priority::Urgent
    } else {
        Priority::Normal
    })
}

/// Resolves when a trigger for a split that must move arrives; every
/// trigger taken meanwhile goes to `stash`. Never, without a channel.
pub(super) async fn urgent_arrives(
    shared: &Shared,
    start: Instant,
    triggers: &mut Option<mpsc::UnboundedReceiver<Trigger>>,
    stash: &mut Vec<Trigger>,
) {
    while let Some(t) = recv(triggers).await {
        let urgent = priority(shared, start, &t.key) == Some(Priority::Urgent);
        stash.push(t);
        if urgent {
            return;
        }
    }
    // The channel closed: the run loop says so.
    std::future::pending().await
}

async fn recv(triggers: &mut Option<mpsc::UnboundedReceiver<Trigger>>) -> Option<Trigger> {
    match triggers {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn try_recv(triggers: &mut Option<mpsc::UnboundedReceiver<Trigger>>) -> Option<Trigger> {
    triggers.as_mut()?.try_recv().ok()
}

//! The work queue of a controller's writer. Pure: time comes in as `now`.
//!
//! - Two priorities. Work that changes what traffic does (a failover, a
//!   readiness flip) is [`Priority::Urgent`] and goes ahead of routine work
//!   (a resync, a state annotation), however long that backlog is: after a
//!   restart, a flip must not wait behind thousands of state-only writes.
//! - A key is queued once. Pushing it again keeps its place and its
//!   earliest `since`; an urgent push promotes it.
//! - A failed key comes back after a backoff that doubles with each failure
//!   in a row ([`tandem_util::backoff`]); [`Queue::done`] resets it.
//! - [`Queue::forget`] drops everything about a key, so that nothing is
//!   kept for objects that are gone.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    hash::Hash,
    time::Duration,
};

use tokio::time::Instant;

/// How soon a key's work should be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Changes what traffic does: done before any routine work.
    Urgent,
    /// Routine: resyncs, state-only writes, repairs.
    Normal,
}

/// A key to work on, taken from the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work<K> {
    pub key: K,
    pub priority: Priority,
    /// When the key was first queued since it was last taken (for
    /// reaction-time metrics).
    pub since: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Queued {
    priority: Priority,
    since: Instant,
}

#[derive(Clone, Copy, Debug, Default)]
struct Failures {
    count: u32,
    retry_at: Option<Instant>,
}

/// The queue. Keys need `Ord` for the retry schedule.
#[derive(Debug)]
pub struct Queue<K> {
    urgent: VecDeque<K>,
    normal: VecDeque<K>,
    queued: HashMap<K, Queued>,
    failures: HashMap<K, Failures>,
    retries: BTreeSet<(Instant, K)>,
}

impl<K> Default for Queue<K> {
    fn default() -> Self {
        Self {
            urgent: VecDeque::new(),
            normal: VecDeque::new(),
            queued: HashMap::new(),
            failures: HashMap::new(),
            retries: BTreeSet::new(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> Queue<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `key`, or promotes it when it waits with a lower priority.
    pub fn push(&mut self, key: K, priority: Priority, now: Instant) {
        match self.queued.get_mut(&key) {
            Some(q) if q.priority <= priority => {}
            Some(q) => {
                // Promoted: its entry in the normal lane is skipped later.
                q.priority = priority;
                self.urgent.push_back(key);
            }
            None => {
                self.queued.insert(
                    key.clone(),
                    Queued {
                        priority,
                        since: now,
                    },
                );
                match priority {
                    Priority::Urgent => self.urgent.push_back(key),
                    Priority::Normal => self.normal.push_back(key),
                }
            }
        }
    }

    /// Queues every key of `keys` with `priority`.
    pub fn extend(&mut self, keys: impl IntoIterator<Item = K>, priority: Priority, now: Instant) {
        for key in keys {
            self.push(key, priority, now);
        }
    }

    /// The next key to work on: urgent keys first, then retries that are
    /// due, then routine keys, each lane in the order it was queued.
    pub fn pop(&mut self, now: Instant) -> Option<Work<K>> {
        if let Some(w) = self.pop_lane(Priority::Urgent) {
            return Some(w);
        }
        while let Some((at, key)) = self.retries.first().cloned() {
            if at > now {
                break;
            }
            self.retries.pop_first();
            let current = self
                .failures
                .get_mut(&key)
                .filter(|f| f.retry_at == Some(at));
            if let Some(f) = current {
                f.retry_at = None;
                // Queued meanwhile: it is done from its lane instead.
                if !self.queued.contains_key(&key) {
                    return Some(Work {
                        key,
                        priority: Priority::Normal,
                        since: at,
                    });
                }
            }
        }
        self.pop_lane(Priority::Normal)
    }

    fn pop_lane(&mut self, lane: Priority) -> Option<Work<K>> {
        loop {
            let key = match lane {
                Priority::Urgent => self.urgent.pop_front()?,
                Priority::Normal => self.normal.pop_front()?,
            };
            // Entries of keys forgotten, taken or promoted since are stale.
            if let Some(q) = self.queued.get(&key)
                && q.priority == lane
            {
                let q = self.queued.remove(&key)?;
                return Some(Work {
                    key,
                    priority: q.priority,
                    since: q.since,
                });
            }
        }
    }

    /// The work on `key` failed: it comes back after `first`, doubling with
    /// each failure in a row (at most [`tandem_util::MAX_BACKOFF`]).
    /// Returns the wait.
    pub fn retry_later(&mut self, key: K, now: Instant, first: Duration) -> Duration {
        let f = self.failures.entry(key.clone()).or_default();
        f.count = f.count.saturating_add(1);
        let after = tandem_util::backoff(first, f.count);
        let at = now + after;
        f.retry_at = Some(at);
        self.retries.insert((at, key));
        after
    }

    /// The work on `key` succeeded: its failures are forgotten.
    pub fn done(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// How many times in a row the work on `key` failed.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).map_or(0, |f| f.count)
    }

    /// Drops everything about `key`: its place in the queue and its failures.
    pub fn forget(&mut self, key: &K) {
        self.queued.remove(key);
        self.failures.remove(key);
    }

    /// When the earliest retry is due (it may have been cancelled since:
    /// waking then finds nothing).
    pub fn next_due(&self) -> Option<Instant> {
        self.retries.first().map(|(at, _)| *at)
    }

    /// Whether `key` waits in a lane.
    pub fn contains(&self, key: &K) -> bool {
        self.queued.contains_key(key)
    }

    /// How many keys wait in the lanes (retries not yet due excluded).
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// How many keys are kept for any reason: queued or with failures.
    /// For tests that nothing leaks.
    pub fn tracked(&self) -> usize {
        let mut keys: BTreeSet<&K> = self.queued.keys().collect();
        keys.extend(self.failures.keys());
        keys.len()
    }
}

#[cfg(test)]
mod tests;

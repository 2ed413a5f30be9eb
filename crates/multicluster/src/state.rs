//! The mirror's sync state: what the watches saw ([`Index`]), what was
//! written and how each mirror stands ([`Record`], one map of per-key
//! state), and the work queue. Synchronous, no client: watch updates go in,
//! keys that need work come out of the queue, [`State::plan`] decides a
//! key's [`Job`], and [`State::finished`] takes its [`Report`] back.

use std::{collections::HashMap, time::Duration};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use tandem_api::multicluster::{CLUSTER_NAME_LABEL, Link, MAX_LISTED_FAILURES};
use tandem_runtime::{
    queue::{Priority, Queue},
    watch::Update,
};
use tokio::time::Instant;

use crate::{
    gateway::GatewayState,
    index::{Index, Key, SliceReadiness},
    mirror::{self, SERVICE_NAME_LABEL, mirror_name, mirror_service, mirror_slice, slice_name},
    probe::Liveness,
    record::{Record, Written},
    status::{self, Outcome, Summary},
    writer::{End, Endpoints, Job, MirrorWork, Report, Target, Work},
};

#[derive(Debug, Default)]
pub struct State {
    pub index: Index,
    pub record: Record,
    queue: Queue<Key>,
    /// Keys taken from the queue while a job of theirs ran: queued again,
    /// with this priority, when it ends.
    deferred: HashMap<Key, Priority>,
}

impl State {
    pub fn new() -> Self {
        Self::default()
    }

    // === watch updates ===

    /// This Link's local mirror Services.
    pub fn mirrors(&mut self, update: Update<Service>, now: Instant) {
        let keys = match update {
            Update::Listed(list) => {
                // What went or changed while the watch was down comes with
                // no event: compare with the record.
                let repair = self.record.relisted_services(&list);
                if !repair.is_empty() {
                    tracing::info!(
                        mirrors = repair.len(),
                        "mirrors deleted or changed while the watch was down; writing them again"
                    );
                }
                let mut keys = self.index.reset_mirrors(list);
                keys.extend(repair);
                keys
            }
            Update::Apply(s) => {
                let drifted = |w: &Written| {
                    w.service
                        .as_ref()
                        .is_some_and(|d| mirror::service_drifted(&s, d))
                };
                let key = self.index.apply_mirror(s.clone());
                if let Some(k) = &key
                    && self.record.get(k).is_some_and(drifted)
                {
                    tracing::info!(mirror = ?Key::of(&s.metadata), "the mirror was changed by someone else; writing it again");
                    self.record.remove(k);
                }
                key.into_iter().collect()
            }
            Update::Delete(s) => {
                // Deleted by someone else: written again if still wanted.
                let key = self.index.delete_mirror(&s);
                if let Some(k) = &key {
                    self.record.remove(k);
                }
                key.into_iter().collect()
            }
            Update::Failed(_) => vec![],
        };
        self.queue.extend(keys, Priority::Normal, now);
    }

    /// This Link's local mirror EndpointSlices.
    pub fn mirror_slices(&mut self, update: Update<EndpointSlice>, now: Instant) {
        let keys = match update {
            Update::Listed(list) => {
                self.index.reset_mirror_slices(&list);
                let repair = self.record.relisted_slices(&list);
                if !repair.is_empty() {
                    tracing::info!(
                        slices = repair.len(),
                        "mirror slices deleted or changed while the watch was down; writing them again"
                    );
                }
                repair
            }
            Update::Apply(s) => {
                self.index.apply_mirror_slice(&s);
                match slice_remote_key(&s) {
                    Some(k)
                        if self.record.get_mut(&k).is_some_and(|w| {
                            w.slice
                                .as_ref()
                                .is_some_and(|d| mirror::slice_drifted(&s, d))
                        }) =>
                    {
                        if let Some(w) = self.record.get_mut(&k) {
                            w.slice = None;
                        }
                        vec![k]
                    }
                    _ => vec![],
                }
            }
            Update::Delete(s) => {
                self.index.delete_mirror_slice(&s);
                let key = slice_remote_key(&s);
                if let Some(w) = key.as_ref().and_then(|k| self.record.get_mut(k)) {
                    w.slice = None;
                }
                key.into_iter().collect()
            }
            Update::Failed(_) => vec![],
        };
        // A slice is readiness: it goes first.
        self.queue.extend(keys, Priority::Urgent, now);
    }

    /// The remote Services that match the Link's selector.
    pub fn remote_services(&mut self, update: Update<Service>, now: Instant) {
        let keys = match update {
            Update::Listed(list) => {
                // Now authoritative: mirrors whose Service is absent go,
                // even if its Delete came before the list.
                let mut keys = self.index.reset_services(list);
                keys.extend(self.index.mirrored_remotes());
                keys
            }
            Update::Apply(s) => self.index.apply_service(s).into_iter().collect(),
            Update::Delete(s) => self.index.delete_service(&s).into_iter().collect(),
            Update::Failed(_) => vec![],
        };
        self.queue.extend(keys, Priority::Normal, now);
    }

    /// The remote slices, folded: a readiness change is urgent.
    pub fn remote_slices(&mut self, update: Update<Option<SliceReadiness>>, now: Instant) {
        let keys = match update {
            Update::Listed(list) => {
                let list: Vec<SliceReadiness> = list.into_iter().flatten().collect();
                self.index.reset_slices(&list)
            }
            Update::Apply(Some(s)) => self.index.apply_slice(&s),
            Update::Delete(Some(s)) => self.index.delete_slice(&s),
            Update::Apply(None) | Update::Delete(None) | Update::Failed(_) => vec![],
        };
        self.queue.extend(keys, Priority::Urgent, now);
    }

    /// Every mirror is written again (a resync, a new spec): a no-op for
    /// the API server when nothing changed.
    pub fn rewrite_all(&mut self, now: Instant) {
        self.record.clear();
        self.queue
            .extend(self.index.all_keys(), Priority::Normal, now);
    }

    /// The gateway's addresses or liveness changed: every mirror's
    /// endpoints, first.
    pub fn gateway_changed(&mut self, now: Instant) {
        self.queue
            .extend(self.index.service_keys(), Priority::Urgent, now);
    }

    /// The Link went, or was finalized: nothing is kept of its mirrors.
    pub fn reset(&mut self) {
        self.record.reset();
        self.queue = Queue::new();
        self.deferred.clear();
    }
}

// === the writer's side ===

impl State {
    /// The next key to work on that has no job running (`busy`); those that
    /// have one are taken aside until it ends.
    pub fn take(&mut self, now: Instant, busy: impl Fn(&Key) -> bool) -> Option<Key> {
        while let Some(work) = self.queue.pop(now) {
            if busy(&work.key) {
                let p = self.deferred.entry(work.key).or_insert(work.priority);
                *p = (*p).min(work.priority);
                continue;
            }
            return Some(work.key);
        }
        None
    }

    /// When a retry is due next.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.next_due()
    }

    /// Whether keys wait, or a retry is due.
    pub fn has_work(&self, now: Instant) -> bool {
        !self.queue.is_empty() || self.queue.next_due().is_some_and(|at| at <= now)
    }

    /// Decides the writes `key`'s mirror needs; `None` when there are none
    /// (what that means is recorded already).
    pub fn plan(&mut self, key: Key, link: &Link, gateway: Option<&GatewayState>) -> Option<Job> {
        let cluster = &link.spec.target_cluster_name;
        let local = Key::new(key.namespace.clone(), mirror_name(&key.name, cluster));
        // Mirrors of this Service under another name (an older cluster name).
        let stale: Vec<Target> = self
            .index
            .mirrors_of(&key)
            .into_iter()
            .filter(|m| *m != local)
            .filter_map(|m| self.target(&m))
            .collect();
        let mirror = self.target(&local);
        let Some(remote) = self.index.service(&key) else {
            let gone = mirror.filter(|_| self.index.authoritative());
            if stale.is_empty() && gone.is_none() {
                self.record.forget(&key);
                self.queue.forget(&key);
                return None;
            }
            return Some(Job {
                key,
                stale,
                work: Work::Gone(gone),
            });
        };
        let desired = match mirror_service(remote, link) {
            Ok(d) => d,
            Err(why) => {
                if stale.is_empty() && mirror.is_none() {
                    self.invalid(&key, why);
                    return None;
                }
                return Some(Job {
                    key,
                    stale,
                    work: Work::Invalid { why, mirror },
                });
            }
        };
        let written = self.record.get(&key).cloned().unwrap_or_default();
        let endpoints = gateway
            .filter(|g| g.resolved && !g.ips.is_empty() && g.liveness != Liveness::Unknown)
            .map(|g| Endpoints {
                ips: g.ips.clone(),
                alive: g.liveness == Liveness::Alive,
                remote_ready: self.index.is_ready(&key),
            });
        let write_service = written.service.as_ref() != Some(&desired);
        if !write_service && stale.is_empty() {
            // Nothing to write but perhaps the slice: decided here, so that
            // a pass over unchanged mirrors starts no job.
            let slice = endpoints.as_ref().map(|e| {
                let mut owner = desired.clone();
                owner.metadata.uid = written.uid.clone();
                mirror_slice(&owner, link, &e.ips, e.remote_ready && e.alive)
            });
            if slice.is_none() || slice == written.slice {
                self.done(&key, Outcome::Mirrored);
                return None;
            }
        }
        let uid = mirror.map(|m| m.uid).or_else(|| written.uid.clone());
        Some(Job {
            stale,
            work: Work::Mirror(Box::new(MirrorWork {
                link: link.clone(),
                desired,
                write_service,
                uid,
                written_uid: written.uid,
                written_slice: written.slice,
                endpoints,
                previous: self.record.outcome(&key).clone(),
            })),
            key,
        })
    }

    /// A job ended.
    pub fn finished(&mut self, key: Key, report: Report, now: Instant) {
        if report.forget {
            self.record.remove(&key);
        }
        if let Some(written) = report.service {
            let w = self.record.entry(key.clone());
            w.service = Some(written.desired);
            w.uid = written.uid;
        }
        if let Some(slice) = report.slice {
            self.record.entry(key.clone()).slice = Some(slice);
        }
        match report.end {
            End::Failed { outcome, at_least } => self.failed(&key, outcome, at_least, now),
            _ if report.delete_failed => {
                self.failed_delete(&key, now);
            }
            End::Mirrored => self.done(&key, Outcome::Mirrored),
            End::Invalid(why) => self.invalid(&key, why),
            End::Gone => {
                self.record.forget(&key);
                self.queue.forget(&key);
            }
        }
        if let Some(p) = self.deferred.remove(&key) {
            self.queue.push(key, p, now);
        }
    }

    /// A job ended without a report (it panicked): tried again.
    pub fn lost(&mut self, key: Key, now: Instant) {
        self.failed(
            &key,
            Outcome::Error("the write ended unexpectedly".into()),
            Duration::ZERO,
            now,
        );
        if let Some(p) = self.deferred.remove(&key) {
            self.queue.push(key, p, now);
        }
    }

    fn done(&mut self, key: &Key, outcome: Outcome) {
        let s = self.record.state(key.clone());
        s.outcome = outcome;
        s.failures = 0;
        self.queue.done(key);
    }

    fn invalid(&mut self, key: &Key, why: String) {
        if !matches!(self.record.outcome(key), Outcome::Invalid(w) if *w == why) {
            tracing::warn!(remote = %key, reason = %why, "the remote Service cannot be mirrored");
        }
        self.done(key, Outcome::Invalid(why));
    }

    /// Records a failed mirror and schedules its retry.
    fn failed(&mut self, key: &Key, outcome: Outcome, at_least: Duration, now: Instant) {
        let cap = match outcome {
            // A namespace may appear any time: look again soon.
            Outcome::MissingNamespace(_) => Duration::from_secs(10),
            Outcome::Invalid(_) => Duration::from_secs(60),
            _ => Duration::from_secs(30),
        };
        let s = self.record.state(key.clone());
        s.failures = s.failures.saturating_add(1);
        let after = retry_after(s.failures, cap, at_least);
        if s.outcome != outcome {
            match &outcome {
                Outcome::MissingNamespace(m)
                | Outcome::Invalid(m)
                | Outcome::NameTaken(m)
                | Outcome::Error(m) => {
                    tracing::warn!(remote = %key, error = %m, retry_in_ms = after.as_millis() as u64, "mirror not written")
                }
                Outcome::Pending | Outcome::Mirrored => {}
            }
        }
        s.outcome = outcome;
        self.schedule(key, after, now);
    }

    /// A delete failed: tried again, how the mirror stands unchanged.
    fn failed_delete(&mut self, key: &Key, now: Instant) {
        let s = self.record.state(key.clone());
        s.failures = s.failures.saturating_add(1);
        let after = retry_after(s.failures, Duration::from_secs(30), Duration::ZERO);
        self.schedule(key, after, now);
    }

    fn schedule(&mut self, key: &Key, after: Duration, now: Instant) {
        // The queue's own count restarts, so that it waits exactly `after`.
        self.queue.done(key);
        self.queue.retry_later(key.clone(), now, after);
    }

    /// A local mirror as it is seen, to delete exactly it.
    fn target(&self, mirror: &Key) -> Option<Target> {
        let uid = self.index.mirror(mirror)?.metadata.uid.clone()?;
        let slice = Key::new(mirror.namespace.clone(), slice_name(&mirror.name));
        Some(Target {
            mirror: mirror.clone(),
            uid,
            slice_uid: self.index.mirror_slice_uid(&slice).map(str::to_string),
        })
    }

    // === status ===

    /// The remote Services' outcomes, summarised (one pass).
    pub fn summary(&self) -> Summary {
        status::summarize(
            self.index.services().map(|k| (k, self.record.outcome(k))),
            MAX_LISTED_FAILURES,
        )
    }
}

/// 100 ms doubling per failure in a row, at most `cap`, at least
/// `at_least` (itself at most `cap`).
pub fn retry_after(failures: u32, cap: Duration, at_least: Duration) -> Duration {
    tandem_util::backoff(Duration::from_millis(100), failures)
        .min(cap)
        .max(at_least.min(cap))
}

/// The remote Service a local mirror slice belongs to.
fn slice_remote_key(s: &EndpointSlice) -> Option<Key> {
    let labels = s.metadata.labels.as_ref()?;
    let mirror = labels.get(SERVICE_NAME_LABEL)?;
    let cluster = labels.get(CLUSTER_NAME_LABEL)?;
    let name = mirror.strip_suffix(cluster.as_str())?.strip_suffix('-')?;
    Some(Key::new(s.metadata.namespace.clone()?, name))
}

#[cfg(test)]
pub(crate) mod tests;

//! Watches in the local cluster: the mirror's EndpointSlices, each change
//! time-stamped on arrival, and the Link's status writes.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client,
    api::DynamicObject,
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use serde_json::Value;
use tokio::{
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, sleep},
};

use super::{MC_NAMESPACE, MIRROR_SLICE_SELECTOR, link::link_api};

/// A mirror slice as seen at an instant: whether it has a ready endpoint,
/// `None` when deleted.
#[derive(Debug)]
pub(super) struct Change {
    pub(super) name: String,
    pub(super) ready: Option<bool>,
    pub(super) at: Instant,
}

/// Whether a slice has an endpoint that is ready.
fn has_ready_endpoint(slice: &EndpointSlice) -> bool {
    slice.endpoints.iter().any(|e| {
        e.conditions
            .as_ref()
            .is_some_and(|c| c.ready == Some(true) && c.terminating != Some(true))
    })
}

/// Each mirror slice's readiness, and how many are ready.
#[derive(Debug, Default)]
pub(super) struct MirrorState {
    ready: HashMap<String, bool>,
    ready_count: usize,
}

impl MirrorState {
    pub(super) fn apply(&mut self, c: &Change) {
        let old = match c.ready {
            Some(r) => self.ready.insert(c.name.clone(), r),
            None => self.ready.remove(&c.name),
        };
        if old == Some(true) {
            self.ready_count -= 1;
        }
        if c.ready == Some(true) {
            self.ready_count += 1;
        }
    }

    pub(super) fn ready(&self) -> usize {
        self.ready_count
    }

    pub(super) fn slices(&self) -> usize {
        self.ready.len()
    }
}

/// A watch on the mirror's EndpointSlices in the local namespace: every
/// change on a channel, time-stamped on arrival.
pub(super) struct SliceWatch {
    changes: mpsc::UnboundedReceiver<Change>,
    listed: Arc<AtomicBool>,
    errors: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl SliceWatch {
    pub(super) fn start(client: Client, ns: &str) -> Self {
        let api: Api<EndpointSlice> = Api::namespaced(client, ns);
        let listed = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicUsize::new(0));
        let (tx, changes) = mpsc::unbounded_channel();
        let task = tokio::spawn({
            let listed = listed.clone();
            let errors = errors.clone();
            async move {
                let mut stream = watcher::watcher(
                    api,
                    watcher::Config::default().labels(MIRROR_SLICE_SELECTOR),
                )
                .default_backoff()
                .boxed();
                while let Some(event) = stream.next().await {
                    let at = Instant::now();
                    let (obj, ready) = match event {
                        Ok(Event::Apply(o) | Event::InitApply(o)) => {
                            let r = has_ready_endpoint(&o);
                            (o, Some(r))
                        }
                        Ok(Event::Delete(o)) => (o, None),
                        Ok(Event::Init) => continue,
                        Ok(Event::InitDone) => {
                            listed.store(true, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!(
                                    "warning: the mirror EndpointSlice watch failed: {e}; retrying"
                                );
                            }
                            continue;
                        }
                    };
                    let Some(name) = obj.metadata.name else {
                        continue;
                    };
                    if tx.send(Change { name, ready, at }).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            changes,
            listed,
            errors,
            task,
        }
    }

    pub(super) async fn wait_listed(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while !self.listed.load(Ordering::Relaxed) {
            if Instant::now() >= deadline {
                bail!("the local EndpointSlice watch had not listed within {limit:?}");
            }
            sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The next change; `None` when the watch has ended.
    pub(super) async fn next(&mut self) -> Option<Change> {
        self.changes.recv().await
    }

    pub(super) fn drain(&mut self) -> Vec<Change> {
        let mut v = vec![];
        while let Ok(c) = self.changes.try_recv() {
            v.push(c);
        }
        v
    }

    pub(super) fn errors(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for SliceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts the Link's status writes (each stamps a new heartbeat time) while
/// it lives, so that the flips are known to be measured with the status
/// writer running.
pub(super) struct StatusWrites {
    count: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl StatusWrites {
    pub(super) fn watch(local: &Client, cluster: &str) -> Self {
        let links: Api<DynamicObject> =
            Api::namespaced_with(local.clone(), MC_NAMESPACE, &link_api());
        let config = watcher::Config::default().fields(&format!("metadata.name={cluster}"));
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher::watcher(links, config).default_backoff().boxed();
            let mut last: Option<Value> = None;
            while let Some(event) = events.next().await {
                let (Ok(Event::Apply(l)) | Ok(Event::InitApply(l))) = event else {
                    continue;
                };
                let beat = l.data["status"]["lastHeartbeatTime"].clone();
                if last.as_ref().is_some_and(|b| *b != beat) {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                last = Some(beat);
            }
        });
        Self { count, task }
    }

    /// How many writes were seen; the watch stops.
    pub(super) fn count(self) -> usize {
        self.task.abort();
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    #[test]
    fn a_slice_is_ready_when_an_endpoint_is_ready_and_not_terminating() {
        let mut s = objects::endpoint_slice("bench", 0);
        assert!(has_ready_endpoint(&s));
        s.endpoints[0].conditions.as_mut().unwrap().ready = Some(false);
        assert!(!has_ready_endpoint(&s));
        s.endpoints.push(Endpoint {
            addresses: vec!["127.0.0.9".into()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(true),
            }),
            ..Default::default()
        });
        assert!(!has_ready_endpoint(&s));
        s.endpoints.clear();
        assert!(!has_ready_endpoint(&s));
    }

    #[test]
    fn the_state_counts_ready_slices_through_flips_and_deletes() {
        let at = Instant::now();
        let c = |name: &str, ready: Option<bool>| Change {
            name: name.into(),
            ready,
            at,
        };
        let mut s = MirrorState::default();
        s.apply(&c("a", Some(false)));
        assert_eq!((s.ready(), s.slices()), (0, 1));
        s.apply(&c("a", Some(true)));
        s.apply(&c("a", Some(true)));
        s.apply(&c("b", Some(true)));
        assert_eq!((s.ready(), s.slices()), (2, 2));
        s.apply(&c("b", Some(false)));
        assert_eq!(s.ready(), 1);
        s.apply(&c("a", None));
        s.apply(&c("gone", None));
        assert_eq!((s.ready(), s.slices()), (0, 1));
    }
}

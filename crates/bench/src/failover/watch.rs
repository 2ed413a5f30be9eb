//! A watch on the benchmark's TrafficSplits: the state tandem recorded on
//! each, and each weight change as it arrives.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Result, bail};
use futures::StreamExt;
use kube::{
    Api, Client,
    api::DynamicObject,
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use tokio::{
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, sleep},
};

use crate::{
    controller::Controller,
    objects::{self, CONTROLLED_BY_LABEL},
    report::Progress,
};

/// A split as last seen.
#[derive(Debug)]
struct Seen {
    state: Option<String>,
}

/// A split's weights as seen at an instant.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) name: String,
    pub(crate) weights: Vec<u64>,
    pub(crate) at: Instant,
}

/// A watch on the benchmark's TrafficSplits: the state of each, and while
/// forwarding, every change on a channel, time-stamped on arrival.
pub(crate) struct SplitWatch {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    changes: mpsc::UnboundedReceiver<Change>,
    forward: Arc<AtomicBool>,
    errors: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl SplitWatch {
    pub(crate) fn start(client: Client, ns: &str) -> Self {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client, ns, &objects::traffic_split_api());
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let forward = Arc::new(AtomicBool::new(true));
        let errors = Arc::new(AtomicUsize::new(0));
        let (tx, changes) = mpsc::unbounded_channel();
        let task = tokio::spawn({
            let seen = seen.clone();
            let forward = forward.clone();
            let errors = errors.clone();
            async move {
                let mut stream =
                    watcher::watcher(api, watcher::Config::default().labels(CONTROLLED_BY_LABEL))
                        .default_backoff()
                        .boxed();
                while let Some(event) = stream.next().await {
                    let at = Instant::now();
                    let obj = match event {
                        Ok(Event::Apply(o) | Event::InitApply(o)) => o,
                        Ok(Event::Delete(o)) => {
                            if let Some(name) = o.metadata.name {
                                lock(&seen).remove(&name);
                            }
                            continue;
                        }
                        Ok(Event::Init | Event::InitDone) => continue,
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("warning: the TrafficSplit watch failed: {e}; retrying");
                            }
                            continue;
                        }
                    };
                    let Some(name) = obj.metadata.name.clone() else {
                        continue;
                    };
                    let state = objects::state(&obj);
                    if forward.load(Ordering::Relaxed) {
                        let weights = objects::weights(&obj);
                        let _ = tx.send(Change {
                            name: name.clone(),
                            weights,
                            at,
                        });
                    }
                    lock(&seen).insert(name, Seen { state });
                }
            }
        });
        Self {
            seen,
            changes,
            forward,
            errors,
            task,
        }
    }

    fn primary_count(&self) -> usize {
        lock(&self.seen)
            .values()
            .filter(|s| s.state.as_deref() == Some("primary"))
            .count()
    }

    /// Waits until `n` splits carry the state annotation `primary`.
    pub(crate) async fn wait_primary(
        &mut self,
        p: &Progress,
        ctl: &mut Controller,
        n: usize,
        timeout: Duration,
    ) -> Result<()> {
        let start = Instant::now();
        let mut last_report = start;
        loop {
            let count = self.primary_count();
            if count >= n {
                return Ok(());
            }
            ctl.check_running()?;
            if start.elapsed() >= timeout {
                bail!("only {count} of {n} splits were recorded as primary within {timeout:?}");
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                p.say(format_args!("{count}/{n} splits recorded as primary"));
                last_report = Instant::now();
            }
            // Changes are not needed here; keep the channel short.
            while self.changes.try_recv().is_ok() {}
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// The next weight change; `None` when the watch has ended.
    pub(crate) async fn next(&mut self) -> Option<Change> {
        self.changes.recv().await
    }

    pub(crate) fn drain(&mut self) {
        while self.changes.try_recv().is_ok() {}
    }

    pub(crate) fn start_forwarding(&mut self) {
        self.drain();
        self.forward.store(true, Ordering::Relaxed);
    }

    pub(crate) fn stop_forwarding(&mut self) {
        self.forward.store(false, Ordering::Relaxed);
        self.drain();
    }

    pub(crate) fn errors(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for SplitWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

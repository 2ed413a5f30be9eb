//! Watches as a controller's index wants them: kube-runtime's watcher (with
//! its default backoff), each object folded to what the index keeps as it
//! arrives, and a (re-)list delivered at once, so that the index can tell
//! what went while the watch was down.

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::Task;

/// What a watch reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Update<T> {
    /// A full list: everything there is now (after a start or a re-list).
    Listed(Vec<T>),
    Apply(T),
    Delete(T),
    /// The watch failed; it retries by itself, with backoff.
    Failed(WatchError),
}

/// Why a watch failed, with the API server's HTTP code when it answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WatchError {
    pub message: String,
    pub code: Option<u16>,
}

impl WatchError {
    /// An expired resourceVersion (410 Gone): the watcher lists again by
    /// itself, so this is no sign of an unreachable server.
    pub fn is_expired(&self) -> bool {
        self.code == Some(410)
    }
}

impl From<&watcher::Error> for WatchError {
    fn from(e: &watcher::Error) -> Self {
        use watcher::Error as W;
        let code = match e {
            W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => match e {
                kube::Error::Api(s) => Some(s.code),
                _ => None,
            },
            W::WatchError(s) => Some(s.code),
            W::NoResourceVersion => None,
        };
        WatchError {
            message: tandem_util::error_chain(e),
            code,
        }
    }
}

/// The objects `api` serves under `config`, as [`Update`]s of whole objects.
pub fn stream<K>(api: Api<K>, config: watcher::Config) -> impl Stream<Item = Update<K>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    folded(api, config, |k| k)
}

/// The same, with each object folded by `fold` as it arrives: a list
/// buffers only what the index keeps, never the whole objects.
pub fn folded<K, T>(
    api: Api<K>,
    config: watcher::Config,
    fold: impl Fn(K) -> T + Send + 'static,
) -> impl Stream<Item = Update<T>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    T: Send + 'static,
{
    fold_events(watcher::watcher(api, config).default_backoff(), fold)
}

/// [`Update`]s from any stream of watcher events (a watcher's, or a
/// scripted one in tests): each object is folded by `fold` as it arrives,
/// so that a (re-)list buffers only the folded values until it is done.
pub fn fold_events<K, T>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    fold: impl Fn(K) -> T + Send + 'static,
) -> impl Stream<Item = Update<T>> + Send
where
    K: Send + 'static,
    T: Send + 'static,
{
    futures::stream::unfold(
        (events.boxed(), fold, Vec::new()),
        |(mut events, fold, mut buffer)| async move {
            loop {
                let update = match events.next().await? {
                    Ok(Event::Init) => {
                        buffer.clear();
                        continue;
                    }
                    Ok(Event::InitApply(o)) => {
                        buffer.push(fold(o));
                        continue;
                    }
                    Ok(Event::InitDone) => Update::Listed(std::mem::take(&mut buffer)),
                    Ok(Event::Apply(o)) => Update::Apply(fold(o)),
                    Ok(Event::Delete(o)) => Update::Delete(fold(o)),
                    Err(e) => Update::Failed(WatchError::from(&e)),
                };
                return Some((update, (events, fold, buffer)));
            }
        },
    )
}

/// Runs [`stream`] on a [`Task`], sending `wrap(update)` to `tx` until the
/// receiver goes or the task is dropped.
pub fn spawn<K, M>(
    api: Api<K>,
    config: watcher::Config,
    tx: mpsc::UnboundedSender<M>,
    wrap: impl Fn(Update<K>) -> M + Send + 'static,
) -> Task
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    M: Send + 'static,
{
    spawn_folded(api, config, |k| k, tx, wrap)
}

/// Runs [`folded`] on a [`Task`], sending `wrap(update)` to `tx`.
pub fn spawn_folded<K, T, M>(
    api: Api<K>,
    config: watcher::Config,
    fold: impl Fn(K) -> T + Send + 'static,
    tx: mpsc::UnboundedSender<M>,
    wrap: impl Fn(Update<T>) -> M + Send + 'static,
) -> Task
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    T: Send + 'static,
    M: Send + 'static,
{
    Task::spawn(async move {
        let mut updates = std::pin::pin!(folded(api, config, fold));
        while let Some(update) = updates.next().await {
            if tx.send(wrap(update)).is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("boom", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn watch_errors_keep_the_http_code() {
        let cases = [
            (watcher::Error::InitialListFailed(api_error(403)), Some(403)),
            (watcher::Error::WatchFailed(api_error(500)), Some(500)),
            (watcher::Error::NoResourceVersion, None),
        ];
        for (e, want) in cases {
            let got = WatchError::from(&e);
            assert_eq!(got.code, want, "{e}");
            assert!(!got.message.is_empty());
        }
        let gone = WatchError {
            message: "too old".into(),
            code: Some(410),
        };
        assert!(gone.is_expired());
    }

    /// How many [`Obj`]s are alive now, and at most at once.
    #[derive(Default)]
    struct Live {
        now: AtomicUsize,
        peak: AtomicUsize,
    }

    /// A whole object as the API serves it: it counts itself in [`Live`]
    /// while it exists.
    struct Obj {
        n: u32,
        live: Arc<Live>,
    }

    impl Obj {
        fn new(n: u32, live: &Arc<Live>) -> Self {
            let now = live.now.fetch_add(1, Ordering::SeqCst) + 1;
            live.peak.fetch_max(now, Ordering::SeqCst);
            Obj {
                n,
                live: live.clone(),
            }
        }
    }

    impl Drop for Obj {
        fn drop(&mut self) {
            self.live.now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// One step of a scripted watch.
    #[derive(Clone, Copy)]
    enum Step {
        Init,
        InitApply(u32),
        InitDone,
        Apply(u32),
        Delete(u32),
        Fail(u16),
    }

    /// The watcher events of `script`, each object made only when the
    /// stream is polled for it (as a watcher decodes them as they come).
    fn scripted(
        script: Vec<Step>,
        live: &Arc<Live>,
    ) -> impl Stream<Item = Result<Event<Obj>, watcher::Error>> + Send + 'static {
        let live = live.clone();
        futures::stream::iter(script).map(move |step| match step {
            Step::Init => Ok(Event::Init),
            Step::InitApply(n) => Ok(Event::InitApply(Obj::new(n, &live))),
            Step::InitDone => Ok(Event::InitDone),
            Step::Apply(n) => Ok(Event::Apply(Obj::new(n, &live))),
            Step::Delete(n) => Ok(Event::Delete(Obj::new(n, &live))),
            Step::Fail(code) => Err(watcher::Error::WatchFailed(api_error(code))),
        })
    }

    /// The fold of the tests: what an index keeps of an object (its
    /// number), counting its calls.
    fn fold(calls: &Arc<AtomicUsize>) -> impl Fn(Obj) -> u32 + Send + 'static {
        let calls = calls.clone();
        move |o| {
            calls.fetch_add(1, Ordering::SeqCst);
            o.n
        }
    }

    #[tokio::test]
    async fn a_list_buffers_each_object_folded_as_it_arrives() {
        const N: u32 = 1_000;
        let live = Arc::new(Live::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut script = vec![Step::Init];
        script.extend((0..N).map(Step::InitApply));
        script.push(Step::InitDone);
        let updates: Vec<Update<u32>> = fold_events(scripted(script, &live), fold(&calls))
            .collect()
            .await;
        assert_eq!(updates, [Update::Listed((0..N).collect())]);
        assert_eq!(calls.load(Ordering::SeqCst), N as usize, "one fold each");
        assert_eq!(
            live.peak.load(Ordering::SeqCst),
            1,
            "each object is dropped once folded: the list never holds whole objects"
        );
        assert_eq!(live.now.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_relist_delivers_only_the_new_lists_folded_objects() {
        let live = Arc::new(Live::default());
        let calls = Arc::new(AtomicUsize::new(0));
        use Step::*;
        let script = vec![
            Init,
            InitApply(1),
            InitApply(2),
            InitDone,
            Apply(3),
            Delete(1),
            // A re-list that fails half-way: what it had buffered is void.
            Init,
            InitApply(5),
            Fail(500),
            // The re-list that succeeds.
            Init,
            InitApply(2),
            InitApply(3),
            InitDone,
            Apply(4),
        ];
        let updates: Vec<Update<u32>> = fold_events(scripted(script, &live), fold(&calls))
            .collect()
            .await;
        let failed = WatchError::from(&watcher::Error::WatchFailed(api_error(500)));
        assert_eq!(
            updates,
            [
                Update::Listed(vec![1, 2]),
                Update::Apply(3),
                Update::Delete(1),
                Update::Failed(failed),
                Update::Listed(vec![2, 3]),
                Update::Apply(4),
            ]
        );
        assert_eq!(calls.load(Ordering::SeqCst), 8, "every object folded once");
        assert_eq!(live.peak.load(Ordering::SeqCst), 1);
    }
}

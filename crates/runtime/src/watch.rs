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
    let events = watcher::watcher(api, config).default_backoff().boxed();
    futures::stream::unfold(
        (events, fold, Vec::new()),
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
}

//! The controller runtime every controller of tandem shares, shaped after
//! linkerd2's policy-controller: watches feed a synchronous index, the index
//! says which keys need work, a [`queue::Queue`] orders that work (urgent
//! before routine, failures after a backoff), and one writer does it, at
//! most [`pool::Pool`]'s limit at once and one job per key.
//!
//! - [`watch`]: kube-runtime's watcher, with a (re-)list delivered at once
//!   and objects folded to what the index keeps as they arrive.
//! - [`queue`]: a pure work queue with two priorities and per-key backoff.
//! - [`pool`]: bounded concurrency, one job per key.
//! - [`progress`]: the writer's progress clock, for `/live`.
//! - [`Task`]: a spawned task aborted when dropped.
//! - `mock` (with the `mock` feature, for tests): a kube client whose
//!   requests an in-process handler answers.

#![forbid(unsafe_code)]

#[cfg(feature = "mock")]
pub mod mock;
pub mod pool;
pub mod progress;
pub mod queue;
pub mod watch;

use tokio::task::JoinHandle;

/// A spawned task that is aborted when dropped, so that a session or a
/// controller that goes takes its watches with it.
#[derive(Debug)]
pub struct Task(JoinHandle<()>);

impl Task {
    /// Spawns `fut` on the current runtime.
    pub fn spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(fut))
    }

    /// Whether the task has ended (it should not, before it is dropped).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_task_is_aborted() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = Task::spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        assert!(!task.is_finished());
        drop(task);
        // The sender goes with the aborted task.
        assert!(rx.await.is_err(), "the task still runs after its drop");
    }
}

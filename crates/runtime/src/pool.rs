//! Bounded concurrency for a writer: at most `limit` jobs at once, and at
//! most one job per key, so that two writes of one object never race. A
//! job that panics is reported with its key, not lost.

use std::{collections::HashMap, future::Future, hash::Hash};

use tokio::task::{Id, JoinError, JoinSet};

/// Jobs keyed by `K`, each ending with an `R`.
#[derive(Debug)]
pub struct Pool<K, R> {
    limit: usize,
    jobs: JoinSet<R>,
    keys: HashMap<Id, K>,
}

impl<K: Clone + Eq + Hash, R: Send + 'static> Pool<K, R> {
    /// A pool of at most `limit` jobs at once (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            jobs: JoinSet::new(),
            keys: HashMap::new(),
        }
    }

    /// Whether another job may start.
    pub fn has_room(&self) -> bool {
        self.keys.len() < self.limit
    }

    /// Whether a job of `key` runs.
    pub fn busy(&self, key: &K) -> bool {
        self.keys.values().any(|k| k == key)
    }

    /// Starts `job` for `key`, unless the pool is full or `key` already has
    /// a job: then it gives the job back.
    pub fn start<F>(&mut self, key: K, job: F) -> Result<(), F>
    where
        F: Future<Output = R> + Send + 'static,
    {
        if !self.has_room() || self.busy(&key) {
            return Err(job);
        }
        let handle = self.jobs.spawn(job);
        self.keys.insert(handle.id(), key);
        Ok(())
    }

    /// The next job to end, with its key; `None` when none runs (so a
    /// `select!` over it needs an `if !pool.is_empty()` guard).
    pub async fn next(&mut self) -> Option<(K, Result<R, JoinError>)> {
        let ended = self.jobs.join_next_with_id().await?;
        let id = match &ended {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let key = self.keys.remove(&id)?;
        Some((key, ended.map(|(_, r)| r)))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn at_most_limit_jobs_and_one_per_key() {
        let mut pool: Pool<&str, u32> = Pool::new(2);
        assert!(pool.start("a", async { 1 }).is_ok());
        assert!(
            pool.start("a", async { 2 }).is_err(),
            "a second job of a key"
        );
        assert!(
            pool.start("b", async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                3
            })
            .is_ok()
        );
        assert!(!pool.has_room());
        assert!(pool.start("c", async { 4 }).is_err(), "the pool is full");
        let (key, r) = pool.next().await.unwrap();
        assert_eq!((key, r.unwrap()), ("a", 1));
        assert!(!pool.busy(&"a"));
        assert!(pool.start("c", async { 4 }).is_ok());
        let mut rest = vec![];
        while let Some((k, r)) = pool.next().await {
            rest.push((k, r.unwrap()));
        }
        rest.sort();
        assert_eq!(rest, [("b", 3), ("c", 4)]);
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_with_its_key() {
        let mut pool: Pool<&str, ()> = Pool::new(1);
        pool.start("bad", async { panic!("a bug in one job") })
            .unwrap_or_else(|_| unreachable!());
        let (key, r) = pool.next().await.unwrap();
        assert_eq!(key, "bad");
        assert!(r.unwrap_err().is_panic());
        assert!(pool.is_empty() && pool.has_room());
    }
}

//! The election loop: polls as a follower, renews as the leader, releases on
//! shutdown. Generic over the [`Store`] and the wall clock so that unit tests
//! run it under paused time.

use std::{
    future::Future,
    hash::{BuildHasher, Hasher, RandomState},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use tokio::{
    sync::watch,
    time::{Instant, sleep_until, timeout_at},
};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    Error, Leadership, LeaseParams,
    decide::{Decision, claim, decide, jittered, release},
    store::Store,
};

#[cfg(test)]
mod tests;

/// The longest any one API call may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// The wall clock that `renewTime` is written and judged with.
pub(crate) type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system's wall clock.
pub(crate) fn system_clock() -> Clock {
    Arc::new(|| {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i128::try_from(since_epoch.as_nanos())
            .ok()
            .and_then(|n| Timestamp::from_nanosecond(n).ok())
            .unwrap_or(Timestamp::UNIX_EPOCH)
    })
}

pub(crate) struct Machine<S> {
    store: S,
    params: LeaseParams,
    clock: Clock,
    tx: watch::Sender<Leadership>,
}

enum State {
    Follower {
        next_poll: Instant,
    },
    /// A write that takes the lease is under way: if shutdown cuts it short,
    /// the lease may be ours.
    Acquiring,
    Leader {
        /// When the last successful renewal started: the lease lasts at least
        /// until then plus its duration.
        renewed_at: Instant,
        next_renew: Instant,
        /// The Lease as last written, to renew without reading it first.
        last: Option<Box<Lease>>,
    },
}

enum Renewal {
    Renewed(Box<Lease>),
    Lost { holder: Option<String> },
}

// === impl Machine ===

impl<S: Store> Machine<S> {
    pub(crate) fn new(store: S, params: LeaseParams, clock: Clock) -> Self {
        let (tx, _) = watch::channel(Leadership::Follower { holder: None });
        Self {
            store,
            params,
            clock,
            tx,
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.tx.subscribe()
    }

    pub(crate) async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.params.validate()?;
        let span = info_span!(
            "lease",
            namespace = %self.params.namespace,
            name = %self.params.name,
            identity = %self.params.identity,
        );
        self.run_valid(shutdown).instrument(span).await
    }

    async fn run_valid(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        tokio::pin!(shutdown);
        let mut state = State::Follower {
            next_poll: Instant::now(),
        };
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                res = self.step(&mut state) => res?,
            }
        }
        if matches!(state, State::Follower { .. }) {
            return Ok(());
        }
        // Stop the writer before the lease is free for others.
        self.publish(Leadership::Follower { holder: None });
        match self.release().await {
            Ok(()) => Ok(()),
            Err(error) => {
                warn!(error = %tandem_util::error_chain(&error), "releasing the lease failed; it will expire");
                Err(error)
            }
        }
    }

    /// One turn of the loop. It may be cancelled at any await (shutdown):
    /// `state` is only ever replaced by a consistent value. An error ends
    /// the election: retrying cannot help.
    async fn step(&self, state: &mut State) -> Result<(), Error> {
        match state {
            State::Follower { next_poll } => {
                sleep_until(*next_poll).await;
                self.poll(state).await?;
            }
            State::Acquiring => self.poll(state).await?,
            State::Leader {
                renewed_at,
                next_renew,
                last,
            } => {
                let deadline = *renewed_at + self.params.renew_deadline();
                sleep_until((*next_renew).min(deadline)).await;
                if Instant::now() >= deadline {
                    *state = self.step_down(None, "no renewal within the renew deadline");
                    return Ok(());
                }
                let started = Instant::now();
                match self.renew(last.take(), deadline).await {
                    Ok(Renewal::Renewed(lease)) => {
                        debug!("renewed the lease");
                        *renewed_at = started;
                        *next_renew = started + self.params.renew_period;
                        *last = Some(lease);
                    }
                    Ok(Renewal::Lost { holder }) => {
                        *state = self.step_down(holder, "the lease was taken or released");
                    }
                    Err(error) => {
                        // Retried until the deadline, when the check above steps down.
                        warn!(error = %tandem_util::error_chain(&error), "renewing the lease failed; retrying");
                        *next_renew = Instant::now() + self.params.renew_period;
                    }
                }
            }
        }
        Ok(())
    }

    /// A follower's turn: read the Lease and wait, or take it.
    async fn poll(&self, state: &mut State) -> Result<(), Error> {
        let current = match self
            .call("get", Instant::now() + API_TIMEOUT, self.store.get())
            .await
        {
            Ok(current) => current,
            Err(error @ Error::Forbidden { .. }) => return Err(error),
            Err(error) => {
                warn!(error = %tandem_util::error_chain(&error), "reading the lease failed; retrying");
                *state = self.follower_after(self.params.renew_period);
                return Ok(());
            }
        };
        match decide(current.as_ref(), (self.clock)(), &self.params) {
            Decision::Wait { holder, retry_in } => {
                self.publish(Leadership::Follower {
                    holder: Some(holder),
                });
                *state = self.follower_after(retry_in);
            }
            // Renew here means the lease already names us (a restart, or a
            // step-down whose renewals then went through): take it back.
            Decision::Acquire | Decision::Renew => {
                *state = State::Acquiring;
                *state = self.acquire(current).await?;
            }
        }
        Ok(())
    }

    /// Takes the lease, or goes back to following; an error only when
    /// taking it can never work.
    async fn acquire(&self, current: Option<Lease>) -> Result<State, Error> {
        // Taken before renewTime is: the lease lasts at least until now + its duration.
        let started = Instant::now();
        // A write that lands after the renew deadline could already be
        // expired for others, so it must not make us leader.
        let deadline = started + self.params.renew_deadline();
        let lease = claim(current.as_ref(), (self.clock)(), &self.params);
        let written = match current {
            None => {
                self.call("create", deadline, self.store.create(&lease))
                    .await
            }
            Some(_) => {
                self.call("replace", deadline, self.store.replace(&lease))
                    .await
            }
        };
        match written {
            Ok(lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                info!(
                    transitions = spec.lease_transitions.unwrap_or(0),
                    lease_duration_seconds = spec.lease_duration_seconds.unwrap_or(0),
                    "acquired the lease"
                );
                self.publish(Leadership::Leader { since: started });
                Ok(State::Leader {
                    renewed_at: started,
                    next_renew: started + self.params.renew_period,
                    last: Some(Box::new(lease)),
                })
            }
            Err(Error::Conflict { .. }) => {
                debug!("another candidate wrote the lease first");
                Ok(self.follower_after(self.params.renew_period))
            }
            Err(error @ (Error::NamespaceNotFound { .. } | Error::Forbidden { .. })) => Err(error),
            Err(error) => {
                warn!(error = %tandem_util::error_chain(&error), "taking the lease failed; retrying");
                Ok(self.follower_after(self.params.renew_period))
            }
        }
    }

    /// Renews from the last written Lease, or a fresh read. A conflict on the
    /// cached copy may be a harmless edit by someone else, so it reads once
    /// more and decides again.
    async fn renew(&self, cached: Option<Box<Lease>>, deadline: Instant) -> Result<Renewal, Error> {
        let mut cached = cached;
        let mut retried = false;
        loop {
            let current = match cached.take() {
                Some(lease) => Some(*lease),
                None => self.call("get", deadline, self.store.get()).await?,
            };
            match decide(current.as_ref(), (self.clock)(), &self.params) {
                Decision::Renew => {}
                Decision::Acquire => return Ok(Renewal::Lost { holder: None }),
                Decision::Wait { holder, .. } => {
                    return Ok(Renewal::Lost {
                        holder: Some(holder),
                    });
                }
            }
            let lease = claim(current.as_ref(), (self.clock)(), &self.params);
            match self
                .call("replace", deadline, self.store.replace(&lease))
                .await
            {
                Err(Error::Conflict { .. }) if !retried => retried = true,
                written => return written.map(|l| Renewal::Renewed(Box::new(l))),
            }
        }
    }

    /// Gives the lease up if it names us.
    async fn release(&self) -> Result<(), Error> {
        let mut retried = false;
        loop {
            let deadline = Instant::now() + API_TIMEOUT;
            let Some(current) = self.call("get", deadline, self.store.get()).await? else {
                return Ok(());
            };
            let holder = current
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref());
            if holder != Some(self.params.identity.as_str()) {
                return Ok(());
            }
            match self
                .call("replace", deadline, self.store.replace(&release(&current)))
                .await
            {
                Ok(_) => {
                    info!("released the lease");
                    return Ok(());
                }
                Err(Error::Conflict { .. }) if !retried => retried = true,
                Err(error) => return Err(error),
            }
        }
    }

    fn step_down(&self, holder: Option<String>, reason: &'static str) -> State {
        self.publish(Leadership::Follower {
            holder: holder.clone(),
        });
        warn!(
            reason,
            holder = holder.as_deref().unwrap_or(""),
            "stepped down"
        );
        self.follower_after(self.params.renew_period)
    }

    fn follower_after(&self, wait: Duration) -> State {
        State::Follower {
            next_poll: Instant::now() + jittered(wait, random_unit()),
        }
    }

    /// Publishes a change; unchanged values do not wake receivers.
    fn publish(&self, new: Leadership) {
        self.tx.send_if_modified(|current| {
            if *current == new {
                return false;
            }
            debug!(leader = new.is_leader(), "leadership changed");
            *current = new;
            true
        });
    }

    /// One API call, bounded by [`API_TIMEOUT`] and by `deadline`.
    async fn call<T>(
        &self,
        op: &'static str,
        deadline: Instant,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let deadline = deadline.min(started + API_TIMEOUT);
        timeout_at(deadline, fut).await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                op,
                lease: self.params.lease_ref(),
                after: deadline.saturating_duration_since(started),
            })
        })
    }
}

/// A number in [0, 1) from the standard library's randomly seeded hasher:
/// enough for jitter, with no extra dependency.
fn random_unit() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

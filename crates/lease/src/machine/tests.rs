//! The loop over an in-memory Lease with the apiserver's optimistic locking,
//! under paused time. The real apiserver is exercised by the integration
//! tests in `crates/tandem/tests/lease.rs`.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use crate::MAX_JITTER;
use tokio::{sync::oneshot, task::JoinHandle, time::sleep};

use super::*;

const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_millis(500);
/// Every fake call takes this long, so that candidates interleave.
const LATENCY: Duration = Duration::from_millis(10);

// === Fake store ===

#[derive(Default)]
struct Stored {
    lease: Option<Lease>,
    version: u64,
    creates: usize,
}

/// One candidate's view of a shared in-memory Lease; each can be cut off.
#[derive(Clone, Default)]
struct Fake {
    stored: Arc<Mutex<Stored>>,
    /// Calls hang, as with a partition.
    stalled: Arc<AtomicBool>,
    /// Calls fail at once, as with a failing apiserver.
    failing: Arc<AtomicBool>,
    /// The Lease's namespace does not exist: it reads as absent, and
    /// creating it fails.
    no_namespace: Arc<AtomicBool>,
    /// The candidate's role has no rights on Leases: every call is refused.
    forbidden: Arc<AtomicBool>,
}

impl Fake {
    /// Another candidate's view of the same Lease.
    fn handle(&self) -> Fake {
        Fake {
            stored: self.stored.clone(),
            ..Fake::default()
        }
    }

    fn lease(&self) -> Option<Lease> {
        self.stored.lock().unwrap().lease.clone()
    }

    fn spec(&self) -> k8s_openapi::api::coordination::v1::LeaseSpec {
        self.lease().and_then(|l| l.spec).unwrap_or_default()
    }

    /// Edits the Lease as another client would (a label), bumping its version.
    fn edit(&self) {
        let mut s = self.stored.lock().unwrap();
        s.version += 1;
        let version = s.version.to_string();
        let lease = s.lease.as_mut().unwrap();
        lease.metadata.labels = Some([("edited".to_string(), version.clone())].into());
        lease.metadata.resource_version = Some(version);
    }

    async fn gate(&self, op: &'static str) -> Result<(), Error> {
        sleep(LATENCY).await;
        if self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.forbidden.load(Ordering::SeqCst) {
            return Err(Error::Forbidden {
                op,
                lease: "ns/leader".into(),
                message: "cannot get resource \"leases\"".into(),
            });
        }
        if self.failing.load(Ordering::SeqCst) {
            let status =
                kube::core::Status::failure("etcd is down", "InternalError").with_code(500);
            return Err(Error::Api {
                op,
                lease: "ns/leader".into(),
                source: kube::Error::Api(status.boxed()),
            });
        }
        Ok(())
    }

    fn store(&self, mut lease: Lease) -> Lease {
        let mut s = self.stored.lock().unwrap();
        s.version += 1;
        lease.metadata.resource_version = Some(s.version.to_string());
        s.lease = Some(lease.clone());
        lease
    }
}

impl Store for Fake {
    async fn get(&self) -> Result<Option<Lease>, Error> {
        self.gate("get").await?;
        Ok(self.lease())
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, Error> {
        self.gate("create").await?;
        if self.no_namespace.load(Ordering::SeqCst) {
            self.stored.lock().unwrap().creates += 1;
            return Err(Error::NamespaceNotFound {
                namespace: "ns".into(),
                lease: "ns/leader".into(),
            });
        }
        let conflict = {
            let mut s = self.stored.lock().unwrap();
            s.creates += 1;
            s.lease.is_some()
        };
        if conflict {
            return Err(Error::Conflict {
                op: "create",
                lease: "ns/leader".into(),
            });
        }
        Ok(self.store(lease.clone()))
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, Error> {
        self.gate("replace").await?;
        let current = self.lease().and_then(|l| l.metadata.resource_version);
        if current.is_none() || current != lease.metadata.resource_version {
            return Err(Error::Conflict {
                op: "replace",
                lease: "ns/leader".into(),
            });
        }
        Ok(self.store(lease.clone()))
    }
}

// === Helpers ===

/// A wall clock that follows tokio's (paused) clock.
fn virtual_clock() -> Clock {
    let start = Instant::now();
    let base = Timestamp::from_second(1_750_000_000).unwrap();
    Arc::new(move || base + (Instant::now() - start))
}

fn params(identity: &str) -> LeaseParams {
    LeaseParams {
        lease_duration: LEASE,
        renew_period: RENEW,
        ..LeaseParams::new("ns", "leader", identity)
    }
}

struct Candidate {
    rx: watch::Receiver<Leadership>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

impl Candidate {
    fn start(store: Fake, identity: &str, clock: &Clock) -> Candidate {
        let machine = Machine::new(store, params(identity), clock.clone());
        let rx = machine.subscribe();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(machine.run(async {
            let _ = stopped.await;
        }));
        Candidate {
            rx,
            stop: Some(stop),
            task,
        }
    }

    fn leads(&self) -> bool {
        self.rx.borrow().is_leader()
    }

    fn state(&self) -> Leadership {
        self.rx.borrow().clone()
    }

    async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap()
    }
}

/// Waits (in virtual time) until `cond` holds, checking every 10ms, failing
/// after `limit`. Also checks that never more than one of `group` leads.
async fn until(what: &str, limit: Duration, group: &[&Candidate], cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let leaders = group.iter().filter(|c| c.leads()).count();
        assert!(leaders <= 1, "{leaders} lead while waiting for {what}");
        if cond() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// Samples `check` every 10ms for `time`, and that never more than one of
/// `group` leads.
async fn hold(time: Duration, group: &[&Candidate], check: impl Fn()) {
    let end = Instant::now() + time;
    while Instant::now() < end {
        let leaders = group.iter().filter(|c| c.leads()).count();
        assert!(leaders <= 1, "{leaders} lead");
        check();
        sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_leader(c: &Candidate, limit: Duration) {
    until("leader", limit, &[c], || c.leads()).await;
}

fn renew_expiry(fake: &Fake) -> Timestamp {
    let spec = fake.spec();
    let secs = i64::from(spec.lease_duration_seconds.unwrap());
    spec.renew_time.unwrap().0 + Duration::from_secs(secs.unsigned_abs())
}

// === Tests ===

#[tokio::test(start_paused = true)]
async fn lone_candidate_creates_the_lease_and_leads() {
    let clock = virtual_clock();
    let fake = Fake::default();
    let a = Candidate::start(fake.handle(), "a", &clock);
    wait_leader(&a, Duration::from_millis(100)).await;

    let spec = fake.spec();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(0));
    assert_eq!(spec.lease_duration_seconds, Some(3));
    assert_eq!(spec.acquire_time, spec.renew_time);

    // Renewals move renewTime and keep acquireTime.
    let first = spec.renew_time.unwrap();
    sleep(Duration::from_secs(2)).await;
    let spec = fake.spec();
    assert!(spec.renew_time.unwrap() > first);
    assert_eq!(spec.acquire_time.unwrap(), first);
    assert!(a.leads());
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn two_candidates_never_both_lead() {
    let clock = virtual_clock();
    let fake = Fake::default();
    let a = Candidate::start(fake.handle(), "a", &clock);
    let b = Candidate::start(fake.handle(), "b", &clock);
    until("a leader", Duration::from_secs(1), &[&a, &b], || {
        a.leads() || b.leads()
    })
    .await;
    assert_eq!(
        fake.stored.lock().unwrap().creates,
        2,
        "both tried to create"
    );

    let (leader, follower, id) = if a.leads() {
        (&a, &b, "a")
    } else {
        (&b, &a, "b")
    };
    assert_eq!(fake.spec().holder_identity.as_deref(), Some(id));
    until(
        "follower sees the holder",
        Duration::from_secs(1),
        &[&a, &b],
        || {
            follower.state()
                == Leadership::Follower {
                    holder: Some(id.to_string()),
                }
        },
    )
    .await;
    // A stable leader: nothing changes for a while.
    hold(Duration::from_secs(30), &[&a, &b], || {
        assert!(leader.leads() && !follower.leads());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn standby_takes_over_when_the_leader_dies() {
    let clock = virtual_clock();
    let fake = Fake::default();
    let a = Candidate::start(fake.handle(), "a", &clock);
    wait_leader(&a, Duration::from_millis(100)).await;
    let b = Candidate::start(fake.handle(), "b", &clock);
    hold(Duration::from_secs(1), &[&a, &b], || assert!(!b.leads())).await;

    // Killed: no release, no more renewals.
    a.task.abort();
    let expiry = renew_expiry(&fake);
    let killed = Instant::now();
    wait_leader(&b, LEASE + Duration::from_secs(1)).await;
    let spec = fake.spec();
    assert!(
        spec.acquire_time.unwrap().0 >= expiry,
        "took over only after expiry"
    );
    assert!(Instant::now() - killed <= LEASE + RENEW.mul_f64(1.0 + MAX_JITTER) + LATENCY * 4);
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_releases_the_lease() {
    let clock = virtual_clock();
    let fake = Fake::default();
    let a = Candidate::start(fake.handle(), "a", &clock);
    wait_leader(&a, Duration::from_millis(100)).await;
    let b = Candidate::start(fake.handle(), "b", &clock);
    sleep(Duration::from_secs(1)).await;

    let a_rx = a.rx.clone();
    let stopped = Instant::now();
    a.shutdown().await.unwrap();
    assert_eq!(*a_rx.borrow(), Leadership::Follower { holder: None });
    let spec = fake.spec();
    assert_eq!(spec.holder_identity, None, "released");
    assert_eq!(spec.renew_time, None);

    wait_leader(&b, Duration::from_secs(1)).await;
    assert!(Instant::now() - stopped < RENEW * 2, "no wait for expiry");
    assert_eq!(fake.spec().lease_transitions, Some(1));
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn cut_off_leader_steps_down_before_the_lease_expires() {
    let clock = virtual_clock();
    let fake = Fake::default();
    let a_store = fake.handle();
    let a = Candidate::start(a_store.clone(), "a", &clock);
    wait_leader(&a, Duration::from_millis(100)).await;
    let b = Candidate::start(fake.handle(), "b", &clock);
    sleep(Duration::from_secs(1)).await;

    let mut a_rx = a.rx.clone();
    a_rx.mark_unchanged();
    a_store.stalled.store(true, Ordering::SeqCst);
    a_rx.changed().await.unwrap();
    assert!(!a_rx.borrow().is_leader());
    // Published while the lease, as others judge it, is still a's.
    let margin = renew_expiry(&fake).duration_since(clock());
    assert!(
        margin.as_secs_f64() >= 0.9,
        "stepped down only {margin:?} before expiry"
    );
    assert!(!b.leads());

    until("b takes over", LEASE, &[&a, &b], || b.leads()).await;
    assert_eq!(fake.spec().holder_identity.as_deref(), Some("b"));
    a.task.abort();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failing_api_makes_the_leader_step_down_then_lead_again() {
    let clock = virtual_clock();
    let fake = Fake::default();
    let a_store = fake.handle();
    let a = Candidate::start(a_store.clone(), "a", &clock);
    wait_leader(&a, Duration::from_millis(100)).await;
    let acquired = fake.spec().acquire_time;

    let mut a_rx = a.rx.clone();
    a_rx.mark_unchanged();
    a_store.failing.store(true, Ordering::SeqCst);
    let failing_since = Instant::now();
    a_rx.changed().await.unwrap();
    assert!(!a_rx.borrow().is_leader());
    assert!(Instant::now() - failing_since <= LEASE * 2 / 3);
    assert!(renew_expiry(&fake) > clock(), "stepped down before expiry");

    // The loop kept going; once the API answers, a takes its own lease back.
    sleep(Duration::from_secs(5)).await;
    assert!(!a.leads());
    a_store.failing.store(false, Ordering::SeqCst);
    wait_leader(&a, Duration::from_secs(1)).await;
    let spec = fake.spec();
    assert_eq!(
        spec.lease_transitions,
        Some(0),
        "same holder: no transition"
    );
    assert_eq!(spec.acquire_time, acquired);
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_edit_by_someone_else_does_not_depose_the_leader() {
    let clock = virtual_clock();
    let fake = Fake::default();
    let a = Candidate::start(fake.handle(), "a", &clock);
    wait_leader(&a, Duration::from_millis(100)).await;
    let mut a_rx = a.rx.clone();
    a_rx.mark_unchanged();
    for _ in 0..5 {
        fake.edit();
        sleep(RENEW).await;
    }
    assert!(!a_rx.has_changed().unwrap(), "leadership never wavered");
    assert!(fake.spec().renew_time.unwrap().0 + RENEW * 2 > clock());
    assert!(
        fake.lease().unwrap().metadata.labels.is_some(),
        "the edit was kept"
    );
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn follower_shutdown_leaves_the_lease_alone() {
    let clock = virtual_clock();
    let fake = Fake::default();
    let a = Candidate::start(fake.handle(), "a", &clock);
    wait_leader(&a, Duration::from_millis(100)).await;
    let b = Candidate::start(fake.handle(), "b", &clock);
    sleep(Duration::from_secs(1)).await;
    b.shutdown().await.unwrap();
    assert_eq!(fake.spec().holder_identity.as_deref(), Some("a"));
    assert!(a.leads());
    a.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn invalid_params_are_refused() {
    let clock = virtual_clock();
    let bad = [
        LeaseParams {
            identity: String::new(),
            ..params("a")
        },
        LeaseParams {
            renew_period: Duration::from_secs(2),
            ..params("a")
        },
        LeaseParams {
            renew_period: Duration::ZERO,
            ..params("a")
        },
        LeaseParams {
            lease_duration: Duration::from_millis(500),
            renew_period: Duration::from_millis(100),
            ..params("a")
        },
        LeaseParams {
            lease_duration: Duration::MAX,
            ..params("a")
        },
    ];
    for p in bad {
        let machine = Machine::new(Fake::default(), p.clone(), clock.clone());
        // Bounded, so that a regression fails instead of running forever.
        let res =
            tokio::time::timeout(Duration::from_secs(60), machine.run(std::future::pending()))
                .await
                .unwrap_or_else(|_| panic!("{p:?} accepted"));
        assert!(
            matches!(res, Err(Error::InvalidParams(_))),
            "{p:?}: {res:?}"
        );
    }
}

/// From a workstation with no such namespace, the election stops at the
/// first attempt rather than retrying forever.
#[tokio::test(start_paused = true)]
async fn a_missing_namespace_ends_the_election() {
    let clock = virtual_clock();
    let fake = Fake::default();
    fake.no_namespace.store(true, Ordering::SeqCst);
    let machine = Machine::new(fake.clone(), params("a"), clock);
    let rx = machine.subscribe();
    // Bounded, so that a regression fails instead of running forever.
    let res = tokio::time::timeout(Duration::from_secs(60), machine.run(std::future::pending()))
        .await
        .expect("the election ends");
    assert!(
        matches!(&res, Err(Error::NamespaceNotFound { namespace, .. }) if namespace == "ns"),
        "{res:?}"
    );
    assert_eq!(fake.stored.lock().unwrap().creates, 1, "no retries");
    assert!(!rx.borrow().is_leader());
}

/// A candidate whose role may not use Leases (a new image with an old
/// role) stops at once, saying so, rather than standing by forever.
#[tokio::test(start_paused = true)]
async fn a_forbidden_lease_ends_the_election() {
    let fake = Fake::default();
    fake.forbidden.store(true, Ordering::SeqCst);
    let machine = Machine::new(fake.clone(), params("a"), virtual_clock());
    let rx = machine.subscribe();
    let res = tokio::time::timeout(Duration::from_secs(60), machine.run(std::future::pending()))
        .await
        .expect("the election ends");
    assert!(
        matches!(&res, Err(Error::Forbidden { op: "get", .. })),
        "{res:?}"
    );
    assert!(!rx.borrow().is_leader());
}

#[test]
fn random_unit_is_in_range_and_varies() {
    let xs: Vec<f64> = (0..100).map(|_| random_unit()).collect();
    assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
    assert!(xs.windows(2).any(|w| w[0] != w[1]));
}

//! Leader election (`tandem-lease`) against the real kube-apiserver of the
//! shared testbed: two candidates on one Lease, a killed leader, and a
//! graceful handover.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::{Api, Client};
use tandem_harness::{Env, eventually};
use tandem_lease::{Elector, Error, Leadership, LeaseParams};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
};

const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_millis(500);
const LEASE_NAME: &str = "tandem-failover";

fn env() -> Env {
    Env::shared(Path::new(env!("CARGO_BIN_EXE_tandem")))
}

/// One candidate, running in a task.
struct Candidate {
    id: &'static str,
    rx: watch::Receiver<Leadership>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

impl Candidate {
    fn start(client: &Client, namespace: &str, id: &'static str) -> Candidate {
        Self::start_with(client, namespace, id, LEASE)
    }

    fn start_with(
        client: &Client,
        namespace: &str,
        id: &'static str,
        lease: Duration,
    ) -> Candidate {
        let params = LeaseParams {
            lease_duration: lease,
            renew_period: RENEW,
            field_manager: "tandem-lease-test".into(),
            ..LeaseParams::new(namespace, LEASE_NAME, id)
        };
        let elector = Elector::new(client.clone(), params);
        let rx = elector.leadership();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async {
            let _ = stopped.await;
        }));
        Candidate {
            id,
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

    /// Graceful shutdown: resolves the elector's shutdown future and waits for `run`.
    async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.stop.take().expect("not stopped yet").send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("run returns after shutdown")
            .expect("the elector task does not panic")
    }
}

async fn lease_spec(api: &Api<Lease>) -> LeaseSpec {
    api.get(LEASE_NAME)
        .await
        .expect("the Lease exists")
        .spec
        .unwrap_or_default()
}

/// Waits until exactly one of `a`, `b` leads and returns (leader, follower).
/// Deadline of an expected outcome, not a speed measurement.
async fn one_leader<'c>(
    a: &'c Candidate,
    b: &'c Candidate,
    within: Duration,
) -> (&'c Candidate, &'c Candidate) {
    eventually("one candidate leads", within, || async {
        assert!(!(a.leads() && b.leads()), "both lead");
        match (a.leads(), b.leads()) {
            (true, false) => Ok((a, b)),
            (false, true) => Ok((b, a)),
            _ => Err(format!("a: {:?}, b: {:?}", a.state(), b.state())),
        }
    })
    .await
}

/// Starts `a`, waits until it leads, then starts `b`, which must follow.
async fn leader_then_follower(
    client: &Client,
    namespace: &str,
    lease: Duration,
) -> (Candidate, Candidate) {
    let a = Candidate::start_with(client, namespace, "a", lease);
    eventually("a leads", Duration::from_secs(10), || async {
        if a.leads() {
            Ok(())
        } else {
            Err(format!("{:?}", a.state()))
        }
    })
    .await;
    let b = Candidate::start_with(client, namespace, "b", lease);
    let leader_seen = Leadership::Follower {
        holder: Some("a".into()),
    };
    eventually("b follows a", Duration::from_secs(10), || async {
        assert!(!b.leads(), "b leads while a holds the lease");
        if b.state() == leader_seen {
            Ok(())
        } else {
            Err(format!("{:?}", b.state()))
        }
    })
    .await;
    (a, b)
}

#[tokio::test]
async fn two_candidates_elect_exactly_one_leader() {
    let env = env();
    let ns = env.namespace("lease", &["east"]);
    let client = env.client("east").await;
    let api: Api<Lease> = Api::namespaced(client.clone(), &ns.name);

    let a = Candidate::start(&client, &ns.name, "a");
    let b = Candidate::start(&client, &ns.name, "b");
    let (leader, follower) = one_leader(&a, &b, Duration::from_secs(10)).await;

    let spec = lease_spec(&api).await;
    assert_eq!(spec.holder_identity.as_deref(), Some(leader.id));
    assert_eq!(spec.lease_duration_seconds, Some(3));
    assert_eq!(spec.lease_transitions, Some(0));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());
    let holder = Leadership::Follower {
        holder: Some(leader.id.to_string()),
    };
    eventually(
        "the follower names the leader",
        Duration::from_secs(5),
        || async {
            if follower.state() == holder {
                Ok(())
            } else {
                Err(format!("{:?}", follower.state()))
            }
        },
    )
    .await;

    // Over several lease durations: never two leaders. (On a loaded machine
    // the lease may change hands, which is allowed; two leaders never are.)
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!(a.leads() && b.leads()), "both lead");
    }
    // And the holder renews it: renewTime moves past acquireTime, which a
    // renewal keeps and a change of holder resets; the Lease names whoever
    // leads.
    eventually("the leader renews the Lease", LEASE * 5, || async {
        let spec = lease_spec(&api).await;
        let leading = [&a, &b].into_iter().find(|c| c.leads()).map(|c| c.id);
        let renewed =
            spec.renew_time.as_ref().map(|t| t.0) > spec.acquire_time.as_ref().map(|t| t.0);
        if leading.is_some() && spec.holder_identity.as_deref() == leading && renewed {
            Ok(())
        } else {
            Err(format!("leading: {leading:?}, Lease: {spec:?}"))
        }
    })
    .await;

    a.shutdown().await.expect("a stops cleanly");
    b.shutdown().await.expect("b stops cleanly");
}

#[tokio::test]
async fn killed_leader_is_replaced_after_the_lease_expires() {
    let env = env();
    let ns = env.namespace("lease", &["east"]);
    let client = env.client("east").await;
    let api: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let (a, b) = leader_then_follower(&client, &ns.name, LEASE).await;

    // Killed: no release and no more renewals. Let a write already in
    // flight land before reading the Lease it left.
    a.task.abort();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = lease_spec(&api).await;
    assert_eq!(left.holder_identity.as_deref(), Some("a"));

    eventually("b takes over", LEASE + Duration::from_secs(7), || async {
        if b.leads() {
            Ok(())
        } else {
            Err(format!("{:?}", b.state()))
        }
    })
    .await;
    let took_over = killed.elapsed();
    let spec = lease_spec(&api).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(
        spec.lease_transitions,
        Some(left.lease_transitions.unwrap_or(0) + 1)
    );
    // b waited for the lease a left to expire: renewTime + duration.
    let expiry = left.renew_time.expect("renewTime").0 + LEASE;
    let acquired = spec.acquire_time.expect("acquireTime").0;
    assert!(
        acquired >= expiry,
        "b took over at {acquired}, before a's lease expired at {expiry}"
    );
    assert!(took_over >= LEASE - RENEW, "took over after {took_over:?}");

    b.shutdown().await.expect("b stops cleanly");
}

#[tokio::test]
async fn graceful_shutdown_hands_over_at_once() {
    // A long lease, so that "at once" and "after expiry" are far apart
    // whatever the load: the verdict comes from the Lease's own times.
    const LONG_LEASE: Duration = Duration::from_secs(20);
    let env = env();
    let ns = env.namespace("lease", &["east"]);
    let client = env.client("east").await;
    let api: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let (a, b) = leader_then_follower(&client, &ns.name, LONG_LEASE).await;
    let before = lease_spec(&api).await;

    let a_rx = a.rx.clone();
    a.shutdown().await.expect("a releases the lease");
    assert_eq!(*a_rx.borrow(), Leadership::Follower { holder: None });

    eventually(
        "b takes over",
        LONG_LEASE + Duration::from_secs(7),
        || async {
            if b.leads() {
                Ok(())
            } else {
                Err(format!("{:?}", b.state()))
            }
        },
    )
    .await;
    let spec = lease_spec(&api).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(
        spec.lease_transitions,
        Some(before.lease_transitions.unwrap_or(0) + 1)
    );
    // a's lease, renewed at or after `before`, lasted at least until this.
    let expiry = before.renew_time.expect("renewTime").0 + LONG_LEASE;
    let acquired = spec.acquire_time.expect("acquireTime").0;
    assert!(
        acquired < expiry,
        "b took over at {acquired}, not before a's lease would have expired ({expiry}): \
         it waited for expiry instead of seeing the release"
    );

    b.shutdown().await.expect("b releases the lease");
    let spec = lease_spec(&api).await;
    assert_eq!(spec.holder_identity, None, "released on shutdown");
    assert_eq!(spec.renew_time, None);
}

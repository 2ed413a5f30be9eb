use super::*;

const T0: i64 = 1_750_000_000;

fn ts(secs_after_t0: f64) -> Timestamp {
    let nanos = (secs_after_t0 * 1e9) as i128;
    Timestamp::from_nanosecond(i128::from(T0) * 1_000_000_000 + nanos).unwrap()
}

fn params(identity: &str) -> LeaseParams {
    LeaseParams {
        lease_duration: Duration::from_secs(15),
        renew_period: Duration::from_secs(2),
        ..LeaseParams::new("ns", "leader", identity)
    }
}

fn mk_lease(holder: Option<&str>, renew: Option<f64>, duration: Option<i32>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("leader".into()),
            namespace: Some("ns".into()),
            resource_version: Some("42".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(String::from),
            renew_time: renew.map(|s| MicroTime(ts(s))),
            acquire_time: renew.map(|s| MicroTime(ts(s))),
            lease_duration_seconds: duration,
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }),
    }
}

fn wait(holder: &str, secs: f64) -> Decision {
    Decision::Wait {
        holder: holder.into(),
        retry_in: Duration::from_secs_f64(secs),
    }
}

#[test]
fn decisions() {
    let no_spec = Lease {
        spec: None,
        ..mk_lease(None, None, None)
    };
    let mut acquired_only = mk_lease(Some("b"), Some(10.0), Some(15));
    acquired_only.spec.as_mut().unwrap().renew_time = None;
    let mut renewed_after_acquired = mk_lease(Some("b"), Some(0.0), Some(15));
    renewed_after_acquired.spec.as_mut().unwrap().renew_time = Some(MicroTime(ts(10.0)));

    let cases: Vec<(&str, Option<Lease>, f64, Decision)> = vec![
        ("no lease", None, 0.0, Decision::Acquire),
        ("lease without spec", Some(no_spec), 0.0, Decision::Acquire),
        (
            "no holder",
            Some(mk_lease(None, Some(0.0), Some(15))),
            1.0,
            Decision::Acquire,
        ),
        (
            "empty holder",
            Some(mk_lease(Some(""), Some(0.0), Some(15))),
            1.0,
            Decision::Acquire,
        ),
        (
            "released: no holder, no times",
            Some(mk_lease(None, None, Some(15))),
            1.0,
            Decision::Acquire,
        ),
        (
            "held by me, fresh",
            Some(mk_lease(Some("a"), Some(0.0), Some(15))),
            1.0,
            Decision::Renew,
        ),
        (
            "held by me, expired",
            Some(mk_lease(Some("a"), Some(0.0), Some(15))),
            100.0,
            Decision::Renew,
        ),
        (
            "held by me, no times",
            Some(mk_lease(Some("a"), None, None)),
            1.0,
            Decision::Renew,
        ),
        (
            "other, fresh",
            Some(mk_lease(Some("b"), Some(0.0), Some(15))),
            1.0,
            wait("b", 2.0),
        ),
        (
            "other, about to expire",
            Some(mk_lease(Some("b"), Some(0.0), Some(15))),
            14.5,
            wait("b", 0.5),
        ),
        (
            "other, expires exactly now",
            Some(mk_lease(Some("b"), Some(0.0), Some(15))),
            15.0,
            Decision::Acquire,
        ),
        (
            "other, expired",
            Some(mk_lease(Some("b"), Some(0.0), Some(15))),
            20.0,
            Decision::Acquire,
        ),
        // The holder's declared duration counts, not ours.
        (
            "other, short declared duration, expired",
            Some(mk_lease(Some("b"), Some(0.0), Some(3))),
            4.0,
            Decision::Acquire,
        ),
        (
            "other, long declared duration, fresh",
            Some(mk_lease(Some("b"), Some(0.0), Some(60))),
            50.0,
            wait("b", 2.0),
        ),
        (
            "other, no duration: ours (15s), fresh",
            Some(mk_lease(Some("b"), Some(0.0), None)),
            14.0,
            wait("b", 1.0),
        ),
        (
            "other, no duration: ours (15s), expired",
            Some(mk_lease(Some("b"), Some(0.0), None)),
            16.0,
            Decision::Acquire,
        ),
        (
            "other, zero duration: ours",
            Some(mk_lease(Some("b"), Some(0.0), Some(0))),
            14.0,
            wait("b", 1.0),
        ),
        (
            "other, negative duration: ours",
            Some(mk_lease(Some("b"), Some(0.0), Some(-5))),
            16.0,
            Decision::Acquire,
        ),
        (
            "other, no times at all",
            Some(mk_lease(Some("b"), None, Some(15))),
            0.0,
            Decision::Acquire,
        ),
        (
            "other, acquireTime only, fresh",
            Some(acquired_only.clone()),
            20.0,
            wait("b", 2.0),
        ),
        (
            "other, acquireTime only, expired",
            Some(acquired_only),
            26.0,
            Decision::Acquire,
        ),
        (
            "other, renewTime wins over acquireTime",
            Some(renewed_after_acquired),
            20.0,
            wait("b", 2.0),
        ),
        // A holder whose clock runs ahead: still live, polled at the usual pace.
        (
            "other, renewTime in the future",
            Some(mk_lease(Some("b"), Some(30.0), Some(15))),
            0.0,
            wait("b", 2.0),
        ),
    ];
    let p = params("a");
    for (name, lease, now, want) in cases {
        assert_eq!(decide(lease.as_ref(), ts(now), &p), want, "{name}");
    }
}

#[test]
fn claim_creates_a_lease() {
    let p = params("a");
    let l = claim(None, ts(1.0), &p);
    assert_eq!(l.metadata.name.as_deref(), Some("leader"));
    assert_eq!(l.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(l.metadata.resource_version, None);
    let s = l.spec.unwrap();
    assert_eq!(s.holder_identity.as_deref(), Some("a"));
    assert_eq!(s.lease_duration_seconds, Some(15));
    assert_eq!(s.lease_transitions, Some(0));
    assert_eq!(s.renew_time, Some(MicroTime(ts(1.0))));
    assert_eq!(s.acquire_time, Some(MicroTime(ts(1.0))));
}

#[test]
fn claim_creates_a_lease_with_its_owner_and_keeps_what_is_there() {
    let p = LeaseParams {
        owner: Some(crate::Owner {
            api_version: "multicluster.tandem.io/v1alpha1".into(),
            kind: "Link".into(),
            name: "west".into(),
            uid: "u-1".into(),
        }),
        ..params("a")
    };
    let created = claim(None, ts(1.0), &p);
    let owners = created.metadata.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            owners[0].uid.as_str()
        ),
        ("Link", "west", "u-1")
    );
    assert_eq!(
        owners[0].controller, None,
        "not a controller: nothing else adopts it"
    );
    // A Lease that exists keeps its metadata as read: the owner is set only
    // when the Lease is created.
    let taken = claim(
        Some(&mk_lease(Some("b"), Some(0.0), Some(15))),
        ts(20.0),
        &p,
    );
    assert_eq!(taken.metadata.owner_references, None);
}

#[test]
fn claim_takes_over_from_another_holder() {
    let mut old = mk_lease(Some("b"), Some(0.0), Some(15));
    old.spec.as_mut().unwrap().strategy = Some("OldestEmulationVersion".into());
    let l = claim(Some(&old), ts(20.0), &params("a"));
    assert_eq!(
        l.metadata, old.metadata,
        "resourceVersion kept as the precondition"
    );
    let s = l.spec.unwrap();
    assert_eq!(s.holder_identity.as_deref(), Some("a"));
    assert_eq!(s.lease_transitions, Some(4));
    assert_eq!(s.acquire_time, Some(MicroTime(ts(20.0))));
    assert_eq!(s.renew_time, Some(MicroTime(ts(20.0))));
    assert_eq!(s.strategy.as_deref(), Some("OldestEmulationVersion"));
}

#[test]
fn claim_after_release_counts_a_transition() {
    let released = release(&mk_lease(Some("b"), Some(0.0), Some(15)));
    let s = claim(Some(&released), ts(1.0), &params("a")).spec.unwrap();
    assert_eq!(s.lease_transitions, Some(4));
    assert_eq!(s.acquire_time, Some(MicroTime(ts(1.0))));
}

#[test]
fn claim_renews_own_lease() {
    let old = mk_lease(Some("a"), Some(0.0), Some(15));
    let s = claim(Some(&old), ts(2.0), &params("a")).spec.unwrap();
    assert_eq!(s.lease_transitions, Some(3));
    assert_eq!(s.acquire_time, Some(MicroTime(ts(0.0))));
    assert_eq!(s.renew_time, Some(MicroTime(ts(2.0))));
}

#[test]
fn claim_fills_missing_fields() {
    let mut old = mk_lease(Some("a"), None, None);
    old.spec.as_mut().unwrap().lease_transitions = None;
    let s = claim(Some(&old), ts(2.0), &params("a")).spec.unwrap();
    assert_eq!(s.lease_transitions, Some(0));
    assert_eq!(s.acquire_time, Some(MicroTime(ts(2.0))));
    assert_eq!(s.lease_duration_seconds, Some(15));
}

#[test]
fn release_clears_holder_and_times() {
    let old = mk_lease(Some("a"), Some(0.0), Some(15));
    let l = release(&old);
    assert_eq!(l.metadata, old.metadata);
    let s = l.spec.unwrap();
    assert_eq!(s.holder_identity, None);
    assert_eq!(s.renew_time, None);
    assert_eq!(s.acquire_time, None);
    assert_eq!(s.lease_transitions, Some(3));
    assert_eq!(
        decide(Some(&release(&old)), ts(1.0), &params("b")),
        Decision::Acquire
    );
}

#[test]
fn duration_seconds_rounds_up() {
    let cases = [(15_000, 15), (1_500, 2), (3_000, 3), (100, 1), (0, 1)];
    for (ms, want) in cases {
        assert_eq!(duration_seconds(Duration::from_millis(ms)), want, "{ms}ms");
    }
    assert_eq!(duration_seconds(Duration::MAX), i32::MAX);
}

#[test]
fn jitter_stays_within_bounds() {
    let d = Duration::from_secs(2);
    let near = |got: Duration, want_ms: u64| {
        got.abs_diff(Duration::from_millis(want_ms)) < Duration::from_micros(1)
    };
    assert_eq!(jittered(d, 0.0), d);
    assert!(near(jittered(d, 1.0), 2_400));
    assert!(near(jittered(d, 0.5), 2_200));
    assert!(near(jittered(d, 7.0), 2_400), "clamped");
    assert_eq!(jittered(d, -1.0), d, "clamped");
}

use super::*;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
use serde_json::json;

/// The Link `tandem-multicluster/west` (the writer's tests use it too).
pub(crate) fn mk_link() -> Link {
    serde_json::from_value(json!({
        "apiVersion": "multicluster.tandem.io/v1alpha1", "kind": "Link",
        "metadata": {"name": "west", "namespace": "tandem-multicluster", "uid": "link-uid"},
        "spec": {"targetClusterName": "west", "clusterCredentialsSecret": "c",
                 "gatewayAddress": "127.20.0.1"}
    }))
    .unwrap()
}

fn mk_svc(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "labels": {"mirror.linkerd.io/exported": "true"}},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap()
}

fn mk_mirror(name: &str, uid: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": uid,
                     "labels": {CLUSTER_NAME_LABEL: "west"}},
    }))
    .unwrap()
}

fn mk_slice(svc: &str, ready: bool) -> Option<SliceReadiness> {
    let mut s = EndpointSlice::default();
    s.metadata.namespace = Some("ns".into());
    s.metadata.name = Some(format!("{svc}-abc"));
    s.metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into());
    s.endpoints = vec![Endpoint {
        addresses: vec!["127.11.0.1".into()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..Default::default()
        }),
        ..Default::default()
    }];
    SliceReadiness::of(&s)
}

fn alive() -> GatewayState {
    GatewayState {
        resolved: true,
        ips: vec!["127.20.0.1".parse().unwrap()],
        liveness: Liveness::Alive,
        ..Default::default()
    }
}

fn key(name: &str) -> Key {
    Key::new("ns", name)
}

/// A state with every list seen: `services` exported, no mirrors yet.
fn synced(services: &[&str], now: Instant) -> State {
    let mut s = State::new();
    s.remote_services(
        Update::Listed(services.iter().map(|n| mk_svc(n)).collect()),
        now,
    );
    s.remote_slices(Update::Listed(vec![]), now);
    s.mirrors(Update::Listed(vec![]), now);
    s.mirror_slices(Update::Listed(vec![]), now);
    s
}

fn mirror_work(job: &Job) -> &MirrorWork {
    match &job.work {
        Work::Mirror(m) => m,
        other => panic!("not a mirror: {other:?}"),
    }
}

/// What a job that wrote everything reports.
fn wrote(job: &Job, uid: &str) -> Report {
    let m = mirror_work(job);
    let mut owner = m.desired.clone();
    owner.metadata.uid = Some(uid.into());
    let e = m.endpoints.as_ref().unwrap();
    Report {
        service: Some(crate::writer::ServiceWritten {
            desired: m.desired.clone(),
            uid: Some(uid.into()),
        }),
        slice: Some(mirror_slice(
            &owner,
            &m.link,
            &e.ips,
            e.remote_ready && e.alive,
        )),
        forget: false,
        delete_failed: false,
        end: End::Mirrored,
    }
}

#[test]
fn a_new_service_is_created_then_left_alone() {
    let now = Instant::now();
    let link = mk_link();
    let mut s = synced(&["emoji"], now);
    let k = s.take(now, |_| false).unwrap();
    let job = s.plan(k.clone(), &link, Some(&alive())).unwrap();
    let m = mirror_work(&job);
    assert!(m.write_service && m.uid.is_none(), "created, not applied");
    assert_eq!(m.desired.metadata.name.as_deref(), Some("emoji-west"));
    assert!(!m.endpoints.as_ref().unwrap().remote_ready);
    s.finished(k.clone(), wrote(&job, "u1"), now);
    assert_eq!(s.record.outcome(&k), &Outcome::Mirrored);
    // Written: another event about it starts no job.
    s.remote_services(Update::Apply(mk_svc("emoji")), now);
    let k = s.take(now, |_| false).unwrap();
    assert!(s.plan(k, &link, Some(&alive())).is_none());
    // A resync forgets what was written: written again, applied by uid.
    s.rewrite_all(now);
    s.mirrors(Update::Apply(mk_mirror("emoji-west", "u1")), now);
    let k = s.take(now, |_| false).unwrap();
    let job = s.plan(k, &link, Some(&alive())).unwrap();
    assert_eq!(mirror_work(&job).uid.as_deref(), Some("u1"));
}

#[test]
fn readiness_goes_before_routine_work_and_is_written_alone() {
    let now = Instant::now();
    let link = mk_link();
    let mut s = synced(&["a", "b", "c"], now);
    // Write all three.
    while let Some(k) = s.take(now, |_| false) {
        let job = s.plan(k.clone(), &link, Some(&alive())).unwrap();
        s.finished(k, wrote(&job, "u"), now);
    }
    // A resync queues all three; then c turns ready.
    s.rewrite_all(now);
    s.remote_slices(Update::Apply(mk_slice("c", true)), now);
    assert_eq!(s.take(now, |_| false), Some(key("c")), "urgent first");
    // Unchanged service, changed slice: the job writes the slice only.
    s.record.entry(key("c")).service = Some(mirror_service(&mk_svc("c"), &link).unwrap());
    s.record.entry(key("c")).uid = Some("u".into());
    let job = s.plan(key("c"), &link, Some(&alive())).unwrap();
    let m = mirror_work(&job);
    assert!(!m.write_service);
    assert!(m.endpoints.as_ref().unwrap().remote_ready);
    // Not ready again before the job ended: nothing changes for the index.
    s.remote_slices(Update::Apply(mk_slice("c", true)), now);
    assert_eq!(s.take(now, |_| false), Some(key("a")));
}

#[test]
fn a_busy_key_waits_for_its_job_and_comes_back() {
    let now = Instant::now();
    let link = mk_link();
    let mut s = synced(&["a"], now);
    let k = s.take(now, |_| false).unwrap();
    let job = s.plan(k.clone(), &link, Some(&alive())).unwrap();
    // It changes while its job runs.
    s.remote_slices(Update::Apply(mk_slice("a", true)), now);
    assert_eq!(s.take(now, |k| *k == key("a")), None, "taken aside");
    s.finished(k, wrote(&job, "u1"), now);
    assert_eq!(s.take(now, |_| false), Some(key("a")), "back after the job");
    let job = s.plan(key("a"), &link, Some(&alive())).unwrap();
    assert!(mirror_work(&job).endpoints.as_ref().unwrap().remote_ready);
    assert_eq!(mirror_work(&job).uid.as_deref(), Some("u1"));
}

#[test]
fn a_failure_is_retried_after_a_backoff_with_its_outcome() {
    let now = Instant::now();
    let link = mk_link();
    let mut s = synced(&["a"], now);
    assert_eq!(s.take(now, |_| false), Some(key("a")));
    // (outcome, the waits of the first failures in a row)
    let cases = [
        (
            Outcome::Error("boom".into()),
            Duration::ZERO,
            [100, 200, 400, 800],
        ),
        (
            Outcome::NameTaken("taken".into()),
            Duration::from_secs(30),
            [30_000, 30_000, 30_000, 30_000],
        ),
    ];
    for (outcome, at_least, waits) in cases {
        s.record.forget(&key("a"));
        for wait in waits {
            let failed = Report {
                service: None,
                slice: None,
                forget: true,
                delete_failed: false,
                end: End::Failed {
                    outcome: outcome.clone(),
                    at_least,
                },
            };
            s.finished(key("a"), failed, now);
            assert_eq!(s.record.outcome(&key("a")), &outcome);
            let due = now + Duration::from_millis(wait);
            assert_eq!(s.next_due(), Some(due), "{outcome:?}");
            assert!(!s.has_work(due - Duration::from_millis(1)));
            assert!(s.has_work(due), "a due retry is work");
            assert_eq!(s.take(due - Duration::from_millis(1), |_| false), None);
            assert_eq!(s.take(due, |_| false), Some(key("a")));
        }
    }
    // A missing namespace is looked at again at least every 10 s.
    assert_eq!(
        retry_after(20, Duration::from_secs(10), Duration::ZERO),
        Duration::from_secs(10)
    );
    // Success clears the count.
    let job = s.plan(key("a"), &link, Some(&alive())).unwrap();
    s.finished(key("a"), wrote(&job, "u"), now);
    assert_eq!(s.record.state(key("a")).failures, 0);
}

#[test]
fn a_gone_service_is_deleted_only_after_a_full_list_and_then_forgotten() {
    let now = Instant::now();
    let link = mk_link();
    let mut s = synced(&["a"], now);
    s.mirrors(Update::Apply(mk_mirror("a-west", "m1")), now);
    s.mirror_slices(
        Update::Apply({
            let mut sl = EndpointSlice::default();
            sl.metadata.namespace = Some("ns".into());
            sl.metadata.name = Some("a-west-gateway".into());
            sl.metadata.uid = Some("s1".into());
            sl
        }),
        now,
    );
    while s.take(now, |_| false).is_some() {}
    // A new session: its absence proves nothing yet.
    s.index.new_session();
    s.remote_services(Update::Delete(mk_svc("a")), now);
    let k = s.take(now, |_| false).unwrap();
    assert!(s.plan(k, &link, Some(&alive())).is_none(), "left alone");
    // A full list without it: the mirror goes, exactly the one seen.
    s.remote_services(Update::Listed(vec![]), now);
    let k = s.take(now, |_| false).unwrap();
    let job = s.plan(k.clone(), &link, Some(&alive())).unwrap();
    match &job.work {
        Work::Gone(Some(t)) => {
            assert_eq!(
                (t.mirror.clone(), t.uid.as_str(), t.slice_uid.as_deref()),
                (key("a-west"), "m1", Some("s1"))
            );
        }
        other => panic!("{other:?}"),
    }
    s.finished(
        k,
        Report {
            service: None,
            slice: None,
            forget: true,
            delete_failed: false,
            end: End::Gone,
        },
        now,
    );
    s.mirrors(Update::Delete(mk_mirror("a-west", "m1")), now);
    let k = s.take(now, |_| false).unwrap();
    assert!(s.plan(k, &link, Some(&alive())).is_none());
    assert_eq!(s.record.len(), 0, "nothing kept of a gone Service");
    assert_eq!(s.queue.tracked(), 0);
}

#[test]
fn an_invalid_service_is_recorded_without_a_job_and_summarised() {
    let now = Instant::now();
    let link = mk_link();
    let mut bad = mk_svc("ext");
    bad.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    let mut s = synced(&["ok", "waiting"], now);
    s.remote_services(Update::Apply(bad), now);
    let mut seen = 0;
    while let Some(k) = s.take(now, |_| false) {
        seen += 1;
        if k == key("waiting") {
            continue;
        }
        if let Some(job) = s.plan(k.clone(), &link, Some(&alive())) {
            s.finished(k, wrote(&job, "u"), now);
        }
    }
    assert_eq!(seen, 3);
    assert!(
        matches!(s.record.outcome(&key("ext")), Outcome::Invalid(why) if why.contains("ExternalName"))
    );
    let summary = s.summary();
    assert_eq!(
        (summary.mirrored, summary.pending, summary.failed),
        (1, 1, 1)
    );
    assert_eq!(summary.failures[0].reason, "InvalidService");
    // The gateway unknown: the Service is written, its slice is not.
    let mut s = synced(&["a"], now);
    let k = s.take(now, |_| false).unwrap();
    let unknown = GatewayState {
        liveness: Liveness::Unknown,
        ..alive()
    };
    let job = s.plan(k, &link, Some(&unknown)).unwrap();
    assert!(mirror_work(&job).endpoints.is_none());
}

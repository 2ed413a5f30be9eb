//! The writer against an in-process API ([`tandem_runtime::mock`]) under paused
//! time: every call it makes is bounded, and conflicts back off.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use http::Method;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tandem_core::failover::STATE_ANNOTATION;

use tandem_lease::Leadership;
use tandem_runtime::{
    mock::{self, Reply, status},
    queue::Priority,
};
use tokio::sync::{mpsc, watch};

use super::*;

use crate::{
    call::CALL_TIMEOUT, controller::Trigger, index::Slice, metrics::Metrics, resource::Kind,
};

/// The split `ns/s` on its fallback, as a failover left it.
fn split(rv: &str, weights: [u32; 2]) -> Value {
    json!({
        "apiVersion": "split.smi-spec.io/v1alpha2",
        "kind": "TrafficSplit",
        "metadata": {
            "name": "s", "namespace": "ns", "uid": "u-1", "resourceVersion": rv,
            "annotations": {STATE_ANNOTATION: "failover"},
        },
        "spec": {"service": "p", "backends": [
            {"service": "p", "weight": weights[0]},
            {"service": "f", "weight": weights[1]},
        ]},
    })
}

fn slice(svc: &str) -> EndpointSlice {
    let mut s = EndpointSlice::default();
    s.metadata.namespace = Some("ns".into());
    s.metadata.name = Some(format!("{svc}-1"));
    s.metadata.labels = Some([("kubernetes.io/service-name".to_string(), svc.to_string())].into());
    s.address_type = "IPv4".into();
    s.endpoints = vec![Endpoint {
        addresses: vec!["127.10.0.1".into()],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }];
    s
}

/// A writer over `client`, with `ns/s` on its fallback while both backends
/// are ready: deciding it moves traffic back to the primary.
fn writer(client: Client) -> (Writer, Arc<Shared>, Key) {
    let (w, shared, key, _) = writer_with_metrics(client);
    (w, shared, key)
}

/// [`writer`], with the registry of its metrics, the split's state in it.
fn writer_with_metrics(client: Client) -> (Writer, Arc<Shared>, Key, Registry) {
    let (queue, _) = mpsc::unbounded_channel();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let shared = Arc::new(Shared::new("cluster.local", queue, metrics));
    let res = Resource::traffic_split("v1alpha2");
    shared.add_resource(res.clone());
    let key = {
        let mut index = shared.index();
        index.apply_slice(&Slice::fold(slice("p")));
        index.apply_slice(&Slice::fold(slice("f")));
        let obj: DynamicObject = serde_json::from_value(split("42", [0, 1])).unwrap();
        index.apply_split(resource::read(&res, obj))
    };
    shared.metrics.set_state(&key, State::Failover);
    (
        Writer::new(client, shared.clone(), "test"),
        shared,
        key,
        registry,
    )
}

/// The metrics' lines about the split `s`.
fn series_of_s(registry: &Registry) -> Vec<String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains("name=\"s\""))
        .map(String::from)
        .collect()
}

fn is_patch(method: &Method, path: &str) -> bool {
    method == Method::PATCH && path.ends_with("/trafficsplits/s")
}

/// Decides `key` once; panics if that takes longer than calls may.
async fn reconcile_bounded(w: &mut Writer, key: &Key) -> Outcome {
    let started = Instant::now();
    let outcome = tokio::time::timeout(CALL_TIMEOUT * 3, w.reconcile(key, Instant::now()))
        .await
        .expect("the writer is never held by a call that does not answer");
    assert!(
        started.elapsed() <= CALL_TIMEOUT * 2,
        "{:?}",
        started.elapsed()
    );
    outcome
}

#[tokio::test(start_paused = true)]
async fn an_event_call_that_never_answers_does_not_hold_the_writer() {
    let events = Arc::new(Mutex::new(0));
    let seen = events.clone();
    let client = mock::client(move |method, path, _| {
        if is_patch(method, path) {
            Reply::json(200, split("43", [1, 0]))
        } else if path.contains("/events") {
            *seen.lock().unwrap() += 1;
            Reply::Hang
        } else {
            Reply::json(404, status(404, "NotFound"))
        }
    });
    let (mut w, shared, key) = writer(client);
    assert_eq!(reconcile_bounded(&mut w, &key).await, Outcome::Nothing);
    assert_eq!(
        *events.lock().unwrap(),
        1,
        "the FailbackToPrimary event was tried"
    );
    let index = shared.index();
    let weights: Vec<u32> = index.get(&key).unwrap().groups[0]
        .backends
        .iter()
        .map(|b| b.weight)
        .collect();
    assert_eq!(weights, [1, 0], "the write itself went through");
}

#[tokio::test(start_paused = true)]
async fn a_reread_that_never_answers_after_a_conflict_does_not_hold_the_writer() {
    let client = mock::client(|method, path, _| {
        if is_patch(method, path) {
            Reply::json(409, status(409, "Conflict"))
        } else if method == Method::GET {
            Reply::Hang
        } else {
            Reply::json(404, status(404, "NotFound"))
        }
    });
    let (mut w, _, key) = writer(client);
    assert!(matches!(
        reconcile_bounded(&mut w, &key).await,
        Outcome::Retry { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_patch_that_never_answers_is_retried_with_backoff() {
    let client = mock::client(|method, path, _| {
        if is_patch(method, path) {
            Reply::Hang
        } else {
            Reply::json(404, status(404, "NotFound"))
        }
    });
    let (mut w, _, key) = writer(client);
    for want in [100, 200, 400] {
        assert_eq!(
            reconcile_bounded(&mut w, &key).await,
            Outcome::Retry {
                after: Duration::from_millis(want)
            }
        );
    }
    assert_eq!(w.queue.failures(&key), 3);
}

#[tokio::test(start_paused = true)]
async fn conflicts_back_off_and_a_write_resets_the_backoff() {
    let conflict = Arc::new(AtomicBool::new(true));
    let c = conflict.clone();
    let client = mock::client(move |method, path, _| {
        if is_patch(method, path) {
            if c.load(Ordering::SeqCst) {
                Reply::json(409, status(409, "Conflict"))
            } else {
                Reply::json(200, split("44", [1, 0]))
            }
        } else if method == Method::GET && path.ends_with("/trafficsplits/s") {
            // Someone else's edit: still on the fallback.
            Reply::json(200, split("43", [0, 1]))
        } else {
            Reply::json(201, json!({}))
        }
    });
    let (mut w, shared, key) = writer(client);
    for want in [10, 20, 40, 80] {
        assert_eq!(
            reconcile_bounded(&mut w, &key).await,
            Outcome::Retry {
                after: Duration::from_millis(want)
            }
        );
    }
    assert_eq!(
        shared.index().get(&key).unwrap().resource_version(),
        Some("43"),
        "each conflict re-reads the split"
    );

    conflict.store(false, Ordering::SeqCst);
    assert_eq!(reconcile_bounded(&mut w, &key).await, Outcome::Nothing);
    assert_eq!(w.queue.failures(&key), 0);

    // Someone moves it back to the fallback; the next conflict starts over.
    let obj: DynamicObject = serde_json::from_value(split("45", [0, 1])).unwrap();
    let res = shared.resource(Kind::TrafficSplit).unwrap();
    shared.index().apply_split(resource::read(&res, obj));
    conflict.store(true, Ordering::SeqCst);
    assert_eq!(
        reconcile_bounded(&mut w, &key).await,
        Outcome::Retry {
            after: Duration::from_millis(10)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn live_fails_only_while_the_writer_sits_on_work() {
    let client = mock::client(|_, _, _| Reply::json(404, status(404, "NotFound")));
    let (_, shared, _) = writer(client);
    assert!(shared.live().is_ok());
    shared.progress().pending(Instant::now());
    tokio::time::advance(crate::progress::STALL_AFTER + Duration::from_secs(1)).await;
    let why = shared.live().unwrap_err();
    assert!(why.contains("61s"), "{why}");
    shared.progress().progressed(Instant::now());
    assert!(shared.live().is_ok());
}

#[test]
fn events_follow_transitions() {
    let active = vec!["ns/emoji-svc-west".to_string()];
    let e = transition_event(Some("primary"), State::Failover, true, &active).unwrap();
    assert_eq!(e.reason, "FailoverToFallback");
    assert!(e.note.unwrap().contains("emoji-svc-west"));
    let e = transition_event(Some("failover"), State::Primary, true, &active).unwrap();
    assert_eq!(e.reason, "FailbackToPrimary");
    let e = transition_event(Some("failover"), State::NoReadyBackends, false, &[]).unwrap();
    assert_eq!(e.reason, "NoReadyBackends");
    // First sight of a healthy split: state recorded, nothing to announce.
    assert!(transition_event(None, State::Primary, false, &active).is_none());
    // Still no ready backend: no second event.
    assert!(
        transition_event(
            Some("no-ready-backends"),
            State::NoReadyBackends,
            false,
            &[]
        )
        .is_none()
    );
}

// === priorities ===

/// A TrafficSplit `name` from `p` to `f` with these weights and, if any,
/// the state recorded.
fn split_on(name: &str, p: &str, f: &str, weights: [u32; 2], state: Option<&str>) -> Value {
    let mut obj = json!({
        "apiVersion": "split.smi-spec.io/v1alpha2",
        "kind": "TrafficSplit",
        "metadata": {"name": name, "namespace": "ns", "uid": name, "resourceVersion": "1"},
        "spec": {"service": p, "backends": [
            {"service": p, "weight": weights[0]},
            {"service": f, "weight": weights[1]},
        ]},
    });
    if let Some(state) = state {
        obj["metadata"]["annotations"] = json!({STATE_ANNOTATION: state});
    }
    obj
}

fn apply(shared: &Shared, obj: Value) -> Key {
    let res = shared.resource(Kind::TrafficSplit).unwrap();
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    shared.index().apply_split(resource::read(&res, obj))
}

fn unready(svc: &str) -> Slice {
    let mut s = Slice::fold(slice(svc));
    s.ready = 0;
    s
}

#[tokio::test(start_paused = true)]
async fn a_split_is_urgent_when_its_weights_must_move() {
    let client = mock::client(|_, _, _| Reply::json(404, status(404, "NotFound")));
    let (w, shared, on_fallback) = writer(client);
    shared.index().apply_slice(&Slice::fold(slice("q")));
    let recorded = apply(&shared, split_on("a", "p", "f", [1, 0], Some("primary")));
    let unrecorded = apply(&shared, split_on("b", "p", "f", [1, 0], None));
    let primary_down = apply(&shared, split_on("c", "down", "q", [1, 0], Some("primary")));
    let all_down = apply(&shared, split_on("d", "x", "y", [1, 0], Some("primary")));
    let invalid = apply(&shared, split_on("e", "p", "p", [1, 0], None));
    let gone = Key {
        name: "gone".into(),
        ..recorded.clone()
    };
    let cases = [
        (&on_fallback, Some(Priority::Urgent), "primary back"),
        (&primary_down, Some(Priority::Urgent), "primary down"),
        (&recorded, Some(Priority::Normal), "nothing to do"),
        (&unrecorded, Some(Priority::Normal), "state only"),
        (
            &all_down,
            Some(Priority::Normal),
            "no backend ready: weights stay",
        ),
        (
            &invalid,
            Some(Priority::Normal),
            "invalid: reported, never written",
        ),
        (&gone, None, "gone"),
    ];
    for (key, want, what) in cases {
        assert_eq!(w.priority(key), want, "{what}");
    }
}

/// The restart case: every split's state to record, and a flip while the
/// writer works through them. The flip is the next write, and the
/// state-only writes keep their gap.
#[tokio::test(start_paused = true)]
async fn a_flip_goes_ahead_of_a_backlog_of_state_writes() {
    const BACKLOG: usize = 40;
    let patches = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let seen = patches.clone();
    let client = mock::client(move |method, path, body| {
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        if method != Method::PATCH {
            return Reply::json(201, json!({}));
        }
        seen.lock().unwrap().push((name.clone(), Instant::now()));
        let body = body.unwrap_or_default();
        let state = body["metadata"]["annotations"][STATE_ANNOTATION].as_str();
        let obj = if name == "flip" {
            split_on("flip", "q", "g", [0, 1], state)
        } else {
            split_on(&name, "p", "f", [1, 0], state)
        };
        Reply::json(200, obj)
    });
    let (w, shared, on_fallback) = writer(client);
    shared.index().delete_split(&on_fallback);
    shared.index().apply_slice(&Slice::fold(slice("q")));
    shared.index().apply_slice(&Slice::fold(slice("g")));
    let flip = apply(&shared, split_on("flip", "q", "g", [1, 0], Some("primary")));
    for i in 0..BACKLOG {
        apply(
            &shared,
            split_on(&format!("s{i:02}"), "p", "f", [1, 0], None),
        );
    }
    shared.mark_synced();
    let (tx, rx) = mpsc::unbounded_channel();
    let (_leader, leadership) = watch::channel(Leadership::Leader {
        since: Instant::now(),
    });
    let (_admin, readiness) = tandem_admin::Admin::new(Registry::default());
    let (_stop, shutdown) = watch::channel(false);
    let run = tokio::spawn(w.run(
        rx,
        leadership,
        readiness,
        Duration::from_secs(3600),
        shutdown,
    ));
    // Everything is queued at start, as after a restart.
    for key in shared.index().keys() {
        tx.send(Trigger {
            key,
            at: Instant::now(),
        })
        .unwrap();
    }
    while patches.lock().unwrap().len() < 10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // The flip: q goes unready in the middle of the backlog.
    let before = patches.lock().unwrap().len();
    let keys = shared.index().apply_slice(&unready("q"));
    assert_eq!(keys, vec![flip.clone()]);
    let flipped_at = Instant::now();
    tx.send(Trigger {
        key: flip,
        at: flipped_at,
    })
    .unwrap();
    while patches.lock().unwrap().len() < BACKLOG + 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    run.abort();

    let patches = patches.lock().unwrap();
    let at = patches.iter().position(|(n, _)| n == "flip").unwrap();
    assert!(
        at <= before + 1,
        "the flip was write {at}, with {before} written when it came"
    );
    assert!(
        patches[at].1 - flipped_at < STATE_WRITE_GAP,
        "the flip waited {:?}",
        patches[at].1 - flipped_at
    );
    let state_only: Vec<Instant> = patches
        .iter()
        .filter(|(n, _)| n != "flip")
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(state_only.len(), BACKLOG, "every state recorded once");
    for pair in state_only.windows(2) {
        assert!(pair[1] - pair[0] >= STATE_WRITE_GAP, "{pair:?}");
    }
}

/// The queue keeps nothing of a split once it is gone: its failures go
/// with it when its deletion is pushed.
#[tokio::test(start_paused = true)]
async fn a_deleted_split_leaves_nothing_in_the_queue() {
    let client = mock::client(|method, path, _| {
        if is_patch(method, path) {
            Reply::json(500, status(500, "InternalError"))
        } else {
            Reply::json(404, status(404, "NotFound"))
        }
    });
    let (mut w, shared, key) = writer(client);
    assert!(matches!(
        reconcile_bounded(&mut w, &key).await,
        Outcome::Retry { .. }
    ));
    w.push(Trigger {
        key: key.clone(),
        at: Instant::now(),
    });
    assert_eq!(w.queue.tracked(), 1);
    shared.index().delete_split(&key);
    w.push(Trigger {
        key,
        at: Instant::now(),
    });
    assert_eq!(w.queue.tracked(), 0, "the queue forgets a deleted split");
}

/// A flip never waits for a state-only write in flight, even one the API
/// server holds until the call's deadline: that write yields and comes
/// back after the flip.
#[tokio::test(start_paused = true)]
async fn a_state_only_write_in_flight_yields_to_a_flip() {
    let patches = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = patches.clone();
    let client = mock::client(move |method, path, body| {
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        if method != Method::PATCH {
            return Reply::json(201, json!({}));
        }
        seen.lock().unwrap().push(name.clone());
        if name != "flip" {
            return Reply::Hang;
        }
        let state = body.unwrap_or_default()["metadata"]["annotations"][STATE_ANNOTATION]
            .as_str()
            .map(String::from);
        Reply::json(200, split_on("flip", "q", "g", [0, 1], state.as_deref()))
    });
    let (w, shared, on_fallback) = writer(client);
    shared.index().delete_split(&on_fallback);
    shared.index().apply_slice(&Slice::fold(slice("q")));
    shared.index().apply_slice(&Slice::fold(slice("g")));
    let flip = apply(&shared, split_on("flip", "q", "g", [1, 0], Some("primary")));
    let slow = apply(&shared, split_on("slow", "p", "f", [1, 0], None));
    shared.mark_synced();
    let (tx, rx) = mpsc::unbounded_channel();
    let (_leader, leadership) = watch::channel(Leadership::Leader {
        since: Instant::now(),
    });
    let (_admin, readiness) = tandem_admin::Admin::new(Registry::default());
    let (_stop, shutdown) = watch::channel(false);
    let run = tokio::spawn(w.run(
        rx,
        leadership,
        readiness,
        Duration::from_secs(3600),
        shutdown,
    ));
    tx.send(Trigger {
        key: slow,
        at: Instant::now(),
    })
    .unwrap();
    while patches.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    shared.index().apply_slice(&unready("q"));
    let flipped_at = Instant::now();
    tx.send(Trigger {
        key: flip,
        at: flipped_at,
    })
    .unwrap();
    while !patches.lock().unwrap().iter().any(|n| n == "flip") {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        flipped_at.elapsed() < Duration::from_millis(10),
        "the flip waited {:?} for a hanging state-only write",
        flipped_at.elapsed()
    );
    // The state-only write comes back after the flip.
    while patches.lock().unwrap().len() < 3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    run.abort();
    assert_eq!(*patches.lock().unwrap(), ["slow", "flip", "slow"]);
}

/// A split deleted while its write is in flight (the watcher drops it from
/// the index and forgets its series) stays deleted when the write answers:
/// neither the index nor the metrics get it back.
#[tokio::test(start_paused = true)]
async fn a_split_deleted_during_its_write_stays_deleted() {
    let cell: Arc<std::sync::OnceLock<(Arc<Shared>, Key)>> = Arc::default();
    let during = cell.clone();
    let client = mock::client(move |method, path, _| {
        if is_patch(method, path) {
            // The watcher's Delete, as it runs: the index, then the series.
            let (shared, key) = during.get().expect("the writer is set up");
            shared.index().delete_split(key);
            shared.metrics.forget(key);
            Reply::json(200, split("43", [1, 0]))
        } else {
            Reply::json(201, json!({}))
        }
    });
    let (mut w, shared, key, registry) = writer_with_metrics(client);
    assert!(!series_of_s(&registry).is_empty());
    cell.set((shared.clone(), key.clone())).ok();

    reconcile_bounded(&mut w, &key).await;

    assert!(shared.index().get(&key).is_none(), "the split came back");
    let leaked = series_of_s(&registry);
    assert!(leaked.is_empty(), "series of the deleted split: {leaked:?}");
}

/// A write answered 404 (the split is gone) forgets the split's series too.
#[tokio::test(start_paused = true)]
async fn a_split_found_gone_at_its_write_leaves_no_series() {
    let client = mock::client(|_, _, _| Reply::json(404, status(404, "NotFound")));
    let (mut w, shared, key, registry) = writer_with_metrics(client);

    assert_eq!(reconcile_bounded(&mut w, &key).await, Outcome::Nothing);

    assert!(shared.index().get(&key).is_none());
    let leaked = series_of_s(&registry);
    assert!(leaked.is_empty(), "series of the deleted split: {leaked:?}");
}

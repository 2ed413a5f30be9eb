//! The writer against an in-process API ([`crate::mock`]) under paused
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

use super::*;
use crate::{
    call::CALL_TIMEOUT,
    index::Slice,
    metrics::Metrics,
    mock::{self, Reply},
    resource::Kind,
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

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code})
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
    let (queue, _) = mpsc::unbounded_channel();
    let metrics = Metrics::register(&mut Registry::default());
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
    (Writer::new(client, shared.clone(), "test"), shared, key)
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
    let (mut w, shared, key) = writer(client);
    for want in [100, 200, 400] {
        assert_eq!(
            reconcile_bounded(&mut w, &key).await,
            Outcome::Retry {
                after: Duration::from_millis(want)
            }
        );
    }
    assert_eq!(shared.index().state(&key).unwrap().failures, 3);
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
    assert_eq!(shared.index().state(&key).unwrap().failures, 0);

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

//! The writer over an in-memory sink, under paused time.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use super::*;

/// What the fake API was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Status(String, StatusOp),
    Event(String, &'static str),
}

/// A scripted answer; `None` hangs the call.
type Answer = Option<Result<(), WriteError>>;

/// Answers each call with the next scripted answer (`Ok` when none is left).
#[derive(Clone, Default)]
struct FakeSink {
    calls: Arc<Mutex<Vec<(Call, Instant, bool)>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
}

impl FakeSink {
    fn script(&self, results: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().extend(results);
    }

    async fn answer(&self, call: Call) -> Result<(), WriteError> {
        let next = self.script.lock().unwrap().pop_front();
        let result = match next {
            Some(Some(r)) => r,
            Some(None) => std::future::pending().await,
            None => Ok(()),
        };
        self.calls
            .lock()
            .unwrap()
            .push((call, Instant::now(), result.is_ok()));
        result
    }

    /// Successful calls, with their time since `start`.
    fn done(&self, start: Instant) -> Vec<(Call, Duration)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, ok)| *ok)
            .map(|(c, at, _)| (c.clone(), *at - start))
            .collect()
    }

    fn attempts(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl Sink for FakeSink {
    async fn patch_status(
        &self,
        service: &ObjectReference,
        op: StatusOp,
    ) -> Result<(), WriteError> {
        self.answer(Call::Status(service.name.clone().unwrap_or_default(), op))
            .await
    }

    async fn publish(&self, about: &ObjectReference, note: &Note) -> Result<(), WriteError> {
        self.answer(Call::Event(
            about.name.clone().unwrap_or_default(),
            note.reason,
        ))
        .await
    }
}

fn reference(name: &str) -> ObjectReference {
    ObjectReference {
        name: Some(name.into()),
        namespace: Some("ns".into()),
        uid: Some(format!("uid-{name}")),
        ..ObjectReference::default()
    }
}

fn status(name: &str, op: StatusOp, announce: bool) -> Command {
    Command::Status {
        service: ServiceKey::new("ns", name),
        reference: reference(name),
        op,
        then: announce.then(|| Note::normal("IPAllocated", "Allocate", "assigned".into())),
    }
}

fn set(last: u8) -> StatusOp {
    StatusOp::Set(Ipv4Addr::new(198, 18, 64, last))
}

fn failed() -> Answer {
    Some(Err(WriteError::Failed("connection refused".into())))
}

/// Starts a writer; returns its queue.
fn start(sink: &FakeSink) -> mpsc::Sender<Command> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(Writer::new(sink.clone(), Metrics::default()).run(rx));
    tx
}

async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_retried_with_backoff_and_announced_after_it_lands() {
    let sink = FakeSink::default();
    sink.script([failed(), failed(), failed()]);
    let start_at = Instant::now();
    let tx = start(&sink);
    tx.send(status("a", set(1), true)).await.unwrap();
    settle(Duration::from_secs(5)).await;
    // Three failures: retried after 100, 200 and 400 ms; then the Event.
    assert_eq!(
        sink.done(start_at),
        vec![
            (Call::Status("a".into(), set(1)), Duration::from_millis(700)),
            (
                Call::Event("a".into(), "IPAllocated"),
                Duration::from_millis(700)
            ),
        ]
    );
    assert_eq!(sink.attempts(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_newer_wish_replaces_a_pending_retry() {
    let sink = FakeSink::default();
    sink.script([failed()]);
    let start_at = Instant::now();
    let tx = start(&sink);
    tx.send(status("a", set(1), true)).await.unwrap();
    settle(Duration::from_millis(50)).await;
    // Before the retry is due, the Service turns out to need another address.
    tx.send(status("a", set(9), false)).await.unwrap();
    settle(Duration::from_secs(5)).await;
    assert_eq!(
        sink.done(start_at),
        vec![(Call::Status("a".into(), set(9)), Duration::from_millis(50))],
        "the stale address is never written, nor announced"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancel_drops_a_pending_retry() {
    let sink = FakeSink::default();
    sink.script([failed()]);
    let tx = start(&sink);
    tx.send(status("a", set(1), true)).await.unwrap();
    settle(Duration::from_millis(50)).await;
    tx.send(Command::Cancel {
        service: ServiceKey::new("ns", "a"),
    })
    .await
    .unwrap();
    settle(Duration::from_secs(5)).await;
    assert_eq!(sink.attempts(), 1, "only the first, failed attempt");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_call_times_out_and_is_retried() {
    let sink = FakeSink::default();
    sink.script([None]);
    let start_at = Instant::now();
    let tx = start(&sink);
    tx.send(status("a", StatusOp::Clear, false)).await.unwrap();
    settle(CALL_TIMEOUT * 2).await;
    assert_eq!(
        sink.done(start_at),
        vec![(
            Call::Status("a".into(), StatusOp::Clear),
            CALL_TIMEOUT + Duration::from_millis(100)
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn gone_or_rejected_writes_are_not_retried_and_not_announced() {
    let sink = FakeSink::default();
    sink.script([
        Some(Err(WriteError::Gone)),
        Some(Err(WriteError::Rejected("uid changed".into()))),
    ]);
    let tx = start(&sink);
    tx.send(status("a", set(1), true)).await.unwrap();
    tx.send(status("b", set(2), true)).await.unwrap();
    settle(Duration::from_secs(60)).await;
    assert_eq!(sink.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn events_are_retried_a_bounded_number_of_times() {
    let sink = FakeSink::default();
    sink.script(std::iter::repeat_n(failed(), 50));
    let tx = start(&sink);
    tx.send(Command::Event {
        reference: reference("p"),
        note: Note::warning("ImageNotLoaded", "CheckImage", "x".into()),
    })
    .await
    .unwrap();
    settle(Duration::from_secs(600)).await;
    assert_eq!(sink.attempts(), MAX_EVENT_ATTEMPTS as usize);
    // A forbidden Event (a namespace being deleted) is dropped at once.
    let sink = FakeSink::default();
    sink.script([Some(Err(WriteError::Forbidden("terminating".into())))]);
    let tx = start(&sink);
    tx.send(Command::Event {
        reference: reference("p"),
        note: Note::warning("ImageNotLoaded", "CheckImage", "x".into()),
    })
    .await
    .unwrap();
    settle(Duration::from_secs(600)).await;
    assert_eq!(sink.attempts(), 1);
}

#[test]
fn backoff_doubles_and_caps() {
    assert_eq!(backoff(1), Duration::from_millis(100));
    assert_eq!(backoff(2), Duration::from_millis(200));
    assert_eq!(backoff(5), Duration::from_millis(1600));
    assert_eq!(backoff(50), Duration::from_secs(30));
}

#[test]
fn the_status_patch_carries_the_uid_precondition() {
    assert_eq!(
        status_patch(Some("u-1"), set(7)),
        serde_json::json!({
            "metadata": { "uid": "u-1" },
            "status": { "loadBalancer": { "ingress": [{ "ip": "198.18.64.7", "ipMode": "VIP" }] } }
        })
    );
    assert_eq!(
        status_patch(None, StatusOp::Clear),
        serde_json::json!({ "status": { "loadBalancer": { "ingress": null } } })
    );
}

#[test]
fn events_are_valid_events_k8s_io_v1() {
    let now = Timestamp::from_second(1_750_000_000).unwrap();
    let long = "é".repeat(1000);
    let e = event(
        &reference("web"),
        &Note::warning("AllocationFailed", "Allocate", long),
        "agent-1",
        now,
    );
    assert_eq!(
        e.metadata.name.as_deref(),
        Some(format!("web.{:x}", now.as_nanosecond()).as_str())
    );
    let long_name = event(
        &reference(&"p".repeat(300)),
        &Note::normal("X", "Y", "z".into()),
        "agent-1",
        now,
    );
    let name = long_name.metadata.name.unwrap();
    assert!(name.len() <= 253, "{}", name.len());
    assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.reason.as_deref(), Some("AllocationFailed"));
    assert_eq!(e.action.as_deref(), Some("Allocate"));
    assert_eq!(e.reporting_controller.as_deref(), Some(FIELD_MANAGER));
    assert_eq!(e.reporting_instance.as_deref(), Some("agent-1"));
    assert_eq!(
        e.regarding.as_ref().and_then(|r| r.uid.as_deref()),
        Some("uid-web")
    );
    let note = e.note.unwrap();
    assert!(note.len() <= 1024 && note.ends_with('…'), "{}", note.len());
}

use super::*;

fn drain(q: &mut Queue<&'static str>, now: Instant) -> Vec<&'static str> {
    std::iter::from_fn(|| q.pop(now).map(|w| w.key)).collect()
}

#[test]
fn urgent_work_goes_ahead_of_any_routine_backlog() {
    let now = Instant::now();
    let mut q = Queue::new();
    q.extend(["a", "b", "c", "d"], Priority::Normal, now);
    q.push("flip", Priority::Urgent, now);
    assert_eq!(q.pop(now).unwrap().key, "flip");
    assert_eq!(drain(&mut q, now), ["a", "b", "c", "d"]);
    assert!(q.is_empty());
}

#[test]
fn a_key_is_queued_once_and_keeps_its_place_and_earliest_time() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    let mut q = Queue::new();
    q.push("a", Priority::Normal, t0);
    q.push("b", Priority::Normal, t0);
    q.push("a", Priority::Normal, t1);
    assert_eq!(q.len(), 2);
    let w = q.pop(t1).unwrap();
    assert_eq!((w.key, w.since), ("a", t0));
    assert_eq!(drain(&mut q, t1), ["b"]);
}

#[test]
fn an_urgent_push_promotes_a_waiting_key_once() {
    let now = Instant::now();
    let mut q = Queue::new();
    q.extend(["a", "b", "c"], Priority::Normal, now);
    q.push("c", Priority::Urgent, now);
    let w = q.pop(now).unwrap();
    assert_eq!((w.key, w.priority), ("c", Priority::Urgent));
    // Its stale entry in the normal lane does not bring it back.
    assert_eq!(drain(&mut q, now), ["a", "b"]);
    // A normal push of an urgent key does not demote it.
    q.push("d", Priority::Urgent, now);
    q.push("d", Priority::Normal, now);
    let w = q.pop(now).unwrap();
    assert_eq!((w.key, w.priority), ("d", Priority::Urgent));
    assert!(q.pop(now).is_none());
}

#[test]
fn failures_back_off_doubling_and_success_resets_them() {
    let t0 = Instant::now();
    let first = Duration::from_millis(100);
    let mut q = Queue::new();
    assert_eq!(q.retry_later("a", t0, first), first);
    assert!(q.pop(t0).is_none(), "not due yet");
    assert_eq!(q.next_due(), Some(t0 + first));
    let w = q.pop(t0 + first).unwrap();
    assert_eq!((w.key, w.priority), ("a", Priority::Normal));
    assert_eq!(q.retry_later("a", t0, first), first * 2);
    assert_eq!(q.retry_later("a", t0, first), first * 4);
    assert_eq!(q.failures(&"a"), 3);
    q.done(&"a");
    assert_eq!(q.failures(&"a"), 0);
    assert_eq!(q.retry_later("a", t0, first), first);
    let cap = (0..40).fold(Duration::ZERO, |_, _| q.retry_later("a", t0, first));
    assert_eq!(cap, tandem_util::MAX_BACKOFF);
}

#[test]
fn only_the_latest_retry_of_a_key_counts() {
    let t0 = Instant::now();
    let first = Duration::from_millis(100);
    let mut q = Queue::new();
    q.retry_later("a", t0, first);
    q.retry_later("a", t0, first); // now due at +200 ms
    assert!(
        q.pop(t0 + first).is_none(),
        "the superseded retry is skipped"
    );
    assert_eq!(q.pop(t0 + first * 2).unwrap().key, "a");
    assert!(q.pop(t0 + first * 10).is_none(), "a retry is done once");
}

#[test]
fn due_retries_go_before_routine_work_and_after_urgent() {
    let t0 = Instant::now();
    let mut q = Queue::new();
    q.retry_later("failed", t0, Duration::from_millis(10));
    let later = t0 + Duration::from_secs(1);
    q.push("routine", Priority::Normal, later);
    q.push("flip", Priority::Urgent, later);
    assert_eq!(drain(&mut q, later), ["flip", "failed", "routine"]);
}

#[test]
fn a_retry_of_a_key_queued_meanwhile_is_done_once() {
    let t0 = Instant::now();
    let mut q = Queue::new();
    q.retry_later("a", t0, Duration::from_millis(10));
    q.push("a", Priority::Normal, t0);
    assert_eq!(drain(&mut q, t0 + Duration::from_secs(1)), ["a"]);
}

#[test]
fn forgotten_keys_leave_nothing_behind() {
    let now = Instant::now();
    let mut q = Queue::new();
    q.extend(["a", "b"], Priority::Normal, now);
    q.push("a", Priority::Urgent, now);
    q.retry_later("b", now, Duration::from_millis(10));
    assert_eq!(q.tracked(), 2);
    q.forget(&"a");
    q.forget(&"b");
    assert_eq!(q.tracked(), 0);
    assert!(q.pop(now + Duration::from_secs(60)).is_none());
}

//! The one writer of the agent: every Service status and every Event goes
//! through it. Each call has a timeout; a failed write is retried with
//! backoff, and a newer wish for the same Service replaces an older one, so
//! a retry never writes a stale status.

use std::{
    collections::{BTreeMap, VecDeque},
    future::Future,
    net::Ipv4Addr,
    time::Duration,
};

use k8s_openapi::{
    api::{
        core::v1::{ObjectReference, Service},
        events::v1::Event,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use tokio::{sync::mpsc, time::Instant};
use tracing::Instrument;

use super::{FIELD_MANAGER, allocate::ServiceKey, metrics::Metrics};

#[cfg(test)]
mod tests;

/// How long one API call may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// An Event is dropped after this many failed attempts (a status never is).
pub(crate) const MAX_EVENT_ATTEMPTS: u32 = 10;

/// What a Service's `status.loadBalancer` should become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusOp {
    /// `ingress: [{ip, ipMode: VIP}]`.
    Set(Ipv4Addr),
    /// No ingress.
    Clear,
}

/// An Event to publish, without its object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub text: String,
}

impl Note {
    pub(crate) fn normal(reason: &'static str, action: &'static str, text: String) -> Self {
        Self {
            warning: false,
            reason,
            action,
            text,
        }
    }

    pub(crate) fn warning(reason: &'static str, action: &'static str, text: String) -> Self {
        Self {
            warning: true,
            reason,
            action,
            text,
        }
    }
}

/// Work for the writer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Command {
    /// Write a Service's status, then publish `then` (only after the write).
    Status {
        service: ServiceKey,
        reference: ObjectReference,
        op: StatusOp,
        then: Option<Note>,
    },
    /// The Service's status is as it should be, or it is gone: drop a
    /// pending write.
    Cancel { service: ServiceKey },
    /// Publish an Event about an object.
    Event {
        reference: ObjectReference,
        note: Note,
    },
}

/// Why a write failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("the object or its namespace is gone")]
    Gone,
    /// 409 or 422: the object is not the one decided for (its uid changed),
    /// or the write is invalid. The watch brings the current object.
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

impl WriteError {
    fn label(&self) -> &'static str {
        match self {
            WriteError::Gone => "gone",
            WriteError::Rejected(_) => "rejected",
            WriteError::Forbidden(_) => "forbidden",
            WriteError::Timeout(_) => "timeout",
            WriteError::Failed(_) => "failed",
        }
    }

    fn from_kube(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) if s.code == 404 => WriteError::Gone,
            kube::Error::Api(s) if s.code == 409 || s.code == 422 => {
                WriteError::Rejected(s.message)
            }
            kube::Error::Api(s) if s.code == 403 => WriteError::Forbidden(s.message),
            e => WriteError::Failed(e.to_string()),
        }
    }
}

/// The API calls the writer makes; a trait so that the retry logic runs
/// under paused time in unit tests.
pub(crate) trait Sink: Send + Sync + 'static {
    fn patch_status(
        &self,
        service: &ObjectReference,
        op: StatusOp,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
    fn publish(
        &self,
        about: &ObjectReference,
        note: &Note,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
}

// === impl Writer ===

struct StatusJob {
    reference: ObjectReference,
    op: StatusOp,
    then: Option<Note>,
    attempts: u32,
    due: Instant,
}

struct EventJob {
    reference: ObjectReference,
    note: Note,
    attempts: u32,
    due: Instant,
}

pub(crate) struct Writer<S> {
    sink: S,
    metrics: Metrics,
    statuses: BTreeMap<ServiceKey, StatusJob>,
    events: VecDeque<EventJob>,
}

impl<S: Sink> Writer<S> {
    pub(crate) fn new(sink: S, metrics: Metrics) -> Self {
        Self {
            sink,
            metrics,
            statuses: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Writes until every sender is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            loop {
                match commands.try_recv() {
                    Ok(c) => self.accept(c),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            self.write_due().await;
            let next = self.next_due();
            tokio::select! {
                c = commands.recv() => match c {
                    Some(c) => self.accept(c),
                    None => return,
                },
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            }
        }
    }

    fn accept(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Status {
                service,
                reference,
                op,
                then,
            } => {
                // The newest wish wins, and is tried at once.
                self.statuses.insert(
                    service,
                    StatusJob {
                        reference,
                        op,
                        then,
                        attempts: 0,
                        due: now,
                    },
                );
            }
            Command::Cancel { service } => {
                self.statuses.remove(&service);
            }
            Command::Event { reference, note } => self.events.push_back(EventJob {
                reference,
                note,
                attempts: 0,
                due: now,
            }),
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let statuses = self.statuses.values().map(|j| j.due);
        let events = self.events.iter().map(|j| j.due);
        statuses.chain(events).min()
    }

    async fn write_due(&mut self) {
        let now = Instant::now();
        let due: Vec<ServiceKey> = self
            .statuses
            .iter()
            .filter(|(_, j)| j.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(job) = self.statuses.remove(&key) {
                self.write_status(key, job).await;
            }
        }
        let (due, later): (Vec<EventJob>, Vec<EventJob>) =
            self.events.drain(..).partition(|j| j.due <= now);
        self.events.extend(later);
        for job in due {
            self.publish(job).await;
        }
    }

    async fn write_status(&mut self, key: ServiceKey, mut job: StatusJob) {
        let span = tracing::info_span!(
            "write_status",
            namespace = %key.namespace,
            service = %key.name,
            op = ?job.op,
        );
        let result = call(self.sink.patch_status(&job.reference, job.op))
            .instrument(span.clone())
            .await;
        let _span = span.enter();
        match result {
            Ok(()) => {
                tracing::info!(attempts = job.attempts + 1, "status written");
                if let Some(note) = job.then.take() {
                    self.events.push_back(EventJob {
                        reference: job.reference,
                        note,
                        attempts: 0,
                        due: Instant::now(),
                    });
                }
            }
            Err(e @ (WriteError::Gone | WriteError::Rejected(_))) => {
                self.metrics.write_error("status", e.label());
                // Nothing to retry: the watch brings what the Service is now.
                tracing::info!(error = %e, "status not written; the Service changed or is gone");
            }
            Err(e) => {
                self.metrics.write_error("status", e.label());
                job.attempts += 1;
                let after = backoff(job.attempts);
                tracing::warn!(
                    error = %e,
                    attempt = job.attempts,
                    retry_in_ms = after.as_millis() as u64,
                    "status write failed"
                );
                job.due = Instant::now() + after;
                self.statuses.insert(key, job);
            }
        }
    }

    async fn publish(&mut self, mut job: EventJob) {
        let span = tracing::info_span!(
            "publish",
            kind = job.reference.kind.as_deref().unwrap_or_default(),
            namespace = job.reference.namespace.as_deref().unwrap_or_default(),
            name = job.reference.name.as_deref().unwrap_or_default(),
            reason = job.note.reason,
        );
        let result = call(self.sink.publish(&job.reference, &job.note))
            .instrument(span.clone())
            .await;
        let _span = span.enter();
        match result {
            Ok(()) => tracing::debug!("event published"),
            Err(e @ (WriteError::Gone | WriteError::Forbidden(_) | WriteError::Rejected(_))) => {
                self.metrics.write_error("event", e.label());
                tracing::warn!(error = %e, "event dropped");
            }
            Err(e) => {
                self.metrics.write_error("event", e.label());
                job.attempts += 1;
                if job.attempts >= MAX_EVENT_ATTEMPTS {
                    tracing::warn!(error = %e, attempts = job.attempts, "event dropped after retries");
                    return;
                }
                let after = backoff(job.attempts);
                tracing::warn!(
                    error = %e,
                    attempt = job.attempts,
                    retry_in_ms = after.as_millis() as u64,
                    "event publish failed"
                );
                job.due = Instant::now() + after;
                self.events.push_back(job);
            }
        }
    }
}

/// One API call, bounded by [`CALL_TIMEOUT`].
async fn call(f: impl Future<Output = Result<(), WriteError>>) -> Result<(), WriteError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or(Err(WriteError::Timeout(CALL_TIMEOUT)))
}

/// 100ms, doubling, at most 30s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    tandem_util::backoff(Duration::from_millis(100), attempt)
}

// === impl KubeSink ===

/// The writes, to a cluster.
pub(crate) struct KubeSink {
    client: Client,
    instance: String,
}

impl KubeSink {
    pub(crate) fn new(client: Client, instance: String) -> Self {
        Self { client, instance }
    }
}

impl Sink for KubeSink {
    async fn patch_status(
        &self,
        service: &ObjectReference,
        op: StatusOp,
    ) -> Result<(), WriteError> {
        let api: Api<Service> = Api::namespaced(
            self.client.clone(),
            service.namespace.as_deref().unwrap_or_default(),
        );
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch_status(
            service.name.as_deref().unwrap_or_default(),
            &params,
            &Patch::Merge(status_patch(service.uid.as_deref(), op)),
        )
        .await
        .map(|_| ())
        .map_err(WriteError::from_kube)
    }

    async fn publish(&self, about: &ObjectReference, note: &Note) -> Result<(), WriteError> {
        let namespace = about.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        api.create(
            &params,
            &event(about, note, &self.instance, Timestamp::now()),
        )
        .await
        .map(|_| ())
        .map_err(WriteError::from_kube)
    }
}

/// The merge patch of a Service's status. The uid makes it a precondition:
/// a Service deleted and created again under the same name is not written
/// (the apiserver refuses a changed uid with 422).
pub(crate) fn status_patch(uid: Option<&str>, op: StatusOp) -> serde_json::Value {
    let ingress = match op {
        StatusOp::Set(ip) => serde_json::json!([{ "ip": ip.to_string(), "ipMode": "VIP" }]),
        StatusOp::Clear => serde_json::Value::Null,
    };
    let mut patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": ingress } } });
    if let Some(uid) = uid {
        patch["metadata"] = serde_json::json!({ "uid": uid });
    }
    patch
}

/// An `events.k8s.io/v1` Event about `about`, made at `now`.
pub(crate) fn event(about: &ObjectReference, note: &Note, instance: &str, now: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            // As client-go names them: `<object>.<unix nanos in hex>` (a
            // generateName may not end in a dot). Cut to fit 253 bytes.
            name: Some(format!(
                "{}.{:x}",
                truncate_bytes(about.name.as_deref().unwrap_or(FIELD_MANAGER), 253 - 33),
                now.as_nanosecond()
            )),
            namespace: about.namespace.clone(),
            ..ObjectMeta::default()
        },
        action: Some(note.action.into()),
        reason: Some(note.reason.into()),
        note: Some(truncate(&note.text, 1024)),
        type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
        event_time: Some(MicroTime(now)),
        regarding: Some(about.clone()),
        reporting_controller: Some(FIELD_MANAGER.into()),
        reporting_instance: Some(truncate(instance, 128)),
        ..Event::default()
    }
}

/// At most `max` bytes of a name (ASCII, as names are).
fn truncate_bytes(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim_end_matches(['.', '-'])
}

use tandem_util::truncate;

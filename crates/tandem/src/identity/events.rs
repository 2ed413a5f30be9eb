//! The `IssuedLeafCertificate` Events on ServiceAccounts: queued without
//! waiting by the Certify handler, written by one task with a timeout per
//! call. A full queue drops the Event (and counts it); issuing never waits
//! on the API server's event rate.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// Events waiting to be written.
const QUEUE: usize = 256;
/// How long one Event write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A leaf was issued to ServiceAccount `namespace/name`.
#[derive(Debug)]
pub(crate) struct Issued {
    pub namespace: String,
    pub name: String,
    pub note: String,
}

/// The handle the Certify handler queues Events on.
#[derive(Clone, Debug)]
pub(crate) struct Events {
    tx: mpsc::Sender<Issued>,
    dropped: Counter,
}

impl Events {
    /// Queues an Event; drops it when the queue is full.
    pub(crate) fn issued(&self, ev: Issued) {
        if let Err(e) = self.tx.try_send(ev) {
            self.dropped.inc();
            tracing::warn!(error = %e, "the Event queue is full; an IssuedLeafCertificate Event is dropped");
        }
    }
}

/// Starts the writer; `dropped` counts the Events it could not queue or write.
pub(crate) fn spawn(client: Client, instance: String, dropped: Counter) -> Events {
    let (tx, mut rx) = mpsc::channel::<Issued>(QUEUE);
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "tandem-identity".into(),
            instance: Some(instance),
        },
    );
    let failed = dropped.clone();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("ServiceAccount".into()),
                name: Some(ev.name.clone()),
                namespace: Some(ev.namespace.clone()),
                ..Default::default()
            };
            let event = Event {
                type_: EventType::Normal,
                reason: "IssuedLeafCertificate".into(),
                note: Some(ev.note),
                action: "Certify".into(),
                secondary: None,
            };
            let res =
                tokio::time::timeout(WRITE_TIMEOUT, recorder.publish(&event, &reference)).await;
            let error = match res {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {WRITE_TIMEOUT:?}"),
            };
            failed.inc();
            tracing::warn!(namespace = %ev.namespace, serviceaccount = %ev.name, %error, "writing the IssuedLeafCertificate Event failed");
        }
    });
    Events { tx, dropped }
}

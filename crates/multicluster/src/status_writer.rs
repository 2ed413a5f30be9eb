//! The Link's status writer: its own task, so that a slow or failing status
//! write never delays a mirror write. The runtime publishes what the status
//! is decided from ([`Snapshot`]) on a `tokio::sync::watch` channel; this
//! task decides the status, writes it when it changed (one bounded call),
//! and refreshes the heartbeat while nothing changes.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use tandem_api::multicluster::{Link, LinkStatus};
use tokio::{sync::watch, time::Instant};
use tracing::Instrument;

use crate::{
    call::call,
    gateway::GatewayState,
    status::{self, Health, Remote, Summary},
};

/// The heartbeat is refreshed at least this often (`multicluster check`
/// takes a mirror silent for 2 minutes as stopped).
pub const HEARTBEAT: Duration = Duration::from_secs(20);
/// A failed write is tried again after this long.
const RETRY: Duration = Duration::from_secs(1);

/// Everything the Link's status is decided from, owned.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub cluster: String,
    /// The spec's problems, if any.
    pub spec_error: Option<String>,
    /// `None` until the credentials were read once.
    pub credentials: Option<Result<(), String>>,
    pub remote: Remote,
    pub synced: bool,
    pub gateway: Option<GatewayState>,
    pub generation: Option<i64>,
    pub services: Summary,
    /// The status the Link holds, for the transition times of a first write.
    pub previous: Option<LinkStatus>,
}

impl Snapshot {
    pub fn health(&self) -> Health<'_> {
        Health {
            cluster: &self.cluster,
            spec: self.spec_error.as_deref().map_or(Ok(()), Err),
            credentials: self
                .credentials
                .as_ref()
                .map(|c| c.as_ref().map_err(String::as_str).copied()),
            remote: &self.remote,
            synced: self.synced,
            gateway: self.gateway.as_ref(),
            generation: self.generation,
        }
    }
}

/// Whether a decided status is written: when it changed, or when the last
/// write is older than the heartbeat.
pub fn should_write(
    written: Option<&LinkStatus>,
    status: &LinkStatus,
    last_write: Option<Instant>,
    now: Instant,
) -> bool {
    let fresh = last_write.is_some_and(|t| now.saturating_duration_since(t) < HEARTBEAT);
    written != Some(status) || !fresh
}

/// Runs the status writer until the sender goes. `None` means there is no
/// Link (nothing is written, and what was written is forgotten).
pub async fn run(api: Api<Link>, name: String, mut rx: watch::Receiver<Option<Snapshot>>) {
    let mut written: Option<LinkStatus> = None;
    let mut last_write: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    loop {
        let wake = retry_at.or(last_write.map(|t| t + HEARTBEAT));
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = sleep_until(wake) => {}
        }
        let Some(snapshot) = rx.borrow_and_update().clone() else {
            written = None;
            last_write = None;
            retry_at = None;
            continue;
        };
        let previous = written.as_ref().or(snapshot.previous.as_ref());
        let status = status::link_status(
            &snapshot.health(),
            &snapshot.services,
            previous,
            Timestamp::now(),
        );
        let now = Instant::now();
        if !should_write(written.as_ref(), &status, last_write, now) {
            continue;
        }
        let mut stamped = status.clone();
        stamped.last_heartbeat_time = Some(status::rfc3339(Timestamp::now()));
        let patch = status::status_patch(&stamped);
        let res = call(
            "writing the Link status",
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .instrument(tracing::debug_span!("status_write"))
        .await;
        match res {
            Ok(_) => {
                if written.as_ref() != Some(&status) {
                    let ready = status
                        .conditions
                        .iter()
                        .find(|c| c.type_ == status::READY)
                        .map(|c| format!("{} ({})", c.status, c.reason))
                        .unwrap_or_default();
                    tracing::debug!(
                        %ready,
                        mirrored = status.mirrored_services,
                        failed = status.failed_services,
                        "Link status written"
                    );
                }
                written = Some(status);
                last_write = Some(Instant::now());
                retry_at = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing the Link status failed; retrying");
                retry_at = Some(Instant::now() + RETRY);
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_written_when_it_changed_or_the_heartbeat_is_due() {
        let now = Instant::now() + Duration::from_secs(100);
        let a = LinkStatus::default();
        let b = LinkStatus {
            mirrored_services: 1,
            ..LinkStatus::default()
        };
        let just = Some(now - Duration::from_secs(1));
        let old = Some(now - HEARTBEAT);
        // (written, decided, last write, written now)
        let cases = [
            (None, &a, None, true),
            (Some(&a), &a, just, false),
            (Some(&a), &b, just, true),
            (Some(&a), &a, old, true),
            (Some(&a), &a, None, true),
        ];
        for (written, status, last, want) in cases {
            assert_eq!(
                should_write(written, status, last, now),
                want,
                "{written:?} {status:?} {last:?}"
            );
        }
    }

    #[test]
    fn a_snapshot_gives_the_health_it_holds() {
        let s = Snapshot {
            cluster: "west".into(),
            spec_error: None,
            credentials: Some(Err("broken".into())),
            remote: Remote::Unknown,
            synced: true,
            gateway: None,
            generation: Some(2),
            services: Summary::default(),
            previous: None,
        };
        let h = s.health();
        assert_eq!(h.cluster, "west");
        assert_eq!(h.spec, Ok(()));
        assert_eq!(h.credentials, Some(Err("broken")));
        assert!(h.synced);
    }
}

//! A session with the linked cluster: its client (built from the Link's
//! credentials Secret), its two watches (the exported Services, and every
//! EndpointSlice folded to its readiness as it arrives), and the health of
//! its API server ([`RemoteHealth`], pure: what the watches and the
//! periodic check say, turned into [`Remote`]).

use std::time::Duration;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, Client, api::ListParams, runtime::watcher};
use tandem_runtime::{
    Task,
    watch::{self, Update, WatchError},
};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    call::{CALL_TIMEOUT, CallError, call},
    index::SliceReadiness,
    mirror::LinkConfig,
    remote::{self, error_chain, unreachable_reason},
    status::Remote,
};

/// The remote API server is asked this often even while the watches are
/// quiet: a hung or black-holed server sends no error to a watch.
pub const REMOTE_CHECK: Duration = Duration::from_secs(30);
/// And this often while it fails.
pub const REMOTE_RECHECK: Duration = Duration::from_secs(3);

/// What a session reports to the runtime, with its id.
// Each is moved once, into the loop: boxing every watch event would cost more.
#[allow(clippy::large_enum_variant)]
pub enum SessionMsg {
    Services(Update<Service>),
    Slices(Update<Option<SliceReadiness>>),
    /// A health check of the remote API server.
    Health(Result<(), CallError>),
}

pub struct Session {
    pub id: u64,
    pub secret: String,
    pub selector: String,
    /// The credentials Secret's resourceVersion (a new one reconnects).
    pub version: String,
    client: Client,
    _watches: Vec<Task>,
}

impl Session {
    /// Reads the credentials, builds the client, and starts the watches.
    pub async fn connect<M: Send + 'static>(
        local: &Client,
        namespace: &str,
        cfg: &LinkConfig,
        id: u64,
        tx: &mpsc::UnboundedSender<M>,
        wrap: fn(u64, SessionMsg) -> M,
    ) -> Result<Self, String> {
        let secret = &cfg.credentials_secret;
        let built = async {
            let (version, text) = remote::read_credentials(local, namespace, secret).await?;
            let client = remote::client_from_kubeconfig(&text, namespace, secret).await?;
            Ok::<_, remote::CredentialsError>((version, client))
        };
        let (version, client) = match tokio::time::timeout(CALL_TIMEOUT, built).await {
            Ok(r) => r.map_err(|e| error_chain(&e))?,
            Err(_) => {
                return Err(format!(
                    "reading the credentials Secret {namespace}/{secret}: timed out"
                ));
            }
        };
        let watches = vec![
            watch::spawn(
                Api::<Service>::all(client.clone()),
                watcher::Config::default().labels(&cfg.selector),
                tx.clone(),
                move |u| wrap(id, SessionMsg::Services(u)),
            ),
            // Every slice, folded as it arrives: the objects are not kept.
            watch::spawn_folded(
                Api::<EndpointSlice>::all(client.clone()),
                watcher::Config::default(),
                |s| SliceReadiness::of(&s),
                tx.clone(),
                move |u| wrap(id, SessionMsg::Slices(u)),
            ),
        ];
        Ok(Self {
            id,
            secret: secret.clone(),
            selector: cfg.selector.clone(),
            version,
            client,
            _watches: watches,
        })
    }

    /// Asks the remote API server what the two watches need (both lists),
    /// reporting on `tx`.
    pub fn check<M: Send + 'static>(
        &self,
        tx: &mpsc::UnboundedSender<M>,
        wrap: fn(u64, SessionMsg) -> M,
    ) -> Task {
        let services: Api<Service> = Api::all(self.client.clone());
        let slices: Api<EndpointSlice> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&self.selector).limit(1);
        let (tx, id) = (tx.clone(), self.id);
        Task::spawn(async move {
            let res = async {
                call("listing Services", services.list(&lp)).await?;
                call(
                    "listing EndpointSlices",
                    slices.list(&ListParams::default().limit(1)),
                )
                .await?;
                Ok(())
            }
            .await;
            let _ = tx.send(wrap(id, SessionMsg::Health(res)));
        })
    }

    /// Whether the credentials Secret moved on (a rotation).
    pub async fn rotated(&self, local: &Client, namespace: &str) -> bool {
        let read = tokio::time::timeout(
            CALL_TIMEOUT,
            remote::read_credentials(local, namespace, &self.secret),
        )
        .await;
        matches!(read, Ok(Ok((version, _))) if version != self.version)
    }
}

// === remote health ===

/// One of the session's two watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteWatch {
    Services,
    Slices,
}

/// The remote API server's health, from the watches and the checks.
#[derive(Debug)]
pub struct RemoteHealth {
    pub remote: Remote,
    /// The last error of each watch, until it works again.
    services: Option<WatchError>,
    slices: Option<WatchError>,
    /// When the server is asked next.
    pub check_at: Option<Instant>,
    pub checking: Option<Task>,
}

impl Default for RemoteHealth {
    fn default() -> Self {
        Self {
            remote: Remote::Unknown,
            services: None,
            slices: None,
            check_at: None,
            checking: None,
        }
    }
}

impl RemoteHealth {
    /// A new session: nothing known yet; the first check after a while.
    pub fn restart(&mut self, now: Instant) {
        *self = Self {
            check_at: Some(now + REMOTE_CHECK),
            ..Self::default()
        };
    }

    fn error(&mut self, w: RemoteWatch) -> &mut Option<WatchError> {
        match w {
            RemoteWatch::Services => &mut self.services,
            RemoteWatch::Slices => &mut self.slices,
        }
    }

    /// A watch delivered: the new [`Remote`], if both watches work.
    pub fn watch_ok(&mut self, w: RemoteWatch) -> Option<Remote> {
        *self.error(w) = None;
        (self.services.is_none() && self.slices.is_none()).then_some(Remote::Reachable)
    }

    /// A watch failed: the new [`Remote`], unless it only has to list again.
    pub fn watch_failed(
        &mut self,
        w: RemoteWatch,
        e: WatchError,
        cluster: &str,
        now: Instant,
    ) -> Option<Remote> {
        if e.is_expired() {
            // An expired resourceVersion: the watch lists again by itself.
            return None;
        }
        let what = match w {
            RemoteWatch::Services => "watching Services",
            RemoteWatch::Slices => "watching EndpointSlices",
        };
        let remote = Remote::Unreachable {
            reason: unreachable_reason(e.code).into(),
            message: format!("cluster {cluster}: {what}: {}", e.message),
        };
        *self.error(w) = Some(e);
        let soon = now + REMOTE_RECHECK;
        if self.check_at.is_none_or(|at| at > soon) {
            self.check_at = Some(soon);
        }
        Some(remote)
    }

    /// A check ended: the new [`Remote`].
    pub fn checked(&mut self, res: Result<(), CallError>, cluster: &str, now: Instant) -> Remote {
        self.checking = None;
        match res {
            Ok(()) => {
                self.services = None;
                self.slices = None;
                self.check_at = Some(now + REMOTE_CHECK);
                Remote::Reachable
            }
            Err(e) => {
                self.check_at = Some(now + REMOTE_RECHECK);
                Remote::Unreachable {
                    reason: unreachable_reason(e.code()).into(),
                    message: format!("cluster {cluster}: {e}"),
                }
            }
        }
    }

    /// Whether a check is due now (and none runs).
    pub fn check_due(&self, now: Instant) -> bool {
        self.checking.is_none() && self.check_at.is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: Option<u16>) -> WatchError {
        WatchError {
            message: "connection refused".into(),
            code,
        }
    }

    #[test]
    fn the_remote_is_reachable_only_while_both_watches_work() {
        let now = Instant::now();
        let mut h = RemoteHealth::default();
        h.restart(now);
        assert_eq!(h.remote, Remote::Unknown);
        assert_eq!(h.watch_ok(RemoteWatch::Services), Some(Remote::Reachable));
        let down = h
            .watch_failed(RemoteWatch::Slices, err(None), "west", now)
            .unwrap();
        assert!(
            matches!(&down, Remote::Unreachable { reason, message }
                if reason == "Unreachable" && message.contains("cluster west: watching EndpointSlices")),
            "{down:?}"
        );
        assert_eq!(h.check_at, Some(now + REMOTE_RECHECK), "checked soon");
        assert_eq!(
            h.watch_ok(RemoteWatch::Services),
            None,
            "the slices still fail"
        );
        assert_eq!(h.watch_ok(RemoteWatch::Slices), Some(Remote::Reachable));
        // An expired resourceVersion says nothing about the server.
        assert_eq!(
            h.watch_failed(RemoteWatch::Services, err(Some(410)), "west", now),
            None
        );
        let denied = h
            .watch_failed(RemoteWatch::Services, err(Some(401)), "west", now)
            .unwrap();
        assert!(matches!(denied, Remote::Unreachable { reason, .. } if reason == "Unauthorized"));
        // A good check clears both.
        assert_eq!(h.checked(Ok(()), "west", now), Remote::Reachable);
        assert_eq!(h.check_at, Some(now + REMOTE_CHECK));
        assert_eq!(h.watch_ok(RemoteWatch::Slices), Some(Remote::Reachable));
        assert!(!h.check_due(now) && h.check_due(now + REMOTE_CHECK));
    }
}

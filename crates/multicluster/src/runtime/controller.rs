//! The controller's two halves: events in (sync), and the step that runs
//! the Link's lifecycle, the session, and starts the writer's jobs.

use super::*;

// === impl Controller: events ===

impl Controller {
    pub(crate) fn new(
        local: Client,
        settings: MirrorSettings,
        metrics: Metrics,
        readiness: tandem_admin::Readiness,
        tx: mpsc::UnboundedSender<Msg>,
        label: String,
        writer: Arc<Writer>,
    ) -> Self {
        let now = Instant::now();
        Self {
            local,
            resync_at: now + settings.resync_period,
            link: LinkState {
                link: None,
                listed: false,
                config: None,
                spec: None,
                finalizer_retry_at: None,
                finalize_retry_at: None,
                adopted: settings.own.is_none(),
                adopt_retry_at: None,
            },
            settings,
            metrics,
            readiness,
            tx,
            label,
            writer,
            session: None,
            next_session: 0,
            credentials: None,
            connect_at: Some(now),
            connect_attempts: 0,
            recheck_credentials_at: None,
            health: RemoteHealth::default(),
            gateway: None,
            gateway_seen: GatewayState::default(),
            state: State::new(),
            pool: Pool::new(WRITE_CONCURRENCY),
            status_tx: None,
            status_at: now,
        }
    }

    fn cluster(&self) -> &str {
        match &self.link.config {
            Some(Ok(c)) => &c.cluster,
            _ => self
                .link
                .link
                .as_ref()
                .map(|l| l.spec.target_cluster_name.as_str())
                .unwrap_or_default(),
        }
    }

    fn deleting(&self) -> bool {
        self.link
            .link
            .as_ref()
            .is_some_and(|l| l.metadata.deletion_timestamp.is_some())
    }

    fn has_finalizer(&self) -> bool {
        self.link
            .link
            .as_ref()
            .is_some_and(finalizer::has_finalizer)
    }

    /// The earliest timer.
    pub(crate) fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let l = &self.link;
        [
            self.connect_at,
            self.recheck_credentials_at,
            self.health.check_at,
            l.finalizer_retry_at,
            l.finalize_retry_at,
            (!l.adopted).then_some(l.adopt_retry_at).flatten(),
            l.link.is_some().then_some(self.resync_at),
            self.state.next_due(),
            l.link.is_some().then_some(self.status_at),
        ]
        .into_iter()
        .flatten()
        .fold(far, Instant::min)
    }

    pub(crate) fn handle(&mut self, m: Msg) {
        let now = Instant::now();
        match m {
            Msg::Link(u) => self.handle_link(u),
            Msg::Mirrors(u) => {
                if let Update::Failed(e) = &u {
                    tracing::warn!(error = %e, "local mirror watch failed; retrying");
                }
                self.state.mirrors(u, now);
            }
            Msg::MirrorSlices(u) => {
                if let Update::Failed(e) = &u {
                    tracing::warn!(error = %e, "local mirror slice watch failed; retrying");
                }
                self.state.mirror_slices(u, now);
            }
            Msg::Remote(id, m) if self.session.as_ref().is_some_and(|s| s.id == id) => {
                self.handle_remote(m, now)
            }
            // From a session that is gone.
            Msg::Remote(..) => {}
        }
    }

    fn handle_remote(&mut self, m: SessionMsg, now: Instant) {
        let cluster = self.cluster().to_string();
        let (watch, failed) = match m {
            SessionMsg::Health(res) => {
                let remote = self.health.checked(res, &cluster, now);
                return self.set_remote(remote);
            }
            SessionMsg::Services(u) => {
                if let Update::Listed(list) = &u {
                    tracing::info!(%cluster, services = list.len(), "remote services listed");
                }
                let failed = failure(&u);
                self.state.remote_services(u, now);
                (RemoteWatch::Services, failed)
            }
            SessionMsg::Slices(u) => {
                let failed = failure(&u);
                self.state.remote_slices(u, now);
                (RemoteWatch::Slices, failed)
            }
        };
        let remote = match failed {
            Some(e) => self.health.watch_failed(watch, e, &cluster, now),
            None => self.health.watch_ok(watch),
        };
        if let Some(r) = remote {
            self.set_remote(r);
        }
    }

    fn handle_link(&mut self, u: Update<Link>) {
        match u {
            Update::Listed(mut list) => {
                self.link.listed = true;
                self.set_link(list.pop());
            }
            Update::Apply(l) => {
                self.link.listed = true;
                self.set_link(Some(l));
            }
            Update::Delete(_) => self.set_link(None),
            Update::Failed(e) => {
                let hint = if e.code == Some(404) {
                    " (is the Link CRD installed?)"
                } else {
                    ""
                };
                tracing::warn!(error = %e, "Link watch failed{hint}; retrying");
            }
        }
    }

    fn set_link(&mut self, link: Option<Link>) {
        match (&self.link.link, &link) {
            (None, Some(_)) => tracing::info!("Link found"),
            (Some(_), None) => tracing::info!("Link gone"),
            (None, None) if self.link.listed => {
                tracing::warn!("the Link does not exist (yet); waiting for it")
            }
            _ => {}
        }
        let spec = link.as_ref().map(|l| l.spec.clone());
        self.link.link = link;
        if spec != self.link.spec {
            self.link.spec = spec;
            self.link.config = self
                .link
                .link
                .as_ref()
                .map(|l| LinkConfig::from_link(l).map_err(|e| e.to_string()));
            if let Some(Err(e)) = &self.link.config {
                tracing::warn!(error = %e, "the Link's spec is invalid; mirrors are left as they are");
            }
            // Labels, ports, the gateway: anything may change.
            let now = Instant::now();
            self.state.rewrite_all(now);
            self.status_at = now;
        }
        if self.link.link.is_none() {
            self.session = None;
            self.gateway = None;
            self.credentials = None;
            self.health = RemoteHealth::default();
            if let Some(tx) = &self.status_tx {
                tx.send_replace(None);
            }
            self.readiness.set(false);
        }
    }

    fn set_remote(&mut self, remote: Remote) {
        let cluster = self.cluster().to_string();
        match (&self.health.remote, &remote) {
            (Remote::Unreachable { .. }, Remote::Reachable) => {
                tracing::info!(%cluster, "the remote API server answers again")
            }
            (Remote::Unreachable { message: a, .. }, Remote::Unreachable { message: b, .. })
                if a == b => {}
            (_, Remote::Unreachable { reason, message }) => {
                tracing::warn!(%cluster, %reason, error = %message, "the remote API server cannot be used; mirrors are left as they are")
            }
            _ => {}
        }
        let up = i64::from(remote == Remote::Reachable);
        self.metrics
            .remote_reachable
            .get_or_create(&Metrics::cluster(&cluster))
            .set(up);
        if self.health.remote != remote {
            self.status_soon();
        }
        self.health.remote = remote;
    }

    pub(crate) fn gateway_changed(&mut self) {
        let Some(g) = &mut self.gateway else { return };
        let s = g.rx.borrow_and_update().clone();
        if !s.same_endpoints(&self.gateway_seen) {
            self.gateway_seen = s;
            self.state.gateway_changed(Instant::now());
            self.status_soon();
        }
    }

    fn status_soon(&mut self) {
        self.status_at = self.status_at.min(Instant::now() + STATUS_SOON);
    }
}

/// A watch's failure, if it is one.
fn failure<T>(u: &Update<T>) -> Option<tandem_runtime::watch::WatchError> {
    match u {
        Update::Failed(e) => Some(e.clone()),
        _ => None,
    }
}

mod step;

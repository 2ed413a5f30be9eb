//! One step of the controller after events: the Link's lifecycle (the
//! finalizer, adoption), the gateway task, the session, starting the
//! writer's jobs, and the status snapshot.

use super::*;

// === impl Controller: step ===

impl Controller {
    pub(crate) async fn step(&mut self) {
        if !self.link.listed || self.link.link.is_none() {
            return;
        }
        let now = Instant::now();
        if self.deleting() {
            self.session = None;
            self.gateway = None;
            // The finalizer lists the mirrors: no write may land after it.
            if self.pool.is_empty() && self.link.finalize_retry_at.is_none_or(|at| at <= now) {
                self.finalize().await;
            }
            return;
        }
        if !self.has_finalizer() && self.link.finalizer_retry_at.is_none_or(|at| at <= now) {
            self.add_finalizer().await;
        }
        if !self.link.adopted
            && self.has_finalizer()
            && self.link.adopt_retry_at.is_none_or(|at| at <= now)
        {
            self.adopt().await;
        }
        if self.resync_at <= now {
            self.resync_at = now + self.settings.resync_period;
            self.state.rewrite_all(now);
        }
        let cfg = match &self.link.config {
            Some(Ok(c)) => c.clone(),
            _ => {
                // An invalid spec: nothing runs, nothing is touched.
                self.session = None;
                self.gateway = None;
                self.readiness.set(false);
                self.publish_status_if_due();
                return;
            }
        };
        self.ensure_gateway(&cfg);
        self.ensure_session(&cfg).await;
        if let Some(s) = &self.session
            && self.health.check_due(Instant::now())
        {
            self.health.check_at = None;
            self.health.checking = Some(s.check(&self.tx, Msg::Remote));
        }
        let ready = self.state.index.synced() && self.session.is_some();
        self.readiness.set(ready);
        if ready && self.has_finalizer() {
            self.dispatch();
        }
        self.publish_status_if_due();
    }

    /// Starts jobs for the queued keys while the pool has room.
    fn dispatch(&mut self) {
        let Some(link) = self.link.link.clone() else {
            return;
        };
        let gateway = self.gateway.as_ref().map(|g| g.rx.borrow().clone());
        let now = Instant::now();
        while self.pool.has_room() && self.state.has_work(now) {
            let pool = &self.pool;
            let Some(key) = self.state.take(now, |k| pool.busy(k)) else {
                break;
            };
            if let Some(job) = self.state.plan(key.clone(), &link, gateway.as_ref()) {
                let job = self.writer.clone().run(job);
                if self.pool.start(key.clone(), job).is_err() {
                    // Not possible (room and no job of the key were
                    // checked); tried again all the same.
                    self.state.lost(key, now);
                }
            }
        }
    }

    fn ensure_gateway(&mut self, cfg: &LinkConfig) {
        let want = GatewayConfig {
            cluster: cfg.cluster.clone(),
            addresses: cfg.gateway_addresses.clone(),
            probe: cfg.probe.clone(),
            dns_refresh: self.settings.dns_refresh,
        };
        if self.gateway.as_ref().is_some_and(|g| g.cfg == want) {
            return;
        }
        tracing::info!(cluster = %cfg.cluster, addresses = ?cfg.gateway_addresses, probe_port = cfg.probe.port, "probing the gateway");
        let (tx, rx) = watch::channel(GatewayState::default());
        let task = Task::spawn(
            gateway::run_http(want.clone(), self.metrics.clone(), tx)
                .instrument(tracing::Span::current()),
        );
        self.gateway = Some(GatewayTask {
            cfg: want,
            rx,
            _task: task,
        });
        self.gateway_seen = GatewayState::default();
    }

    async fn ensure_session(&mut self, cfg: &LinkConfig) {
        let now = Instant::now();
        let stale = self
            .session
            .as_ref()
            .is_some_and(|s| s.secret != cfg.credentials_secret || s.selector != cfg.selector);
        if stale {
            tracing::info!("the Link's credentials or selector changed; reconnecting");
            self.session = None;
            self.connect_at = Some(now);
        }
        if self.session.is_none() {
            if self.connect_at.is_none_or(|at| at <= now) {
                self.connect(cfg).await;
            }
            return;
        }
        if self.recheck_credentials_at.is_some_and(|at| at <= now) {
            self.recheck_credentials_at = Some(now + CREDENTIALS_RECHECK);
            let ns = &self.settings.link_namespace;
            if let Some(s) = &self.session
                && s.rotated(&self.local, ns).await
            {
                tracing::info!("the credentials Secret changed; reconnecting");
                self.session = None;
                self.connect(cfg).await;
            }
        }
    }

    async fn connect(&mut self, cfg: &LinkConfig) {
        let id = self.next_session + 1;
        let ns = self.settings.link_namespace.clone();
        match Session::connect(&self.local, &ns, cfg, id, &self.tx, Msg::Remote).await {
            Ok(session) => {
                let now = Instant::now();
                self.next_session = id;
                self.connect_attempts = 0;
                self.connect_at = None;
                self.credentials = Some(Ok(()));
                self.recheck_credentials_at = Some(now + CREDENTIALS_RECHECK);
                self.state.index.new_session();
                self.health.restart(now);
                self.metrics
                    .remote_reachable
                    .get_or_create(&Metrics::cluster(&cfg.cluster))
                    .set(0);
                tracing::info!(cluster = %cfg.cluster, selector = %cfg.selector, "watching the linked cluster");
                self.session = Some(session);
                self.status_soon();
            }
            Err(message) => {
                self.connect_attempts += 1;
                let after = tandem_util::backoff(Duration::from_millis(100), self.connect_attempts)
                    .max(Duration::from_secs(1));
                if self.credentials.as_ref().and_then(|c| c.as_ref().err()) != Some(&message) {
                    tracing::warn!(error = %message, retry_in_ms = after.as_millis() as u64, "cannot build the linked cluster's client; retrying");
                    self.status_soon();
                }
                self.credentials = Some(Err(message));
                self.connect_at = Some(Instant::now() + after);
            }
        }
    }

    // === the Link's lifecycle ===

    async fn add_finalizer(&mut self) {
        let Some(link) = &self.link.link else { return };
        let patch = finalizer::with_finalizer(link);
        let s = &self.settings;
        match finalizer::patch_link(&self.local, &s.link_namespace, &s.link_name, &patch).await {
            Ok(l) => {
                tracing::info!(
                    finalizer = tandem_api::multicluster::LINK_FINALIZER,
                    "finalizer added to the Link"
                );
                self.link.finalizer_retry_at = None;
                self.set_link(Some(l));
            }
            Err(e) => {
                tracing::warn!(error = %e, "adding the finalizer failed; retrying");
                self.link.finalizer_retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// Gives the mirror's own objects to the Link (see [`crate::own`]); a
    /// failure is retried, and stops nothing else.
    async fn adopt(&mut self) {
        let (Some(own), Some(link)) = (&self.settings.own, &self.link.link) else {
            return;
        };
        match own::adopt(&self.local, own, link).await {
            Ok(()) => {
                tracing::info!(name = %own.name, cluster_role = %own.cluster_role, "the mirror's own objects go with the Link");
                self.link.adopted = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "giving the mirror's own objects to the Link failed; retrying");
                self.link.adopt_retry_at = Some(Instant::now() + Duration::from_secs(30));
            }
        }
    }

    /// The Link is being deleted: delete every mirror it owns, give up the
    /// mirror's cluster-wide rights (when it runs as `link` deploys it),
    /// then let the Link go.
    async fn finalize(&mut self) {
        if !self.has_finalizer() {
            return;
        }
        if !self.link.adopted {
            // Started after the Link's deletion: its own objects go with the
            // Link all the same (a deleted owner's dependents are collected).
            self.adopt().await;
        }
        let own = self.settings.own.as_ref();
        let res = match finalizer::delete_everything(&self.local, &self.metrics, &self.label, own)
            .await
        {
            Ok(()) => {
                let Some(link) = &self.link.link else { return };
                let patch = finalizer::without_finalizer(link);
                let s = &self.settings;
                match finalizer::patch_link(&self.local, &s.link_namespace, &s.link_name, &patch)
                    .await
                {
                    Ok(l) => {
                        self.set_link(Some(l));
                        Ok(())
                    }
                    // Already gone: nothing holds it any more.
                    Err(e) if e.code() == Some(404) => Ok(()),
                    Err(e) => Err(format!("removing the finalizer: {e}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match res {
            Ok(()) => {
                tracing::info!("finalizer removed");
                self.link.finalize_retry_at = None;
                self.state.reset();
            }
            Err(e) => {
                tracing::warn!(error = %e, "finalizing the Link failed; retrying");
                self.link.finalize_retry_at = Some(Instant::now() + Duration::from_secs(2));
            }
        }
    }

    // === status ===

    /// Publishes what the status is decided from, when due, to the status
    /// writer's task: summarising is one pass over the remote Services, at
    /// most once per `status_interval`.
    fn publish_status_if_due(&mut self) {
        let now = Instant::now();
        if now < self.status_at {
            return;
        }
        self.status_at = now + self.settings.status_interval;
        let (Some(link), Some(tx)) = (&self.link.link, &self.status_tx) else {
            return;
        };
        let services = self.state.summary();
        self.metrics
            .mirrored_services
            .get_or_create(&Metrics::cluster(self.cluster()))
            .set(i64::from(services.mirrored));
        let snapshot = Snapshot {
            cluster: self.cluster().to_string(),
            spec_error: match &self.link.config {
                Some(Err(e)) => Some(e.clone()),
                _ => None,
            },
            credentials: self.credentials.clone(),
            remote: self.health.remote.clone(),
            synced: self.state.index.synced(),
            gateway: self.gateway.as_ref().map(|g| g.rx.borrow().clone()),
            generation: link.metadata.generation,
            services,
            previous: link.status.clone(),
        };
        // The Link's own status changes with each write: it is not what
        // makes a new snapshot.
        tx.send_if_modified(|old| {
            let same = old.as_ref().is_some_and(|o| {
                Snapshot {
                    previous: snapshot.previous.clone(),
                    ..o.clone()
                } == snapshot
            });
            if !same {
                *old = Some(snapshot);
            }
            !same
        });
    }
}

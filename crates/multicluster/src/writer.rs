//! The mirror's writes: one [`Job`] per remote Service, decided from the
//! state synchronously ([`crate::state`]), run here with bounded calls, and
//! reported back as a [`Report`]. Jobs of different Services run at once
//! (the runtime's pool bounds how many); one Service never has two.

use std::{net::IpAddr, sync::Arc, time::Duration};

use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::events::{Event as KubeEvent, EventType, Recorder},
};
use serde::de::DeserializeOwned;
use tandem_api::multicluster::Link;
use tracing::Instrument;

use crate::{
    call::{CallError, call},
    index::Key,
    metrics::Metrics,
    mirror::{LINK_LABEL, mirror_slice, slice_name},
    ownership,
    runtime::FIELD_MANAGER,
    status::Outcome,
};

/// What every job writes with.
pub struct Writer {
    pub local: Client,
    pub metrics: Metrics,
    /// Create a mirror's missing namespace instead of reporting it.
    pub create_namespaces: bool,
    /// This Link's [`LINK_LABEL`] value.
    pub label: String,
    pub recorder: Recorder,
}

/// A local mirror, exactly: its Service's uid and its slice's, if seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub mirror: Key,
    pub uid: String,
    pub slice_uid: Option<String>,
}

/// The gateway, as a mirror's endpoints need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub ips: Vec<IpAddr>,
    pub alive: bool,
    /// The remote Service has a ready endpoint.
    pub remote_ready: bool,
}

/// The writes one remote Service's mirror needs.
#[derive(Clone, Debug)]
pub struct Job {
    pub key: Key,
    /// Its mirrors under another name (an older cluster name).
    pub stale: Vec<Target>,
    pub work: Work,
}

#[derive(Clone, Debug)]
pub enum Work {
    /// The remote Service is gone (known from a full list): its mirror, if
    /// any, goes.
    Gone(Option<Target>),
    /// The remote Service cannot be mirrored: its mirror, if any, goes.
    Invalid {
        why: String,
        mirror: Option<Target>,
    },
    Mirror(Box<MirrorWork>),
}

/// A mirror to write.
#[derive(Clone, Debug)]
pub struct MirrorWork {
    pub link: Link,
    pub desired: Service,
    /// The Service is written (it differs from what was written).
    pub write_service: bool,
    /// The uid of the known mirror (then it is applied, else created).
    pub uid: Option<String>,
    /// What was written, so that only a change is written.
    pub written_uid: Option<String>,
    pub written_slice: Option<EndpointSlice>,
    /// `None` while the gateway's addresses or liveness are unknown: then
    /// no slice is written.
    pub endpoints: Option<Endpoints>,
    /// How it stood before (a NameTaken Event is published once).
    pub previous: Outcome,
}

/// A mirror Service written: as desired, and the uid of what was written.
#[derive(Debug)]
pub struct ServiceWritten {
    pub desired: Service,
    pub uid: Option<String>,
}

/// What a job did.
#[derive(Debug)]
pub struct Report {
    pub service: Option<ServiceWritten>,
    pub slice: Option<EndpointSlice>,
    /// What was written for it is void (a failed write, a deleted mirror).
    pub forget: bool,
    /// A delete failed: tried again after a backoff.
    pub delete_failed: bool,
    pub end: End,
}

#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Mirrored,
    /// The remote Service is gone: nothing more is kept about it.
    Gone,
    Invalid(String),
    /// Tried again after a backoff of at least `at_least`.
    Failed {
        outcome: Outcome,
        at_least: Duration,
    },
}

impl Report {
    fn new(end: End) -> Self {
        Self {
            service: None,
            slice: None,
            forget: false,
            delete_failed: false,
            end,
        }
    }
}

// === impl Writer ===

impl Writer {
    /// Runs one job, in a span of its remote Service (made now, so that
    /// it is a child of the caller's span wherever the job runs).
    pub fn run(self: Arc<Self>, job: Job) -> impl Future<Output = Report> + Send + 'static {
        let span = tracing::info_span!("mirror", remote = %job.key);
        async move {
            let mut delete_failed = false;
            for t in &job.stale {
                tracing::info!(stale = %t.mirror, "deleting a mirror made under another cluster name");
                delete_failed |= !self.delete_mirror(t).await;
            }
            let mut report = match job.work {
                Work::Gone(target) => {
                    let mut r = Report::new(End::Gone);
                    if let Some(t) = target {
                        tracing::info!(
                            "the remote Service is gone or no longer exported; deleting its mirror"
                        );
                        r.forget = self.delete_mirror(&t).await;
                        delete_failed |= !r.forget;
                    }
                    r
                }
                Work::Invalid { why, mirror } => {
                    let mut r = Report::new(End::Invalid(why));
                    if let Some(t) = mirror {
                        r.forget = self.delete_mirror(&t).await;
                        delete_failed |= !r.forget;
                    }
                    r
                }
                Work::Mirror(m) => self.mirror(*m).await,
            };
            report.delete_failed = delete_failed;
            report
        }
        .instrument(span)
    }

    async fn mirror(&self, m: MirrorWork) -> Report {
        let mut report = Report::new(End::Mirrored);
        let mut uid = m.written_uid.clone();
        // A new mirror is created, so that an object of its name (a
        // user's) makes the write fail and is left alone; a known one is
        // applied with its uid as a precondition.
        if m.write_service {
            let res = match &m.uid {
                Some(uid) => self.apply_service(&m.desired, uid).await,
                None => self.create_service(&m.desired).await,
            };
            match res {
                Ok(applied) => {
                    uid = applied.metadata.uid.clone();
                    report.service = Some(ServiceWritten {
                        desired: m.desired.clone(),
                        uid: uid.clone(),
                    });
                    tracing::info!("mirror service written");
                }
                Err(outcome) => {
                    if let Outcome::NameTaken(note) = &outcome
                        && m.previous != outcome
                    {
                        self.publish_name_taken(&m.link, note).await;
                    }
                    let at_least = match outcome {
                        Outcome::NameTaken(_) => Duration::from_secs(30),
                        _ => Duration::ZERO,
                    };
                    report.forget = true;
                    report.end = End::Failed { outcome, at_least };
                    return report;
                }
            }
        }
        // Then its slice (it needs the Service's uid), once the gateway's
        // addresses and liveness are known: until then whatever endpoints
        // there are stay. (A created Service's fields are taken as applied
        // by its first apply: see [`crate::ownership`].)
        let slice = async {
            let e = m.endpoints.as_ref()?;
            let mut owner = m.desired.clone();
            owner.metadata.uid = uid;
            let ready = e.remote_ready && e.alive;
            let slice = mirror_slice(&owner, &m.link, &e.ips, ready);
            if m.written_slice.as_ref() == Some(&slice) {
                return None;
            }
            let res = self.apply_slice(&slice).await;
            if res.is_ok() {
                tracing::info!(
                    ready,
                    remote_ready = e.remote_ready,
                    gateway_alive = e.alive,
                    endpoints = slice.endpoints.len(),
                    "mirror endpoints written"
                );
            }
            Some(res.map(|()| slice))
        };
        match slice.await {
            Some(Ok(slice)) => report.slice = Some(slice),
            Some(Err(outcome)) => {
                report.end = End::Failed {
                    outcome,
                    at_least: Duration::ZERO,
                }
            }
            None => {}
        }
        report
    }
}

// === the API calls of a job ===

impl Writer {
    /// Creates a new mirror Service. An object of its name that is not this
    /// Link's makes it fail: [`Outcome::NameTaken`].
    async fn create_service(&self, desired: &Service) -> Result<Service, Outcome> {
        let ns = desired.metadata.namespace.clone().unwrap_or_default();
        let name = desired.metadata.name.clone().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(self.local.clone(), &ns);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let mut created_namespace = false;
        loop {
            self.metrics.writes.inc();
            let e = match call("creating the mirror Service", api.create(&params, desired)).await {
                Ok(created) => return Ok(created),
                Err(e) => e,
            };
            if e.code() == Some(409) {
                // Taken: ours (a watch that lags), or someone else's.
                return self.taken(&api, desired, &ns, &name).await;
            }
            if e.code() == Some(404) && self.create_namespaces && !created_namespace {
                created_namespace = true;
                if let Err(e) = self.create_namespace(&ns).await {
                    self.metrics.write_errors.inc();
                    return Err(Outcome::Error(e.to_string()));
                }
                continue;
            }
            self.metrics.write_errors.inc();
            return Err(match e.code() {
                Some(404) => Outcome::MissingNamespace(format!(
                    "the namespace {ns} does not exist in this cluster"
                )),
                Some(422) => Outcome::Invalid(format!("the mirror was refused: {e}")),
                _ => Outcome::Error(e.to_string()),
            });
        }
    }

    /// A create found the name taken: by this Link's mirror (applied), or
    /// by someone else's Service (left alone).
    async fn taken(
        &self,
        api: &Api<Service>,
        desired: &Service,
        ns: &str,
        name: &str,
    ) -> Result<Service, Outcome> {
        let existing = call("reading the local Service", api.get_opt(name))
            .await
            .map_err(|e| Outcome::Error(e.to_string()))?;
        let ours = existing.as_ref().and_then(|s| {
            let labels = s.metadata.labels.as_ref()?;
            (labels.get(LINK_LABEL) == Some(&self.label)).then_some(s.metadata.uid.clone()?)
        });
        match (existing, ours) {
            (_, Some(uid)) => self.apply_service(desired, &uid).await,
            // Deleted meanwhile: the next pass creates it.
            (None, _) => Err(Outcome::Error(
                "the local Service of the mirror's name was just deleted; retrying".into(),
            )),
            (Some(_), None) => {
                self.metrics.write_errors.inc();
                Err(Outcome::NameTaken(format!(
                    "a Service {ns}/{name} exists and is not a mirror of this Link; it is left alone"
                )))
            }
        }
    }

    /// After an apply that found the create's field entry still there: its
    /// fields become this writer's applied fields, and `exact` is applied
    /// again, so that a field the create set and `exact` no longer has is
    /// removed (see [`crate::ownership`]). Best effort: on failure the
    /// first apply's result stands, and the next apply tries again.
    async fn adopt_created_fields(
        &self,
        api: &Api<Service>,
        applied: Service,
        exact: &Service,
    ) -> Service {
        let fields = applied
            .metadata
            .managed_fields
            .as_deref()
            .unwrap_or_default();
        let Some(fields) = ownership::fold_created(fields, FIELD_MANAGER) else {
            return applied;
        };
        let name = applied.metadata.name.clone().unwrap_or_default();
        // The uid makes it a precondition: an object made again meanwhile
        // refuses the patch (its uid cannot change).
        let patch = serde_json::json!({
            "metadata": { "uid": applied.metadata.uid, "managedFields": fields },
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.metrics.writes.inc();
        let adopted = call(
            "taking the created mirror's fields as applied",
            api.patch(&name, &params, &Patch::Merge(&patch)),
        )
        .await;
        let again = match adopted {
            Ok(_) => {
                self.metrics.writes.inc();
                call(
                    "writing the mirror Service",
                    api.patch(
                        &name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(exact),
                    ),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match again {
            Ok(s) => s,
            Err(e) => {
                self.metrics.write_errors.inc();
                tracing::warn!(error = %e, "the created mirror's fields stay owned by its create; trying at its next write");
                applied
            }
        }
    }

    /// Applies a known mirror Service, exactly the object of `uid`: one
    /// deleted and made again meanwhile (by anyone) is not written.
    async fn apply_service(&self, desired: &Service, uid: &str) -> Result<Service, Outcome> {
        let ns = desired.metadata.namespace.clone().unwrap_or_default();
        let name = desired.metadata.name.clone().unwrap_or_default();
        let api: Api<Service> = Api::namespaced(self.local.clone(), &ns);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut exact = desired.clone();
        exact.metadata.uid = Some(uid.to_string());
        self.metrics.writes.inc();
        let res = call(
            "writing the mirror Service",
            api.patch(&name, &params, &Patch::Apply(&exact)),
        )
        .await;
        let e = match res {
            Ok(s) => return Ok(self.adopt_created_fields(&api, s, &exact).await),
            Err(e) => e,
        };
        self.metrics.write_errors.inc();
        // Deleted (the API server answers 409: no object of that uid), or
        // replaced by another object (422: a uid cannot change): looked at
        // again on the next pass, when the watch has seen it.
        let replaced = match e.code() {
            Some(409) => true,
            Some(422) => e.to_string().contains("metadata.uid"),
            _ => false,
        };
        Err(match e.code() {
            _ if replaced => Outcome::Error(format!(
                "the mirror Service {ns}/{name} was deleted or replaced meanwhile; looking again: {e}"
            )),
            Some(404) => Outcome::MissingNamespace(format!(
                "the namespace {ns} does not exist in this cluster"
            )),
            Some(422) => Outcome::Invalid(format!("the mirror was refused: {e}")),
            _ => Outcome::Error(e.to_string()),
        })
    }

    /// An Event on the Link: a mirror it must leave alone.
    async fn publish_name_taken(&self, link: &Link, note: &str) {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "MirrorNameTaken".into(),
            note: Some(note.to_string()),
            action: "Mirror".into(),
            secondary: None,
        };
        let reference = link.object_ref(&());
        if let Err(e) = call(
            "publishing an Event",
            self.recorder.publish(&event, &reference),
        )
        .await
        {
            tracing::warn!(error = %e, "publishing the Event failed");
        }
    }

    async fn create_namespace(&self, ns: &str) -> Result<(), CallError> {
        let api: Api<Namespace> = Api::all(self.local.clone());
        let mut n = Namespace::default();
        n.metadata.name = Some(ns.to_string());
        match call(
            format!("creating the namespace {ns}"),
            api.create(&PostParams::default(), &n),
        )
        .await
        {
            Ok(_) => {
                tracing::info!(namespace = %ns, "created the mirror's namespace");
                Ok(())
            }
            Err(e) if e.code() == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn apply_slice(&self, slice: &EndpointSlice) -> Result<(), Outcome> {
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let name = slice.metadata.name.clone().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.local.clone(), &ns);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.metrics.writes.inc();
        match call(
            "writing the mirror EndpointSlice",
            api.patch(&name, &params, &Patch::Apply(slice)),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                self.metrics.write_errors.inc();
                Err(Outcome::Error(e.to_string()))
            }
        }
    }

    /// Deletes a mirror Service and its slice, exactly the objects the
    /// watches saw; absent ones count as deleted. Whether it worked.
    async fn delete_mirror(&self, t: &Target) -> bool {
        let res = delete_pair(
            &self.local,
            &self.metrics,
            &t.mirror,
            Some(&t.uid),
            t.slice_uid.as_deref(),
        )
        .await;
        match res {
            Ok(()) => {
                tracing::info!(mirror = %t.mirror, "mirror deleted");
                true
            }
            Err(e) => {
                tracing::warn!(mirror = %t.mirror, error = %e, "deleting the mirror failed; retrying");
                false
            }
        }
    }
}

// === deletes ===

/// A delete of exactly the object of this uid: a Service of the same name
/// made meanwhile by someone else is not touched.
fn delete_params(uid: Option<&str>) -> DeleteParams {
    DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Deletes one object of this uid; gone, or replaced by another (a failed
/// uid precondition), counts as deleted: what is there now is not ours.
pub async fn delete_exactly<K>(
    api: &Api<K>,
    metrics: &Metrics,
    name: &str,
    uid: Option<&str>,
) -> Result<(), CallError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    metrics.writes.inc();
    let what = format!(
        "deleting the mirror {} {name}",
        K::kind(&Default::default())
    );
    match call(what, api.delete(name, &delete_params(uid))).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.code(), Some(404) | Some(409)) => Ok(()),
        Err(e) => {
            metrics.write_errors.inc();
            Err(e)
        }
    }
}

/// Deletes a mirror Service of this uid and its slice (of its uid, when
/// known; else the garbage collector takes it with the Service, its owner).
async fn delete_pair(
    local: &Client,
    metrics: &Metrics,
    mirror: &Key,
    service_uid: Option<&str>,
    slice_uid: Option<&str>,
) -> Result<(), CallError> {
    if slice_uid.is_some() {
        let slices: Api<EndpointSlice> = Api::namespaced(local.clone(), &mirror.namespace);
        delete_exactly(&slices, metrics, &slice_name(&mirror.name), slice_uid).await?;
    }
    let services: Api<Service> = Api::namespaced(local.clone(), &mirror.namespace);
    delete_exactly(&services, metrics, &mirror.name, service_uid).await
}

#[cfg(test)]
mod tests;

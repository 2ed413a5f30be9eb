//! The LoadBalancer controller: a watch on every Service feeds [`LbState`],
//! which decides with [`allocate`](super::allocate) and hands the writes to
//! the writer.
//!
//! Nothing is assigned before the first full list: the addresses Services
//! already show are recovered first ([`Assignments::rebuild`]), so a restart
//! keeps every address.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, ObjectReference, Service};
use kube::{Api, Client, Resource, runtime::watcher};
use tandem_runtime::watch::Update;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::{
    allocate::{self, Assignments, Conflict, Decision, Ignored, Pool, ServiceKey, ServiceView},
    metrics::Metrics,
    writer::{Command, Note, StatusOp},
};

#[cfg(test)]
mod tests;

/// The Event after an address is written.
pub const ALLOCATED: &str = "IPAllocated";
/// The Event when a Service gets no address.
pub const FAILED: &str = "AllocationFailed";

/// What the allocator reads of a Service.
pub fn view(svc: &Service) -> ServiceView {
    let spec = svc.spec.as_ref();
    ServiceView {
        key: key(svc),
        created: svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
        load_balancer: spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"),
        class: spec.and_then(|s| s.load_balancer_class.clone()),
        requested: spec.and_then(|s| s.load_balancer_ip.clone()),
        status_ips: ingress(svc).iter().filter_map(|i| i.ip.clone()).collect(),
    }
}

fn key(svc: &Service) -> ServiceKey {
    ServiceKey::new(
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

fn ingress(svc: &Service) -> &[LoadBalancerIngress] {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
}

/// A Service as last seen.
#[derive(Clone, Debug)]
struct Entry {
    view: ServiceView,
    reference: ObjectReference,
    ingress: Vec<LoadBalancerIngress>,
}

impl Entry {
    fn new(svc: &Service) -> Self {
        Self {
            view: view(svc),
            reference: svc.object_ref(&()),
            ingress: ingress(svc).to_vec(),
        }
    }

    /// The status is exactly what this agent writes for `ip`.
    fn shows_exactly(&self, ip: std::net::Ipv4Addr) -> bool {
        matches!(
            self.ingress.as_slice(),
            [LoadBalancerIngress { ip: Some(shown), ip_mode: Some(mode), hostname: None, ports: None }]
                if *shown == ip.to_string() && mode == "VIP"
        )
    }

    fn shows_pool_address(&self, pool: &Pool) -> bool {
        self.view
            .status_ips
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .any(|ip| pool.contains(ip))
    }
}

/// The status write a decision calls for; `None`: the status is right.
fn status_op(decision: &Decision, entry: &Entry, pool: &Pool) -> Option<StatusOp> {
    match decision {
        Decision::Keep(ip) | Decision::Assign(ip) => {
            (!entry.shows_exactly(*ip)).then_some(StatusOp::Set(*ip))
        }
        // A refused Service of ours shows no address.
        Decision::Refuse(_) => (!entry.ingress.is_empty()).then_some(StatusOp::Clear),
        // Clear only what this agent wrote: an address of its pool, on a
        // Service of no other class (also one released before a restart).
        Decision::Release(_) | Decision::Ignore(Ignored::NotLoadBalancer) => {
            (entry.view.class.is_none() && entry.shows_pool_address(pool))
                .then_some(StatusOp::Clear)
        }
        Decision::Ignore(Ignored::OtherClass(_) | Ignored::Deleted) => None,
    }
}

// === impl LbState ===

/// Every Service and every assignment. Synchronous: no client, no `.await`.
#[derive(Debug)]
pub(crate) struct LbState {
    pool: Pool,
    assignments: Assignments,
    services: BTreeMap<ServiceKey, Entry>,
    /// Refused Services, with the refusal last reported in an Event.
    refused: BTreeMap<ServiceKey, String>,
    synced: bool,
}

impl LbState {
    pub(crate) fn new(pool: Pool) -> Self {
        Self {
            pool,
            assignments: Assignments::default(),
            services: BTreeMap::new(),
            refused: BTreeMap::new(),
            synced: false,
        }
    }

    pub(crate) fn assigned(&self) -> usize {
        self.assignments.len()
    }

    pub(crate) fn refused(&self) -> usize {
        self.refused.len()
    }

    /// A full list. The first one rebuilds the assignments from the
    /// Services' statuses before anything is decided; later ones (after a
    /// watch restart) release what disappeared. Then every Service is
    /// decided, oldest first.
    pub(crate) fn reset(&mut self, services: &[Service]) -> (Vec<Command>, Vec<Conflict>) {
        let listed: BTreeMap<ServiceKey, Entry> =
            services.iter().map(|s| (key(s), Entry::new(s))).collect();
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !listed.contains_key(*k))
            .cloned()
            .collect();
        self.services = listed;
        let mut conflicts = vec![];
        if !self.synced {
            let (assignments, found) =
                Assignments::rebuild(&self.pool, self.services.values().map(|e| &e.view));
            self.assignments = assignments;
            conflicts = found;
            self.synced = true;
        }
        let mut keys = gone;
        keys.extend(self.by_age(self.services.keys()));
        (self.decide_all(keys), conflicts)
    }

    /// A Service was added or changed.
    pub(crate) fn apply(&mut self, svc: &Service) -> Vec<Command> {
        let k = key(svc);
        self.services.insert(k.clone(), Entry::new(svc));
        if !self.synced {
            return vec![];
        }
        self.decide_all(vec![k])
    }

    /// A Service was deleted.
    pub(crate) fn delete(&mut self, svc: &Service) -> Vec<Command> {
        let k = key(svc);
        self.services.remove(&k);
        if !self.synced {
            return vec![];
        }
        self.decide_all(vec![k])
    }

    /// Decides `keys` in order; if that frees an address, the refused
    /// Services are decided again, oldest first.
    fn decide_all(&mut self, keys: Vec<ServiceKey>) -> Vec<Command> {
        let mut commands = vec![];
        let mut freed = false;
        for k in &keys {
            freed |= self.decide(k, &mut commands);
        }
        if freed && !self.refused.is_empty() {
            let waiting = self.by_age(self.refused.keys().filter(|k| !keys.contains(k)));
            for k in waiting {
                self.decide(&k, &mut commands);
            }
        }
        commands
    }

    /// Keys, oldest Service first.
    fn by_age<'a>(&self, keys: impl Iterator<Item = &'a ServiceKey>) -> Vec<ServiceKey> {
        let mut keys: Vec<(Option<_>, ServiceKey)> = keys
            .map(|k| (self.services.get(k).and_then(|e| e.view.created), k.clone()))
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    /// Decides one Service; true if that freed an address.
    fn decide(&mut self, k: &ServiceKey, commands: &mut Vec<Command>) -> bool {
        let entry = self.services.get(k);
        let decision = allocate::decide(&self.pool, &self.assignments, k, entry.map(|e| &e.view));
        let before = self.assignments.get(k);
        self.assignments.commit(k, &decision);
        let freed = before.is_some() && self.assignments.get(k) != before;

        let Some(entry) = entry else {
            if let Some(ip) = before {
                tracing::info!(service = %k, %ip, "released (deleted)");
            }
            self.refused.remove(k);
            commands.push(Command::Cancel { service: k.clone() });
            return freed;
        };

        match &decision {
            Decision::Assign(ip) => {
                tracing::info!(service = %k, %ip, previous = ?before, "assigned");
            }
            Decision::Keep(ip) if before != Some(*ip) => {
                tracing::info!(service = %k, %ip, "kept the address its status shows");
            }
            Decision::Release(ip) => tracing::info!(service = %k, %ip, "released"),
            _ => {}
        }

        if let Decision::Refuse(why) = &decision {
            let text = why.to_string();
            if self.refused.get(k) != Some(&text) {
                tracing::warn!(service = %k, reason = %text, "no address");
                commands.push(Command::Event {
                    reference: entry.reference.clone(),
                    note: Note::warning(FAILED, "Allocate", text.clone()),
                });
                self.refused.insert(k.clone(), text);
            }
        } else {
            self.refused.remove(k);
        }

        let announce = match decision {
            Decision::Assign(ip) => Some(Note::normal(
                ALLOCATED,
                "Allocate",
                format!("assigned {ip} from pool {}", self.pool),
            )),
            _ => None,
        };
        match status_op(&decision, entry, &self.pool) {
            Some(op) => commands.push(Command::Status {
                service: k.clone(),
                reference: entry.reference.clone(),
                op,
                then: announce,
            }),
            None => {
                commands.push(Command::Cancel { service: k.clone() });
                if let Some(note) = announce {
                    commands.push(Command::Event {
                        reference: entry.reference.clone(),
                        note,
                    });
                }
            }
        }
        freed
    }
}

/// Watches every Service and hands the writes to the writer. Ends only when
/// the writer is gone.
pub(crate) async fn watch_services(
    client: Client,
    pool: Pool,
    writer: mpsc::Sender<Command>,
    synced: watch::Sender<bool>,
    metrics: Metrics,
) {
    let api: Api<Service> = Api::all(client);
    let mut updates = std::pin::pin!(tandem_runtime::watch::stream(
        api,
        watcher::Config::default()
    ));
    let mut state = LbState::new(pool);
    let span = tracing::info_span!("lb", %pool);
    while let Some(update) = updates.next().instrument(span.clone()).await {
        let commands = {
            let _span = span.enter();
            match update {
                Update::Listed(services) => {
                    let (commands, conflicts) = state.reset(&services);
                    for c in &conflicts {
                        tracing::warn!(
                            ip = %c.ip,
                            kept = %c.kept,
                            lost = %c.lost,
                            "two Services showed one address; the older keeps it"
                        );
                        metrics.conflicts.inc();
                    }
                    tracing::info!(
                        services = services.len(),
                        assigned = state.assigned(),
                        "services synced"
                    );
                    synced.send_replace(true);
                    commands
                }
                Update::Apply(s) => state.apply(&s),
                Update::Delete(s) => state.delete(&s),
                Update::Failed(e) => {
                    tracing::warn!(error = %e, "service watch failed; retrying");
                    continue;
                }
            }
        };
        metrics
            .assigned
            .set(i64::try_from(state.assigned()).unwrap_or(i64::MAX));
        metrics
            .refused
            .set(i64::try_from(state.refused()).unwrap_or(i64::MAX));
        for c in commands {
            if writer.send(c).await.is_err() {
                return;
            }
        }
    }
}

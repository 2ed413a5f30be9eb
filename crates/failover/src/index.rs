//! The controller's view of the cluster: the splits it controls, the
//! readiness of every Service from its EndpointSlices, and which splits use
//! which Service. Synchronous, no client: watches feed it, and each change
//! returns the splits it concerns, so that one EndpointSlice event touches
//! only the splits that use that Service.
//!
//! What the writer remembers of each split ([`SplitState`]) lives here too,
//! next to the split, so that it goes when the split goes.

use std::collections::{BTreeSet, HashMap};
use tandem_api::endpoints::ready_endpoints;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use tandem_core::failover::{Memory, ServiceRef, backend_refs};

use crate::resource::{Entry, Key, Kind};

use tandem_api::endpoints::SERVICE_NAME_LABEL;

#[derive(Debug)]
pub struct Index {
    cluster_domain: String,
    /// Boxed: the table stays small (a pointer a slot) as it grows.
    splits: HashMap<Key, Box<Slot>>,
    /// Ready endpoints of each slice, by (namespace, slice name).
    slices: HashMap<(String, String), (ServiceRef, usize)>,
    /// Each Service's slices and ready endpoints, summed over its slices.
    ready: HashMap<ServiceRef, Readiness>,
    /// The splits that name each Service as a backend.
    users: HashMap<ServiceRef, BTreeSet<Key>>,
}

/// A split as last read, and what the writer remembers of it.
#[derive(Debug)]
struct Slot {
    entry: Entry,
    state: SplitState,
}

/// What the writer remembers of one split between decisions. Kept across
/// updates of the split, dropped when it is deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitState {
    /// Failback-damping memory, one per group.
    pub memory: Vec<Memory>,
    /// The resourceVersion an invalid split was last reported at.
    pub reported_invalid: Option<String>,
}

/// What a relist of one kind of split changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Relisted {
    /// Every split listed: all to reconsider.
    pub listed: Vec<Key>,
    /// The splits gone meanwhile.
    pub removed: Vec<Key>,
}

impl Index {
    pub fn new(cluster_domain: impl Into<String>) -> Self {
        Self {
            cluster_domain: cluster_domain.into(),
            splits: HashMap::new(),
            slices: HashMap::new(),
            ready: HashMap::new(),
            users: HashMap::new(),
        }
    }

    pub fn cluster_domain(&self) -> &str {
        &self.cluster_domain
    }

    /// A Service is ready when one of its endpoints is ready and not terminating.
    pub fn is_ready(&self, svc: &ServiceRef) -> bool {
        self.ready.get(svc).is_some_and(|r| r.endpoints > 0)
    }

    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.splits.get(key).map(|s| &s.entry)
    }

    /// What the writer remembers of a split; `None` once it is gone.
    pub fn state(&self, key: &Key) -> Option<&SplitState> {
        self.splits.get(key).map(|s| &s.state)
    }

    pub fn state_mut(&mut self, key: &Key) -> Option<&mut SplitState> {
        self.splits.get_mut(key).map(|s| &mut s.state)
    }

    pub fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.splits.keys().cloned().collect();
        keys.sort();
        keys
    }

    pub fn len(&self) -> usize {
        self.splits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.splits.is_empty()
    }

    // === splits ===

    /// Adds or replaces a split, keeping what the writer remembers of it;
    /// it is the one key to reconsider.
    pub fn apply_split(&mut self, entry: Entry) -> Key {
        let key = entry.key.clone();
        self.unlink(&key);
        for group in &entry.groups {
            for svc in backend_refs(group, &self.cluster_domain) {
                self.users.entry(svc).or_default().insert(key.clone());
            }
        }
        match self.splits.get_mut(&key) {
            Some(slot) => slot.entry = entry,
            None => {
                let state = SplitState::default();
                self.splits
                    .insert(key.clone(), Box::new(Slot { entry, state }));
            }
        }
        key
    }

    /// Forgets a split and everything remembered of it.
    pub fn delete_split(&mut self, key: &Key) {
        self.unlink(key);
        self.splits.remove(key);
    }

    /// Replaces every split of `kind` after a (re)list. Those still there
    /// keep what the writer remembers of them; the others are forgotten.
    pub fn reset_splits(&mut self, kind: Kind, entries: Vec<Entry>) -> Relisted {
        let listed: BTreeSet<&Key> = entries.iter().map(|e| &e.key).collect();
        let mut removed: Vec<Key> = self
            .splits
            .keys()
            .filter(|k| k.kind == kind && !listed.contains(k))
            .cloned()
            .collect();
        removed.sort();
        for k in &removed {
            self.delete_split(k);
        }
        let listed = entries.into_iter().map(|e| self.apply_split(e)).collect();
        Relisted { listed, removed }
    }

    fn unlink(&mut self, key: &Key) {
        let Some(old) = self.splits.get(key) else {
            return;
        };
        for group in &old.entry.groups {
            for svc in backend_refs(group, &self.cluster_domain) {
                if let Some(users) = self.users.get_mut(&svc) {
                    users.remove(key);
                    if users.is_empty() {
                        self.users.remove(&svc);
                    }
                }
            }
        }
    }

    // === endpoint slices ===

    /// Records a slice; returns the splits whose backend changed readiness.
    pub fn apply_slice(&mut self, slice: &Slice) -> Vec<Key> {
        let Some((id, svc)) = slice.identity() else {
            return vec![];
        };
        let count = slice.ready;
        let before = self.is_ready(&svc);
        if let Some((old_svc, old_count)) = self.slices.insert(id, (svc.clone(), count)) {
            self.subtract(&old_svc, old_count);
        }
        self.add(&svc, count);
        self.changed(&svc, before)
    }

    pub fn delete_slice(&mut self, slice: &Slice) -> Vec<Key> {
        let Some((id, svc)) = slice.identity() else {
            return vec![];
        };
        let before = self.is_ready(&svc);
        if let Some((old_svc, old_count)) = self.slices.remove(&id) {
            self.subtract(&old_svc, old_count);
        }
        self.changed(&svc, before)
    }

    /// Replaces every slice after a (re)list; returns the splits whose
    /// backends changed readiness meanwhile.
    pub fn reset_slices(&mut self, slices: &[Slice]) -> Vec<Key> {
        let before: HashMap<ServiceRef, bool> = self
            .ready
            .keys()
            .map(|s| (s.clone(), self.is_ready(s)))
            .collect();
        self.slices.clear();
        self.ready.clear();
        for slice in slices {
            if let Some((id, svc)) = slice.identity() {
                let count = slice.ready;
                if let Some((old_svc, old_count)) = self.slices.insert(id, (svc.clone(), count)) {
                    self.subtract(&old_svc, old_count);
                }
                self.add(&svc, count);
            }
        }
        let mut services: BTreeSet<ServiceRef> = before.keys().cloned().collect();
        services.extend(self.ready.keys().cloned());
        let mut keys = BTreeSet::new();
        for svc in services {
            if before.get(&svc).copied().unwrap_or(false) != self.is_ready(&svc) {
                keys.extend(self.users.get(&svc).into_iter().flatten().cloned());
            }
        }
        keys.into_iter().collect()
    }

    fn add(&mut self, svc: &ServiceRef, endpoints: usize) {
        let r = self.ready.entry(svc.clone()).or_default();
        r.slices += 1;
        r.endpoints += endpoints;
    }

    /// Forgets one slice of `svc`, and the Service once it has none.
    fn subtract(&mut self, svc: &ServiceRef, endpoints: usize) {
        if let Some(r) = self.ready.get_mut(svc) {
            r.slices = r.slices.saturating_sub(1);
            r.endpoints = r.endpoints.saturating_sub(endpoints);
            if r.slices == 0 {
                self.ready.remove(svc);
            }
        }
    }

    fn changed(&mut self, svc: &ServiceRef, before: bool) -> Vec<Key> {
        let after = self.is_ready(svc);
        if before == after {
            return vec![];
        }
        self.users
            .get(svc)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A Service's slices, and their ready endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Readiness {
    slices: usize,
    endpoints: usize,
}

/// An EndpointSlice folded, as it arrives, to what the index keeps of it:
/// its name, its Service (the service-name label) and how many of its
/// endpoints are ready. Whole slices are never buffered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slice {
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `None` without the service-name label: such a slice is ignored.
    pub service: Option<String>,
    /// Ready endpoints that are not terminating.
    pub ready: usize,
}

impl Slice {
    pub fn fold(slice: EndpointSlice) -> Self {
        Self::from(&slice)
    }

    /// The slice's identity and its Service.
    fn identity(&self) -> Option<((String, String), ServiceRef)> {
        let ns = self.namespace.clone()?;
        let name = self.name.clone()?;
        let svc = self.service.clone()?;
        Some(((ns.clone(), name), ServiceRef::new(ns, svc)))
    }
}

impl From<&EndpointSlice> for Slice {
    fn from(slice: &EndpointSlice) -> Self {
        let meta = &slice.metadata;
        Self {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            service: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .cloned(),
            ready: ready_endpoints(slice),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Resource, read};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use kube::api::DynamicObject;
    use serde_json::json;

    fn mk_split(ns: &str, name: &str, backends: &[&str]) -> Entry {
        let res = Resource::traffic_split("v1alpha2");
        let backends: Vec<_> = backends
            .iter()
            .map(|b| json!({"service": b, "weight": 0}))
            .collect();
        let obj = DynamicObject::new(name, &res.api)
            .within(ns)
            .data(json!({"spec": {"service": "apex", "backends": backends}}));
        read(&res, obj)
    }

    fn mk_slice(ns: &str, name: &str, svc: &str, ready: &[Option<bool>]) -> Slice {
        Slice::fold(mk_endpoint_slice(ns, name, svc, ready))
    }

    fn mk_endpoint_slice(ns: &str, name: &str, svc: &str, ready: &[Option<bool>]) -> EndpointSlice {
        let mut s = EndpointSlice::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s.metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into());
        s.address_type = "IPv4".into();
        s.endpoints = ready
            .iter()
            .map(|r| Endpoint {
                addresses: vec!["127.10.0.1".into()],
                conditions: Some(EndpointConditions {
                    ready: *r,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        s
    }

    fn svc(ns: &str, name: &str) -> ServiceRef {
        ServiceRef::new(ns, name)
    }

    #[test]
    fn a_slice_event_touches_only_the_splits_that_use_its_service() {
        let mut idx = Index::new("cluster.local");
        let a = idx.apply_split(mk_split("ns", "a", &["emoji", "emoji-west"]));
        let b = idx.apply_split(mk_split("ns", "b", &["web", "web-west"]));
        let c = idx.apply_split(mk_split("other", "c", &["emoji.ns.svc.cluster.local", "x"]));

        let keys = idx.apply_slice(&mk_slice("ns", "emoji-abc", "emoji", &[Some(true)]));
        assert_eq!(keys, vec![a.clone(), c.clone()]);
        assert!(idx.is_ready(&svc("ns", "emoji")));
        assert!(!idx.is_ready(&svc("ns", "web")));

        // Still ready: no split to reconsider.
        assert!(
            idx.apply_slice(&mk_slice(
                "ns",
                "emoji-abc",
                "emoji",
                &[Some(true), Some(true)]
            ))
            .is_empty()
        );
        // A second slice that is unready changes nothing either.
        assert!(
            idx.apply_slice(&mk_slice("ns", "emoji-def", "emoji", &[Some(false)]))
                .is_empty()
        );
        // The ready slice goes away: not ready any more.
        let keys = idx.delete_slice(&mk_slice("ns", "emoji-abc", "emoji", &[]));
        assert_eq!(keys, vec![a, c]);
        assert!(!idx.is_ready(&svc("ns", "emoji")));
        let _ = b;
    }

    #[test]
    fn terminating_and_unready_endpoints_do_not_count() {
        let mut idx = Index::new("cluster.local");
        let mut s = mk_endpoint_slice("ns", "s", "emoji", &[Some(true)]);
        s.endpoints[0].conditions.as_mut().unwrap().terminating = Some(true);
        idx.apply_slice(&Slice::fold(s));
        assert!(!idx.is_ready(&svc("ns", "emoji")));
        idx.apply_slice(&mk_slice("ns", "s", "emoji", &[None]));
        assert!(
            idx.is_ready(&svc("ns", "emoji")),
            "unset ready counts as ready"
        );
        idx.apply_slice(&mk_slice("ns", "s", "emoji", &[Some(false), Some(false)]));
        assert!(!idx.is_ready(&svc("ns", "emoji")));
    }

    #[test]
    fn replacing_a_split_moves_its_backends() {
        let mut idx = Index::new("cluster.local");
        let a = idx.apply_split(mk_split("ns", "a", &["old"]));
        idx.apply_split(mk_split("ns", "a", &["new"]));
        assert!(
            idx.apply_slice(&mk_slice("ns", "s1", "old", &[Some(true)]))
                .is_empty()
        );
        assert_eq!(
            idx.apply_slice(&mk_slice("ns", "s2", "new", &[Some(true)])),
            vec![a.clone()]
        );
        idx.delete_split(&a);
        assert!(
            idx.delete_slice(&mk_slice("ns", "s2", "new", &[]))
                .is_empty()
        );
        assert!(idx.is_empty());
    }

    #[test]
    fn a_relist_reports_what_changed_while_the_watch_was_down() {
        let mut idx = Index::new("cluster.local");
        let a = idx.apply_split(mk_split("ns", "a", &["emoji", "emoji-west"]));
        let b = idx.apply_split(mk_split("ns", "b", &["web"]));
        idx.apply_slice(&mk_slice("ns", "e", "emoji", &[Some(true)]));
        idx.apply_slice(&mk_slice("ns", "w", "web", &[Some(true)]));
        // Meanwhile emoji went down, web stayed up, emoji-west came up.
        let keys = idx.reset_slices(&[
            mk_slice("ns", "w", "web", &[Some(true)]),
            mk_slice("ns", "ew", "emoji-west", &[Some(true)]),
        ]);
        assert_eq!(keys, vec![a.clone()]);
        assert!(!idx.is_ready(&svc("ns", "emoji")));
        assert!(idx.is_ready(&svc("ns", "emoji-west")));
        let all = idx.reset_splits(Kind::TrafficSplit, vec![mk_split("ns", "b", &["web"])]);
        assert_eq!(
            all,
            Relisted {
                listed: vec![b],
                removed: vec![a]
            }
        );
        assert_eq!(idx.len(), 1);
    }

    /// What the writer remembers of a split stays while the split does (an
    /// update, a relist that still lists it) and goes with it (a delete, a
    /// relist without it), so that nothing grows with deleted splits.
    #[test]
    fn per_split_state_goes_with_the_split() {
        let remembered = SplitState {
            memory: vec![Memory {
                primary_ready_since: Some(std::time::Duration::from_secs(3)),
            }],
            reported_invalid: Some("7".into()),
        };
        let mut idx = Index::new("cluster.local");
        let a = idx.apply_split(mk_split("ns", "a", &["p", "f"]));
        let b = idx.apply_split(mk_split("ns", "b", &["p", "f"]));
        for k in [&a, &b] {
            *idx.state_mut(k).unwrap() = remembered.clone();
        }

        idx.apply_split(mk_split("ns", "a", &["p", "f", "g"]));
        assert_eq!(idx.state(&a), Some(&remembered), "kept across an update");
        let relisted = idx.reset_splits(Kind::TrafficSplit, vec![mk_split("ns", "a", &["p", "f"])]);
        assert_eq!(relisted.removed, vec![b.clone()]);
        assert_eq!(idx.state(&a), Some(&remembered), "kept across a relist");
        assert_eq!(idx.state(&b), None, "gone with a relist that lacks it");

        idx.delete_split(&a);
        assert_eq!(idx.state(&a), None, "gone with the split");
        // Back again: a fresh start, nothing stale.
        idx.apply_split(mk_split("ns", "a", &["p", "f"]));
        assert_eq!(idx.state(&a), Some(&SplitState::default()));
        assert!(idx.state_mut(&b).is_none());
    }

    #[test]
    fn slices_without_a_service_label_are_ignored() {
        let mut idx = Index::new("cluster.local");
        let mut s = mk_endpoint_slice("ns", "s", "emoji", &[Some(true)]);
        s.metadata.labels = None;
        let s = Slice::fold(s);
        assert_eq!(s.service, None);
        assert!(idx.apply_slice(&s).is_empty());
        assert!(!idx.is_ready(&svc("ns", "emoji")));
    }
}

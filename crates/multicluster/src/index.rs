//! What the watches saw: the remote Services that match the Link's selector,
//! the readiness of every remote Service from its EndpointSlices, and this
//! Link's mirrors in the local cluster. Synchronous, no client: each change
//! returns the remote Services it concerns, so that one remote EndpointSlice
//! event touches only the mirror of its Service.
//!
//! Remote slices are never kept: each is folded as it arrives into a
//! [`SliceReadiness`] (its Service, and whether it has a ready endpoint),
//! and the index keeps, per remote Service, the names of its slices that
//! have one.

use std::collections::{BTreeSet, HashMap};
use tandem_api::endpoints::ready_endpoints;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use tandem_api::multicluster::CLUSTER_NAME_LABEL;

use crate::mirror::SERVICE_NAME_LABEL;

/// A Service by namespace and name: a remote Service, or a local mirror.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object, if it has a namespace and a name.
    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Self> {
        Some(Self::new(meta.namespace.clone()?, meta.name.clone()?))
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Default)]
pub struct Index {
    /// Remote Services that match the selector.
    services: HashMap<Key, Service>,
    /// A full list of the remote Services was seen since the remote watch
    /// last (re)started: only then is a Service's absence a deletion.
    services_authoritative: bool,
    services_listed: bool,
    /// The slices of each remote Service that have a ready endpoint, by
    /// name (a Service with none has no entry).
    ready: HashMap<Key, BTreeSet<String>>,
    slices_listed: bool,
    /// This Link's mirrors in the local cluster, by their own key.
    mirrors: HashMap<Key, Service>,
    /// The local mirrors of each remote Service (one, unless the cluster
    /// name changed).
    mirrors_by_remote: HashMap<Key, BTreeSet<Key>>,
    mirrors_listed: bool,
    /// The uid of each of this Link's mirror slices, by their own key.
    mirror_slices: HashMap<Key, String>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// The remote watches restart (new credentials, a new selector): what
    /// they saw stays, but a Service's absence proves nothing until they
    /// list again.
    pub fn new_session(&mut self) {
        self.services_authoritative = false;
    }

    /// Every remote and local list has been seen once: mirrors can be written.
    pub fn synced(&self) -> bool {
        self.services_listed && self.slices_listed && self.mirrors_listed
    }

    /// A missing remote Service is known to be gone, not merely unseen.
    pub fn authoritative(&self) -> bool {
        self.synced() && self.services_authoritative
    }

    pub fn service(&self, key: &Key) -> Option<&Service> {
        self.services.get(key)
    }

    /// The remote Services, in no order.
    pub fn services(&self) -> impl Iterator<Item = &Key> {
        self.services.keys()
    }

    /// The remote Services, sorted.
    pub fn service_keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.services.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// A remote Service is ready when one of its endpoints is ready and not
    /// terminating.
    pub fn is_ready(&self, key: &Key) -> bool {
        self.ready.get(key).is_some_and(|s| !s.is_empty())
    }

    pub fn mirror(&self, key: &Key) -> Option<&Service> {
        self.mirrors.get(key)
    }

    /// The local mirrors, sorted.
    pub fn mirror_keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.mirrors.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The local mirrors made from a remote Service.
    pub fn mirrors_of(&self, remote: &Key) -> Vec<Key> {
        self.mirrors_by_remote
            .get(remote)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every remote Service the state concerns: the exported ones and those
    /// the local mirrors were made from.
    pub fn all_keys(&self) -> Vec<Key> {
        let mut keys: BTreeSet<Key> = self.services.keys().cloned().collect();
        keys.extend(self.mirrors_by_remote.keys().cloned());
        keys.into_iter().collect()
    }

    /// The remote Services the local mirrors were made from.
    pub fn mirrored_remotes(&self) -> Vec<Key> {
        self.mirrors_by_remote.keys().cloned().collect()
    }

    // === remote services ===

    pub fn apply_service(&mut self, svc: Service) -> Option<Key> {
        let key = Key::of(&svc.metadata)?;
        self.services.insert(key.clone(), svc);
        Some(key)
    }

    pub fn delete_service(&mut self, svc: &Service) -> Option<Key> {
        let key = Key::of(&svc.metadata)?;
        self.services.remove(&key);
        Some(key)
    }

    /// Replaces every remote Service after a full list; returns those that
    /// were or are there.
    pub fn reset_services(&mut self, services: Vec<Service>) -> Vec<Key> {
        let mut keys: BTreeSet<Key> = self.services.keys().cloned().collect();
        self.services.clear();
        for svc in services {
            if let Some(k) = self.apply_service(svc) {
                keys.insert(k);
            }
        }
        self.services_listed = true;
        self.services_authoritative = true;
        keys.into_iter().collect()
    }

    // === remote endpoint slices ===

    /// Records a slice; returns its Service if that changed readiness.
    pub fn apply_slice(&mut self, slice: &SliceReadiness) -> Vec<Key> {
        let before = self.is_ready(&slice.service);
        if slice.ready {
            self.ready
                .entry(slice.service.clone())
                .or_default()
                .insert(slice.name.clone());
        } else {
            self.forget_slice(slice);
        }
        self.changed(&slice.service, before)
    }

    pub fn delete_slice(&mut self, slice: &SliceReadiness) -> Vec<Key> {
        let before = self.is_ready(&slice.service);
        self.forget_slice(slice);
        self.changed(&slice.service, before)
    }

    /// Replaces every slice after a full list; returns the Services whose
    /// readiness changed meanwhile.
    pub fn reset_slices(&mut self, slices: &[SliceReadiness]) -> Vec<Key> {
        let before = std::mem::take(&mut self.ready);
        for slice in slices.iter().filter(|s| s.ready) {
            self.ready
                .entry(slice.service.clone())
                .or_default()
                .insert(slice.name.clone());
        }
        self.slices_listed = true;
        let mut services: BTreeSet<&Key> = before.keys().collect();
        services.extend(self.ready.keys());
        services
            .into_iter()
            .filter(|s| before.contains_key(*s) != self.is_ready(s))
            .cloned()
            .collect()
    }

    fn forget_slice(&mut self, slice: &SliceReadiness) {
        if let Some(names) = self.ready.get_mut(&slice.service) {
            names.remove(&slice.name);
            if names.is_empty() {
                self.ready.remove(&slice.service);
            }
        }
    }

    fn changed(&self, svc: &Key, before: bool) -> Vec<Key> {
        if before == self.is_ready(svc) {
            vec![]
        } else {
            vec![svc.clone()]
        }
    }

    // === local mirrors ===

    /// Records a local mirror; returns the remote Service it mirrors.
    pub fn apply_mirror(&mut self, svc: Service) -> Option<Key> {
        let key = Key::of(&svc.metadata)?;
        self.unlink_mirror(&key);
        let remote = remote_of_mirror(&svc);
        if let Some(r) = &remote {
            self.mirrors_by_remote
                .entry(r.clone())
                .or_default()
                .insert(key.clone());
        }
        self.mirrors.insert(key, svc);
        remote
    }

    pub fn delete_mirror(&mut self, svc: &Service) -> Option<Key> {
        let key = Key::of(&svc.metadata)?;
        self.unlink_mirror(&key);
        self.mirrors.remove(&key);
        remote_of_mirror(svc)
    }

    fn unlink_mirror(&mut self, key: &Key) {
        let Some(remote) = self.mirrors.get(key).and_then(remote_of_mirror) else {
            return;
        };
        if let Some(set) = self.mirrors_by_remote.get_mut(&remote) {
            set.remove(key);
            if set.is_empty() {
                self.mirrors_by_remote.remove(&remote);
            }
        }
    }

    // === local mirror slices ===

    /// The uid of a mirror slice, if it is there.
    pub fn mirror_slice_uid(&self, key: &Key) -> Option<&str> {
        self.mirror_slices.get(key).map(String::as_str)
    }

    pub fn apply_mirror_slice(&mut self, slice: &EndpointSlice) {
        if let (Some(key), Some(uid)) = (Key::of(&slice.metadata), slice.metadata.uid.clone()) {
            self.mirror_slices.insert(key, uid);
        }
    }

    pub fn delete_mirror_slice(&mut self, slice: &EndpointSlice) {
        if let Some(key) = Key::of(&slice.metadata) {
            self.mirror_slices.remove(&key);
        }
    }

    pub fn reset_mirror_slices(&mut self, slices: &[EndpointSlice]) {
        self.mirror_slices.clear();
        for s in slices {
            self.apply_mirror_slice(s);
        }
    }

    /// Replaces every local mirror after a full list; returns the remote
    /// Services of those that were or are there.
    pub fn reset_mirrors(&mut self, mirrors: Vec<Service>) -> Vec<Key> {
        let mut keys: BTreeSet<Key> = self.mirrors_by_remote.keys().cloned().collect();
        self.mirrors.clear();
        self.mirrors_by_remote.clear();
        for svc in mirrors {
            if let Some(k) = self.apply_mirror(svc) {
                keys.insert(k);
            }
        }
        self.mirrors_listed = true;
        keys.into_iter().collect()
    }
}

/// The remote Service a local mirror was made from: its name less the
/// `-<cluster>` of its cluster-name label.
pub fn remote_of_mirror(svc: &Service) -> Option<Key> {
    let key = Key::of(&svc.metadata)?;
    let cluster = svc.metadata.labels.as_ref()?.get(CLUSTER_NAME_LABEL)?;
    let name = key.name.strip_suffix(cluster.as_str())?.strip_suffix('-')?;
    (!name.is_empty()).then(|| Key::new(key.namespace, name))
}

/// What the index keeps of a remote EndpointSlice: its Service (from the
/// service-name label) and whether it has a ready endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceReadiness {
    pub service: Key,
    /// The slice's name (in the Service's namespace).
    pub name: String,
    pub ready: bool,
}

impl SliceReadiness {
    /// Folds a remote slice; `None` for one of no Service.
    pub fn of(slice: &EndpointSlice) -> Option<Self> {
        let id = Key::of(&slice.metadata)?;
        let svc = slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)?
            .clone();
        Some(Self {
            service: Key::new(id.namespace, svc),
            name: id.name,
            ready: ready_endpoints(slice) > 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    fn mk_svc(ns: &str, name: &str) -> Service {
        let mut s = Service::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s
    }

    fn mk_mirror(ns: &str, name: &str, cluster: &str) -> Service {
        let mut s = mk_svc(ns, name);
        s.metadata.labels = Some([(CLUSTER_NAME_LABEL.to_string(), cluster.to_string())].into());
        s
    }

    fn mk_slice(ns: &str, name: &str, svc: &str, ready: &[(Option<bool>, bool)]) -> EndpointSlice {
        let mut s = EndpointSlice::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s.metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into());
        s.address_type = "IPv4".into();
        s.endpoints = ready
            .iter()
            .map(|(r, terminating)| Endpoint {
                addresses: vec!["127.11.0.1".into()],
                conditions: Some(EndpointConditions {
                    ready: *r,
                    terminating: Some(*terminating),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        s
    }

    fn folded(ns: &str, name: &str, svc: &str, ready: &[(Option<bool>, bool)]) -> SliceReadiness {
        SliceReadiness::of(&mk_slice(ns, name, svc, ready)).unwrap()
    }

    fn key(ns: &str, name: &str) -> Key {
        Key::new(ns, name)
    }

    #[test]
    fn readiness_counts_ready_and_not_terminating_endpoints() {
        // (endpoints as (ready, terminating), the Service is ready)
        type Case<'a> = (&'a [(Option<bool>, bool)], bool);
        let cases: &[Case<'_>] = &[
            (&[], false),
            (&[(Some(true), false)], true),
            (&[(None, false)], true),
            (&[(Some(false), false)], false),
            (&[(Some(true), true)], false),
            (&[(Some(false), false), (Some(true), false)], true),
        ];
        for (endpoints, ready) in cases {
            let mut idx = Index::new();
            idx.apply_slice(&folded("ns", "s", "emoji", endpoints));
            assert_eq!(idx.is_ready(&key("ns", "emoji")), *ready, "{endpoints:?}");
        }
    }

    #[test]
    fn a_slice_event_reports_only_a_readiness_change() {
        let mut idx = Index::new();
        let up = [(Some(true), false)];
        let down = [(Some(false), false)];
        assert_eq!(
            idx.apply_slice(&folded("ns", "a", "emoji", &up)),
            vec![key("ns", "emoji")]
        );
        // Still ready: nothing to write.
        assert!(
            idx.apply_slice(&folded("ns", "a", "emoji", &[up[0], up[0]]))
                .is_empty()
        );
        assert!(
            idx.apply_slice(&folded("ns", "b", "emoji", &down))
                .is_empty()
        );
        assert!(idx.apply_slice(&folded("ns", "c", "web", &down)).is_empty());
        assert_eq!(
            idx.delete_slice(&folded("ns", "a", "emoji", &[])),
            vec![key("ns", "emoji")]
        );
        assert!(!idx.is_ready(&key("ns", "emoji")));
    }

    #[test]
    fn slices_are_folded_and_only_ready_ones_named() {
        let up = [(Some(true), false)];
        let down = [(Some(false), false)];
        let mut no_service = mk_slice("ns", "x", "emoji", &up);
        no_service.metadata.labels = None;
        assert_eq!(SliceReadiness::of(&no_service), None);
        assert_eq!(
            SliceReadiness::of(&mk_slice("ns", "a", "emoji", &down)),
            Some(SliceReadiness {
                service: key("ns", "emoji"),
                name: "a".into(),
                ready: false,
            })
        );
        let mut idx = Index::new();
        for i in 0..1000 {
            idx.apply_slice(&folded("ns", &format!("s{i}"), &format!("svc{i}"), &down));
        }
        assert!(
            idx.ready.is_empty(),
            "slices with no ready endpoint leave nothing"
        );
        // Two ready slices: the Service stays ready until both went.
        idx.apply_slice(&folded("ns", "a", "emoji", &up));
        idx.apply_slice(&folded("ns", "b", "emoji", &up));
        assert!(
            idx.apply_slice(&folded("ns", "a", "emoji", &down))
                .is_empty()
        );
        assert!(idx.is_ready(&key("ns", "emoji")));
        assert_eq!(
            idx.delete_slice(&folded("ns", "b", "emoji", &up)),
            vec![key("ns", "emoji")]
        );
        assert!(
            idx.ready.is_empty(),
            "nothing is left of a Service's slices"
        );
    }

    #[test]
    fn a_relist_reports_what_changed_while_the_watch_was_down() {
        let mut idx = Index::new();
        let up = [(Some(true), false)];
        idx.apply_slice(&folded("ns", "e", "emoji", &up));
        idx.apply_slice(&folded("ns", "w", "web", &up));
        let changed = idx.reset_slices(&[
            folded("ns", "w", "web", &up),
            folded("ns", "v", "voting", &up),
        ]);
        assert_eq!(changed, vec![key("ns", "emoji"), key("ns", "voting")]);
    }

    #[test]
    fn only_a_full_list_in_the_current_session_is_authoritative() {
        let mut idx = Index::new();
        idx.apply_service(mk_svc("ns", "emoji"));
        assert!(!idx.synced() && !idx.authoritative());
        idx.reset_slices(&[]);
        idx.reset_mirrors(vec![]);
        assert!(!idx.synced(), "the services were never listed");
        let keys = idx.reset_services(vec![mk_svc("ns", "web")]);
        assert_eq!(keys, vec![key("ns", "emoji"), key("ns", "web")]);
        assert!(idx.synced() && idx.authoritative());
        assert!(idx.service(&key("ns", "emoji")).is_none());
        // New credentials: what was seen stays, but proves nothing yet.
        idx.new_session();
        assert!(idx.synced() && !idx.authoritative());
        assert!(idx.service(&key("ns", "web")).is_some());
        idx.reset_services(vec![]);
        assert!(idx.authoritative());
        assert!(idx.service_keys().is_empty());
    }

    #[test]
    fn mirrors_map_back_to_their_remote_service() {
        let cases = [
            (
                mk_mirror("ns", "emoji-west", "west"),
                Some(key("ns", "emoji")),
            ),
            (mk_mirror("ns", "a-b-west", "west"), Some(key("ns", "a-b"))),
            (mk_mirror("ns", "emoji-east", "west"), None),
            (mk_mirror("ns", "west", "west"), None),
            (mk_mirror("ns", "-west", "west"), None),
            (mk_svc("ns", "emoji-west"), None),
        ];
        for (svc, remote) in cases {
            assert_eq!(remote_of_mirror(&svc), remote, "{:?}", svc.metadata.name);
        }
        let mut idx = Index::new();
        idx.apply_service(mk_svc("ns", "web"));
        let keys = idx.reset_mirrors(vec![mk_mirror("ns", "emoji-west", "west")]);
        assert_eq!(keys, vec![key("ns", "emoji")]);
        assert_eq!(idx.all_keys(), vec![key("ns", "emoji"), key("ns", "web")]);
        // The cluster name changed: two mirrors of one remote Service.
        idx.apply_mirror(mk_mirror("ns", "emoji-west2", "west2"));
        assert_eq!(
            idx.mirrors_of(&key("ns", "emoji")),
            vec![key("ns", "emoji-west"), key("ns", "emoji-west2")]
        );
        assert_eq!(
            idx.delete_mirror(&mk_mirror("ns", "emoji-west", "west")),
            Some(key("ns", "emoji"))
        );
        assert_eq!(
            idx.mirrors_of(&key("ns", "emoji")),
            vec![key("ns", "emoji-west2")]
        );
        idx.reset_mirrors(vec![]);
        assert!(idx.mirror_keys().is_empty());
        let mut slice = mk_slice("ns", "emoji-west-gateway", "emoji-west", &[]);
        slice.metadata.uid = Some("u-7".into());
        idx.apply_mirror_slice(&slice);
        assert_eq!(
            idx.mirror_slice_uid(&key("ns", "emoji-west-gateway")),
            Some("u-7")
        );
        idx.reset_mirror_slices(&[]);
        assert_eq!(idx.mirror_slice_uid(&key("ns", "emoji-west-gateway")), None);
        assert!(idx.mirrors_of(&key("ns", "emoji")).is_empty());
        assert!(idx.all_keys().contains(&key("ns", "web")));
    }
}

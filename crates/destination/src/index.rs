//! The synchronous index: Services, EndpointSlices, Pods and splits in, one
//! `tokio::sync::watch` channel per subscription out. No client and no
//! `.await`: the watches call [`Index::apply`], and every subscription
//! whose answer the change may touch is recomputed and, if it changed, sent
//! at once (no polling). The decisions themselves are in [`crate::decide`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use tokio::sync::watch;

use crate::{
    decide::{self, choose_split, fqdn, mirror_addr, overrides, plain_addr, pod_addr},
    objects::{PodInfo, ServiceInfo, SliceInfo, SplitInfo, SplitKind, SvcKey, in_ranges},
    store::Store,
};

/// Every endpoint weighs the same, as Linkerd sends them.
pub const DEFAULT_WEIGHT: u32 = 10_000;

/// What the index is told by a watch.
#[derive(Clone, Debug)]
pub enum Change {
    Services(Event<ServiceInfo>),
    Slices(Event<SliceInfo>),
    Pods(Event<PodInfo>),
    Splits(SplitKind, Event<SplitInfo>),
}

#[derive(Clone, Debug)]
pub enum Event<T> {
    /// Everything there is now.
    Reset(Vec<T>),
    Apply(T),
    Delete(T),
}

/// The endpoints of a Service port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Whether the Service exists.
    pub exists: bool,
    pub addrs: BTreeMap<SocketAddr, Addr>,
    /// The set's labels: `service`, `namespace`.
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
    pub identity: Option<String>,
    /// The peer speaks HTTP/2 to its proxy (meshed, or a gateway).
    pub h2: bool,
    /// An opaque port of a meshed pod: send to its proxy's inbound port,
    /// with a transport header.
    pub opaque_transport: Option<u16>,
    pub authority_override: Option<String>,
}

/// A service profile: the name and the traffic split of a destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Empty when the destination is no Service.
    pub fqn: String,
    pub overrides: Vec<Override>,
    /// The port is opaque: no protocol detection.
    pub opaque: bool,
    /// Set when the destination is an IP of no Service: connect to it directly.
    pub endpoint: Option<(SocketAddr, Addr)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub authority: String,
    pub weight: u32,
}

/// What GetProfile asks about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProfileTarget {
    Service(SvcKey, u16),
    /// An original destination; the Service whose ClusterIP it is, if any.
    Ip(IpAddr, u16),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub cluster_domain: String,
    pub control_plane_ns: String,
    pub trust_domain: String,
}

type ObjKey = (String, String);
type SplitKey = (SplitKind, String, String);

/// Which subscriptions a change may touch. ClusterIP profiles are always
/// recomputed (they follow Services, pods and splits alike; lookups by IP
/// are map reads).
enum Scope {
    All,
    /// The endpoints of these Services.
    Endpoints(Vec<SvcKey>),
    /// The endpoints of every Service in a namespace (a pod changed).
    Namespace(String),
    /// The profiles of these apexes.
    Profiles(Vec<SvcKey>),
}

#[derive(Debug)]
pub struct Index {
    config: Config,
    /// By ClusterIP.
    services: Store<SvcKey, ServiceInfo, IpAddr>,
    /// By Service.
    slices: Store<ObjKey, SliceInfo, SvcKey>,
    /// By pod IP.
    pods: Store<ObjKey, PodInfo, IpAddr>,
    /// By apex.
    splits: Store<SplitKey, SplitInfo, SvcKey>,
    endpoint_subs: HashMap<(SvcKey, u16), watch::Sender<Endpoints>>,
    profile_subs: HashMap<ProfileTarget, watch::Sender<Profile>>,
    /// Apexes with more than one split, already logged.
    contested: HashSet<SvcKey>,
}

// === impl Index ===

impl Index {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            services: Store::new(|s| s.key.clone(), |s| s.cluster_ips.clone()),
            slices: Store::new(
                |s| (s.namespace.clone(), s.name.clone()),
                |s| {
                    let svc = s.service.as_ref().map(|n| SvcKey::new(&s.namespace, n));
                    svc.into_iter().collect()
                },
            ),
            pods: Store::new(|p| (p.namespace.clone(), p.name.clone()), |p| p.ips.clone()),
            splits: Store::new(
                |s| (s.kind, s.namespace.clone(), s.name.clone()),
                |s| s.apex.clone().into_iter().collect(),
            ),
            endpoint_subs: HashMap::new(),
            profile_subs: HashMap::new(),
            contested: HashSet::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies a change and publishes to the subscriptions it may touch.
    pub fn apply(&mut self, change: Change) {
        let scope = match change {
            Change::Services(e) => match e {
                Event::Reset(all) => reset(&mut self.services, all),
                Event::Apply(s) => Scope::Endpoints(keys(self.services.apply(s.clone()), s, |s| {
                    Some(s.key.clone())
                })),
                Event::Delete(s) => {
                    Scope::Endpoints(keys(self.services.delete(&s.key.clone()), s, |s| {
                        Some(s.key.clone())
                    }))
                }
            },
            Change::Slices(e) => {
                let svc = |s: &SliceInfo| s.service.as_ref().map(|n| SvcKey::new(&s.namespace, n));
                match e {
                    Event::Reset(all) => reset(&mut self.slices, all),
                    Event::Apply(s) => Scope::Endpoints(keys(self.slices.apply(s.clone()), s, svc)),
                    Event::Delete(s) => {
                        let old = self.slices.delete(&self.slices.key_of(&s));
                        Scope::Endpoints(keys(old, s, svc))
                    }
                }
            }
            Change::Pods(e) => match e {
                Event::Reset(all) => reset(&mut self.pods, all),
                Event::Apply(p) => {
                    let ns = p.namespace.clone();
                    self.pods.apply(p);
                    Scope::Namespace(ns)
                }
                Event::Delete(p) => {
                    self.pods.delete(&self.pods.key_of(&p));
                    Scope::Namespace(p.namespace)
                }
            },
            Change::Splits(kind, e) => match e {
                Event::Reset(all) => {
                    // One kind is reset: the other's splits stay.
                    let keep: Vec<SplitInfo> = self
                        .splits
                        .values()
                        .filter(|s| s.kind != kind)
                        .cloned()
                        .collect();
                    all.iter().for_each(decide::report);
                    self.splits.reset(keep.into_iter().chain(all).collect());
                    Scope::All
                }
                Event::Apply(s) => {
                    decide::report(&s);
                    Scope::Profiles(keys(self.splits.apply(s.clone()), s, |s| s.apex.clone()))
                }
                Event::Delete(s) => {
                    let old = self.splits.delete(&self.splits.key_of(&s));
                    Scope::Profiles(keys(old, s, |s| s.apex.clone()))
                }
            },
        };
        self.publish(&scope);
    }

    /// A receiver of the endpoints of `svc`'s `port`, holding the current answer.
    pub fn endpoints_rx(&mut self, svc: SvcKey, port: u16) -> watch::Receiver<Endpoints> {
        if let Some(tx) = self.endpoint_subs.get(&(svc.clone(), port)) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(self.endpoints(&svc, port));
        self.endpoint_subs.insert((svc, port), tx);
        rx
    }

    /// A receiver of the profile of `target`, holding the current answer.
    pub fn profile_rx(&mut self, target: ProfileTarget) -> watch::Receiver<Profile> {
        if let Some(tx) = self.profile_subs.get(&target) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(self.profile(&target));
        self.profile_subs.insert(target, tx);
        rx
    }

    /// Recomputes the subscriptions in `scope`, sends those that changed,
    /// and drops those nobody reads.
    fn publish(&mut self, scope: &Scope) {
        self.endpoint_subs.retain(|_, tx| !tx.is_closed());
        self.profile_subs.retain(|_, tx| !tx.is_closed());
        for ((svc, port), tx) in &self.endpoint_subs {
            let touched = match scope {
                Scope::All => true,
                Scope::Endpoints(keys) => keys.contains(svc),
                Scope::Namespace(ns) => *ns == svc.namespace,
                Scope::Profiles(_) => false,
            };
            if touched {
                let new = self.endpoints(svc, *port);
                tx.send_if_modified(|cur| replace_if_changed(cur, new));
            }
        }
        for (target, tx) in &self.profile_subs {
            let touched = match (target, scope) {
                (ProfileTarget::Ip(..), _) | (_, Scope::All) => true,
                (ProfileTarget::Service(svc, _), Scope::Profiles(apexes)) => apexes.contains(svc),
                (ProfileTarget::Service(..), _) => false,
            };
            if touched {
                let new = self.profile(target);
                tx.send_if_modified(|cur| replace_if_changed(cur, new));
            }
        }
        match scope {
            Scope::All => {
                let apexes: HashSet<SvcKey> = self
                    .splits
                    .values()
                    .filter_map(|s| s.apex.clone())
                    .collect();
                self.contested.retain(|a| apexes.contains(a));
                apexes.iter().for_each(|a| self.log_contested(a));
            }
            Scope::Profiles(apexes) => apexes.iter().for_each(|a| self.log_contested(a)),
            _ => {}
        }
    }

    /// The number of live subscriptions: (endpoints, profiles).
    pub fn subscriptions(&self) -> (usize, usize) {
        (self.endpoint_subs.len(), self.profile_subs.len())
    }

    // === answers ===

    /// The ready endpoints of `svc`'s `port`, as Linkerd sends them.
    pub fn endpoints(&self, svc: &SvcKey, port: u16) -> Endpoints {
        let Some(service) = self.services.get(svc) else {
            return Endpoints::default();
        };
        let labels = BTreeMap::from([
            ("namespace".to_string(), svc.namespace.clone()),
            ("service".to_string(), svc.name.clone()),
        ]);
        let mut addrs = BTreeMap::new();
        let Some(svc_port) = service.ports.iter().find(|p| p.port == port) else {
            return Endpoints {
                exists: true,
                addrs,
                labels,
            };
        };
        for slice in self.slices.by(svc) {
            let Some(target) = slice.ports.iter().find(|p| p.name == svc_port.name) else {
                continue;
            };
            for ep in &slice.endpoints {
                let pod = ep
                    .pod
                    .as_ref()
                    .and_then(|p| self.pods.get(&(svc.namespace.clone(), p.clone())));
                let addr = match (pod, &service.mirror) {
                    (Some(pod), _) => pod_addr(&self.config, pod, target.port),
                    (None, Some(mirror)) => {
                        let id = slice
                            .gateway_identity
                            .as_ref()
                            .or(mirror.gateway_identity.as_ref());
                        mirror_addr(mirror, id, port)
                    }
                    (None, None) => plain_addr(),
                };
                for ip in &ep.addresses {
                    addrs.insert(SocketAddr::new(*ip, target.port), addr.clone());
                }
            }
        }
        Endpoints {
            exists: true,
            addrs,
            labels,
        }
    }

    /// The profile of `target`: the Service's name and the overrides of its
    /// split; for an IP of no Service, that IP as a direct endpoint.
    pub fn profile(&self, target: &ProfileTarget) -> Profile {
        match target {
            ProfileTarget::Service(svc, port) => self.service_profile(svc, *port),
            ProfileTarget::Ip(ip, port) => {
                if let Some(s) = self.services.by(ip).next() {
                    return self.service_profile(&s.key, *port);
                }
                let pod = self.pods.by(ip).next();
                let addr = pod
                    .map(|p| pod_addr(&self.config, p, *port))
                    .unwrap_or_else(plain_addr);
                Profile {
                    fqn: String::new(),
                    overrides: vec![],
                    opaque: pod.is_some_and(|p| in_ranges(&p.opaque_ports, *port)),
                    endpoint: Some((SocketAddr::new(*ip, *port), addr)),
                }
            }
        }
    }

    fn service_profile(&self, svc: &SvcKey, port: u16) -> Profile {
        let domain = &self.config.cluster_domain;
        let usable = self
            .splits
            .by(svc)
            .filter(|s| s.port.is_none_or(|p| p == port) && s.backends.is_ok());
        let opaque = self
            .services
            .get(svc)
            .is_some_and(|s| in_ranges(&s.opaque_ports, port));
        Profile {
            fqn: fqdn(svc, domain),
            opaque,
            overrides: choose_split(usable)
                .map(|s| overrides(s, port, domain))
                .unwrap_or_default(),
            endpoint: None,
        }
    }

    /// Logs once an apex that more than one readable split names.
    fn log_contested(&mut self, apex: &SvcKey) {
        let readable: Vec<&SplitInfo> = self
            .splits
            .by(apex)
            .filter(|s| s.backends.is_ok())
            .collect();
        if readable.len() < 2 {
            self.contested.remove(apex);
            return;
        }
        if self.contested.insert(apex.clone()) {
            let chosen = choose_split(readable.iter().copied())
                .map(|s| s.name.clone())
                .unwrap_or_default();
            tracing::warn!(apex = %apex, splits = readable.len(), %chosen, "several splits name one apex; the oldest is used");
        }
    }
}

fn replace_if_changed<T: PartialEq>(cur: &mut T, new: T) -> bool {
    if *cur == new {
        return false;
    }
    *cur = new;
    true
}

fn reset<K, T, S>(store: &mut Store<K, T, S>, all: Vec<T>) -> Scope
where
    K: Clone + Eq + std::hash::Hash + Ord,
    S: Eq + std::hash::Hash,
{
    store.reset(all);
    Scope::All
}

/// The keys an object had before and has now (a slice may move between
/// Services, a split between apexes).
fn keys<T>(old: Option<T>, new: T, key: impl Fn(&T) -> Option<SvcKey>) -> Vec<SvcKey> {
    let mut out: Vec<SvcKey> = old.iter().chain([&new]).filter_map(&key).collect();
    out.dedup();
    out
}

//! The synchronous index: Services, EndpointSlices, Pods and splits in, one
//! `tokio::sync::watch` channel per subscription out. No client and no
//! `.await`: the watches call [`Index::apply`], and every subscription
//! whose answer changed gets the new one at once (no polling).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use tandem_meshtls::Name;
use tokio::sync::watch;

use crate::objects::{PodInfo, ServiceInfo, SliceInfo, SplitInfo, SplitKind, SvcKey};

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
    pub authority_override: Option<String>,
}

/// A service profile: the name and the traffic split of a destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Empty when the destination is no Service.
    pub fqn: String,
    pub overrides: Vec<Override>,
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

type SplitKey = (SplitKind, String, String);

#[derive(Debug)]
pub struct Index {
    config: Config,
    services: HashMap<SvcKey, ServiceInfo>,
    slices: HashMap<(String, String), SliceInfo>,
    pods: HashMap<(String, String), PodInfo>,
    splits: HashMap<SplitKey, SplitInfo>,
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
            services: HashMap::new(),
            slices: HashMap::new(),
            pods: HashMap::new(),
            splits: HashMap::new(),
            endpoint_subs: HashMap::new(),
            profile_subs: HashMap::new(),
            contested: HashSet::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies a change and publishes to the subscriptions it touches: those
    /// in the changed object's namespace (all of them after a reset).
    pub fn apply(&mut self, change: Change) {
        let ns = match change {
            Change::Services(e) => reset_or(
                e,
                &mut self.services,
                |s| s.key.clone(),
                |s| &s.key.namespace,
            ),
            Change::Slices(e) => reset_or(
                e,
                &mut self.slices,
                |s| (s.namespace.clone(), s.name.clone()),
                |s| &s.namespace,
            ),
            Change::Pods(e) => reset_or(
                e,
                &mut self.pods,
                |p| (p.namespace.clone(), p.name.clone()),
                |p| &p.namespace,
            ),
            Change::Splits(kind, e) => {
                if let Event::Apply(s) = &e {
                    report(s);
                }
                match e {
                    Event::Reset(all) => {
                        self.splits.retain(|k, _| k.0 != kind);
                        for s in all {
                            report(&s);
                            self.splits
                                .insert((s.kind, s.namespace.clone(), s.name.clone()), s);
                        }
                        None
                    }
                    Event::Apply(s) => {
                        let ns = s.namespace.clone();
                        self.splits.insert((s.kind, ns.clone(), s.name.clone()), s);
                        Some(ns)
                    }
                    Event::Delete(s) => {
                        self.splits
                            .remove(&(s.kind, s.namespace.clone(), s.name.clone()));
                        Some(s.namespace)
                    }
                }
            }
        };
        self.publish(ns.as_deref());
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

    /// Recomputes the subscriptions in `ns` (all when `None`; ClusterIP ones
    /// always), sends those that changed, and drops those nobody reads.
    fn publish(&mut self, ns: Option<&str>) {
        self.endpoint_subs.retain(|_, tx| !tx.is_closed());
        self.profile_subs.retain(|_, tx| !tx.is_closed());
        for ((svc, port), tx) in &self.endpoint_subs {
            if ns.is_none_or(|ns| ns == svc.namespace) {
                let new = self.endpoints(svc, *port);
                tx.send_if_modified(|cur| replace_if_changed(cur, new));
            }
        }
        for (target, tx) in &self.profile_subs {
            let touched = match target {
                ProfileTarget::Service(svc, _) => ns.is_none_or(|ns| ns == svc.namespace),
                ProfileTarget::Ip(..) => true,
            };
            if touched {
                let new = self.profile(target);
                tx.send_if_modified(|cur| replace_if_changed(cur, new));
            }
        }
        self.log_contested();
    }

    /// The number of live subscriptions: (endpoints, profiles).
    pub fn subscriptions(&self) -> (usize, usize) {
        (self.endpoint_subs.len(), self.profile_subs.len())
    }

    // === decisions ===

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
        let slices = self.slices.values().filter(|s| {
            s.namespace == svc.namespace && s.service.as_deref() == Some(svc.name.as_str())
        });
        for slice in slices {
            let Some(target) = slice.ports.iter().find(|p| p.name == svc_port.name) else {
                continue;
            };
            for ep in &slice.endpoints {
                let pod = ep
                    .pod
                    .as_ref()
                    .and_then(|p| self.pods.get(&(svc.namespace.clone(), p.clone())));
                let addr = match (pod, &service.mirror) {
                    (Some(pod), _) => self.pod_addr(pod, target.port),
                    (None, Some(mirror)) => mirror_addr(
                        mirror,
                        slice
                            .gateway_identity
                            .as_ref()
                            .or(mirror.gateway_identity.as_ref()),
                        port,
                    ),
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

    /// An address of a pod: with its identity and the h2 hint when it is
    /// meshed and `port` does not skip the proxy.
    fn pod_addr(&self, pod: &PodInfo, port: u16) -> Addr {
        let mut labels = BTreeMap::from([
            ("pod".to_string(), pod.name.clone()),
            ("serviceaccount".to_string(), pod.service_account.clone()),
        ]);
        if let Some((kind, name)) = &pod.owner {
            labels.insert(kind.clone(), name.clone());
        }
        if let Some(h) = &pod.pod_template_hash {
            labels.insert("pod_template_hash".into(), h.clone());
        }
        let skipped = pod
            .skip_inbound_ports
            .iter()
            .any(|(a, b)| (*a..=*b).contains(&port));
        let meshed = pod.control_plane_ns.as_ref().filter(|_| !skipped);
        if let Some(cp) = &pod.control_plane_ns {
            labels.insert("control_plane_ns".into(), cp.clone());
        }
        let identity = meshed.and_then(|_| {
            Name::service_account(
                &pod.service_account,
                &pod.namespace,
                &self.config.control_plane_ns,
                &self.config.trust_domain,
            )
            .ok()
        });
        Addr {
            weight: DEFAULT_WEIGHT,
            labels,
            h2: identity.is_some(),
            identity: identity.map(|n| n.to_string()),
            authority_override: None,
        }
    }

    /// The profile of `target`: the Service's name and the overrides of its
    /// split; for an IP of no Service, that IP as a direct endpoint.
    pub fn profile(&self, target: &ProfileTarget) -> Profile {
        match target {
            ProfileTarget::Service(svc, port) => self.service_profile(svc, *port),
            ProfileTarget::Ip(ip, port) => {
                let mut svcs: Vec<&ServiceInfo> = self
                    .services
                    .values()
                    .filter(|s| s.cluster_ips.contains(ip))
                    .collect();
                svcs.sort_by(|a, b| a.key.cmp(&b.key));
                if let Some(s) = svcs.first() {
                    return self.service_profile(&s.key, *port);
                }
                let addr = self
                    .pods
                    .values()
                    .find(|p| p.ips.contains(ip))
                    .map(|p| self.pod_addr(p, *port))
                    .unwrap_or_else(plain_addr);
                Profile {
                    fqn: String::new(),
                    overrides: vec![],
                    endpoint: Some((SocketAddr::new(*ip, *port), addr)),
                }
            }
        }
    }

    fn service_profile(&self, svc: &SvcKey, port: u16) -> Profile {
        let domain = &self.config.cluster_domain;
        let candidates: Vec<&SplitInfo> = self.splits_of(svc, port).collect();
        let overrides = choose_split(&candidates)
            .map(|s| overrides(s, port, domain))
            .unwrap_or_default();
        Profile {
            fqn: fqdn(svc, domain),
            overrides,
            endpoint: None,
        }
    }

    /// The readable splits of apex `svc` that apply to `port`.
    fn splits_of<'a>(&'a self, svc: &'a SvcKey, port: u16) -> impl Iterator<Item = &'a SplitInfo> {
        self.splits.values().filter(move |s| {
            s.apex.as_ref() == Some(svc) && s.port.is_none_or(|p| p == port) && s.backends.is_ok()
        })
    }

    /// Logs once each apex that more than one split names.
    fn log_contested(&mut self) {
        let mut by_apex: HashMap<&SvcKey, Vec<&SplitInfo>> = HashMap::new();
        for s in self.splits.values().filter(|s| s.backends.is_ok()) {
            if let Some(apex) = &s.apex {
                by_apex.entry(apex).or_default().push(s);
            }
        }
        let contested: HashSet<SvcKey> = by_apex
            .iter()
            .filter(|(_, splits)| splits.len() > 1)
            .map(|(apex, _)| (*apex).clone())
            .collect();
        for apex in contested.difference(&self.contested) {
            let splits = &by_apex[apex];
            let chosen = choose_split(splits)
                .map(|s| s.name.as_str())
                .unwrap_or_default();
            tracing::warn!(apex = %apex, splits = splits.len(), %chosen, "several splits name one apex; the oldest is used");
        }
        self.contested = contested;
    }
}

fn replace_if_changed<T: PartialEq>(cur: &mut T, new: T) -> bool {
    if *cur == new {
        return false;
    }
    *cur = new;
    true
}

/// Applies `event` to `map`; returns the namespace touched (`None`: all).
fn reset_or<K: std::hash::Hash + Eq, T>(
    event: Event<T>,
    map: &mut HashMap<K, T>,
    key: impl Fn(&T) -> K,
    ns: impl Fn(&T) -> &String,
) -> Option<String> {
    match event {
        Event::Reset(all) => {
            map.clear();
            map.extend(all.into_iter().map(|t| (key(&t), t)));
            None
        }
        Event::Apply(t) => {
            let n = ns(&t).clone();
            map.insert(key(&t), t);
            Some(n)
        }
        Event::Delete(t) => {
            map.remove(&key(&t));
            Some(ns(&t).clone())
        }
    }
}

/// One log line for a split that can't be used, or that leaves backends out.
fn report(s: &SplitInfo) {
    let kind = match s.kind {
        SplitKind::TrafficSplit => "TrafficSplit",
        SplitKind::HttpRoute => "HTTPRoute",
    };
    match &s.backends {
        Err(e) => {
            tracing::warn!(kind, namespace = %s.namespace, name = %s.name, error = %e, "ignoring a split that cannot be read")
        }
        Ok(_) if !s.skipped.is_empty() => {
            tracing::warn!(kind, namespace = %s.namespace, name = %s.name, skipped = ?s.skipped, "backends left out of a split")
        }
        Ok(_) => {}
    }
}

fn plain_addr() -> Addr {
    Addr {
        weight: DEFAULT_WEIGHT,
        labels: BTreeMap::new(),
        identity: None,
        h2: false,
        authority_override: None,
    }
}

/// A gateway address of a mirror: the gateway's identity, the remote
/// Service's name and port as the authority, h2.
pub fn mirror_addr(mirror: &crate::objects::Mirror, identity: Option<&String>, port: u16) -> Addr {
    let mut labels = BTreeMap::new();
    if let Some(c) = &mirror.cluster {
        labels.insert("target_cluster".to_string(), c.clone());
    }
    if let Some(fq) = &mirror.remote_fq_name {
        let mut parts = fq.split('.');
        if let (Some(svc), Some(ns)) = (parts.next(), parts.next()) {
            labels.insert("target_service".into(), svc.into());
            labels.insert("target_service_namespace".into(), ns.into());
        }
    }
    Addr {
        weight: DEFAULT_WEIGHT,
        labels,
        identity: identity.cloned(),
        h2: true,
        authority_override: mirror
            .remote_fq_name
            .as_ref()
            .map(|fq| format!("{fq}:{port}")),
    }
}

/// `<name>.<ns>.svc.<domain>`.
pub fn fqdn(svc: &SvcKey, domain: &str) -> String {
    format!("{}.{}.svc.{domain}", svc.name, svc.namespace)
}

/// The split an apex uses when several name it: the oldest, then by kind
/// and name, so that every replica picks the same.
pub fn choose_split<'a>(splits: &[&'a SplitInfo]) -> Option<&'a SplitInfo> {
    splits
        .iter()
        .min_by(|a, b| {
            let key = |s: &SplitInfo| {
                (
                    s.created.clone().unwrap_or_default(),
                    s.kind,
                    s.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        })
        .copied()
}

/// A split's backends as Linkerd's destination sends them: the authority
/// with the port, the weight as thousandths times 10 (`1` is 10000). Zero
/// weights stay in (the proxy drops them).
pub fn overrides(split: &SplitInfo, port: u16, domain: &str) -> Vec<Override> {
    split
        .backends
        .as_ref()
        .map(|bs| {
            bs.iter()
                .map(|b| Override {
                    authority: format!("{}:{port}", fqdn(&b.service, domain)),
                    weight: u32::try_from(b.millis.saturating_mul(10)).unwrap_or(u32::MAX),
                })
                .collect()
        })
        .unwrap_or_default()
}

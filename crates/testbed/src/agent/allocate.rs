//! The LoadBalancer address allocator: which address each Service gets. Pure:
//! no client, no clock, no `.await`.
//!
//! The rules, in order, for one Service (see [`decide`]):
//!
//! 1. A deleted Service, or one no longer `type: LoadBalancer`, releases the
//!    address it holds ([`Decision::Release`]); holding none, it is ignored.
//! 2. A Service with `spec.loadBalancerClass` belongs to another
//!    implementation: ignored (an address it somehow holds is released).
//! 3. With `spec.loadBalancerIP`, it gets exactly that address or none: it is
//!    refused when the value is not an IPv4 address, lies outside the pool, is
//!    the pool's network or broadcast address, or is held by another Service.
//! 4. Otherwise it keeps the address it holds; else the first usable free
//!    address its status already shows (a status written before a restart);
//!    else the lowest free address of the pool; else it is refused: the pool
//!    is exhausted.
//!
//! A refused Service holds no address. The network and broadcast addresses
//! are never handed out.
//!
//! After a restart, [`Assignments::rebuild`] recovers the addresses from the
//! Services' statuses before anything is decided. When two Services show the
//! same address, the older keeps it (by creationTimestamp, then namespace and
//! name) and the other is decided afresh.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::Ipv4Addr,
    str::FromStr,
};

use k8s_openapi::jiff::Timestamp;

#[cfg(test)]
mod tests;

// === Pool ===

/// An IPv4 network whose host addresses are handed out, such as
/// `198.18.64.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    network: u32,
    prefix: u8,
}

/// Why a pool cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("{0:?} is not an IPv4 network in CIDR form, such as 198.18.64.0/24")]
    Syntax(String),
    #[error(
        "{given} has host bits set: the network is {network}/{prefix}, write that (its address is the first of the range)"
    )]
    HostBits {
        given: String,
        network: Ipv4Addr,
        prefix: u8,
    },
    #[error(
        "/{prefix} leaves no address to hand out besides the network and broadcast addresses: use /30 or shorter"
    )]
    TooSmall { prefix: u8 },
}

impl Pool {
    /// The pool `network/prefix`; `network` must have no host bits set.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, PoolError> {
        let given = format!("{network}/{prefix}");
        if prefix > 32 {
            return Err(PoolError::Syntax(given));
        }
        if prefix > 30 {
            return Err(PoolError::TooSmall { prefix });
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let addr = u32::from(network);
        if addr & !mask != 0 {
            return Err(PoolError::HostBits {
                given,
                network: Ipv4Addr::from(addr & mask),
                prefix,
            });
        }
        Ok(Self {
            network: addr,
            prefix,
        })
    }

    fn host_mask(&self) -> u32 {
        u32::MAX >> self.prefix
    }

    /// The network address (never handed out).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    /// The broadcast address (never handed out).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network | self.host_mask())
    }

    /// How many addresses can be handed out.
    pub fn size(&self) -> u64 {
        u64::from(self.host_mask()) - 1
    }

    /// Whether `ip` lies in the network, network and broadcast included.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & !self.host_mask() == self.network
    }

    /// Whether `ip` may be handed out.
    pub fn is_usable(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.network() && ip != self.broadcast()
    }

    fn first(&self) -> u32 {
        self.network + 1
    }

    fn last(&self) -> u32 {
        (self.network | self.host_mask()) - 1
    }
}

impl FromStr for Pool {
    type Err = PoolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PoolError::Syntax(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        Pool::new(addr, prefix)
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

// === Services ===

/// A Service, by namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The fields of a Service that allocation reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceView {
    pub key: ServiceKey,
    pub created: Option<Timestamp>,
    /// `spec.type` is `LoadBalancer`.
    pub load_balancer: bool,
    /// `spec.loadBalancerClass`.
    pub class: Option<String>,
    /// `spec.loadBalancerIP`, as written (empty counts as unset).
    pub requested: Option<String>,
    /// The `ip` of each `status.loadBalancer.ingress` entry that has one.
    pub status_ips: Vec<String>,
}

impl ServiceView {
    /// Served by this allocator (rules 1 and 2).
    fn is_ours(&self) -> bool {
        self.load_balancer && self.class.is_none()
    }

    fn requested(&self) -> Option<&str> {
        self.requested
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
    }

    /// The order in which Services claim addresses: oldest first.
    fn age_order(&self) -> (Option<Timestamp>, &ServiceKey) {
        // `None` would sort first; the apiserver always sets the timestamp.
        (self.created, &self.key)
    }
}

// === Decisions ===

/// What one Service gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It holds this address (or shows it in its status, and may claim it).
    Keep(Ipv4Addr),
    /// Give it this address, newly.
    Assign(Ipv4Addr),
    /// It holds this address and may no longer: free it.
    Release(Ipv4Addr),
    /// Not for this allocator; it holds nothing.
    Ignore(Ignored),
    /// It wants an address and gets none (one it held is freed).
    Refuse(Refusal),
}

/// Why a Service is none of the allocator's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    Deleted,
    NotLoadBalancer,
    /// `spec.loadBalancerClass` names another implementation.
    OtherClass(String),
}

/// Why a Service gets no address. The text is what users read in the Event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("spec.loadBalancerIP {value:?} is not an IPv4 address")]
    InvalidRequest { value: String },
    #[error("spec.loadBalancerIP {requested} is outside the testbed's pool {pool}")]
    OutsidePool { requested: Ipv4Addr, pool: Pool },
    #[error(
        "spec.loadBalancerIP {requested} is the network or broadcast address of pool {pool}, which are never handed out"
    )]
    Reserved { requested: Ipv4Addr, pool: Pool },
    #[error("spec.loadBalancerIP {requested} is already assigned to Service {holder}")]
    Taken {
        requested: Ipv4Addr,
        holder: ServiceKey,
    },
    #[error("pool {pool} is exhausted: all {size} addresses are assigned", size = pool.size())]
    Exhausted { pool: Pool },
}

/// Two Services showed one address after a restart; the older kept it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub ip: Ipv4Addr,
    pub kept: ServiceKey,
    pub lost: ServiceKey,
}

/// Which Service holds which address of the pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignments {
    by_ip: BTreeMap<u32, ServiceKey>,
    by_key: HashMap<ServiceKey, Ipv4Addr>,
}

impl Assignments {
    /// The addresses the Services' statuses show, oldest Service first, so
    /// that the older of two claimants keeps an address. Only Services of
    /// this allocator count, and only usable addresses of `pool`; a Service
    /// that requests another address than its status shows claims nothing
    /// (it is decided afresh).
    pub fn rebuild<'a>(
        pool: &Pool,
        services: impl IntoIterator<Item = &'a ServiceView>,
    ) -> (Self, Vec<Conflict>) {
        let mut services: Vec<&ServiceView> =
            services.into_iter().filter(|s| s.is_ours()).collect();
        services.sort_by(|a, b| a.age_order().cmp(&b.age_order()));
        let mut this = Self::default();
        let mut conflicts = vec![];
        for svc in services {
            let requested = svc.requested();
            let shown = svc
                .status_ips
                .iter()
                .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
                .filter(|ip| pool.is_usable(*ip))
                .filter(|ip| requested.is_none_or(|r| r.parse() == Ok(*ip)));
            for ip in shown {
                match this.holder(ip) {
                    None => {
                        this.insert(svc.key.clone(), ip);
                        break;
                    }
                    Some(holder) if *holder != svc.key => conflicts.push(Conflict {
                        ip,
                        kept: holder.clone(),
                        lost: svc.key.clone(),
                    }),
                    Some(_) => {}
                }
            }
        }
        (this, conflicts)
    }

    /// The address `key` holds.
    pub fn get(&self, key: &ServiceKey) -> Option<Ipv4Addr> {
        self.by_key.get(key).copied()
    }

    /// The Service holding `ip`.
    pub fn holder(&self, ip: Ipv4Addr) -> Option<&ServiceKey> {
        self.by_ip.get(&u32::from(ip))
    }

    /// How many addresses are held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every (Service, address), by address.
    pub fn iter(&self) -> impl Iterator<Item = (&ServiceKey, Ipv4Addr)> {
        self.by_ip.iter().map(|(ip, k)| (k, Ipv4Addr::from(*ip)))
    }

    /// Records what [`decide`] concluded for `key`.
    pub fn commit(&mut self, key: &ServiceKey, decision: &Decision) {
        match decision {
            Decision::Keep(ip) | Decision::Assign(ip) => {
                if self.get(key) != Some(*ip) {
                    self.remove(key);
                    self.insert(key.clone(), *ip);
                }
            }
            Decision::Release(_) | Decision::Refuse(_) | Decision::Ignore(_) => self.remove(key),
        }
    }

    fn insert(&mut self, key: ServiceKey, ip: Ipv4Addr) {
        self.by_ip.insert(u32::from(ip), key.clone());
        self.by_key.insert(key, ip);
    }

    fn remove(&mut self, key: &ServiceKey) {
        if let Some(ip) = self.by_key.remove(key) {
            self.by_ip.remove(&u32::from(ip));
        }
    }

    /// The lowest usable address nobody holds.
    fn lowest_free(&self, pool: &Pool) -> Option<Ipv4Addr> {
        let mut candidate = pool.first();
        for held in self
            .by_ip
            .range(pool.first()..=pool.last())
            .map(|(ip, _)| *ip)
        {
            if held != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        (candidate <= pool.last()).then(|| Ipv4Addr::from(candidate))
    }

    fn is_free_for(&self, ip: Ipv4Addr, key: &ServiceKey) -> bool {
        self.holder(ip).is_none_or(|h| h == key)
    }
}

/// What the Service `key` gets, given the pool and who holds what. `service`
/// is `None` once the Service is deleted. Nothing changes until the result
/// is passed to [`Assignments::commit`].
pub fn decide(
    pool: &Pool,
    assignments: &Assignments,
    key: &ServiceKey,
    service: Option<&ServiceView>,
) -> Decision {
    let held = assignments.get(key);
    let svc = match service {
        None => return held.map_or(Decision::Ignore(Ignored::Deleted), Decision::Release),
        Some(s) if !s.load_balancer => {
            return held.map_or(
                Decision::Ignore(Ignored::NotLoadBalancer),
                Decision::Release,
            );
        }
        Some(s) => match &s.class {
            Some(class) => {
                return held.map_or_else(
                    || Decision::Ignore(Ignored::OtherClass(class.clone())),
                    Decision::Release,
                );
            }
            None => s,
        },
    };

    if let Some(value) = svc.requested() {
        let Ok(requested) = value.parse::<Ipv4Addr>() else {
            return Decision::Refuse(Refusal::InvalidRequest {
                value: value.to_string(),
            });
        };
        if !pool.contains(requested) {
            return Decision::Refuse(Refusal::OutsidePool {
                requested,
                pool: *pool,
            });
        }
        if !pool.is_usable(requested) {
            return Decision::Refuse(Refusal::Reserved {
                requested,
                pool: *pool,
            });
        }
        return match assignments.holder(requested) {
            Some(holder) if holder != key => Decision::Refuse(Refusal::Taken {
                requested,
                holder: holder.clone(),
            }),
            Some(_) => Decision::Keep(requested),
            None if svc.status_ips.iter().any(|ip| ip.parse() == Ok(requested)) => {
                Decision::Keep(requested)
            }
            None => Decision::Assign(requested),
        };
    }

    if let Some(ip) = held {
        return Decision::Keep(ip);
    }
    let shown = svc
        .status_ips
        .iter()
        .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
        .find(|ip| pool.is_usable(*ip) && assignments.is_free_for(*ip, key));
    if let Some(ip) = shown {
        return Decision::Keep(ip);
    }
    match assignments.lowest_free(pool) {
        Some(ip) => Decision::Assign(ip),
        None => Decision::Refuse(Refusal::Exhausted { pool: *pool }),
    }
}

//! The local side of the gateway: each target `<fqdn>:<port>` resolved
//! through the destination service (`Get`), its endpoints balanced P2C over
//! peak-EWMA, each with a pooled HTTP client. Connections go through the
//! proxy's [`crate::endpoint::connect`], the seam where mTLS to the pod's identity
//! plugs in.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tandem_meshtls::Tls;
use tokio::{sync::watch, time::Instant};

use crate::{
    balance::{PeakEwma, p2c},
    connect::{self, Conn, ConnectError},
    discover::{Endpoints, ResolveError, Resolver},
    endpoint::{Endpoint, outbound_tls},
    http::{EndpointClient, dst_labels},
    metrics::{Direction, Metrics, Target},
};

/// One endpoint of a target, its client and its load.
pub struct Slot {
    pub ep: Endpoint,
    pub target: Target,
    pub client: EndpointClient,
    load: Mutex<PeakEwma>,
}

impl Slot {
    /// Counts a request as pending until `done` is called with its outcome.
    pub fn start(&self) -> Instant {
        self.load.lock().unwrap().start();
        Instant::now()
    }

    /// The request started at `start` ended: answered, or failed before any
    /// response.
    pub fn done(&self, start: Instant, answered: bool) {
        let now = Instant::now();
        let mut load = self.load.lock().unwrap();
        if answered {
            load.end(now - start, now);
        } else {
            load.fail(now);
        }
    }
}

/// The endpoints of one target.
struct Backend {
    authority: String,
    endpoints: Mutex<watch::Receiver<Endpoints>>,
    slots: Mutex<HashMap<SocketAddr, Arc<Slot>>>,
}

/// Why the gateway has nowhere to send a target.
#[derive(Debug, thiserror::Error)]
pub enum Unresolved {
    #[error("the gateway runs without a destination service")]
    NoDestination,
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// A target unused for this long is dropped, with its `Get` stream and
/// its connections (a Service no longer exported, or no longer asked for).
pub const IDLE: Duration = Duration::from_secs(60);

/// The targets in use and when each was last asked for.
type Cache = Mutex<HashMap<String, (Arc<Backend>, Instant)>>;

/// The targets in use, resolved once and followed while they are used.
#[derive(Clone)]
pub struct Backends {
    resolver: Option<Resolver>,
    metrics: Metrics,
    connect_timeout: Duration,
    /// The gateway's mesh TLS: connections to meshed pods are mTLS to their
    /// identity. `None` only where identity is disabled (tests).
    tls: Option<Tls>,
    cache: Arc<Cache>,
}

impl Backends {
    pub fn new(resolver: Option<Resolver>, metrics: Metrics, connect_timeout: Duration) -> Self {
        let cache: Arc<Cache> = Default::default();
        tokio::spawn(sweep(Arc::downgrade(&cache), IDLE));
        Backends {
            resolver,
            metrics,
            connect_timeout,
            tls: None,
            cache,
        }
    }

    /// Connections to endpoints with an identity go over mTLS with `tls`.
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn resolver(&self) -> Option<&Resolver> {
        self.resolver.as_ref()
    }

    /// The endpoints of `authority`, resolving it the first time.
    async fn backend(&self, authority: &str) -> Result<Arc<Backend>, Unresolved> {
        if let Some((b, used)) = self.cache.lock().unwrap().get_mut(authority) {
            *used = Instant::now();
            return Ok(b.clone());
        }
        let resolver = self.resolver.as_ref().ok_or(Unresolved::NoDestination)?;
        let rx = resolver.endpoints(authority).await?;
        let b = Arc::new(Backend {
            authority: authority.to_string(),
            endpoints: Mutex::new(rx),
            slots: Default::default(),
        });
        let mut cache = self.cache.lock().unwrap();
        let entry = cache
            .entry(authority.to_string())
            .or_insert((b, Instant::now()));
        Ok(entry.0.clone())
    }

    /// An endpoint of `authority` not in `tried`; `None` when none is left.
    pub async fn pick(
        &self,
        authority: &str,
        tried: &[SocketAddr],
    ) -> Result<Option<Arc<Slot>>, Unresolved> {
        let backend = self.backend(authority).await?;
        backend.sync(self);
        let slots = backend.slots.lock().unwrap();
        let candidates: Vec<&Arc<Slot>> = slots
            .values()
            .filter(|s| !tried.contains(&s.ep.addr))
            .collect();
        let loads: Vec<f64> = candidates
            .iter()
            .map(|s| s.load.lock().unwrap().load())
            .collect();
        Ok(p2c(&loads, &mut rand::rng()).map(|i| candidates[i].clone()))
    }

    /// Opens a connection to `slot`'s endpoint.
    pub async fn connect(&self, slot: &Slot) -> Result<Conn, ConnectError> {
        connect::connect(&slot.ep, self.tls.as_ref(), None, self.connect_timeout).await
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Whether a target stays: a connection or request holds it, or it was
/// asked for within `idle`.
pub fn keep(held: bool, used: Instant, now: Instant, idle: Duration) -> bool {
    held || now.saturating_duration_since(used) < idle
}

/// Drops idle targets every `idle / 2`; ends with the gateway.
async fn sweep(cache: Weak<Cache>, idle: Duration) {
    let mut tick = tokio::time::interval((idle / 2).max(Duration::from_millis(10)));
    loop {
        tick.tick().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        let now = Instant::now();
        cache.lock().unwrap().retain(|authority, (b, used)| {
            let kept = keep(Arc::strong_count(b) > 1, *used, now, idle);
            if !kept {
                tracing::debug!(%authority, "gateway target idle; dropped");
            }
            kept
        });
    }
}

impl Backend {
    /// Brings the slots in line with the endpoint set, when it changed.
    fn sync(&self, backends: &Backends) {
        let mut rx = self.endpoints.lock().unwrap();
        let mut slots = self.slots.lock().unwrap();
        if !slots.is_empty() && !rx.has_changed().unwrap_or(false) {
            return;
        }
        let eps = rx.borrow_and_update().clone();
        slots.retain(|addr, s| eps.get(addr) == Some(&s.ep));
        for (addr, ep) in eps {
            slots
                .entry(addr)
                .or_insert_with(|| Arc::new(self.slot(backends, ep)));
        }
    }

    fn slot(&self, backends: &Backends, ep: Endpoint) -> Slot {
        let target = Target {
            direction: Direction::Outbound,
            authority: Some(self.authority.clone()),
            target_addr: ep.addr,
            tls: outbound_tls(&ep, backends.tls.is_some()),
            dst: ep.labels.clone(),
        };
        let client = EndpointClient::with_tls(
            ep.clone(),
            dst_labels(&target),
            backends.metrics.clone(),
            backends.connect_timeout,
            backends.tls.clone(),
        );
        Slot {
            ep,
            target,
            client,
            load: Mutex::new(PeakEwma::new(Instant::now())),
        }
    }
}

/// Whether a lookup's outcome shows the destination service answering (an
/// unknown name is an answer; unavailable or silent is not).
pub fn destination_answered<T>(outcome: &Result<T, ResolveError>) -> bool {
    match outcome {
        Ok(_) => true,
        Err(ResolveError::Timeout { .. }) => false,
        Err(ResolveError::Refused { status, .. }) => !matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ),
    }
}

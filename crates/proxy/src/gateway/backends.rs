//! The local side of the gateway: each target `<fqdn>:<port>` resolved
//! through the destination service (`Get`), its endpoints balanced P2C over
//! peak-EWMA, each with a pooled HTTP client. Connections go through the
//! proxy's [`endpoint::connect`], the seam where mTLS to the pod's identity
//! plugs in.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{net::TcpStream, sync::watch, time::Instant};

use crate::{
    balance::{PeakEwma, p2c},
    discover::{Endpoints, ResolveError, Resolver},
    endpoint::{self, Endpoint, client_tls},
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

/// The targets in use, resolved once and followed after.
#[derive(Clone)]
pub struct Backends {
    resolver: Option<Resolver>,
    metrics: Metrics,
    connect_timeout: Duration,
    cache: Arc<Mutex<HashMap<String, Arc<Backend>>>>,
}

impl Backends {
    pub fn new(resolver: Option<Resolver>, metrics: Metrics, connect_timeout: Duration) -> Self {
        Backends {
            resolver,
            metrics,
            connect_timeout,
            cache: Default::default(),
        }
    }

    pub fn resolver(&self) -> Option<&Resolver> {
        self.resolver.as_ref()
    }

    /// The endpoints of `authority`, resolving it the first time.
    async fn backend(&self, authority: &str) -> Result<Arc<Backend>, Unresolved> {
        if let Some(b) = self.cache.lock().unwrap().get(authority) {
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
        Ok(cache.entry(authority.to_string()).or_insert(b).clone())
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
    pub async fn connect(&self, slot: &Slot) -> std::io::Result<TcpStream> {
        endpoint::connect(&slot.ep, self.connect_timeout).await
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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
            tls: client_tls(&ep),
            dst: ep.labels.clone(),
        };
        let client = EndpointClient::new(
            ep.clone(),
            dst_labels(&target),
            backends.metrics.clone(),
            backends.connect_timeout,
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

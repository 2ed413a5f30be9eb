//! The outbound router of one original destination: its profile turned into
//! a weighted split over backends, each a P2C balancer over its endpoints.
//! The routes are rebuilt by a task whenever the profile changes; requests
//! read the current routes from a `watch` channel.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::AtomicBool},
};

use tokio::{sync::watch, time::Instant};

use crate::{
    Ctx,
    balance::{PeakEwma, Split, p2c},
    discover::{Endpoints, Profile},
    endpoint::{Endpoint, outbound_tls},
    http::{EndpointClient, dst_labels},
    metrics::{Direction, Target},
};

/// One endpoint, its client and its load.
pub struct Slot {
    pub ep: Endpoint,
    pub target: Target,
    pub client: EndpointClient,
    pub load: Mutex<PeakEwma>,
    /// Set once a TLS failure of an opaque connection was logged (HTTP
    /// connections log through their client).
    pub tls_failing: AtomicBool,
}

impl Slot {
    /// Counts a request as pending on this endpoint until it ends.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.load.lock().unwrap().start();
        InFlight {
            slot: self.clone(),
            start: Instant::now(),
            done: false,
        }
    }
}

/// A pending request; dropped unfinished (its client went away), it leaves
/// the estimate alone.
pub struct InFlight {
    slot: Arc<Slot>,
    start: Instant,
    done: bool,
}

impl InFlight {
    /// The response headers arrived.
    pub fn answered(mut self) {
        self.done = true;
        let now = Instant::now();
        self.slot.load.lock().unwrap().end(now - self.start, now);
    }

    /// The try failed before any response.
    pub fn failed(mut self) {
        self.done = true;
        self.slot.load.lock().unwrap().fail(Instant::now());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.slot.load.lock().unwrap().abandon();
        }
    }
}

/// One backend: a set of endpoints followed on a channel.
pub struct Backend {
    pub name: String,
    endpoints: Mutex<watch::Receiver<Endpoints>>,
    slots: Mutex<HashMap<SocketAddr, Arc<Slot>>>,
    ctx: Ctx,
    authority: Option<String>,
}

/// The current split.
pub struct Routes {
    pub authority: Option<String>,
    split: Split,
    backends: Vec<Arc<Backend>>,
}

pub struct Router {
    pub target: SocketAddr,
    routes: watch::Receiver<Arc<Routes>>,
}

// === impl Router ===

impl Router {
    /// Looks the target up and builds its first routes; later profile
    /// changes rebuild them in a task that ends with the router.
    pub async fn new(ctx: Ctx, target: SocketAddr) -> Self {
        let mut profile = match &ctx.resolver {
            Some(r) => r.profile(target).await,
            None => watch::channel(Profile::Unknown).1,
        };
        let first = profile.borrow_and_update().clone();
        let routes = Arc::new(build(&ctx, target, &first, &[]).await);
        let (tx, rx) = watch::channel(routes);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = profile.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
                let p = profile.borrow_and_update().clone();
                let old = tx.borrow().backends.clone();
                let routes = build(&ctx, target, &p, &old).await;
                tracing::debug!(%target, backends = routes.backends.len(), "routes rebuilt");
                tx.send_replace(Arc::new(routes));
            }
        });
        Router { target, routes: rx }
    }

    pub fn routes(&self) -> Arc<Routes> {
        self.routes.borrow().clone()
    }
}

/// Backends for a profile; those already known (same name) keep their
/// connections and load, and a backend that cannot be resolved is left out.
async fn build(ctx: &Ctx, target: SocketAddr, p: &Profile, old: &[Arc<Backend>]) -> Routes {
    let fixed = |name: String, ep: Endpoint, authority| {
        let (_, rx) = watch::channel(Endpoints::from([(ep.addr, ep)]));
        Arc::new(Backend::new(ctx.clone(), name, rx, authority))
    };
    match p {
        Profile::Unknown => Routes {
            authority: None,
            split: Split::new(&[1]),
            backends: vec![fixed(target.to_string(), Endpoint::forward(target), None)],
        },
        Profile::Endpoint(ep) => Routes {
            authority: None,
            split: Split::new(&[1]),
            backends: vec![fixed(ep.addr.to_string(), ep.clone(), None)],
        },
        Profile::Logical { fqn, backends } => {
            let authority = Some(format!("{fqn}:{}", target.port()));
            let mut weights = vec![];
            let mut built = vec![];
            for b in backends {
                let backend = match old.iter().find(|o| o.name == b.authority) {
                    Some(o) => o.clone(),
                    None => {
                        let Some(resolver) = &ctx.resolver else {
                            continue;
                        };
                        match resolver.endpoints(&b.authority).await {
                            Ok(rx) => Arc::new(Backend::new(
                                ctx.clone(),
                                b.authority.clone(),
                                rx,
                                authority.clone(),
                            )),
                            Err(_) => continue,
                        }
                    }
                };
                weights.push(b.weight);
                built.push(backend);
            }
            if built.is_empty() {
                // Never send traffic nowhere: the original destination still routes.
                tracing::warn!(%target, %fqn, "no backend resolved; forwarding to the original destination");
                return Routes {
                    authority,
                    split: Split::new(&[1]),
                    backends: vec![fixed(target.to_string(), Endpoint::forward(target), None)],
                };
            }
            Routes {
                authority,
                split: Split::new(&weights),
                backends: built,
            }
        }
    }
}

// === impl Routes ===

impl Routes {
    /// An endpoint for one try: a backend by weight, then P2C among its
    /// endpoints not in `tried`; a backend with none left yields to the
    /// others, the weighted ones first, then the fallbacks of weight 0.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<Slot>> {
        let mut rng = rand::rng();
        // No positive weight resolved: the backends in order.
        let first = self.split.pick(&mut rng);
        let order = first
            .into_iter()
            .chain((0..self.backends.len()).filter(|i| Some(*i) != first));
        order
            .filter_map(|i| self.backends[i].pick(tried, &mut rng))
            .next()
    }
}

// === impl Backend ===

impl Backend {
    fn new(
        ctx: Ctx,
        name: String,
        endpoints: watch::Receiver<Endpoints>,
        authority: Option<String>,
    ) -> Self {
        let b = Backend {
            name,
            endpoints: Mutex::new(endpoints),
            slots: Mutex::new(HashMap::new()),
            ctx,
            authority,
        };
        b.sync(true);
        b
    }

    /// Brings the slots in line with the endpoint set, when it changed.
    fn sync(&self, force: bool) {
        let mut rx = self.endpoints.lock().unwrap();
        if !force && !rx.has_changed().unwrap_or(false) {
            return;
        }
        let eps = rx.borrow_and_update().clone();
        let mut slots = self.slots.lock().unwrap();
        slots.retain(|addr, s| eps.get(addr) == Some(&s.ep));
        for (addr, ep) in eps {
            slots.entry(addr).or_insert_with(|| Arc::new(self.slot(ep)));
        }
    }

    fn slot(&self, ep: Endpoint) -> Slot {
        let target = Target {
            direction: Direction::Outbound,
            authority: self.authority.clone(),
            target_addr: ep.addr,
            tls: outbound_tls(&ep, self.ctx.tls.is_some()),
            dst: ep.labels.clone(),
        };
        let client = EndpointClient::with_tls(
            ep.clone(),
            dst_labels(&target),
            self.ctx.metrics.clone(),
            self.ctx.connect_timeout,
            self.ctx.tls.clone(),
        );
        Slot {
            ep,
            target,
            client,
            load: Mutex::new(PeakEwma::new(Instant::now())),
            tls_failing: AtomicBool::new(false),
        }
    }

    fn pick(&self, tried: &[SocketAddr], rng: &mut impl rand::Rng) -> Option<Arc<Slot>> {
        self.sync(false);
        let slots = self.slots.lock().unwrap();
        let candidates: Vec<&Arc<Slot>> = slots
            .values()
            .filter(|s| !tried.contains(&s.ep.addr))
            .collect();
        let loads: Vec<f64> = candidates
            .iter()
            .map(|s| s.load.lock().unwrap().load())
            .collect();
        p2c(&loads, rng).map(|i| candidates[i].clone())
    }
}

//! The linked cluster's gateway as the mirror sees it: its addresses
//! resolved (every IP of every name, sorted, re-resolved periodically, the
//! last good answer kept when a lookup fails) and probed.
//!
//! With several IPs the gateway is alive while ANY of them passes its probe:
//! the mirror's endpoints hold every IP, and a client's connection attempt
//! to a dead one fails over to the others, so one dead IP must not take the
//! whole cluster out of service. Until the probes give a verdict the gateway
//! is unknown, and the writer writes no readiness.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    hash::{BuildHasher, Hasher},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

use crate::{
    metrics::Metrics,
    mirror::ProbeConfig,
    probe::{Latencies, Liveness, ProbeError, ProbeState},
};

/// How long one name lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the mirror's writer and status read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GatewayState {
    /// The addresses were looked up once: until then no endpoint is written.
    pub resolved: bool,
    /// IPv4 addresses, sorted: where the mirrors' endpoints point.
    pub ips: Vec<IpAddr>,
    /// Names that did not resolve this time, with why.
    pub unresolved: Vec<String>,
    /// Alive while any address passes its probe; unknown until the probes
    /// tell.
    pub liveness: Liveness,
    /// Each address's own verdict, sorted by IP (updated without waking
    /// anyone).
    pub addresses: Vec<AddressState>,
    /// Probe latency p50, p95, p99 in ms (updated without waking anyone).
    pub latency_ms: [Option<u64>; 3],
}

impl GatewayState {
    /// Whether the mirrors' endpoints would differ between the two: the
    /// addresses or the liveness (not the latencies or per-address details).
    pub fn same_endpoints(&self, other: &GatewayState) -> bool {
        self.resolved == other.resolved && self.ips == other.ips && self.liveness == other.liveness
    }
}

/// One gateway address as its probes see it.
#[derive(Clone, Debug, PartialEq)]
pub struct AddressState {
    pub ip: IpAddr,
    pub liveness: Liveness,
    /// Why its last probe failed; `None` after a success.
    pub last_error: Option<String>,
}

/// The probe state of one address, in the gateway task.
struct Probed {
    state: ProbeState,
    last_error: Option<String>,
}

/// What the gateway task is given.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayConfig {
    pub cluster: String,
    pub addresses: Vec<String>,
    pub probe: ProbeConfig,
    pub dns_refresh: Duration,
}

/// Looks up every address: IPs as they are, names with the system resolver.
/// A name that fails keeps its last good IPs (in `last_good`) and is
/// reported. Only IPv4 is kept: the mirrors' slices are IPv4.
pub async fn resolve(
    addresses: &[String],
    last_good: &mut HashMap<String, Vec<IpAddr>>,
    timeout: Duration,
) -> (Vec<IpAddr>, Vec<String>) {
    let mut ips = vec![];
    let mut unresolved = vec![];
    for a in addresses {
        if let Ok(ip) = a.parse::<IpAddr>() {
            if ip.is_ipv4() {
                ips.push(ip);
            } else {
                unresolved.push(format!("{a}: not an IPv4 address"));
            }
            continue;
        }
        let looked_up = tokio::time::timeout(timeout, tokio::net::lookup_host((a.as_str(), 0)))
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map(|addrs| {
                let mut v: Vec<IpAddr> = addrs.map(|s| s.ip()).filter(IpAddr::is_ipv4).collect();
                v.sort();
                v.dedup();
                v
            });
        match looked_up {
            Ok(v) if !v.is_empty() => {
                last_good.insert(a.clone(), v.clone());
                ips.extend(v);
            }
            Ok(_) => {
                unresolved.push(format!("{a}: no IPv4 address"));
                ips.extend(last_good.get(a).into_iter().flatten());
            }
            Err(why) => {
                unresolved.push(format!("{a}: {why}"));
                ips.extend(last_good.get(a).into_iter().flatten());
            }
        }
    }
    ips.sort();
    ips.dedup();
    (ips, unresolved)
}

/// `period` plus up to 10% more, so that many mirrors do not probe in step.
pub fn jittered(period: Duration) -> Duration {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let fraction = (r % 1000) as f64 / 10_000.0;
    period + period.mul_f64(fraction)
}

/// Resolves and probes until aborted, publishing on `tx`. `probe` does one
/// probe of one address; it is given the address and bounded by the
/// probe's timeout here.
pub async fn run<P, F>(
    cfg: GatewayConfig,
    metrics: Metrics,
    tx: watch::Sender<GatewayState>,
    probe: P,
) where
    P: Fn(SocketAddr) -> F,
    F: Future<Output = Result<Duration, ProbeError>>,
{
    let labels = Metrics::cluster(&cfg.cluster);
    let mut last_good = HashMap::new();
    let mut states: BTreeMap<IpAddr, Probed> = BTreeMap::new();
    let mut latencies = Latencies::default();
    let mut next_dns = Instant::now();
    let mut next_probe = Instant::now();
    let mut was = Liveness::Unknown;
    loop {
        if Instant::now() >= next_dns {
            let (ips, unresolved) = resolve(&cfg.addresses, &mut last_good, LOOKUP_TIMEOUT).await;
            for u in &unresolved {
                tracing::warn!(cluster = %cfg.cluster, address = %u, "gateway address did not resolve");
            }
            states.retain(|ip, _| {
                let keep = ips.contains(ip);
                if !keep {
                    metrics.forget_address(&cfg.cluster, *ip);
                }
                keep
            });
            for ip in &ips {
                // A new IP is unknown until probed, like the gateway at start.
                states.entry(*ip).or_insert_with(|| Probed {
                    state: ProbeState::new(cfg.probe.failure_threshold),
                    last_error: None,
                });
            }
            tx.send_if_modified(|s| {
                let changed = !s.resolved || s.ips != ips || s.unresolved != unresolved;
                if s.ips != ips {
                    tracing::info!(cluster = %cfg.cluster, ips = ?ips, "gateway addresses");
                }
                s.resolved = true;
                s.ips = ips;
                s.unresolved = unresolved;
                changed
            });
            next_dns = Instant::now() + cfg.dns_refresh;
        }

        if Instant::now() >= next_probe {
            let probes = states.keys().map(|ip| {
                let addr = SocketAddr::new(*ip, cfg.probe.port);
                let attempt = tokio::time::timeout(cfg.probe.timeout, probe(addr));
                async move {
                    let r = match attempt.await {
                        Ok(r) => r,
                        Err(_) => Err(ProbeError::Timeout(cfg.probe.timeout)),
                    };
                    (addr, r)
                }
            });
            let results = futures::future::join_all(probes).await;
            for (addr, r) in results {
                metrics.probe(&cfg.cluster, r.as_ref().ok().copied());
                let Some(p) = states.get_mut(&addr.ip()) else {
                    continue;
                };
                match &r {
                    Ok(d) => latencies.record(*d),
                    Err(e) => {
                        tracing::debug!(cluster = %cfg.cluster, %addr, error = %e, "gateway probe failed")
                    }
                }
                p.last_error = r.as_ref().err().map(ToString::to_string);
                if p.state.record(r.is_ok()) {
                    match &r {
                        Ok(_) => {
                            tracing::info!(cluster = %cfg.cluster, %addr, "gateway address passes its probe")
                        }
                        Err(e) => tracing::warn!(
                            cluster = %cfg.cluster,
                            %addr,
                            error = %e,
                            failures = p.state.consecutive_failures(),
                            "gateway address failed its probe; dead"
                        ),
                    }
                }
                if let Some(alive) = p.state.liveness().known() {
                    metrics.address_alive(&cfg.cluster, addr.ip(), alive);
                }
            }
            // No address at all leaves the verdict as it was: nothing to
            // point endpoints at anyway.
            let liveness = if states.is_empty() {
                was
            } else {
                Liveness::any_alive(states.values().map(|p| p.state.liveness()))
            };
            if liveness != was {
                match liveness {
                    Liveness::Alive => tracing::info!(cluster = %cfg.cluster, "gateway alive"),
                    Liveness::Dead => {
                        tracing::warn!(cluster = %cfg.cluster, "gateway dead: no address passes its probe")
                    }
                    Liveness::Unknown => {
                        tracing::info!(cluster = %cfg.cluster, "gateway not probed enough yet")
                    }
                }
                was = liveness;
            }
            match liveness.known() {
                Some(alive) => {
                    metrics
                        .gateway_alive
                        .get_or_create(&labels)
                        .set(i64::from(alive));
                }
                None => {
                    metrics.gateway_alive.remove(&labels);
                }
            }
            let latency_ms = [50, 95, 99].map(|p| latencies.percentile_ms(p));
            let addresses: Vec<AddressState> = states
                .iter()
                .map(|(ip, p)| AddressState {
                    ip: *ip,
                    liveness: p.state.liveness(),
                    last_error: p.last_error.clone(),
                })
                .collect();
            tx.send_if_modified(|s| {
                let changed = s.liveness != liveness;
                s.liveness = liveness;
                s.addresses = addresses;
                s.latency_ms = latency_ms;
                changed
            });
            next_probe = Instant::now() + jittered(cfg.probe.period);
        }

        tokio::time::sleep_until(next_dns.min(next_probe)).await;
    }
}

/// [`run`] with the real HTTP probe.
pub async fn run_http(cfg: GatewayConfig, metrics: Metrics, tx: watch::Sender<GatewayState>) {
    let path = cfg.probe.path.clone();
    let timeout = cfg.probe.timeout;
    run(cfg, metrics, tx, move |addr| {
        let path = path.clone();
        async move { crate::probe::http_probe(addr, &path, timeout).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    fn cfg(addresses: &[&str], period_ms: u64, threshold: u32) -> GatewayConfig {
        GatewayConfig {
            cluster: "west".into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            probe: ProbeConfig {
                path: "/ready".into(),
                port: 4191,
                period: Duration::from_millis(period_ms),
                timeout: Duration::from_millis(period_ms / 2),
                failure_threshold: threshold,
            },
            dns_refresh: Duration::from_secs(30),
        }
    }

    fn metrics() -> Metrics {
        Metrics::register(&mut prometheus_client::registry::Registry::default())
    }

    /// A probe that answers from a script per IP (the last answer repeats);
    /// `None` never answers (the timeout ends it).
    fn scripted(
        script: HashMap<IpAddr, Vec<Option<bool>>>,
        calls: Arc<AtomicUsize>,
    ) -> impl Fn(SocketAddr) -> futures::future::BoxFuture<'static, Result<Duration, ProbeError>>
    {
        let script = Arc::new(Mutex::new(script));
        move |addr: SocketAddr| {
            calls.fetch_add(1, Ordering::SeqCst);
            let answer = {
                let mut s = script.lock().unwrap();
                let v = s.get_mut(&addr.ip()).unwrap();
                if v.len() > 1 { v.remove(0) } else { v[0] }
            };
            Box::pin(async move {
                match answer {
                    Some(true) => Ok(Duration::from_millis(2)),
                    Some(false) => Err(ProbeError::Status(500)),
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    async fn at(start: Instant, ms: u64) {
        tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_until_the_probes_tell_then_threshold_and_recovery() {
        // Probes at 0, ~1000 (+10%), ~2000 (+20%), ~3000 (+30%), ...
        let script = HashMap::from([(
            ip("127.20.0.1"),
            vec![Some(false), Some(false), None, Some(true), Some(false)],
        )]);
        let calls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = watch::channel(GatewayState::default());
        let start = Instant::now();
        assert_eq!(rx.borrow().liveness, Liveness::Unknown, "before any probe");
        // Every verdict published, in order.
        let mut changes = rx.clone();
        let seen = tokio::spawn(async move {
            let mut seen = vec![changes.borrow_and_update().liveness];
            while changes.changed().await.is_ok() {
                let l = changes.borrow_and_update().liveness;
                if seen.last() != Some(&l) {
                    seen.push(l);
                }
            }
            seen
        });
        let task = tokio::spawn(run(
            cfg(&["127.20.0.1"], 1000, 2),
            metrics(),
            tx,
            scripted(script, calls.clone()),
        ));
        at(start, 500).await;
        assert_eq!(rx.borrow().liveness, Liveness::Unknown);
        assert!(rx.borrow().resolved);
        assert_eq!(rx.borrow().ips, vec![ip("127.20.0.1")]);
        assert_eq!(
            rx.borrow().addresses,
            [AddressState {
                ip: ip("127.20.0.1"),
                liveness: Liveness::Unknown,
                last_error: Some("answered 500, not 200".into()),
            }],
            "each address's result is kept"
        );
        at(start, 1150).await;
        assert_eq!(
            rx.borrow().liveness,
            Liveness::Dead,
            "dead at the second consecutive failure"
        );
        at(start, 2900).await;
        assert_eq!(
            rx.borrow().liveness,
            Liveness::Dead,
            "a timeout is a failure"
        );
        // The timeout ended the third probe at ~2500..2710, so the fourth
        // comes at ~3500..3811.
        at(start, 3900).await;
        assert_eq!(
            rx.borrow().liveness,
            Liveness::Alive,
            "one success revives it"
        );
        assert_eq!(rx.borrow().addresses[0].last_error, None);
        at(start, 5000).await;
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert_eq!(
            rx.borrow().liveness,
            Liveness::Alive,
            "one failure after a success is not enough"
        );
        assert_eq!(rx.borrow().latency_ms, [Some(2); 3]);
        task.abort();
        let _ = task.await;
        let seen = seen.await.unwrap();
        assert_eq!(
            seen,
            [Liveness::Unknown, Liveness::Dead, Liveness::Alive],
            "a gateway that fails from the start is never taken for alive"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn any_live_address_keeps_the_gateway_alive() {
        let script = HashMap::from([
            (ip("127.20.0.1"), vec![Some(false)]),
            (ip("127.20.0.2"), vec![Some(true), Some(true), Some(false)]),
        ]);
        let calls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = watch::channel(GatewayState::default());
        let start = Instant::now();
        let task = tokio::spawn(run(
            cfg(&["127.20.0.2", "127.20.0.1", "127.20.0.2"], 1000, 1),
            metrics(),
            tx,
            scripted(script, calls.clone()),
        ));
        at(start, 1500).await;
        assert_eq!(rx.borrow().liveness, Liveness::Alive);
        assert_eq!(rx.borrow().ips, vec![ip("127.20.0.1"), ip("127.20.0.2")]);
        let per_ip: Vec<(IpAddr, Liveness)> = rx
            .borrow()
            .addresses
            .iter()
            .map(|a| (a.ip, a.liveness))
            .collect();
        assert_eq!(
            per_ip,
            [
                (ip("127.20.0.1"), Liveness::Dead),
                (ip("127.20.0.2"), Liveness::Alive)
            ]
        );
        at(start, 2500).await;
        assert_eq!(
            rx.borrow().liveness,
            Liveness::Dead,
            "both addresses failed"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        task.abort();
    }

    #[tokio::test]
    async fn names_resolve_and_a_failed_lookup_keeps_the_last_answer() {
        let mut last = HashMap::new();
        let (ips, unresolved) = resolve(
            &["localhost".into(), "127.20.0.9".into(), "::1".into()],
            &mut last,
            Duration::from_secs(2),
        )
        .await;
        assert!(ips.contains(&ip("127.0.0.1")), "{ips:?}");
        assert!(ips.contains(&ip("127.20.0.9")));
        assert_eq!(unresolved, vec!["::1: not an IPv4 address".to_string()]);
        assert!(ips.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");

        // The name fails now: its last answer stays, and it is reported.
        let mut last = HashMap::from([("gw.tandem.invalid".to_string(), vec![ip("127.20.0.7")])]);
        let (ips, unresolved) = resolve(
            &["gw.tandem.invalid".into()],
            &mut last,
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(ips, vec![ip("127.20.0.7")]);
        assert_eq!(unresolved.len(), 1);
        assert!(
            unresolved[0].starts_with("gw.tandem.invalid: "),
            "{unresolved:?}"
        );
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let p = Duration::from_secs(3);
        for _ in 0..200 {
            let j = jittered(p);
            assert!(j >= p && j <= p + p / 10, "{j:?}");
        }
    }
}

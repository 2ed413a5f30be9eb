//! `tandem-bench proxy-weights`: how fast a running `tandem proxy` routes by
//! new TrafficSplit weights.
//!
//! 1. Creates an apex Service `web` (with a ClusterIP) and two backends
//!    `web-a` and `web-b`, whose EndpointSlices point at `127.0.0.11:8080`
//!    and `127.0.0.12:8080`, and a TrafficSplit `web` → `web-a` 1, `web-b` 0.
//! 2. Starts `tandem destination` on the host's end of a veth (`--host-ip`)
//!    and `tandem proxy` (uid 2102) in the network namespace `--netns`,
//!    which `bench/proxy-weights.sh` made: its nat rules send the namespace's
//!    TCP to 198.19.0.0/16 (the testbed's ClusterIPs) to the proxy's 4140.
//! 3. A thread in that namespace serves both backends, each recording when
//!    a request reached it, and sends a GET to `web`'s ClusterIP every
//!    millisecond, one at a time, on a keep-alive connection.
//! 4. Flips the split's weights, 1/0 ↔ 0/1, one change at a time. A sample
//!    is the time from just before the patch is sent to the first request
//!    that reaches the new backend. Beside it: the patch's own round trip,
//!    and when a GetProfile subscriber of the same ClusterIP (this process)
//!    saw the new weights, which tells the destination's share from the
//!    proxy's. Requests that reach the old backend after the switch are
//!    counted (they should not exist).

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fs::File,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::{
    core::v1::{Service, ServicePort, ServiceSpec},
    discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
};
use kube::{
    Api,
    api::{DynamicObject, ObjectMeta, Patch, PatchParams},
};
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use serde_json::{Value, json};
use tandem_api::endpoints::SERVICE_NAME_LABEL;
use tandem_harness::launch::Launched;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    api::{FIELD_MANAGER, client, create_namespace, post, wait_served},
    cli::install_split_crd,
    controller::{Controller, free_port},
    destination::{next, req},
    objects::traffic_split_api,
    report::{Machine, Progress},
    stats::Summary,
};

const TARGET_P99_MS: f64 = 100.0;
const APEX: &str = "web";
/// The two backends: Service name, and where it answers in the namespace.
const BACKENDS: [(&str, &str); 2] = [("web-a", "127.0.0.11"), ("web-b", "127.0.0.12")];
const BACKEND_PORT: u16 = 8080;
/// How long a flip may take before the benchmark gives up.
const FLIP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The testbed's kubeconfig.
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
    /// The kubeconfig context of the cluster to use.
    #[arg(long, value_name = "NAME")]
    context: String,
    /// The tandem binary under test (a release build the proxy's uid 2102
    /// may execute).
    #[arg(long, value_name = "FILE")]
    tandem: PathBuf,
    /// kubectl, to apply the TrafficSplit CRD.
    #[arg(long, value_name = "FILE", default_value = "kubectl")]
    kubectl: PathBuf,
    /// The network namespace (`ip netns` name) the proxy and the backends run in.
    #[arg(long)]
    netns: String,
    /// The host's address on the veth to that namespace: the destination
    /// service listens there.
    #[arg(long)]
    host_ip: IpAddr,
    /// The namespace of every object the benchmark creates.
    #[arg(long, default_value = "bench-proxy-weights")]
    namespace: String,
    /// Weight changes to time.
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Pause between two changes, during which stale routing is counted.
    #[arg(long, default_value_t = 100)]
    gap_ms: u64,
    /// Where the logs of the destination service and the proxy go.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

// === objects ===

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

fn service(ns: &str, name: &str) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The slice of backend `svc`: one ready endpoint at `ip:8080`.
fn slice(ns: &str, svc: &str, ip: &str) -> EndpointSlice {
    let mut metadata = meta(ns, svc);
    metadata.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.to_string(),
        svc.to_string(),
    )]));
    EndpointSlice {
        metadata,
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(i32::from(BACKEND_PORT)),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

/// The backends' weights with all traffic on backend `to`.
fn backends(to: usize) -> Value {
    let list: Vec<Value> = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, (name, _))| json!({"service": name, "weight": u32::from(i == to)}))
        .collect();
    Value::Array(list)
}

fn split(ns: &str) -> DynamicObject {
    DynamicObject::new(APEX, &traffic_split_api())
        .within(ns)
        .data(json!({"spec": {"service": APEX, "backends": backends(0)}}))
}

// === timing ===

/// A request that reached backend `.0` at `.1`.
type Arrival = (usize, Instant);

/// When a flip switched (after its write) and the stale requests after that.
type Flip = (Duration, usize);

/// What one flip to backend `to`, written at `t0`, came to, once the
/// arrivals since `t0` are known: when the first request reached `to`, and
/// how many reached the other backend after that.
fn flip_outcome(arrivals: &[Arrival], to: usize, t0: Instant) -> Option<Flip> {
    let switched = arrivals
        .iter()
        .filter(|(b, at)| *b == to && *at >= t0)
        .map(|(_, at)| *at)
        .min()?;
    let stale = arrivals
        .iter()
        .filter(|(b, at)| *b != to && *at > switched)
        .count();
    Some((switched - t0, stale))
}

// === the namespace's side ===

/// The backends and the prober, on a thread in the namespace `netns`.
struct InNetns {
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    errors: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl InNetns {
    fn start(netns: &str, apex: SocketAddr) -> Result<Self> {
        let path = format!("/run/netns/{netns}");
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let (tx, arrivals) = mpsc::unbounded_channel();
        let errors = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = watch::channel(false);
        let errs = errors.clone();
        let thread = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the benchmark's network namespace")?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(serve_and_probe(apex, tx, errs, stopped))
        });
        Ok(Self {
            arrivals,
            errors,
            stop,
            thread,
        })
    }

    /// The arrivals so far, without waiting.
    fn drain(&mut self, into: &mut Vec<Arrival>) {
        while let Ok(a) = self.arrivals.try_recv() {
            into.push(a);
        }
    }

    /// The next arrival, within `within`.
    async fn next(&mut self, within: Duration) -> Result<Arrival> {
        match tokio::time::timeout(within, self.arrivals.recv()).await {
            Ok(Some(a)) => Ok(a),
            Ok(None) => bail!("the backends' thread ended"),
            Err(_) => bail!(
                "no request reached a backend within {within:?} ({} probe errors)",
                self.errors.load(Ordering::Relaxed)
            ),
        }
    }

    fn finish(self) -> Result<u64> {
        self.stop.send_replace(true);
        self.thread
            .join()
            .map_err(|_| anyhow!("the namespace's thread panicked"))??;
        Ok(self.errors.load(Ordering::Relaxed))
    }
}

async fn serve_and_probe(
    apex: SocketAddr,
    arrivals: mpsc::UnboundedSender<Arrival>,
    errors: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    for (i, (name, ip)) in BACKENDS.iter().enumerate() {
        let addr = SocketAddr::new(ip.parse()?, BACKEND_PORT);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("backend {name} listening on {addr}"))?;
        tokio::spawn(backend(listener, i, name, arrivals.clone()));
    }
    let client = crate::proxy::client(None);
    let uri: Uri = format!("http://{apex}/").parse()?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Failures count from the first answer on: before it the proxy is
    // still starting (its listener, its first profile).
    let mut up = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        let ok = match tokio::time::timeout(FLIP_TIMEOUT, client.get(uri.clone())).await {
            Ok(Ok(rsp)) => {
                let ok = rsp.status().is_success();
                ok & rsp.into_body().collect().await.is_ok()
            }
            _ => false,
        };
        if ok {
            up = true;
        } else if up {
            errors.fetch_add(1, Ordering::Relaxed);
        } else {
            // No busy loop while the proxy is starting.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Answers its name to every request, recording when each arrived.
async fn backend(
    listener: tokio::net::TcpListener,
    index: usize,
    name: &'static str,
    arrivals: mpsc::UnboundedSender<Arrival>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req| {
                let _ = arrivals.send((index, Instant::now()));
                async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(name)))) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

// === the benchmark ===

/// A free port on `ip` (bound and released).
fn free_port_on(ip: IpAddr) -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
    Ok(l.local_addr()?)
}

fn start_proxy(args: &Args, dst: SocketAddr, log: &std::path::Path) -> Result<Launched> {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &args.netns])
        .args([
            "setpriv",
            "--reuid",
            "2102",
            "--regid",
            "2102",
            "--clear-groups",
        ])
        .arg(&args.tandem)
        .arg("proxy")
        .env("LINKERD2_PROXY_IDENTITY_DISABLED", "disabled")
        .env("LINKERD2_PROXY_DESTINATION_SVC_ADDR", dst.to_string())
        .env(
            "LINKERD2_PROXY_DESTINATION_CONTEXT",
            json!({"ns": args.namespace}).to_string(),
        );
    Ok(Launched::start("tandem proxy", cmd, log)?)
}

pub async fn run(args: Args) -> Result<()> {
    if args.changes == 0 {
        bail!("--changes must be above zero");
    }
    let p = Progress::new();
    p.say(format_args!("machine: {}", Machine::read().describe()));
    let client = client(&args.kubeconfig, &args.context).await?;
    let ns = args.namespace.as_str();
    install_split_crd(&args.tandem, &args.kubectl, &args.kubeconfig, &args.context).await?;
    wait_served(&client).await?;
    create_namespace(&client, ns).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let splits: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &traffic_split_api());
    let apex = services.create(&post(), &service(ns, APEX)).await?;
    let cluster_ip: IpAddr = apex
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .context("the apex Service got no ClusterIP")?;
    let apex_addr = SocketAddr::new(cluster_ip, 80);
    for (name, ip) in BACKENDS {
        services.create(&post(), &service(ns, name)).await?;
        slices.create(&post(), &slice(ns, name, ip)).await?;
    }
    splits.create(&post(), &split(ns)).await?;

    let log_dir = args.log_dir.clone().unwrap_or_else(std::env::temp_dir);
    let grpc = free_port_on(args.host_ip)?;
    let admin = free_port().context("a free port for the admin server")?;
    let dst_log = log_dir.join("destination.log");
    let argv: Vec<std::ffi::OsString> = [
        "--kubeconfig".into(),
        args.kubeconfig.clone().into_os_string(),
        "--context".into(),
        args.context.clone().into(),
        "destination".into(),
        "--grpc-addr".into(),
        grpc.to_string().into(),
        "--admin-addr".into(),
        admin.to_string().into(),
    ]
    .into();
    let mut dest = Controller::spawn("tandem destination", &args.tandem, &argv, admin, &dst_log)?;
    dest.wait_ready(Duration::from_secs(60)).await?;
    let mut proxy = start_proxy(&args, grpc, &log_dir.join("proxy.log"))?;
    let mut netns = InNetns::start(&args.netns, apex_addr)?;
    // Ready once a request went through the proxy to web-a (weight 1).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        proxy.check_running()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if netns.next(left).await?.0 == 0 {
            break;
        }
    }
    p.say(format_args!(
        "the proxy routes {APEX} ({apex_addr}) to {}; {} changes follow",
        BACKENDS[0].0, args.changes
    ));

    let mut api = DestinationClient::connect(format!("http://{grpc}")).await?;
    let mut profile = api
        .get_profile(req(apex_addr.to_string()))
        .await?
        .into_inner();
    next(&mut profile, Duration::from_secs(10)).await?;

    let (mut samples, mut writes, mut seen) = (vec![], vec![], vec![]);
    let mut stale = 0;
    for i in 0..args.changes {
        let to = (i + 1) % 2;
        let mut arrivals = vec![];
        netns.drain(&mut arrivals);
        arrivals.clear();
        let patch = json!({"spec": {"backends": backends(to)}});
        let t0 = Instant::now();
        splits
            .patch(
                APEX,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Merge(&patch),
            )
            .await
            .context("patching the split")?;
        writes.push(t0.elapsed());
        let want: Vec<u32> = (0..BACKENDS.len())
            .map(|b| if b == to { 10_000 } else { 0 })
            .collect();
        loop {
            let pr = next(&mut profile, FLIP_TIMEOUT).await?;
            if pr
                .dst_overrides
                .iter()
                .map(|o| o.weight)
                .collect::<Vec<_>>()
                == want
            {
                seen.push(t0.elapsed());
                break;
            }
        }
        let switched = loop {
            let left = FLIP_TIMEOUT.saturating_sub(t0.elapsed());
            arrivals.push(netns.next(left).await?);
            if let Some((d, _)) = flip_outcome(&arrivals, to, t0) {
                break d;
            }
        };
        samples.push(switched);
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
        netns.drain(&mut arrivals);
        stale += flip_outcome(&arrivals, to, t0).map_or(0, |(_, s)| s);
    }
    let probe_errors = netns.finish()?;
    proxy.check_running()?;
    proxy.stop(Duration::from_secs(5)).await;
    dest.stop().await?;

    let s = Summary::of(&samples).ok_or_else(|| anyhow!("no samples"))?;
    let w = Summary::of(&writes).ok_or_else(|| anyhow!("no samples"))?;
    let d = Summary::of(&seen).ok_or_else(|| anyhow!("no samples"))?;
    let met = s.p99 < TARGET_P99_MS;
    println!(
        "weight change → proxy routing by it: n={} p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < {TARGET_P99_MS} ms: {})",
        s.n,
        s.p50,
        s.p90,
        s.p99,
        s.max,
        if met { "met" } else { "missed" }
    );
    println!(
        "of which the patch round trip: p50 {:.1} ms, p99 {:.1} ms; a GetProfile subscriber had the new weights at p50 {:.1} ms, p99 {:.1} ms",
        w.p50, w.p99, d.p50, d.p99
    );
    println!(
        "requests to the old backend after the switch: {stale}; failed probe requests once the proxy answered: {probe_errors}"
    );
    let summary = json!({
        "bench": "proxy-weights",
        "weight_change": s.to_json(),
        "patch_round_trip": w.to_json(),
        "subscriber_saw": d.to_json(),
        "stale_requests": stale,
        "probe_errors": probe_errors,
        "target_p99_ms": TARGET_P99_MS,
        "met": met,
    });
    crate::emit_json(&summary, args.json.as_deref())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flip_ends_at_the_first_request_to_the_new_backend() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let cases: Vec<(&str, Vec<Arrival>, Option<Flip>)> = vec![
            ("nothing yet", vec![], None),
            ("only the old backend", vec![(0, ms(1)), (0, ms(2))], None),
            (
                "old, then new",
                vec![(0, ms(1)), (1, ms(7)), (1, ms(8))],
                Some((Duration::from_millis(7), 0)),
            ),
            (
                "the old one after the switch is stale",
                vec![(1, ms(7)), (0, ms(9)), (1, ms(10))],
                Some((Duration::from_millis(7), 1)),
            ),
            (
                "out of order: the earliest new one counts",
                vec![(1, ms(9)), (1, ms(4))],
                Some((Duration::from_millis(4), 0)),
            ),
        ];
        for (what, arrivals, want) in cases {
            assert_eq!(flip_outcome(&arrivals, 1, t0), want, "{what}");
        }
        // One that reached the new backend before the write is no switch.
        let before = t0 - Duration::from_millis(1);
        assert_eq!(flip_outcome(&[(1, before)], 1, t0), None);
    }

    #[test]
    fn the_split_and_its_patches_weigh_one_backend() {
        let s = split("ns");
        assert_eq!(s.data["spec"]["service"], APEX);
        assert_eq!(s.data["spec"]["backends"][0]["weight"], 1);
        assert_eq!(s.data["spec"]["backends"][1]["weight"], 0);
        let b = backends(1);
        assert_eq!(b[0], json!({"service": "web-a", "weight": 0}));
        assert_eq!(b[1], json!({"service": "web-b", "weight": 1}));
        let sl = slice("ns", "web-b", "127.0.0.12");
        assert_eq!(
            sl.metadata.labels.unwrap()[SERVICE_NAME_LABEL],
            "web-b".to_string()
        );
        assert_eq!(sl.endpoints[0].addresses, ["127.0.0.12"]);
        assert_eq!(sl.ports.unwrap()[0].port, Some(8080));
    }
}

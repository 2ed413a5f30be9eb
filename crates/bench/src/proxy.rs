//! `tandem-bench proxy`: the latency a client proxy plus a server proxy add
//! to an HTTP/1.1 request, against the same app reached directly, at a fixed
//! open-loop rate; and the proxies' RSS, idle and under that load.
//! `bench/proxy.sh` builds the two network namespaces, the redirects and the
//! processes this measures.

use std::{convert::Infallible, io, net::SocketAddr, time::Duration};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Uri;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use serde_json::json;
use tokio::{net::TcpSocket, task::JoinSet, time::Instant};

use crate::stats::{Summary, memory_kib, round};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app through both proxies (redirected by iptables), ip:port.
    #[arg(long)]
    proxied: SocketAddr,
    /// The same app, not redirected: connections carry `--mark`, which the
    /// client namespace's iptables let through.
    #[arg(long)]
    direct: SocketAddr,
    #[arg(long, default_value_t = 0x2102)]
    mark: u32,
    /// Requests a second (open loop).
    #[arg(long, default_value_t = 1000)]
    rps: u32,
    /// Seconds of load on each path (at most 60).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// A proxy to read the RSS of, as NAME=PID (repeatable).
    #[arg(long = "pid", value_parser = parse_pid)]
    pids: Vec<(String, u32)>,
}

#[derive(Debug, clap::Args)]
pub struct AppArgs {
    /// Where to answer (repeatable).
    #[arg(long = "listen", required = true)]
    listen: Vec<SocketAddr>,
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    Ok((
        name.to_string(),
        pid.parse().map_err(|_| "PID is not a number")?,
    ))
}

pub(crate) type HttpClient = Client<Connector, Empty<Bytes>>;

#[derive(Clone)]
pub(crate) struct Connector(Option<u32>);

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;
    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, uri: Uri) -> Self::Future {
        let mark = self.0;
        Box::pin(async move {
            let addr: SocketAddr = uri
                .authority()
                .and_then(|a| a.as_str().parse().ok())
                .ok_or_else(|| io::Error::other("the URI needs ip:port"))?;
            let sock = TcpSocket::new_v4()?;
            if let Some(m) = mark {
                nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Mark, &m)
                    .map_err(io::Error::from)?;
            }
            let stream = sock.connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

pub(crate) fn client(mark: Option<u32>) -> HttpClient {
    Client::builder(TokioExecutor::new()).build(Connector(mark))
}

/// `n` requests at `rps`, each timed from its send to its body's end.
async fn load(client: &HttpClient, uri: &Uri, rps: u32, n: u64) -> Result<Vec<Duration>> {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rps);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        tick.tick().await;
        let (c, uri) = (client.clone(), uri.clone());
        tasks.spawn(async move {
            let start = Instant::now();
            let rsp = c.get(uri).await?;
            let ok = rsp.status().is_success();
            rsp.into_body().collect().await?;
            anyhow::ensure!(ok, "the app did not answer 200");
            Ok::<_, anyhow::Error>(start.elapsed())
        });
    }
    let mut samples = Vec::with_capacity(n as usize);
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok(d) => samples.push(d),
            Err(e) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("first failed request: {e:#}");
                }
            }
        }
    }
    if errors > 0 {
        bail!("{errors} of {n} requests failed");
    }
    Ok(samples)
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let (rss, _) = memory_kib(&status).context("no VmRSS")?;
    Ok(round(rss as f64 / 1024.0))
}

pub async fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        args.rps > 0 && args.secs > 0 && args.secs <= 60,
        "--rps > 0, 1 <= --secs <= 60"
    );
    let n = u64::from(args.rps) * args.secs;
    let direct = (
        client(Some(args.mark)),
        format!("http://{}/", args.direct).parse::<Uri>()?,
    );
    let proxied = (
        client(None),
        format!("http://{}/", args.proxied).parse::<Uri>()?,
    );
    // Warm both paths (connections, pools, the proxies' routers).
    load(&direct.0, &direct.1, args.rps, u64::from(args.rps))
        .await
        .context("direct warm-up")?;
    load(&proxied.0, &proxied.1, args.rps, u64::from(args.rps))
        .await
        .context("proxied warm-up")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle: Vec<(String, f64)> = args
        .pids
        .iter()
        .map(|(name, pid)| Ok((name.clone(), rss_mib(*pid)?)))
        .collect::<Result<_>>()?;

    eprintln!("direct: {n} requests at {} rps", args.rps);
    let d = Summary::of(&load(&direct.0, &direct.1, args.rps, n).await?).context("no samples")?;
    eprintln!("through both proxies: {n} requests at {} rps", args.rps);
    let pids = args.pids.clone();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut peak = vec![0f64; pids.len()];
        loop {
            for (i, (_, pid)) in pids.iter().enumerate() {
                peak[i] = peak[i].max(rss_mib(*pid).unwrap_or(0.0));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = &mut stopped => return peak,
            }
        }
    });
    let p = Summary::of(&load(&proxied.0, &proxied.1, args.rps, n).await?).context("no samples")?;
    let _ = stop.send(());
    let peak = sampler.await?;
    let loaded: Vec<(String, f64)> = args
        .pids
        .iter()
        .map(|(name, _)| name.clone())
        .zip(peak)
        .collect();

    let added_p50 = round(p.p50 - d.p50);
    let added_p99 = round(p.p99 - d.p99);
    println!("requests per path: {n} at {} rps", args.rps);
    println!(
        "direct:   p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        d.p50, d.p99, d.max
    );
    println!(
        "proxied:  p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        p.p50, p.p99, p.max
    );
    println!("added:    p50 {added_p50} ms  p99 {added_p99} ms (target p99 < 1 ms)");
    for ((name, i), (_, l)) in idle.iter().zip(&loaded) {
        println!("rss {name}: idle {i} MiB, peak under load {l} MiB (target < 20 MiB)");
    }
    let rss = |v: &[(String, f64)]| {
        v.iter()
            .map(|(n, m)| (n.clone(), json!(m)))
            .collect::<serde_json::Map<_, _>>()
    };
    println!(
        "{}",
        json!({
            "rps": args.rps, "requests": n,
            "direct": d.to_json(), "proxied": p.to_json(),
            "added_p50_ms": added_p50, "added_p99_ms": added_p99,
            "rss_idle_mib": rss(&idle), "rss_loaded_mib": rss(&loaded),
        })
    );
    Ok(())
}

/// A small app: `ok` to every request, on every `--listen` address.
pub async fn app(args: AppArgs) -> Result<()> {
    let mut servers = JoinSet::new();
    for addr in args.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        servers.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }
    servers.join_next().await;
    Ok(())
}

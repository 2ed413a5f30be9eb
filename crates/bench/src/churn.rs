//! `tandem-bench churn`: requests over pooled HTTP/1 connections that the
//! server closes, without a word, just as they are reused
//! ([`tandem_harness::churn`]). The same requests go once through
//! hyper-util's pooled client alone and once through the proxy's endpoint
//! client (the same pool, behind the proxy's connector). It counts, for
//! each, the requests answered, failed and hung (no end after
//! `--hung-after`). The target is none hung through the endpoint client.

use std::time::Duration;

use anyhow::{Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use prometheus_client::registry::Registry;
use serde_json::json;
use tandem_harness::churn::{Outcome, Tally, churning_server, drive};
use tandem_proxy::{
    endpoint::Endpoint,
    http::{EndpointClient, TryError},
    metrics::Metrics,
};
use tokio::net::TcpListener;

use crate::report::{Machine, Progress};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Requests through each client.
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,
    /// Requests in flight at once (one task each).
    #[arg(long, default_value_t = 16)]
    clients: u64,
    /// A request with no end after this many seconds counts as hung.
    #[arg(long, default_value_t = 5)]
    hung_after: u64,
    /// Threads that spin for the whole run, beside the clients: the race
    /// that hangs requests shows mostly on a loaded machine.
    #[arg(long, default_value_t = 1)]
    busy_threads: u64,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
}

pub async fn run(args: Args) -> Result<()> {
    if args.requests == 0 || args.clients == 0 {
        bail!("--requests and --clients must be at least 1");
    }
    let p = Progress::new();
    let machine = Machine::read();
    p.say(format_args!("machine: {}", machine.describe()));
    let busy = Busy::start(args.busy_threads);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(churning_server(listener));
    let hung_after = Duration::from_secs(args.hung_after);
    let uri = format!("http://{addr}/");

    p.say(format_args!(
        "{} requests through hyper-util's client alone",
        args.requests
    ));
    let plain: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let target = uri.clone();
    let hyper_util = drive(args.requests, args.clients, hung_after, move || {
        let (client, uri) = (plain.clone(), target.clone());
        async move {
            let req = http::Request::get(uri).body(Empty::new()).expect("a GET");
            Outcome::of(&client.request(req).await)
        }
    })
    .await;
    p.say(describe(&hyper_util));

    p.say(format_args!(
        "{} requests through the proxy's endpoint client",
        args.requests
    ));
    let endpoint = EndpointClient::new(
        Endpoint::forward(addr),
        vec![],
        Metrics::register(&mut Registry::default()),
        // The proxy's default connect timeout: tries stranded in a closed
        // connection are given up 3 s after it closed (`stranded_after`).
        Duration::from_secs(1),
    );
    let tandem = drive(args.requests, args.clients, hung_after, move || {
        let (client, uri) = (endpoint.clone(), uri.clone());
        async move {
            let req = http::Request::get(uri)
                .body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
                .expect("a GET");
            match client.request(req).await {
                Err(TryError::Stranded(_)) => Outcome::Stranded,
                res => Outcome::of(&res),
            }
        }
    })
    .await;
    p.say(describe(&tandem));
    server.abort();
    drop(busy);

    println!("hyper-util client alone: {}", describe(&hyper_util));
    println!("the proxy's endpoint client: {}", describe(&tandem));
    let summary = json!({
        "bench": "churn",
        "clients": args.clients,
        "busy_threads": args.busy_threads,
        "hung_after_s": args.hung_after,
        "hyper_util": hyper_util,
        "endpoint_client": tandem,
        "machine": machine.to_json(&Machine::read().load),
    });
    println!(
        "target: none hung through the endpoint client: {}",
        if tandem.hung == 0 { "met" } else { "missed" }
    );
    crate::emit_json(&summary, args.json.as_deref())?;
    Ok(())
}

fn describe(t: &Tally) -> String {
    format!(
        "{} requests: {} answered, {} failed, {} stranded and given up, {} hung ({:.1} per million)",
        t.requests,
        t.answered,
        t.failed,
        t.stranded,
        t.hung,
        t.hung as f64 * 1e6 / t.requests as f64
    )
}

/// Threads that spin until dropped.
struct Busy {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Busy {
    fn start(n: u64) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Busy { stop, threads }
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.halt();
    }
}

//! `tandem-bench destination`: how fast a weight change reaches a
//! subscriber of the destination service.
//!
//! 1. Applies the TrafficSplit CRD and creates `splits` TrafficSplits, each
//!    between two Services of its own (headless: they need no ClusterIP).
//! 2. Starts `tandem destination` and subscribes to GetProfile of every
//!    split's apex, as a mesh of proxies would.
//! 3. Patches split 0's weights, alternating 1/0 and 0/1, one change at a
//!    time, and times each from just before the patch is sent (so the API
//!    server's write is included) to the profile with the new overrides
//!    arriving on the stream. The patch's own round trip is reported too,
//!    to tell the API server's share of a slow sample from ours.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Service;
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
};
use linkerd2_proxy_api::destination::{
    DestinationProfile, GetDestination, destination_client::DestinationClient,
};
use serde_json::json;
use tokio::time::Instant;
use tonic::Streaming;

use crate::{
    api::{FIELD_MANAGER, client, create_namespace, create_objects, wait_served},
    cli::install_split_crd,
    controller::{Controller, free_port},
    objects,
    report::{Machine, Progress, Rss},
    stats::Summary,
};

const TARGET_P99_MS: f64 = 100.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The testbed's kubeconfig.
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
    /// The kubeconfig context of the cluster to use.
    #[arg(long, value_name = "NAME")]
    context: String,
    /// The tandem binary under test (a release build).
    #[arg(long, value_name = "FILE")]
    tandem: PathBuf,
    /// kubectl, to apply the TrafficSplit CRD.
    #[arg(long, value_name = "FILE", default_value = "kubectl")]
    kubectl: PathBuf,
    /// The namespace of every object the benchmark creates.
    #[arg(long, default_value = "bench-destination")]
    namespace: String,
    /// Weight changes to time.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// TrafficSplits (and subscribed profiles) present during the changes.
    #[arg(long, default_value_t = 100)]
    splits: usize,
    /// Pause between two changes.
    #[arg(long, default_value_t = 20)]
    gap_ms: u64,
    /// Where the destination service's log goes.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub(crate) fn req(path: String) -> GetDestination {
    GetDestination {
        scheme: "k8s".into(),
        path,
        context_token: String::new(),
    }
}

pub async fn run(args: Args) -> Result<()> {
    if args.splits == 0 || args.changes == 0 {
        bail!("--splits and --changes must be above zero");
    }
    let p = Progress::new();
    p.say(format_args!("machine: {}", Machine::read().describe()));
    let client = client(&args.kubeconfig, &args.context).await?;
    let ns = args.namespace.as_str();

    install_split_crd(&args.tandem, &args.kubectl, &args.kubeconfig, &args.context).await?;
    wait_served(&client).await?;
    create_namespace(&client, ns).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let splits: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &objects::traffic_split_api());
    create_objects(&p, "Services", &services, 0..2 * args.splits, |k| {
        objects::headless_service(ns, k)
    })
    .await?;
    create_objects(&p, "TrafficSplits", &splits, 0..args.splits, |j| {
        objects::traffic_split(ns, j, args.splits)
    })
    .await?;

    let grpc = free_port().context("a free port for gRPC")?;
    let admin = free_port().context("a free port for the admin server")?;
    let log = args.log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "tandem-bench-destination-{}.log",
            std::process::id()
        ))
    });
    let argv: Vec<std::ffi::OsString> = [
        "--kubeconfig".into(),
        args.kubeconfig.clone().into_os_string(),
        "--context".into(),
        args.context.clone().into(),
        "--log".into(),
        "info".into(),
        "destination".into(),
        "--grpc-addr".into(),
        grpc.to_string().into(),
        "--admin-addr".into(),
        admin.to_string().into(),
    ]
    .into();
    let mut dest = Controller::spawn("tandem destination", &args.tandem, &argv, admin, &log)?;
    dest.wait_ready(Duration::from_secs(60)).await?;
    p.say(format_args!(
        "tandem destination is ready (log: {})",
        log.display()
    ));

    let mut api = DestinationClient::connect(format!("http://{grpc}"))
        .await
        .with_context(|| format!("connecting to {grpc}"))?;
    let fqdn = |k: usize| format!("{}.{ns}.svc.cluster.local:80", objects::service_name(k));
    let mut streams = vec![];
    for j in 0..args.splits {
        let apex = objects::primary_of(j, args.splits);
        let mut s = api.get_profile(req(fqdn(apex))).await?.into_inner();
        let first = next(&mut s, Duration::from_secs(30)).await?;
        if first.dst_overrides.len() != 2 {
            bail!("the profile of split {j} has no overrides yet: {first:?}");
        }
        streams.push(s);
    }
    p.say(format_args!("{} profiles subscribed", streams.len()));

    let mut measured = streams.swap_remove(0);
    let mut samples = vec![];
    // The patch's round trip alone: what of a sample is the API server's.
    let mut writes = vec![];
    for i in 0..args.changes {
        let to_fallback = i % 2 == 0;
        let (a, b) = if to_fallback { (0, 1) } else { (1, 0) };
        let patch = json!({"spec": {"backends": [
            {"service": objects::service_name(0), "weight": a},
            {"service": objects::service_name(1), "weight": b},
        ]}});
        let start = Instant::now();
        splits
            .patch(
                &objects::split_name(0),
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Merge(&patch),
            )
            .await
            .context("patching the split")?;
        writes.push(start.elapsed());
        let want = [a * 10_000, b * 10_000];
        loop {
            let p = next(&mut measured, Duration::from_secs(10)).await?;
            let got: Vec<u32> = p.dst_overrides.iter().map(|o| o.weight).collect();
            if got == want {
                break;
            }
        }
        samples.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    let rss = Rss::read(&dest).ok();
    dest.stop().await?;

    let s = Summary::of(&samples).ok_or_else(|| anyhow!("no samples"))?;
    let met = s.p99 < TARGET_P99_MS;
    println!(
        "weight change → subscriber: n={} p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < {TARGET_P99_MS} ms: {})",
        s.n,
        s.p50,
        s.p90,
        s.p99,
        s.max,
        if met { "met" } else { "missed" }
    );
    let w = Summary::of(&writes).ok_or_else(|| anyhow!("no samples"))?;
    println!(
        "of which the patch round trip: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        w.p50, w.p99, w.max
    );
    if let Some(r) = rss {
        println!(
            "tandem destination RSS {} KiB (peak {} KiB) with {} splits subscribed",
            r.rss_kib, r.hwm_kib, args.splits
        );
    }
    let summary = json!({
        "bench": "destination",
        "splits": args.splits,
        "weight_change": s.to_json(),
        "patch_round_trip": w.to_json(),
        "target_p99_ms": TARGET_P99_MS,
        "met": met,
        "rss_kib": rss.map(|r| r.rss_kib),
    });
    crate::emit_json(&summary, args.json.as_deref())?;
    Ok(())
}

pub(crate) async fn next(
    s: &mut Streaming<DestinationProfile>,
    within: Duration,
) -> Result<DestinationProfile> {
    match tokio::time::timeout(within, s.message()).await {
        Ok(Ok(Some(p))) => Ok(p),
        Ok(Ok(None)) => bail!("the profile stream ended"),
        Ok(Err(e)) => bail!("the profile stream failed: {e}"),
        Err(_) => bail!("no profile within {within:?}"),
    }
}

//! The floor: the API server's own pace for the writes that mirroring
//! makes, measured in the same run as a yardstick.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Namespace, Service},
    discovery::v1::EndpointSlice,
};
use kube::{Api, Client, api::DeleteParams};
use tokio::time::{Instant, sleep, timeout};

use crate::{
    api::{REQUEST_TIMEOUT, create_namespace, create_one, post},
    objects,
    report::Progress,
};

/// The namespace of the floor's objects, in the local cluster.
const FLOOR_NAMESPACE: &str = "bench-floor";

/// The API server's own pace for what mirroring `n` Services writes: `n`
/// Services and their EndpointSlices created directly in the local cluster
/// (each Service, then its slice, as the mirror does), `in_flight` at a
/// time, before the mirror runs. The mirroring is compared with it, both
/// measured in the same run on the same machine. Then the namespace is
/// deleted and its Services waited out: Kubernetes counts every allocated
/// cluster IP at each allocation, so the mirroring must meet as few as the
/// floor did.
pub(super) async fn floor(
    p: &Progress,
    local: &Client,
    n: usize,
    in_flight: usize,
) -> Result<Duration> {
    let ns = FLOOR_NAMESPACE;
    create_namespace(local, ns).await?;
    let services: Api<Service> = Api::namespaced(local.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(local.clone(), ns);
    let (services, slices) = (&services, &slices);
    p.say(format_args!(
        "floor: creating {n} Services and their EndpointSlices directly ({in_flight} in flight)"
    ));
    let start = Instant::now();
    let mut results = futures::stream::iter(0..n)
        .map(|k| async move {
            let service = create_one(|| async {
                services
                    .create(&post(), &objects::service(ns, k))
                    .await
                    .map(drop)
            })
            .await;
            let slice = match service {
                Ok(()) => {
                    create_one(|| async {
                        slices
                            .create(&post(), &objects::endpoint_slice(ns, k))
                            .await
                            .map(drop)
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            (k, slice)
        })
        .buffer_unordered(in_flight);
    while let Some((k, r)) = results.next().await {
        r.with_context(|| {
            format!(
                "floor: creating Service {} and its slice",
                objects::service_name(k)
            )
        })?;
    }
    let took = start.elapsed();
    p.say(format_args!(
        "floor: {n} Services and slices in {:.2} s; deleting them",
        took.as_secs_f64()
    ));
    let namespaces: Api<Namespace> = Api::all(local.clone());
    timeout(
        REQUEST_TIMEOUT,
        namespaces.delete(ns, &DeleteParams::default()),
    )
    .await
    .context("floor: deleting its namespace timed out")?
    .with_context(|| format!("floor: deleting the namespace {ns}"))?;
    let deadline = Instant::now() + FLOOR_CLEANUP;
    loop {
        let gone = matches!(
            timeout(REQUEST_TIMEOUT, namespaces.get_opt(ns)).await,
            Ok(Ok(None))
        );
        if gone {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "floor: the namespace {ns} and its {n} Services are not gone after {} s",
                FLOOR_CLEANUP.as_secs()
            );
        }
        sleep(Duration::from_millis(500)).await;
    }
    p.say("floor: deleted");
    Ok(took)
}

/// How long the floor's namespace may take to go.
const FLOOR_CLEANUP: Duration = Duration::from_secs(180);

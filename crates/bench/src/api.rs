//! What the benchmarks ask of the testbed's API server: clients, objects
//! created many at a time with bounded calls and retries of busy answers,
//! and the TrafficSplit API served.

use std::{future::Future, ops::Range, path::Path, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{ObjectMeta, PatchParams, PostParams},
};
use tokio::time::Instant;

use crate::{objects, report::Progress};

/// Creates in flight at a time.
pub(crate) const IN_FLIGHT: usize = 32;
/// The longest one API call may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The field manager of everything the benchmarks write.
pub(crate) const FIELD_MANAGER: &str = "tandem-bench";

pub(crate) async fn client(kubeconfig: &Path, context: &str) -> Result<Client> {
    Ok(tandem_util::client::from_file(kubeconfig, Some(context)).await?)
}

pub(crate) fn post() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Patch parameters with the benchmarks' field manager.
pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

pub(crate) async fn wait_served(client: &Client) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(g) = kube::discovery::group(client, objects::SPLIT_GROUP).await
            && g.versions().any(|v| v == objects::SPLIT_VERSION)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{}/{} TrafficSplits were not served within 60 s of applying the CRD",
                objects::SPLIT_GROUP,
                objects::SPLIT_VERSION
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn create_namespace(client: &Client, ns: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let obj = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&post(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {ns}")),
    }
}

/// Creates objects `range` with `create`, `IN_FLIGHT` at a time. An object
/// that exists already counts as created; busy answers are retried a few times.
pub(crate) async fn create_all<F, Fut>(
    p: &Progress,
    what: &str,
    range: Range<usize>,
    create: F,
) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    let start = Instant::now();
    let total = range.len();
    let step = (total / 5).max(1);
    let create = &create;
    let mut results = futures::stream::iter(range)
        .map(|i| async move { (i, create_one(|| create(i)).await) })
        .buffer_unordered(IN_FLIGHT);
    let mut done = 0;
    while let Some((i, result)) = results.next().await {
        result.with_context(|| format!("creating {what} #{i}"))?;
        done += 1;
        if done % step == 0 || done == total {
            p.say(format_args!("{what}: {done}/{total}"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    p.say(format_args!(
        "{what}: {total} created in {secs:.1} s ({:.0}/s)",
        total as f64 / secs.max(1e-3)
    ));
    Ok(())
}

/// Creates `make(i)` through `api` for each `i` of `range`, as
/// [`create_all`] does.
pub(crate) async fn create_objects<K, F>(
    p: &Progress,
    what: &str,
    api: &Api<K>,
    range: Range<usize>,
    make: F,
) -> Result<()>
where
    K: Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
    F: Fn(usize) -> K,
{
    create_all(p, what, range, |i| {
        let obj = make(i);
        async move { api.create(&post(), &obj).await.map(drop) }
    })
    .await
}

pub(crate) async fn create_one<F, Fut>(create: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), kube::Error>>,
{
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        let err = match tokio::time::timeout(REQUEST_TIMEOUT, create()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => return Ok(()),
            // 404: a CRD just established may not be served everywhere yet.
            Ok(Err(kube::Error::Api(s))) if matches!(s.code, 404 | 429 | 500..=599) => {
                anyhow!("{} ({})", s.message, s.code)
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow!("no answer within {REQUEST_TIMEOUT:?}"),
        };
        if attempt == ATTEMPTS {
            return Err(err.context(format!("after {ATTEMPTS} attempts")));
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        attempt += 1;
    }
}

//! The mirror among replicas: only the holder of the Link's Lease runs it.
//!
//! As Linkerd's service mirror does, a replica that leads runs the whole
//! mirror (watches, writer, finalizer, status); one that stands by runs
//! nothing but the election. A leader that steps down (two thirds into the
//! lease without a renewal, well before another may take it) drops its
//! term, and with it every watch and every write in flight; the next leader
//! starts from a fresh list, as after a restart.
//!
//! Run as `link` deploys it (`--own-name`), the Lease is created with the
//! Link as its owner, so that it goes with the Link like the mirror's other
//! objects. A role that may not use the Lease (from a release before
//! leader election) makes the mirror run alone, with an error that says so.

use std::time::Duration;

use kube::{Api, Client, Resource};
use tandem_api::multicluster::Link;
use tandem_lease::{Elector, LeaseParams, Owner};
use tokio::sync::watch;

use super::{MirrorSettings, serve};
use crate::{call::call, metrics::Metrics};

/// How often a missing Link is looked for before the election starts.
const LINK_RECHECK: Duration = Duration::from_secs(2);

pub(super) async fn run(
    local: Client,
    settings: MirrorSettings,
    mut params: LeaseParams,
    metrics: Metrics,
    readiness: tandem_admin::Readiness,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if settings.own.is_some() {
        match link_owner(&local, &settings, &mut shutdown).await? {
            Some(owner) => params.owner = Some(owner),
            None => return Ok(()),
        }
    }
    let lease = format!("{}/{}", params.namespace, params.name);
    tracing::info!(%lease, identity = %params.identity, "service mirror: joining the leader election");
    let elector = Elector::new(local.clone(), params);
    let mut leadership = elector.leadership();
    let mut stop = shutdown.clone();
    // Aborted if this future is dropped, so that a mirror that goes takes
    // its candidacy with it.
    let mut election = Election(tokio::spawn(elector.run(async move {
        let _ = stop.wait_for(|s| *s).await;
    })));
    let ended = loop {
        // Standing by: ready to take over, with no figures of its own.
        metrics.stand_by();
        readiness.set(true);
        let led = tokio::select! {
            biased;
            // (Its `Ref` must not live on to the awaits below.)
            _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => break Ok(()),
            ended = &mut election.0 => Err(ended),
            led = async { leadership.wait_for(|l| l.is_leader()).await.map(|_| ()) } => match led {
                Ok(()) => Ok(()),
                // The election ended: its result says why.
                Err(_) => Err(tokio::time::timeout(Duration::from_secs(2), &mut election.0)
                    .await
                    .unwrap_or(Ok(Ok(())))),
            },
        };
        if let Err(ended) = led {
            return match ended {
                Ok(Err(forbidden @ tandem_lease::Error::Forbidden { .. })) => {
                    alone(forbidden, local, settings, metrics, readiness, shutdown).await
                }
                ended => Err(election_ended(ended, &lease)),
            };
        }
        tracing::info!(%lease, "leading: the service mirror starts");
        metrics.leader.set(1);
        let term = serve(
            local.clone(),
            settings.clone(),
            metrics.clone(),
            readiness.clone(),
            shutdown.clone(),
        );
        tokio::select! {
            res = term => break res,
            ended = &mut election.0 => return Err(election_ended(ended, &lease)),
            // A closed channel reads as not leading: the loop's top then
            // reports the election's end.
            _ = async { leadership.wait_for(|l| !l.is_leader()).await.map(|_| ()) } => {
                tracing::warn!(%lease, "no longer leading: the service mirror stops writing and stands by");
            }
        }
    };
    // Give the elector a moment to release the Lease, so that a standby
    // takes over at once.
    if !election.0.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut election.0).await;
    }
    ended
}

/// A mirror whose role may not use Leases runs as the only writer, as
/// mirrors did before they had leader election, and says how to turn it
/// on: an upgrade that applied a new image with the role of an older
/// release must not stop the mirroring. (An older role comes with an older
/// `link` output, which deployed one replica; `multicluster check` warns
/// that no Lease exists.)
async fn alone(
    forbidden: tandem_lease::Error,
    local: Client,
    settings: MirrorSettings,
    metrics: Metrics,
    readiness: tandem_admin::Readiness,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tracing::error!(
        error = %forbidden,
        "the mirror's role may not use its Lease (a role from an older release?): running as the only writer, without leader election; apply `tandem multicluster link | kubectl apply -f -` again to turn it on, or pass --no-leader-election"
    );
    metrics.leader.set(1);
    serve(local, settings, metrics, readiness, shutdown).await
}

type Elected = Result<(), tandem_lease::Error>;

/// The election's task, aborted when dropped.
struct Election(tokio::task::JoinHandle<Elected>);

impl Drop for Election {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why the election ended before shutdown (it retries what can pass, so
/// this is what cannot: a missing namespace, invalid parameters).
fn election_ended(ended: Result<Elected, tokio::task::JoinError>, lease: &str) -> anyhow::Error {
    match ended {
        Ok(Err(e)) => anyhow::Error::new(e).context("leader election cannot work"),
        Ok(Ok(())) => anyhow::anyhow!("leader election of {lease} ended"),
        Err(e) => anyhow::anyhow!("leader election of {lease} failed: {e}"),
    }
}

/// The Link as the Lease's owner, once it exists; `None` on shutdown.
async fn link_owner(
    local: &Client,
    settings: &MirrorSettings,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<Owner>> {
    let links: Api<Link> = Api::namespaced(local.clone(), &settings.link_namespace);
    let what = format!("{}/{}", settings.link_namespace, settings.link_name);
    loop {
        let read = call("reading the Link", links.get_opt(&settings.link_name)).await;
        match read {
            Ok(Some(link)) => {
                if let Some(uid) = link.meta().uid.clone() {
                    return Ok(Some(Owner {
                        api_version: Link::api_version(&()).into_owned(),
                        kind: Link::kind(&()).into_owned(),
                        name: settings.link_name.clone(),
                        uid,
                    }));
                }
            }
            Ok(None) => tracing::info!(link = %what, "the Link does not exist yet; waiting"),
            Err(e) => tracing::warn!(link = %what, error = %e, "reading the Link failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(None),
            _ = tokio::time::sleep(LINK_RECHECK) => {}
        }
    }
}

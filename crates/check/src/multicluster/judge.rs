//! The verdicts of the `tandem-multicluster` category, from [`Facts`].
//! Pure: the clock comes in as `now`.

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use tandem_api::multicluster::{Link, LinkConfig, LinkStatus, mirror_lease_name};

use super::{Facts, LinkFacts};
use crate::CheckResult;

/// A service mirror that has not written its Link's status for this long is
/// taken as not running.
const HEARTBEAT_MAX_AGE: time::Duration = time::Duration::minutes(2);

const LINK_AGAIN: &str = "link again: `tandem multicluster --context=OTHER link --cluster-name OTHER | kubectl apply -f -`";

pub(crate) fn judge(facts: &Facts, now: time::OffsetDateTime) -> Vec<CheckResult> {
    let links = match &facts.links {
        Ok(links) => links,
        Err(e) => {
            return vec![CheckResult::fail(
                "Links are readable",
                e.clone(),
                "is the Link CRD installed?",
            )];
        }
    };
    let mut out = vec![];
    if links.is_empty() {
        out.push(CheckResult::warn(
            "Links exist",
            "no Link in this cluster",
            "link a cluster: `tandem multicluster --context=OTHER link --cluster-name OTHER | kubectl apply -f -`",
        ));
    }
    for l in links {
        out.extend(link_checks(l, &facts.local_anchors, now));
    }
    out.push(orphan_mirrors(&facts.mirrors, links));
    out
}

pub(super) fn link_name(link: &Link) -> String {
    format!(
        "{}/{}",
        link.metadata.namespace.as_deref().unwrap_or(""),
        link.metadata.name.as_deref().unwrap_or("")
    )
}

/// The Link's spec, judged by the very rule the service mirror runs with,
/// so that `check` never calls valid a Link the mirror refuses.
pub(super) fn link_validity(link: &Link) -> CheckResult {
    let what = format!("Link {} is valid", link_name(link));
    match LinkConfig::from_link(link) {
        Ok(_) => CheckResult::ok(what),
        Err(invalid) => CheckResult::fail(
            what,
            invalid.to_string(),
            "fix the Link's spec, or link again",
        ),
    }
}

fn link_checks(
    facts: &LinkFacts,
    local_anchors: &Result<BTreeSet<String>, String>,
    now: time::OffsetDateTime,
) -> Vec<CheckResult> {
    let link = &facts.link;
    let name = link_name(link);
    let cluster = &link.spec.target_cluster_name;
    let status = link.status.clone().unwrap_or_default();
    let what = format!("Link {name}: the credentials for cluster {cluster} work");
    let credentials = match &facts.credentials {
        Ok(()) => CheckResult::ok(what),
        Err(e) => CheckResult::fail(what, e.clone(), LINK_AGAIN),
    };
    vec![
        link_validity(link),
        credentials,
        shared_anchor(&name, cluster, local_anchors, facts.remote_anchors.as_ref()),
        mirror_running(link, &status, now),
        mirror_leader(link, &facts.lease, now),
        mirror_failures(&name, &status),
        gateway_alive(link, &status),
    ]
}

pub(super) fn shared_anchor(
    name: &str,
    cluster: &str,
    local: &Result<BTreeSet<String>, String>,
    remote: Option<&Result<BTreeSet<String>, String>>,
) -> CheckResult {
    let what = format!("Link {name}: this cluster and {cluster} share a trust anchor");
    match (local, remote) {
        (Err(e), _) => CheckResult::fail(
            &what,
            format!("this cluster: {e}"),
            "install tandem here with the shared anchor",
        ),
        (_, None) => CheckResult::fail(
            &what,
            "the other cluster cannot be read",
            "fix the credentials first",
        ),
        (_, Some(Err(e))) => CheckResult::fail(
            &what,
            format!("cluster {cluster}: {e}"),
            "install tandem there with the shared anchor",
        ),
        (Ok(local), Some(Ok(theirs))) if local.is_disjoint(theirs) => CheckResult::fail(
            &what,
            format!(
                "no anchor in common: this cluster trusts {} certificate(s), {cluster} trusts {} other(s)",
                local.len(),
                theirs.len()
            ),
            "install both clusters with the same --identity-trust-anchors-file",
        ),
        (Ok(local), Some(Ok(theirs))) if local != theirs => CheckResult::warn(
            &what,
            "the anchors overlap but differ (a rotation in progress?)",
            "finish the rotation on both clusters",
        ),
        (Ok(_), Some(Ok(_))) => CheckResult::ok(&what),
    }
}

/// One replica of the mirror holds its Lease, and renews it. A missing
/// Lease is a warning: a mirror run with `--no-leader-election` has none.
pub(super) fn mirror_leader(
    link: &Link,
    lease: &Result<Option<Lease>, String>,
    now: time::OffsetDateTime,
) -> CheckResult {
    let what = format!("Link {}: the service mirror has a leader", link_name(link));
    let name = mirror_lease_name(link.metadata.name.as_deref().unwrap_or(""));
    let pods = format!(
        "see the mirror's pods: `kubectl -n {} get pods -l mirror.linkerd.io/cluster-name={}`",
        link.metadata.namespace.as_deref().unwrap_or(""),
        link.spec.target_cluster_name
    );
    let lease = match lease {
        Err(e) => {
            return CheckResult::warn(&what, e.clone(), "grant this user `get` on Leases there");
        }
        Ok(None) => {
            return CheckResult::warn(
                &what,
                format!(
                    "no Lease {name}: the mirror has not started, or runs with --no-leader-election"
                ),
                pods,
            );
        }
        Ok(Some(l)) => l.spec.clone().unwrap_or_default(),
    };
    let Some(holder) = lease.holder_identity.filter(|h| !h.is_empty()) else {
        return CheckResult::fail(&what, format!("no replica holds the Lease {name}"), pods)
            .retryable();
    };
    let renewed = lease
        .renew_time
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp_nanos(t.0.as_nanosecond()).ok());
    let duration = time::Duration::seconds(lease.lease_duration_seconds.unwrap_or(0).into());
    match renewed {
        Some(t) if now <= t + duration => CheckResult::ok(&what),
        Some(t) => CheckResult::fail(
            &what,
            format!(
                "{holder} last renewed the Lease {name} {} s ago, and it ran out after {} s",
                (now - t).whole_seconds(),
                duration.whole_seconds()
            ),
            pods,
        )
        .retryable(),
        None => CheckResult::fail(
            &what,
            format!("the Lease {name} names {holder} but has no renew time"),
            pods,
        )
        .retryable(),
    }
}

/// The mirror runs while it refreshes the Link's heartbeat.
pub(super) fn mirror_running(
    link: &Link,
    status: &LinkStatus,
    now: time::OffsetDateTime,
) -> CheckResult {
    let what = format!("Link {}: the service mirror is running", link_name(link));
    let start = format!(
        "start it: `tandem multicluster mirror --link {}`, or see its Deployment's pods",
        link.metadata.name.as_deref().unwrap_or("")
    );
    match status.last_heartbeat_time.as_deref().map(parse_time) {
        Some(Some(t)) if now - t <= HEARTBEAT_MAX_AGE => CheckResult::ok(&what),
        Some(Some(t)) => CheckResult::fail(
            &what,
            format!(
                "its last heartbeat was at {t}, {} s ago",
                (now - t).whole_seconds()
            ),
            start,
        )
        .retryable(),
        Some(None) => CheckResult::fail(
            &what,
            "the Link's heartbeat time is not an RFC 3339 time",
            start,
        )
        .retryable(),
        None => CheckResult::fail(
            &what,
            "the Link has no status: no mirror has picked it up",
            start,
        )
        .retryable(),
    }
}

pub(super) fn gateway_alive(link: &Link, status: &LinkStatus) -> CheckResult {
    let what = format!(
        "Link {}: the gateway of {} passes its probe",
        link_name(link),
        link.spec.target_cluster_name
    );
    match status.gateway.as_ref().and_then(|g| g.alive) {
        Some(true) => CheckResult::ok(&what),
        Some(false) => CheckResult::fail(
            &what,
            format!("the probe of {} fails", link.spec.gateway_address),
            "is the gateway running and reachable on its probe port?",
        )
        .retryable(),
        None => {
            CheckResult::fail(&what, "not probed yet", "wait for the service mirror").retryable()
        }
    }
}

/// The services the mirror cannot mirror, as its status summarises them: a
/// warning (the other services are mirrored), naming the first few.
pub(super) fn mirror_failures(name: &str, status: &LinkStatus) -> CheckResult {
    let what = format!("Link {name}: every exported service is mirrored");
    if status.failed_services == 0 {
        return CheckResult::ok(what);
    }
    let mut listed: Vec<String> = status
        .failures
        .iter()
        .take(3)
        .map(|f| {
            format!(
                "{}/{} ({}: {})",
                f.remote_ref.namespace, f.remote_ref.name, f.reason, f.message
            )
        })
        .collect();
    let rest = (status.failed_services as usize).saturating_sub(listed.len());
    if rest > 0 {
        listed.push(format!("and {rest} more"));
    }
    CheckResult::warn(
        what,
        format!(
            "{} of {} cannot be mirrored: {}",
            status.failed_services,
            status.failed_services + status.mirrored_services + status.pending_services,
            listed.join("; ")
        ),
        format!("see `kubectl get link {name} -o yaml` (status.failures)"),
    )
}

/// Every mirror Service must belong to a Link of this cluster.
pub(super) fn orphan_mirrors(
    mirrors: &Result<Vec<(String, Option<String>)>, String>,
    links: &[LinkFacts],
) -> CheckResult {
    const WHAT: &str = "every mirror service belongs to a Link";
    let mirrors = match mirrors {
        Ok(m) => m,
        Err(e) => return CheckResult::fail(WHAT, e.clone(), "could not list Services"),
    };
    let clusters: BTreeSet<&str> = links
        .iter()
        .map(|l| l.link.spec.target_cluster_name.as_str())
        .collect();
    let orphans: Vec<&str> = mirrors
        .iter()
        .filter(|(_, c)| !c.as_deref().is_some_and(|c| clusters.contains(c)))
        .map(|(name, _)| name.as_str())
        .collect();
    if orphans.is_empty() {
        CheckResult::ok(WHAT)
    } else {
        CheckResult::fail(
            WHAT,
            format!("mirrors without a Link: {}", orphans.join(", ")),
            "delete them, or link their cluster again",
        )
    }
}

fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

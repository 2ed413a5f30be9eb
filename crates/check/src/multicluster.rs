//! The `tandem-multicluster` category: Links, their credentials, shared trust
//! anchors, the service mirrors and the gateways, as the Links' status and
//! the linked clusters themselves show them.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{Api, Client, api::ListParams};
use tandem_api::multicluster::{CLUSTER_NAME_LABEL, Link, MIRRORED_SERVICE_LABEL};
use tandem_install::core::{TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY};
use tandem_multicluster::remote;

use crate::{Category, CheckResult, Context, core};

/// A service mirror that has not written its Link's status for this long is
/// taken as not running.
const HEARTBEAT_MAX_AGE: time::Duration = time::Duration::minutes(2);

pub async fn category(ctx: &Context) -> Category {
    Category {
        name: "tandem-multicluster".into(),
        checks: checks(ctx).await,
    }
}

async fn checks(ctx: &Context) -> Vec<CheckResult> {
    let mut out = vec![
        core::crds_established(
            ctx,
            "the Link CRD exists",
            &[tandem_api::multicluster::CRD_NAME.to_string()],
            "install it: `tandem multicluster install | kubectl apply -f -`",
        )
        .await,
    ];
    let links: Api<Link> = Api::all(ctx.client.clone());
    let links = match links.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            out.push(CheckResult::fail(
                "Links are readable",
                e.to_string(),
                "is the Link CRD installed?",
            ));
            return out;
        }
    };
    if links.is_empty() {
        out.push(CheckResult::warn(
            "Links exist",
            "no Link in this cluster",
            "link a cluster: `tandem multicluster --context=OTHER link --cluster-name OTHER | kubectl apply -f -`",
        ));
    }
    let local_anchors = read_anchors(&ctx.client, &ctx.options.namespace).await;
    for link in &links {
        out.extend(link_checks(ctx, link, &local_anchors).await);
    }
    out.push(orphan_mirrors(ctx, &links).await);
    out
}

fn link_name(link: &Link) -> String {
    format!(
        "{}/{}",
        link.metadata.namespace.as_deref().unwrap_or(""),
        link.metadata.name.as_deref().unwrap_or("")
    )
}

/// The Link's spec, judged by the very rule the service mirror runs with,
/// so that `check` never calls valid a Link the mirror refuses.
fn link_validity(link: &Link) -> CheckResult {
    let what = format!("Link {} is valid", link_name(link));
    match tandem_multicluster::LinkConfig::from_link(link) {
        Ok(_) => CheckResult::ok(what),
        Err(problems) => CheckResult::fail(what, problems, "fix the Link's spec, or link again"),
    }
}

async fn link_checks(
    ctx: &Context,
    link: &Link,
    local_anchors: &Result<BTreeSet<String>, String>,
) -> Vec<CheckResult> {
    let name = link_name(link);
    let cluster = &link.spec.target_cluster_name;
    let mut out = vec![];

    out.push(link_validity(link));

    let remote = remote_client(ctx, link).await;
    out.push(match &remote {
        Ok(_) => CheckResult::ok(format!("Link {name}: the credentials for cluster {cluster} work")),
        Err(e) => CheckResult::fail(
            format!("Link {name}: the credentials for cluster {cluster} work"),
            e.clone(),
            "link again: `tandem multicluster --context=OTHER link --cluster-name OTHER | kubectl apply -f -`",
        ),
    });

    let what = format!("Link {name}: this cluster and {cluster} share a trust anchor");
    out.push(match (local_anchors, &remote) {
        (Err(e), _) => CheckResult::fail(&what, format!("this cluster: {e}"), "install tandem here with the shared anchor"),
        (_, Err(_)) => CheckResult::fail(&what, "the other cluster cannot be read", "fix the credentials first"),
        (Ok(local), Ok(remote)) => match read_anchors(remote, &link.spec.target_cluster_namespace).await {
            Err(e) => CheckResult::fail(&what, format!("cluster {cluster}: {e}"), "install tandem there with the shared anchor"),
            Ok(theirs) if local.is_disjoint(&theirs) => CheckResult::fail(
                &what,
                format!("no anchor in common: this cluster trusts {} certificate(s), {cluster} trusts {} other(s)", local.len(), theirs.len()),
                "install both clusters with the same --identity-trust-anchors-file",
            ),
            Ok(theirs) if *local != theirs => CheckResult::warn(
                &what,
                "the anchors overlap but differ (a rotation in progress?)",
                "finish the rotation on both clusters",
            ),
            Ok(_) => CheckResult::ok(&what),
        },
    });

    let status = link.status.clone().unwrap_or_default();
    let what = format!("Link {name}: the service mirror is running");
    out.push(match status.last_heartbeat_time.as_deref().map(parse_time) {
        Some(Some(t)) if time::OffsetDateTime::now_utc() - t <= HEARTBEAT_MAX_AGE => CheckResult::ok(&what),
        Some(Some(t)) => CheckResult::fail(
            &what,
            format!("its last heartbeat was at {t}"),
            format!("start it: `tandem multicluster mirror --link {}`, or see its Deployment's pods", link.metadata.name.as_deref().unwrap_or("")),
        )
        .retryable(),
        _ => CheckResult::fail(
            &what,
            "the Link has no status: no mirror has picked it up",
            format!("start it: `tandem multicluster mirror --link {}`, or see its Deployment's pods", link.metadata.name.as_deref().unwrap_or("")),
        )
        .retryable(),
    });

    let what = format!("Link {name}: the gateway of {cluster} passes its probe");
    out.push(match status.gateway.and_then(|g| g.alive) {
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
    });
    out
}

/// The Link's remote cluster client, from its credentials Secret, made as the
/// service mirror makes it.
async fn remote_client(ctx: &Context, link: &Link) -> Result<Client, String> {
    let ns = link.metadata.namespace.clone().unwrap_or_default();
    let secret_name = &link.spec.cluster_credentials_secret;
    let (_, text) = remote::read_credentials(&ctx.client, &ns, secret_name)
        .await
        .map_err(|e| e.to_string())?;
    let client = remote::client_from_kubeconfig(&text, &ns, secret_name)
        .await
        .map_err(|e| e.to_string())?;
    // A list the remote-access account may do: proves the token is accepted.
    let services: Api<Service> = Api::all(client.clone());
    services
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| {
            format!(
                "listing Services of cluster {}: {e}",
                link.spec.target_cluster_name
            )
        })?;
    Ok(client)
}

/// The trust anchors of a cluster, as a set of normalised PEM blocks.
async fn read_anchors(client: &Client, namespace: &str) -> Result<BTreeSet<String>, String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = cms
        .get_opt(TRUST_ROOTS_CONFIGMAP)
        .await
        .map_err(|e| format!("ConfigMap {namespace}/{TRUST_ROOTS_CONFIGMAP}: {e}"))?
        .ok_or_else(|| format!("ConfigMap {namespace}/{TRUST_ROOTS_CONFIGMAP} is missing"))?;
    let pem = cm
        .data
        .and_then(|mut d| d.remove(TRUST_ROOTS_KEY))
        .ok_or_else(|| {
            format!("ConfigMap {namespace}/{TRUST_ROOTS_CONFIGMAP} has no {TRUST_ROOTS_KEY}")
        })?;
    let blocks: BTreeSet<String> = pem
        .split("-----END CERTIFICATE-----")
        .filter_map(|b| {
            b.split_once("-----BEGIN CERTIFICATE-----")
                .map(|(_, body)| body)
        })
        .map(|body| body.split_whitespace().collect::<String>())
        .filter(|b| !b.is_empty())
        .collect();
    if blocks.is_empty() {
        return Err(format!(
            "ConfigMap {namespace}/{TRUST_ROOTS_CONFIGMAP} holds no certificate"
        ));
    }
    Ok(blocks)
}

/// Every mirror Service must belong to a Link of this cluster.
async fn orphan_mirrors(ctx: &Context, links: &[Link]) -> CheckResult {
    const WHAT: &str = "every mirror service belongs to a Link";
    let services: Api<Service> = Api::all(ctx.client.clone());
    let list = match services
        .list(&ListParams::default().labels(&format!("{MIRRORED_SERVICE_LABEL}=true")))
        .await
    {
        Ok(l) => l.items,
        Err(e) => return CheckResult::fail(WHAT, e.to_string(), "could not list Services"),
    };
    let clusters: BTreeSet<&str> = links
        .iter()
        .map(|l| l.spec.target_cluster_name.as_str())
        .collect();
    let orphans: Vec<String> = list
        .iter()
        .filter(|s| {
            let c = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CLUSTER_NAME_LABEL));
            !c.is_some_and(|c| clusters.contains(c.as_str()))
        })
        .map(|s| {
            format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or(""),
                s.metadata.name.as_deref().unwrap_or("")
            )
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn link(edit: impl FnOnce(&mut serde_json::Value)) -> Link {
        let mut v = serde_json::json!({
            "apiVersion": "multicluster.tandem.io/v1alpha1",
            "kind": "Link",
            "metadata": { "name": "west", "namespace": "tandem-multicluster" },
            "spec": {
                "targetClusterName": "west",
                "targetClusterDomain": "cluster.local",
                "clusterCredentialsSecret": "cluster-credentials-west",
                "gatewayAddress": "198.18.65.1",
                "gatewayPort": 4143,
                "gatewayIdentity": "tandem-gateway.tandem-multicluster.serviceaccount.identity.tandem.cluster.local",
                "probeSpec": { "path": "/ready", "port": 4191, "period": "3s", "timeout": "1s", "failureThreshold": 3 },
            },
        });
        edit(&mut v);
        serde_json::from_value(v).expect("a Link")
    }

    #[test]
    fn check_judges_a_link_as_the_mirror_does() {
        assert_eq!(
            link_validity(&link(|_| {})).outcome,
            crate::Outcome::Success
        );
        // Each of these passed the old, shorter list in `check`, while the
        // mirror refused the Link.
        for (edit, needle) in [
            (
                Box::new(|v: &mut serde_json::Value| {
                    v["spec"]["probeSpec"]["path"] = "ready".into()
                }) as Box<dyn FnOnce(&mut serde_json::Value)>,
                "probeSpec.path",
            ),
            (
                Box::new(|v| v["spec"]["gatewayPort"] = 0.into()),
                "gatewayPort is 0",
            ),
            (
                Box::new(|v| v["spec"]["targetClusterName"] = "West_1".into()),
                "not a DNS label",
            ),
            (
                Box::new(|v| v["spec"]["probeSpec"]["period"] = "0s".into()),
                "is zero",
            ),
        ] {
            let r = link_validity(&link(edit));
            assert_eq!(r.outcome, crate::Outcome::Error, "{needle}");
            assert!(
                r.error.as_deref().unwrap().contains(needle),
                "{needle}: {r:?}"
            );
        }
    }
}

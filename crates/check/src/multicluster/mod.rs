//! The `tandem-multicluster` category: Links, their credentials, shared trust
//! anchors, the service mirrors and the gateways, as the Links' status and
//! the linked clusters themselves show them.
//!
//! As the core categories: [`gather`] asks the clusters (async), then
//! [`judge`] turns the facts into verdicts (pure, `now` passed in), so that
//! each verdict has a unit test.

mod judge;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Service};
use kube::{Api, Client, api::ListParams};
use tandem_api::multicluster::{
    CLUSTER_NAME_LABEL, Link, MIRRORED_SERVICE_LABEL, mirror_lease_name,
};
use tandem_multicluster::remote;

use crate::{Category, Context, anchors, core};

pub async fn category(ctx: &Context) -> Category {
    let mut checks = vec![
        core::crds_established(
            ctx,
            "the Link CRD exists",
            &[tandem_api::multicluster::CRD_NAME.to_string()],
            "install it: `tandem multicluster install | kubectl apply -f -`",
        )
        .await,
    ];
    let facts = gather(ctx).await;
    checks.extend(judge::judge(&facts, time::OffsetDateTime::now_utc()));
    Category {
        name: "tandem-multicluster".into(),
        checks,
    }
}

/// What the clusters said, for [`judge::judge`].
#[derive(Debug)]
pub(crate) struct Facts {
    /// Every Link of this cluster, with what its cluster said; `Err` when
    /// the Links cannot be listed.
    pub links: Result<Vec<LinkFacts>, String>,
    /// This cluster's trust anchors (normalised PEM blocks).
    pub local_anchors: Result<BTreeSet<String>, String>,
    /// This cluster's mirror Services, as `namespace/name` and the cluster
    /// label they carry.
    pub mirrors: Result<Vec<(String, Option<String>)>, String>,
}

/// One Link and what its linked cluster said.
#[derive(Debug)]
pub(crate) struct LinkFacts {
    pub link: Link,
    /// Whether the Link's credentials give a client the other API server
    /// accepts.
    pub credentials: Result<(), String>,
    /// The other cluster's trust anchors; `None` when it could not be asked.
    pub remote_anchors: Option<Result<BTreeSet<String>, String>>,
    /// The leader-election Lease of the Link's service mirror, if any.
    pub lease: Result<Option<Lease>, String>,
}

async fn gather(ctx: &Context) -> Facts {
    let links: Api<Link> = Api::all(ctx.client.clone());
    let links = match links.list(&ListParams::default()).await {
        Ok(l) => {
            let mut out = vec![];
            for link in l.items {
                out.push(gather_link(ctx, link).await);
            }
            Ok(out)
        }
        Err(e) => Err(e.to_string()),
    };
    Facts {
        links,
        local_anchors: anchors::read_set(&ctx.client, &ctx.options.namespace).await,
        mirrors: mirror_services(ctx).await,
    }
}

async fn gather_link(ctx: &Context, link: Link) -> LinkFacts {
    let (credentials, remote_anchors) = match remote_client(ctx, &link).await {
        Ok(client) => (
            Ok(()),
            Some(anchors::read_set(&client, &link.spec.target_cluster_namespace).await),
        ),
        Err(e) => (Err(e), None),
    };
    let leases: Api<Lease> = Api::namespaced(
        ctx.client.clone(),
        link.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let lease_name = mirror_lease_name(link.metadata.name.as_deref().unwrap_or_default());
    let lease = leases
        .get_opt(&lease_name)
        .await
        .map_err(|e| format!("reading Lease {lease_name}: {e}"));
    LinkFacts {
        link,
        credentials,
        remote_anchors,
        lease,
    }
}

async fn mirror_services(ctx: &Context) -> Result<Vec<(String, Option<String>)>, String> {
    let services: Api<Service> = Api::all(ctx.client.clone());
    let list = services
        .list(&ListParams::default().labels(&format!("{MIRRORED_SERVICE_LABEL}=true")))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .map(|s| {
            let cluster = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CLUSTER_NAME_LABEL))
                .cloned();
            let name = format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or(""),
                s.metadata.name.as_deref().unwrap_or("")
            );
            (name, cluster)
        })
        .collect())
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

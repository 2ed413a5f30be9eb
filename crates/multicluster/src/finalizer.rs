//! The Link's finalizer: added while the Link lives, and, when the Link is
//! deleted, removed only after every mirror it owns is gone (and the
//! mirror's own cluster-wide rights given up, when it runs as `link`
//! deploys it).

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use tandem_api::multicluster::{LINK_FINALIZER, Link, MIRROR_MANAGED_BY, MIRRORED_SERVICE_LABEL};

use crate::{
    call::{CallError, call},
    index::Key,
    metrics::Metrics,
    mirror::{LINK_LABEL, MANAGED_BY_LABEL},
    own::{self, OwnObjects},
    writer::delete_exactly,
};

/// Whether the Link holds the mirror's finalizer.
pub fn has_finalizer(link: &Link) -> bool {
    link.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == LINK_FINALIZER)
}

/// The merge patch that sets the Link's finalizers to `finalizers`, if the
/// Link did not change meanwhile (its resourceVersion).
fn finalizers_patch(link: &Link, finalizers: Vec<String>) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": link.metadata.resource_version,
        }
    })
}

/// The Link with the finalizer added.
pub fn with_finalizer(link: &Link) -> serde_json::Value {
    let mut finalizers = link.metadata.finalizers.clone().unwrap_or_default();
    finalizers.push(LINK_FINALIZER.to_string());
    finalizers_patch(link, finalizers)
}

/// The Link with the finalizer removed.
pub fn without_finalizer(link: &Link) -> serde_json::Value {
    let finalizers = link
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != LINK_FINALIZER)
        .cloned()
        .collect();
    finalizers_patch(link, finalizers)
}

/// A merge patch of the Link.
pub async fn patch_link(
    local: &Client,
    namespace: &str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<Link, CallError> {
    let api: Api<Link> = Api::namespaced(local.clone(), namespace);
    call(
        "patching the Link",
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch)),
    )
    .await
}

/// The finalizer's work before the Link may go: every mirror of this Link
/// (by its label) deleted, then the mirror's own rights given up.
pub async fn delete_everything(
    local: &Client,
    metrics: &Metrics,
    label: &str,
    own: Option<&OwnObjects>,
) -> Result<(), CallError> {
    match delete_all_mirrors(local, metrics, label).await {
        Ok(n) => tracing::info!(deleted = n, "the Link is deleted; its mirrors are gone"),
        // The mirror's cluster-wide rights are gone: given up before a
        // restart, or taken away. Nothing more can be deleted, and
        // holding the Link would help no one.
        Err(e) if e.code() == Some(403) && own.is_some() => {
            tracing::warn!(
                error = %e,
                label = %format!("{LINK_LABEL}={label}"),
                "the mirrors can no longer be listed; letting the Link go (delete what is left by its label)"
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    if let Some(own) = own {
        match own::release(local, own).await {
            Ok(()) => {
                tracing::info!(cluster_role = %own.cluster_role, "the mirror's cluster-wide rights are given up")
            }
            // Already given up, and the role with them.
            Err(e) if e.code() == Some(403) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes every mirror (and stray slice) that carries this Link's label,
/// listed fresh from the API, each by its uid; returns how many mirrors.
async fn delete_all_mirrors(
    local: &Client,
    metrics: &Metrics,
    label: &str,
) -> Result<usize, CallError> {
    let services: Api<Service> = Api::all(local.clone());
    let lp = ListParams::default().labels(&format!(
        "{MIRRORED_SERVICE_LABEL}=true,{LINK_LABEL}={label}"
    ));
    let list = call("listing the mirrors", services.list(&lp)).await?;
    let mut n = 0;
    for svc in &list.items {
        if let Some(k) = Key::of(&svc.metadata) {
            let api: Api<Service> = Api::namespaced(local.clone(), &k.namespace);
            delete_exactly(&api, metrics, &k.name, svc.metadata.uid.as_deref()).await?;
            n += 1;
        }
    }
    let slices: Api<EndpointSlice> = Api::all(local.clone());
    let lp = ListParams::default().labels(&format!(
        "{MANAGED_BY_LABEL}={MIRROR_MANAGED_BY},{LINK_LABEL}={label}"
    ));
    let list = call("listing the mirror slices", slices.list(&lp)).await?;
    for s in &list.items {
        if let Some(k) = Key::of(&s.metadata) {
            let api: Api<EndpointSlice> = Api::namespaced(local.clone(), &k.namespace);
            delete_exactly(&api, metrics, &k.name, s.metadata.uid.as_deref()).await?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalizer_is_added_and_removed_alone() {
        let mut link: Link = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.tandem.io/v1alpha1", "kind": "Link",
            "metadata": {"name": "west", "namespace": "ns", "resourceVersion": "7",
                         "finalizers": ["example.com/keep"]},
            "spec": {"targetClusterName": "west", "clusterCredentialsSecret": "c",
                     "gatewayAddress": "127.20.0.1"}
        }))
        .unwrap();
        assert!(!has_finalizer(&link));
        let added = with_finalizer(&link);
        assert_eq!(
            added["metadata"]["finalizers"],
            serde_json::json!(["example.com/keep", LINK_FINALIZER])
        );
        assert_eq!(added["metadata"]["resourceVersion"], "7");
        link.metadata.finalizers = Some(vec!["example.com/keep".into(), LINK_FINALIZER.into()]);
        assert!(has_finalizer(&link));
        assert_eq!(
            without_finalizer(&link)["metadata"]["finalizers"],
            serde_json::json!(["example.com/keep"])
        );
    }
}

//! The service mirror's own objects, as `tandem multicluster link` deploys
//! them: a ServiceAccount, Role, RoleBinding and Deployment of one name in
//! the Link's namespace (and, with `link --ha`, a PodDisruptionBudget), and
//! a ClusterRole and ClusterRoleBinding of another.
//!
//! `unlink` deletes only the Link and its Secret: the mirror needs all of
//! these to run the Link's finalizer. So when it starts, the mirror makes the
//! Link the owner of its namespaced objects, and once the finalizer has
//! deleted the mirrors it deletes its ClusterRoleBinding, the owner of its
//! ClusterRole. When the Link is gone, the garbage collector takes the rest.

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::ServiceAccount,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, Patch, PatchParams},
};
use serde::de::DeserializeOwned;
use tandem_api::multicluster::Link;

use crate::call::{CallError, call};

/// The names of the mirror's own objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnObjects {
    /// Its ServiceAccount, Role, RoleBinding, Deployment and budget, in the Link's
    /// namespace.
    pub name: String,
    /// Its ClusterRole and ClusterRoleBinding.
    pub cluster_role: String,
}

/// An owner reference to `owner`; `None` until it has a uid.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    let meta = owner.meta();
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: None,
        block_owner_deletion: None,
    })
}

/// A strategic merge patch that adds `owner` to an object's owners (merged
/// by uid: other owners stay).
fn owned_by(owner: &OwnerReference) -> Patch<serde_json::Value> {
    Patch::Strategic(serde_json::json!({ "metadata": { "ownerReferences": [owner] } }))
}

/// Makes the Link the owner of the mirror's namespaced objects, and its
/// ClusterRoleBinding the owner of its ClusterRole. Idempotent.
pub async fn adopt(local: &Client, own: &OwnObjects, link: &Link) -> Result<(), CallError> {
    let ns = link.metadata.namespace.clone().unwrap_or_default();
    let Some(owner) = owner_ref(link) else {
        return Ok(());
    };
    let patch = owned_by(&owner);
    let params = PatchParams::default();
    async fn patch_one<K>(
        api: Api<K>,
        name: &str,
        params: &PatchParams,
        patch: &Patch<serde_json::Value>,
    ) -> Result<(), CallError>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let what = format!("making the Link the owner of {} {name}", K::kind(&()));
        call(what, api.patch(name, params, patch)).await.map(|_| ())
    }
    patch_one(
        Api::<ServiceAccount>::namespaced(local.clone(), &ns),
        &own.name,
        &params,
        &patch,
    )
    .await?;
    patch_one(
        Api::<Role>::namespaced(local.clone(), &ns),
        &own.name,
        &params,
        &patch,
    )
    .await?;
    patch_one(
        Api::<RoleBinding>::namespaced(local.clone(), &ns),
        &own.name,
        &params,
        &patch,
    )
    .await?;
    patch_one(
        Api::<Deployment>::namespaced(local.clone(), &ns),
        &own.name,
        &params,
        &patch,
    )
    .await?;
    // Only `link --ha` makes a budget; and a Role from before budgets may
    // not patch one (forbidden even when there is none).
    match patch_one(
        Api::<PodDisruptionBudget>::namespaced(local.clone(), &ns),
        &own.name,
        &params,
        &patch,
    )
    .await
    {
        Err(e) if e.code() == Some(404) => {}
        Err(e) if e.code() == Some(403) => tracing::info!(
            error = %e,
            "the mirror's Role may not patch a PodDisruptionBudget: apply the output of this version's `link` to give it one"
        ),
        other => other?,
    }
    own_cluster_role(local, own).await
}

/// Makes the ClusterRoleBinding the owner of the ClusterRole, so that
/// deleting the binding (which the mirror may) takes the role (which the
/// mirror could no longer delete once unbound).
async fn own_cluster_role(local: &Client, own: &OwnObjects) -> Result<(), CallError> {
    let bindings: Api<ClusterRoleBinding> = Api::all(local.clone());
    let binding = call(
        format!("reading ClusterRoleBinding {}", own.cluster_role),
        bindings.get(&own.cluster_role),
    )
    .await?;
    let Some(owner) = owner_ref(&binding) else {
        return Ok(());
    };
    let roles: Api<ClusterRole> = Api::all(local.clone());
    call(
        format!(
            "making ClusterRoleBinding {0} the owner of ClusterRole {0}",
            own.cluster_role
        ),
        roles.patch(
            &own.cluster_role,
            &PatchParams::default(),
            &owned_by(&owner),
        ),
    )
    .await
    .map(|_| ())
}

/// After the Link's finalizer deleted the mirrors: gives up the mirror's
/// cluster-wide rights (the ClusterRoleBinding, and through it the
/// ClusterRole). Already gone counts as done.
pub async fn release(local: &Client, own: &OwnObjects) -> Result<(), CallError> {
    match own_cluster_role(local, own).await {
        Err(e) if e.code() == Some(404) => return Ok(()),
        other => other?,
    }
    let bindings: Api<ClusterRoleBinding> = Api::all(local.clone());
    match call(
        format!("deleting ClusterRoleBinding {}", own.cluster_role),
        bindings.delete(&own.cluster_role, &DeleteParams::background()),
    )
    .await
    {
        Err(e) if e.code() == Some(404) => Ok(()),
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_the_link_with_its_uid() {
        let mut link: Link = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.tandem.io/v1alpha1", "kind": "Link",
            "metadata": {"name": "west", "namespace": "mc"},
            "spec": {"targetClusterName": "west", "clusterCredentialsSecret": "c", "gatewayAddress": "127.20.0.1"}
        }))
        .unwrap();
        assert_eq!(owner_ref(&link), None, "no uid yet: no owner");
        link.metadata.uid = Some("u-1".into());
        let o = owner_ref(&link).unwrap();
        assert_eq!(
            (
                o.api_version.as_str(),
                o.kind.as_str(),
                o.name.as_str(),
                o.uid.as_str()
            ),
            ("multicluster.tandem.io/v1alpha1", "Link", "west", "u-1")
        );
        let Patch::Strategic(p) = owned_by(&o) else {
            panic!("a strategic merge patch, merged by uid")
        };
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert!(
            p["metadata"]["ownerReferences"][0]
                .get("blockOwnerDeletion")
                .is_none(),
            "no right on the Link's deletion is asked for"
        );
    }
}

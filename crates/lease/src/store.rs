//! Reads and writes of the one Lease. A trait, so that the election loop can
//! also run over an in-memory Lease under paused time in unit tests.

use std::future::Future;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, api::PostParams};

use crate::{Error, LeaseParams};

/// The Lease as stored. Writes carry the object's `resourceVersion` and fail
/// with [`Error::Conflict`] when it is stale (or, on create, when the Lease
/// already exists).
pub(crate) trait Store: Send + Sync + 'static {
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, Error>> + Send;
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, Error>> + Send;
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, Error>> + Send;
}

/// The Lease in a cluster.
pub(crate) struct KubeStore {
    api: Api<Lease>,
    namespace: String,
    name: String,
    lease: String,
    post: PostParams,
}

impl KubeStore {
    pub(crate) fn new(client: kube::Client, params: &LeaseParams) -> Self {
        Self {
            api: Api::namespaced(client, &params.namespace),
            namespace: params.namespace.clone(),
            name: params.name.clone(),
            lease: params.lease_ref(),
            post: PostParams {
                dry_run: false,
                field_manager: Some(params.field_manager.clone()).filter(|f| !f.is_empty()),
            },
        }
    }

    fn error(&self, op: &'static str, source: kube::Error) -> Error {
        classify(op, &self.namespace, self.lease.clone(), source)
    }
}

/// The [`Error`] for a failed call `op` on the Lease `lease` in `namespace`.
fn classify(op: &'static str, namespace: &str, lease: String, source: kube::Error) -> Error {
    match &source {
        kube::Error::Api(s) if s.is_conflict() || s.is_already_exists() => {
            Error::Conflict { op, lease }
        }
        kube::Error::Api(s) if s.code == 403 => Error::Forbidden {
            op,
            lease,
            message: s.message.clone(),
        },
        // Only the namespace can be missing when creating.
        kube::Error::Api(s) if op == "create" && s.is_not_found() => Error::NamespaceNotFound {
            namespace: namespace.to_string(),
            lease,
        },
        _ => Error::Api { op, lease, source },
    }
}

impl Store for KubeStore {
    async fn get(&self) -> Result<Option<Lease>, Error> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error("get", e))
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, Error> {
        self.api
            .create(&self.post, lease)
            .await
            .map_err(|e| self.error("create", e))
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, Error> {
        // A PUT with metadata.resourceVersion set is the optimistic lock.
        self.api
            .replace(&self.name, &self.post, lease)
            .await
            .map_err(|e| self.error("replace", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("from the apiserver", reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn api_errors_are_classified() {
        let e = |op, code, reason| classify(op, "ns", "ns/l".into(), api_error(code, reason));
        assert!(matches!(
            e("create", 404, "NotFound"),
            Error::NamespaceNotFound { namespace, .. } if namespace == "ns"
        ));
        // A Lease deleted under a replace is not a missing namespace.
        assert!(matches!(
            e("replace", 404, "NotFound"),
            Error::Api { op: "replace", .. }
        ));
        assert!(matches!(
            e("create", 409, "AlreadyExists"),
            Error::Conflict { .. }
        ));
        assert!(matches!(
            e("replace", 409, "Conflict"),
            Error::Conflict { .. }
        ));
        assert!(matches!(
            e("get", 403, "Forbidden"),
            Error::Forbidden { op: "get", .. }
        ));
        assert!(matches!(
            e("get", 500, "InternalError"),
            Error::Api { op: "get", .. }
        ));
    }
}

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
    name: String,
    lease: String,
    post: PostParams,
}

impl KubeStore {
    pub(crate) fn new(client: kube::Client, params: &LeaseParams) -> Self {
        Self {
            api: Api::namespaced(client, &params.namespace),
            name: params.name.clone(),
            lease: params.lease_ref(),
            post: PostParams {
                dry_run: false,
                field_manager: Some(params.field_manager.clone()).filter(|f| !f.is_empty()),
            },
        }
    }

    fn error(&self, op: &'static str, source: kube::Error) -> Error {
        let lease = self.lease.clone();
        match &source {
            kube::Error::Api(s) if s.is_conflict() || s.is_already_exists() => {
                Error::Conflict { op, lease }
            }
            _ => Error::Api { op, lease, source },
        }
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

//! The linked cluster's client, from the Link's credentials Secret, and how
//! the errors of that cluster read in a condition.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tandem_api::multicluster::{CREDENTIALS_KEY, CredentialsRefused};
use tandem_util::client::{self, ClientError};

/// Why the linked cluster's client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the credentials Secret {namespace}/{name} does not exist")]
    Missing { namespace: String, name: String },
    #[error("reading the credentials Secret {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the credentials Secret {namespace}/{name} has no key {CREDENTIALS_KEY:?}")]
    NoKey { namespace: String, name: String },
    #[error("the credentials Secret {namespace}/{name}: the kubeconfig is not UTF-8 text")]
    NotText { namespace: String, name: String },
    #[error("the credentials Secret {namespace}/{name} holds a broken kubeconfig: {why}")]
    Kubeconfig {
        namespace: String,
        name: String,
        why: String,
    },
    #[error(
        "the credentials Secret {namespace}/{name} holds a kubeconfig that tandem refuses: {source}"
    )]
    Refused {
        namespace: String,
        name: String,
        #[source]
        source: CredentialsRefused,
    },
}

/// The Secret's kubeconfig and its resourceVersion (to notice a rotation).
pub async fn read_credentials(
    local: &Client,
    namespace: &str,
    name: &str,
) -> Result<(String, String), CredentialsError> {
    let secrets: Api<Secret> = Api::namespaced(local.clone(), namespace);
    let ids = || (namespace.to_string(), name.to_string());
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|source| {
            let (namespace, name) = ids();
            CredentialsError::Read {
                namespace,
                name,
                source,
            }
        })?
        .ok_or_else(|| {
            let (namespace, name) = ids();
            CredentialsError::Missing { namespace, name }
        })?;
    let version = secret.metadata.resource_version.clone().unwrap_or_default();
    let bytes = secret
        .data
        .and_then(|mut d| d.remove(CREDENTIALS_KEY))
        .map(|b| b.0)
        .or_else(|| {
            secret
                .string_data
                .and_then(|mut d| d.remove(CREDENTIALS_KEY))
                .map(String::into_bytes)
        })
        .ok_or_else(|| {
            let (namespace, name) = ids();
            CredentialsError::NoKey { namespace, name }
        })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        let (namespace, name) = ids();
        CredentialsError::NotText { namespace, name }
    })?;
    Ok((version, text))
}

/// A client for the cluster the kubeconfig of Secret `namespace/name`
/// describes (see [`tandem_util::client::from_link_kubeconfig`]).
pub async fn client_from_kubeconfig(
    text: &str,
    namespace: &str,
    name: &str,
) -> Result<Client, CredentialsError> {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    client::from_link_kubeconfig(text)
        .await
        .map_err(|e| match e {
            ClientError::Refused(source) => CredentialsError::Refused {
                namespace,
                name,
                source,
            },
            ClientError::Broken(why) => CredentialsError::Kubeconfig {
                namespace,
                name,
                why,
            },
            other => CredentialsError::Kubeconfig {
                namespace,
                name,
                why: error_chain(&other),
            },
        })
}

pub use tandem_util::error_chain;

/// The HTTP status of a kube error, if the server answered.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The same, for a watcher's error.
pub fn watch_status_code(e: &kube::runtime::watcher::Error) -> Option<u16> {
    use kube::runtime::watcher::Error as W;
    match e {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => status_code(e),
        W::WatchError(s) => Some(s.code),
        W::NoResourceVersion => None,
    }
}

/// The condition reason for an error of the linked cluster.
pub fn unreachable_reason(code: Option<u16>) -> &'static str {
    match code {
        Some(401) | Some(403) => "Unauthorized",
        _ => "Unreachable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn broken_kubeconfigs_are_reported_not_panicked_on() {
        let cases = [
            ("", "empty"),
            ("{{{ not yaml", "not yaml"),
            ("apiVersion: v1\nkind: Config\nclusters: []\n", "no context"),
            (
                "apiVersion: v1\nkind: Config\ncurrent-context: west\ncontexts: [{name: west, context: {cluster: west, user: u}}]\nclusters: [{name: west, cluster: {server: 'https://a b'}}]\nusers: [{name: u, user: {token: t}}]\n",
                "a server that is no URL",
            ),
            (
                "apiVersion: v1\nkind: Config\ncurrent-context: east\ncontexts: [{name: west, context: {cluster: west, user: u}}]\nclusters: [{name: west, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: t}}]\n",
                "a current context that does not exist",
            ),
        ];
        for (text, what) in cases {
            match client_from_kubeconfig(text, "ns", "creds").await {
                Err(e @ CredentialsError::Kubeconfig { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.starts_with(
                            "the credentials Secret ns/creds holds a broken kubeconfig: "
                        ),
                        "{what}: {msg}"
                    );
                }
                Err(e) => panic!("{what}: unexpected error {e}"),
                Ok(_) => panic!("{what}: a client was built"),
            }
        }
    }

    #[tokio::test]
    async fn unsafe_kubeconfigs_are_refused_before_kube_reads_them() {
        // An exec plugin that would leave a mark if it ran.
        let marker = std::env::temp_dir().join(format!("tandem-exec-ran-{}", std::process::id()));
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: west\ncontexts: [{{name: west, context: {{cluster: west, user: u}}}}]\nclusters: [{{name: west, cluster: {{server: 'https://127.0.0.1:1'}}}}]\nusers: [{{name: u, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: touch, args: ['{}']}}}}}}]\n",
            marker.display()
        );
        let err = client_from_kubeconfig(&text, "ns", "creds")
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, CredentialsError::Refused { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("the credentials Secret ns/creds holds a kubeconfig that tandem refuses: users[0].user.exec is refused"),
            "{msg}"
        );
        assert!(!marker.exists(), "the exec plugin never ran");
    }

    #[test]
    fn auth_errors_read_as_unauthorized() {
        assert_eq!(unreachable_reason(Some(401)), "Unauthorized");
        assert_eq!(unreachable_reason(Some(403)), "Unauthorized");
        assert_eq!(unreachable_reason(Some(500)), "Unreachable");
        assert_eq!(unreachable_reason(None), "Unreachable");
    }
}

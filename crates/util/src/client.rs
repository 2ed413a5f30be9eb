//! Kubernetes clients from kubeconfigs, in one place: a user's own kubeconfig
//! file (any auth it holds, as kubectl would use it), or the text of a Link's
//! credentials Secret, of which only an https server, CA data and a token are
//! used (the rule is `tandem_api::multicluster::remote_access`, checked here
//! before kube reads the text).

use std::path::{Path, PathBuf};

use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
};
use tandem_api::multicluster::{CredentialsRefused, remote_access};

use crate::error_chain;

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {}: {}", path.display(), error_chain(source))]
    Read {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    /// The kubeconfig does not give a usable configuration for the context.
    #[error("using {context} of the kubeconfig: {why}")]
    Config { context: String, why: String },
    /// A Link's kubeconfig that does not parse or lacks a field.
    #[error("broken kubeconfig: {0}")]
    Broken(String),
    /// A Link's kubeconfig with more than tandem accepts (an exec plugin, a file path, http).
    #[error("the kubeconfig is refused: {0}")]
    Refused(#[source] CredentialsRefused),
    #[error("building the Kubernetes client: {}", error_chain(.0))]
    Build(#[source] kube::Error),
}

/// kube's configuration for `context` of `kubeconfig` (its current context
/// with `None`).
pub async fn config(
    kubeconfig: Kubeconfig,
    context: Option<&str>,
) -> Result<kube::Config, ClientError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| ClientError::Config {
            context: match context {
                Some(c) => format!("context {c:?}"),
                None => "the current context".into(),
            },
            why: error_chain(&e),
        })
}

/// [`config`] of a kubeconfig file.
pub async fn config_from_file(
    path: &Path,
    context: Option<&str>,
) -> Result<kube::Config, ClientError> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| ClientError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    config(kubeconfig, context).await
}

/// A client for `context` of a kubeconfig file.
pub async fn from_file(path: &Path, context: Option<&str>) -> Result<Client, ClientError> {
    client(config_from_file(path, context).await?)
}

/// A client from a configuration.
pub fn client(config: kube::Config) -> Result<Client, ClientError> {
    Client::try_from(config).map_err(ClientError::Build)
}

/// A client for the cluster a Link's kubeconfig describes (its current
/// context), from only its https server, CA data and token: anything else is
/// refused before kube reads the text, so that an exec plugin or a file path
/// in a Secret never runs or is read on this machine.
pub async fn from_link_kubeconfig(text: &str) -> Result<Client, ClientError> {
    let access = remote_access(text).map_err(|e| match e {
        CredentialsRefused::Broken(why) => ClientError::Broken(why),
        refused => ClientError::Refused(refused),
    })?;
    let kubeconfig = access.kubeconfig().map_err(ClientError::Broken)?;
    match config(kubeconfig, None).await {
        Ok(config) => client(config),
        Err(ClientError::Config { why, .. }) => Err(ClientError::Broken(why)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(server: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: k, cluster: {{server: {server:?}}}}}]\n\
             users: [{{name: u, user: {user}}}]\n\
             contexts: [{{name: c, context: {{cluster: k, user: u}}}}]\n"
        )
    }

    #[tokio::test]
    async fn a_link_kubeconfig_gives_a_client_with_only_its_token() {
        let text = kubeconfig("https://127.0.0.1:6443", "{token: abc}");
        assert!(from_link_kubeconfig(&text).await.is_ok());
    }

    #[tokio::test]
    async fn link_kubeconfigs_with_more_than_a_token_are_refused() {
        let exec = "{exec: {command: /bin/sh, apiVersion: client.authentication.k8s.io/v1}}";
        for (text, want) in [
            (kubeconfig("https://127.0.0.1:6443", exec), "refused"),
            (
                kubeconfig("http://127.0.0.1:6443", "{token: abc}"),
                "refused",
            ),
            ("not: [a kubeconfig".to_string(), "broken kubeconfig"),
            (String::new(), "broken kubeconfig"),
        ] {
            let Err(err) = from_link_kubeconfig(&text).await else {
                panic!("{text}: accepted");
            };
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
    }

    #[tokio::test]
    async fn a_file_names_what_is_wrong_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let Err(err) = from_file(&missing, None).await else {
            panic!("a missing file gave a client");
        };
        assert!(matches!(err, ClientError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");

        let path = dir.path().join("config");
        std::fs::write(&path, kubeconfig("https://127.0.0.1:6443", "{token: abc}")).unwrap();
        assert!(from_file(&path, None).await.is_ok());
        assert!(from_file(&path, Some("c")).await.is_ok());
        let Err(err) = from_file(&path, Some("nope")).await else {
            panic!("an unknown context gave a client");
        };
        assert!(err.to_string().contains(r#"context "nope""#), "{err}");
    }
}

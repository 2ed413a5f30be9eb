//! Clients from kubeconfig, as kubectl makes them.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kube::{Client, config::Kubeconfig};

/// Which cluster to talk to: the global `--kubeconfig` and `--context`.
#[derive(Clone, Debug, Default, Args)]
pub struct ClusterArgs {
    /// The kubeconfig file. Default: $KUBECONFIG (which may list several
    /// files), then ~/.kube/config.
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context. Default: the current context.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// The client configuration, or why there is none. With neither flag,
    /// the kubeconfig ($KUBECONFIG, ~/.kube/config), else the in-cluster
    /// service account, as controllers need.
    pub async fn config(&self) -> Result<kube::Config> {
        let kubeconfig = match (&self.kubeconfig, &self.context) {
            (None, None) => {
                return kube::Config::infer().await.context(
                    "no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a cluster; pass --kubeconfig and --context",
                );
            }
            (Some(path), context) => {
                return Ok(tandem_util::client::config_from_file(path, context.as_deref()).await?);
            }
            (None, Some(_)) => Kubeconfig::read().context(
                "reading the kubeconfig ($KUBECONFIG or ~/.kube/config); pass --kubeconfig",
            )?,
        };
        Ok(tandem_util::client::config(kubeconfig, self.context.as_deref()).await?)
    }

    pub async fn client(&self) -> Result<Client> {
        Ok(tandem_util::client::client(self.config().await?)?)
    }
}

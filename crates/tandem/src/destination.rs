//! `tandem destination`: Linkerd's Destination API (Get, GetProfile) for
//! the proxies, from the cluster's Services, EndpointSlices, Pods,
//! TrafficSplits and HTTPRoutes. Plain gRPC for now (no TLS).

use std::{net::SocketAddr, process::ExitCode};

use anyhow::Result;
use clap::Args;
use tandem_meshtls::Name;

use crate::kube_client::ClusterArgs;

#[derive(Debug, Args)]
pub struct DestinationArgs {
    /// Where to serve the Destination API (gRPC, plaintext).
    #[arg(
        long,
        env = "TANDEM_DESTINATION_GRPC_ADDR",
        default_value = "0.0.0.0:8086"
    )]
    grpc_addr: SocketAddr,
    /// Where to serve /live, /ready and /metrics.
    #[arg(
        long,
        env = "TANDEM_DESTINATION_ADMIN_ADDR",
        default_value = "0.0.0.0:9990"
    )]
    admin_addr: SocketAddr,
    /// The cluster's DNS domain: names are `<svc>.<ns>.svc.<domain>`.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The control plane's namespace, part of every mesh identity.
    #[arg(long, default_value = tandem_install::core::DEFAULT_NAMESPACE)]
    control_plane_namespace: String,
    /// The identity trust domain: identities end in `.identity.<ns>.<domain>`.
    #[arg(long, default_value = "cluster.local")]
    identity_trust_domain: String,
}

impl DestinationArgs {
    /// The settings, or why these flags make none: the names must make
    /// valid mesh identities.
    fn settings(self) -> Result<tandem_destination::Settings> {
        Name::service_account(
            "sa",
            "ns",
            &self.control_plane_namespace,
            &self.identity_trust_domain,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "--control-plane-namespace {:?} and --identity-trust-domain {:?} make no valid identity: {e}",
                self.control_plane_namespace,
                self.identity_trust_domain
            )
        })?;
        Ok(tandem_destination::Settings {
            grpc_addr: self.grpc_addr,
            admin_addr: self.admin_addr,
            index: tandem_destination::index::Config {
                cluster_domain: self.cluster_domain,
                control_plane_ns: self.control_plane_namespace,
                trust_domain: self.identity_trust_domain,
            },
        })
    }
}

pub async fn run(cluster: &ClusterArgs, args: DestinationArgs) -> Result<ExitCode> {
    let settings = args.settings()?;
    let client = cluster.client().await?;
    tandem_destination::run(client, settings, async {
        tandem::signal::shutdown_signal().await;
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DestinationArgs,
    }

    #[test]
    fn defaults_and_bad_names() {
        let ok = Cli::try_parse_from(["destination"])
            .unwrap()
            .args
            .settings()
            .unwrap();
        assert_eq!(ok.grpc_addr.port(), 8086);
        assert_eq!(ok.index.control_plane_ns, "tandem");
        let bad = Cli::try_parse_from(["destination", "--control-plane-namespace", "Bad_NS"])
            .unwrap()
            .args
            .settings()
            .unwrap_err()
            .to_string();
        assert!(bad.contains("Bad_NS"), "{bad}");
    }
}

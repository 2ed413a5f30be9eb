//! `tandem proxy`: the sidecar's data path (inbound 4143, outbound 4140,
//! admin 4191), configured by Linkerd's `LINKERD2_PROXY_*` environment.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use tandem::signal::shutdown_signal;
use tandem_proxy::{Args, Proxy, endpoint::so_original_dst, identity};

/// How long open connections get to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(10);

pub async fn run(args: Args) -> Result<ExitCode> {
    let config = args.validate()?;
    let (creds_tx, creds) = tandem_meshtls::credentials_channel();
    let proxy = Proxy::bind(&config, creds, so_original_dst())
        .await
        .context("starting the proxy")?;
    // The Certify client publishes each certificate on `creds_tx`; /ready
    // turns 200 with the first one. Without identity the sender just drops.
    if let Some(id) = &config.identity {
        let certifier =
            identity::Certifier::new(id.clone()).context("preparing the identity client")?;
        tracing::info!(name = %id.local_name, identity = %id.svc_addr, "identity enabled");
        tokio::spawn(identity::run(
            certifier,
            creds_tx,
            proxy.identity_metrics.clone(),
            identity::Schedule::default(),
        ));
    }
    tracing::info!(
        inbound = %proxy.inbound_addr,
        outbound = %proxy.outbound_addr,
        admin = %proxy.admin_addr,
        destination = ?config.destination.as_ref().map(|d| &d.addr),
        "proxy listening"
    );
    proxy.serve(shutdown_signal(), GRACE).await;
    Ok(ExitCode::SUCCESS)
}

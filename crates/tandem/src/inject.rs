//! `tandem inject [FILE|-]`: the manifest with the proxy added to every
//! workload, on stdout, for `kubectl apply -f -`; what happened to each
//! object on stderr, as `linkerd inject` prints it.
//!
//! The trust anchors come from the cluster (ConfigMap
//! `tandem-identity-trust-roots` in the control plane's namespace, through
//! `--kubeconfig`/`--context`), as `linkerd inject` reads its config, or
//! from `--trust-anchors-file` with no cluster at all. CNI mode (no init
//! container) is on with `--linkerd-cni-enabled`, or when the cluster's
//! ConfigMap `tandem-config` says the control plane was installed so, and
//! native sidecars likewise with `--native-sidecar`. If any document does
//! not parse, nothing is printed on stdout and the error names each one.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context, Result};
use clap::Args;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use tandem_inject::{Config, StreamError, inject_stream, summary};
use tandem_install::core::{
    CNI_ENABLED_KEY, CONFIG_CONFIGMAP, DEFAULT_NAMESPACE, NATIVE_SIDECAR_KEY,
    TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY,
};

use crate::kube_client::ClusterArgs;

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// The manifest: a file of one or more YAML documents (lists too), or
    /// `-` for stdin.
    #[arg(value_name = "FILE", default_value = "-")]
    file: PathBuf,
    /// The trust anchors (PEM). Default: read from the cluster's ConfigMap
    /// tandem-identity-trust-roots.
    #[arg(long, value_name = "FILE")]
    trust_anchors_file: Option<PathBuf>,
    /// The control plane's namespace.
    #[arg(
        long,
        visible_alias = "linkerd-namespace",
        short = 'L',
        default_value = DEFAULT_NAMESPACE
    )]
    control_plane_namespace: String,
    /// The trust domain of mesh identities.
    #[arg(long, default_value = "cluster.local")]
    identity_trust_domain: String,
    /// The image of the proxy and its init container. Default: the tandem
    /// image `tandem install` uses (ghcr.io/tandem-io/tandem:<version>).
    #[arg(long, env = "TANDEM_IMAGE", value_name = "REF")]
    proxy_image: Option<String>,
    /// CNI mode: the tandem-cni plugin (`tandem install-cni`) installs each
    /// pod's redirect when its sandbox is made, so no init container (which
    /// needs NET_ADMIN) is added; the pod carries the annotation
    /// cni.tandem.io/proxy-init instead. Default: on if the control plane
    /// was installed with --linkerd-cni-enabled (read from the cluster).
    #[arg(long)]
    linkerd_cni_enabled: bool,
    /// Inject the proxy as a native sidecar: an init container with
    /// restartPolicy: Always (Kubernetes 1.29 or later), which starts before
    /// the pod's init containers and stops after its containers, so Jobs
    /// complete. A template's annotation
    /// config.beta.linkerd.io/proxy-enable-native-sidecar (or Linkerd
    /// 2.15's config.alpha.linkerd.io/...) overrides it. Default: on if the
    /// control plane was installed with --native-sidecar (read from the
    /// cluster).
    #[arg(long)]
    native_sidecar: bool,
}

/// What `tandem inject` reads from the cluster.
#[derive(Debug, Default)]
struct Installed {
    anchors: String,
    /// Installed with `--linkerd-cni-enabled`.
    cni: bool,
    /// Installed with `--native-sidecar`.
    native_sidecar: bool,
}

pub async fn run(cluster: &ClusterArgs, args: InjectArgs) -> Result<ExitCode> {
    let source = if args.file.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        args.file.display().to_string()
    };
    let input = read_input(&args)?;
    let installed = match &args.trust_anchors_file {
        Some(path) => Installed {
            anchors: std::fs::read_to_string(path)
                .with_context(|| format!("reading the trust anchors {}", path.display()))?,
            ..Installed::default()
        },
        None => from_cluster(cluster, &args.control_plane_namespace).await?,
    };
    let image = args
        .proxy_image
        .clone()
        .unwrap_or_else(|| tandem_install::ImageOptions::default().reference());
    let cfg = Config::new(
        &args.control_plane_namespace,
        &args.identity_trust_domain,
        &image,
        &installed.anchors,
        env!("CARGO_PKG_VERSION"),
    )?
    .with_cni(args.linkerd_cni_enabled || installed.cni)
    .with_native_sidecar(args.native_sidecar || installed.native_sidecar);
    let injected = match inject_stream(&input, &cfg) {
        Ok(i) => i,
        Err(e @ StreamError::Broken(_)) => {
            anyhow::bail!("{source}: {e}\nnothing was written");
        }
        Err(e) => return Err(e).context(source),
    };
    std::io::stdout()
        .lock()
        .write_all(injected.yaml.as_bytes())
        .context("writing to stdout")?;
    eprint!("\n{}\n", summary(&injected.reports));
    Ok(ExitCode::SUCCESS)
}

fn read_input(args: &InjectArgs) -> Result<String> {
    if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the manifest from stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))
    }
}

/// The trust anchors, and whether the control plane was installed with
/// `--linkerd-cni-enabled` or `--native-sidecar` (ConfigMap tandem-config;
/// an install from before that ConfigMap, or key, has none, and is not).
async fn from_cluster(cluster: &ClusterArgs, namespace: &str) -> Result<Installed> {
    let what = format!("ConfigMap {namespace}/{TRUST_ROOTS_CONFIGMAP}");
    let hint = "is tandem installed there? Or pass --trust-anchors-file";
    let client = cluster
        .client()
        .await
        .with_context(|| format!("reading the trust anchors from {what} ({hint})"))?;
    let cms: Api<ConfigMap> = Api::namespaced(client, namespace);
    let cm = cms
        .get(TRUST_ROOTS_CONFIGMAP)
        .await
        .with_context(|| format!("reading the trust anchors from {what} ({hint})"))?;
    let anchors = cm
        .data
        .and_then(|mut d| d.remove(TRUST_ROOTS_KEY))
        .with_context(|| format!("{what} has no key {TRUST_ROOTS_KEY}"))?;
    let config = cms
        .get_opt(CONFIG_CONFIGMAP)
        .await
        .with_context(|| format!("reading ConfigMap {namespace}/{CONFIG_CONFIGMAP}"))?;
    let data = config.and_then(|c| c.data).unwrap_or_default();
    let on = |key: &str| data.get(key).is_some_and(|v| v == "true");
    Ok(Installed {
        cni: on(CNI_ENABLED_KEY),
        native_sidecar: on(NATIVE_SIDECAR_KEY),
        anchors,
    })
}

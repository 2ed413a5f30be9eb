//! `tandem install`, `uninstall`, `smi install`, `failover install`,
//! `install-cni`: manifests on stdout for `kubectl apply -f -` (or `kubectl
//! delete -f -`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use tandem_install::{
    ImageOptions,
    cni::{self as cni_install, CniOptions},
    core::{self as core_install, CoreOptions},
    failover::{self as failover_install, FailoverOptions},
};

/// Where images come from.
#[derive(Clone, Debug, Args)]
pub struct ImageArgs {
    /// The full image reference of the tandem image; overrides --registry and --tag.
    #[arg(long, env = "TANDEM_IMAGE", value_name = "REF")]
    image: Option<String>,
    /// The registry to pull the tandem image from.
    #[arg(long, env = "TANDEM_REGISTRY", default_value = tandem_install::DEFAULT_REGISTRY)]
    registry: String,
    /// The image tag. Default: this tandem's version.
    #[arg(long, env = "TANDEM_TAG", default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
}

impl ImageArgs {
    pub fn options(&self) -> ImageOptions {
        ImageOptions {
            image: self.image.clone(),
            registry: self.registry.clone(),
            tag: self.tag.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Print only the CRDs; apply them before the control plane.
    #[arg(long)]
    crds: bool,
    /// The trust anchors (PEM, one or more certificates) shared by every cluster.
    #[arg(long, value_name = "FILE", requires_all = ["identity_issuer_certificate_file", "identity_issuer_key_file"])]
    identity_trust_anchors_file: Option<PathBuf>,
    /// This cluster's issuer certificate (PEM), signed by a trust anchor.
    #[arg(long, value_name = "FILE", requires_all = ["identity_trust_anchors_file", "identity_issuer_key_file"])]
    identity_issuer_certificate_file: Option<PathBuf>,
    /// The issuer's private key (PEM, unencrypted).
    #[arg(long, value_name = "FILE", requires_all = ["identity_trust_anchors_file", "identity_issuer_certificate_file"])]
    identity_issuer_key_file: Option<PathBuf>,
    /// The control plane's namespace.
    #[arg(long, default_value = core_install::DEFAULT_NAMESPACE)]
    namespace: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The control plane's log filter.
    #[arg(long, default_value = "info")]
    controller_log_level: String,
    /// The tandem-cni plugin (`tandem install-cni`) redirects the pods:
    /// `tandem inject` then adds no init container (recorded in the
    /// ConfigMap tandem-config, which inject and check read). As Linkerd's.
    #[arg(long)]
    linkerd_cni_enabled: bool,
    /// Inject proxies as native sidecars (init containers with
    /// restartPolicy: Always; Kubernetes 1.29 or later): they start before
    /// the pod's other containers, stop after them, and let Jobs complete.
    /// Recorded in the ConfigMap tandem-config, which `tandem inject`
    /// reads; a template's config.beta.linkerd.io/proxy-enable-native-sidecar
    /// annotation overrides it. Linkerd's `--set proxy.nativeSidecar=true`.
    #[arg(long)]
    native_sidecar: bool,
    /// High availability, as Linkerd's `--ha`: identity and destination run
    /// 3 replicas each, which prefer different nodes and zones, and each
    /// gets a PodDisruptionBudget that lets a drain take one replica at a
    /// time. Unlike Linkerd's, a cluster with fewer nodes still runs every
    /// replica (`tandem check` warns that they share a node).
    #[arg(long)]
    ha: bool,
    /// Replicas of identity and of destination: 1, or 3 with --ha. Above one,
    /// they prefer different nodes and get a PodDisruptionBudget.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    controller_replicas: Option<u32>,
    #[command(flatten)]
    image: ImageArgs,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The control plane's namespace.
    #[arg(long, default_value = core_install::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Also delete the CRDs. Deleting the TrafficSplit CRD deletes every TrafficSplit.
    #[arg(long)]
    crds: bool,
}

#[derive(Debug, Subcommand)]
pub enum SmiCommand {
    /// Print the TrafficSplit CRD (split.smi-spec.io, v1alpha1 stored, v1alpha2 served).
    Install,
    /// Print the TrafficSplit CRD for deletion; this deletes every TrafficSplit.
    Uninstall,
}

#[derive(Debug, Args)]
pub struct FailoverInstallArgs {
    /// The namespace of the failover controller.
    #[arg(long, default_value = failover_install::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Replicas; one leads at a time (leader election on a Lease). Above
    /// one, they prefer different nodes and get a PodDisruptionBudget.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    replicas: u32,
    /// The label selector of the TrafficSplits and HTTPRoutes to control.
    #[arg(long, default_value = failover_install::DEFAULT_SELECTOR)]
    selector: String,
    /// The controller's log filter.
    #[arg(long, default_value = "info")]
    log_level: String,
    #[command(flatten)]
    image: ImageArgs,
}

impl FailoverInstallArgs {
    fn options(&self) -> FailoverOptions {
        FailoverOptions {
            namespace: self.namespace.clone(),
            image: self.image.options(),
            replicas: self.replicas,
            selector: self.selector.clone(),
            log_level: self.log_level.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct FailoverUninstallArgs {
    /// The namespace of the failover controller.
    #[arg(long, default_value = failover_install::DEFAULT_NAMESPACE)]
    namespace: String,
}

#[derive(Debug, Args)]
pub struct InstallCniArgs {
    /// The nodes' CNI bin dir, where the plugin is copied (absolute).
    #[arg(long, value_name = "DIR", default_value = cni_install::DEFAULT_BIN_DIR, value_parser = absolute)]
    dest_cni_bin_dir: String,
    /// The nodes' CNI config dir, whose config gets the plugin's entry (absolute).
    #[arg(long, value_name = "DIR", default_value = cni_install::DEFAULT_NET_DIR, value_parser = absolute)]
    dest_cni_net_dir: String,
    #[command(flatten)]
    image: ImageArgs,
}

/// A host path for a hostPath volume, which must be absolute.
fn absolute(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not an absolute path"))
    }
}

/// Prints objects as a YAML stream on stdout.
pub fn print_objects(objects: &[Value]) -> Result<ExitCode> {
    let yaml = tandem_install::to_yaml(objects).map_err(anyhow::Error::msg)?;
    print!("{yaml}");
    Ok(ExitCode::SUCCESS)
}

fn crds() -> Vec<Value> {
    tandem_api::core_crds()
        .into_iter()
        .map(|c| serde_json::to_value(c).expect("CRDs serialize"))
        .collect()
}

pub fn install(args: InstallArgs) -> Result<ExitCode> {
    if args.crds {
        return print_objects(&crds());
    }
    let (anchors, cert, key) = match (
        &args.identity_trust_anchors_file,
        &args.identity_issuer_certificate_file,
        &args.identity_issuer_key_file,
    ) {
        (Some(a), Some(c), Some(k)) => {
            let anchors = read(a)?;
            let cert = read(c)?;
            let key = read(k)?;
            // Validate everything before a single line is printed.
            tandem_identity::validate_issuer(&anchors, &cert, &key, time::OffsetDateTime::now_utc())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the identity certificates are not usable: {e}\n  (anchors {}, issuer {}, key {})",
                        a.display(),
                        c.display(),
                        k.display()
                    )
                })?;
            (anchors, cert, key)
        }
        (None, None, None) => {
            let generated =
                trial_identity().context("generating a trial trust anchor and issuer")?;
            eprintln!(
                "warning: no --identity-* files given: a trust anchor and an issuer were generated for this install only.\n  They are for trials: clusters installed this way do not trust each other.\n  For multicluster, create a shared anchor with `tandem certificate create` and pass --identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file."
            );
            generated
        }
        _ => bail!(
            "give all three of --identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file, or none"
        ),
    };
    print_objects(&core_install::render(&CoreOptions {
        namespace: args.namespace,
        image: args.image.options(),
        trust_anchors_pem: anchors,
        issuer_cert_pem: cert,
        issuer_key_pem: key,
        cluster_domain: args.cluster_domain,
        log_level: args.controller_log_level,
        cni_enabled: args.linkerd_cni_enabled,
        native_sidecar: args.native_sidecar,
        replicas: args.controller_replicas.unwrap_or(if args.ha {
            core_install::HA_REPLICAS
        } else {
            1
        }),
    }))
}

/// A fresh anchor and issuer (anchors, issuer cert, issuer key), for trials.
fn trial_identity() -> Result<(String, String, String)> {
    use tandem_identity::{CaInput, CreateRequest, Profile, create};
    let root = create(&CreateRequest::new(
        "root.tandem.cluster.local",
        Profile::RootCa,
    ))?;
    let mut req = CreateRequest::new("identity.tandem.cluster.local", Profile::IntermediateCa);
    req.ca = Some(CaInput {
        cert_pem: root.cert_pem.clone(),
        key_pem: root.key_pem.clone(),
        key_password: None,
        cert_name: "generated trust anchor".into(),
        key_name: "generated trust anchor key".into(),
    });
    let issuer = create(&req)?;
    Ok((root.cert_pem, issuer.cert_pem, issuer.key_pem))
}

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub fn uninstall(args: UninstallArgs) -> Result<ExitCode> {
    let mut objects = core_install::render(&CoreOptions {
        namespace: args.namespace,
        image: ImageOptions::default(),
        trust_anchors_pem: String::new(),
        issuer_cert_pem: String::new(),
        issuer_key_pem: String::new(),
        cluster_domain: String::new(),
        log_level: String::new(),
        cni_enabled: false,
        native_sidecar: false,
        // The namespace's deletion takes the PodDisruptionBudgets of `--ha`.
        replicas: 1,
    });
    if args.crds {
        objects.extend(crds());
    } else {
        eprintln!(
            "note: the CRDs are kept (the TrafficSplit CRD holds your splits); add --crds to delete them too"
        );
    }
    print_objects(&tandem_install::for_deletion(&objects))
}

pub fn smi(cmd: SmiCommand) -> Result<ExitCode> {
    let crd = vec![serde_json::to_value(tandem_api::smi::trafficsplit_crd())?];
    match cmd {
        SmiCommand::Install => print_objects(&crd),
        SmiCommand::Uninstall => print_objects(&tandem_install::for_deletion(&crd)),
    }
}

pub fn failover_install(args: FailoverInstallArgs) -> Result<ExitCode> {
    print_objects(&failover_install::render(&args.options()))
}

pub fn failover_uninstall(args: FailoverUninstallArgs) -> Result<ExitCode> {
    let objects = failover_install::render(&FailoverOptions {
        namespace: args.namespace,
        ..Default::default()
    });
    print_objects(&tandem_install::for_deletion(&objects))
}

pub fn install_cni(args: InstallCniArgs) -> Result<ExitCode> {
    print_objects(&cni_install::render(&CniOptions {
        image: args.image.options(),
        bin_dir: args.dest_cni_bin_dir,
        net_dir: args.dest_cni_net_dir,
    }))
}

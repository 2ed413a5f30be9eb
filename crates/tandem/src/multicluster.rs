//! `tandem multicluster ...` and `tandem gateway`.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::{Api, api::ListParams};
use serde::Serialize;
use tandem_api::Duration as GoDuration;
use tandem_api::multicluster::{Link, MIRRORED_SERVICE_LABEL};
use tandem_install::multicluster::{self as mc, InstallOptions, LinkOptions};

use crate::{install::ImageArgs, kube_client::ClusterArgs, output::Format};

#[derive(Debug, Subcommand)]
pub enum MulticlusterCommand {
    /// Print the gateway, the Link CRD and the read-only remote access that
    /// linked clusters use, for `kubectl apply -f -`.
    Install(InstallArgs),
    /// Print the objects that let ANOTHER cluster mirror this one (--context
    /// names this, the target cluster): apply them to the other cluster.
    Link(LinkArgs),
    /// Print a Link and its credentials for `kubectl delete -f -` (in the
    /// cluster that has the Link): its service mirror deletes the mirrors,
    /// then its own objects go.
    Unlink(UnlinkArgs),
    /// Check the Links, their credentials, shared trust anchors, mirrors and gateways.
    Check(CheckArgs),
    /// List the linked clusters' gateways: alive, mirrored services, probe latency.
    Gateways(GatewaysArgs),
    /// Run the service mirror of one Link (what `link` deploys).
    Mirror(MirrorArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The multicluster namespace.
    #[arg(long, default_value = mc::DEFAULT_NAMESPACE)]
    namespace: String,
    /// The core control plane's namespace.
    #[arg(long, default_value = tandem_install::core::DEFAULT_NAMESPACE)]
    control_plane_namespace: String,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// High availability, as Linkerd's `multicluster install --ha`: the
    /// gateway runs 3 replicas, which prefer different nodes and zones, with
    /// a PodDisruptionBudget that lets a drain take one at a time.
    #[arg(long)]
    ha: bool,
    /// Replicas of the gateway: 1, or 3 with --ha.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    gateway_replicas: Option<u32>,
    #[command(flatten)]
    image: ImageArgs,
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// The name of the cluster being linked to (--context's cluster); mirrors are `<svc>-<name>`.
    #[arg(long)]
    cluster_name: String,
    /// The API server URL the other cluster should use, when it differs from
    /// the one in this kubeconfig.
    #[arg(long, value_name = "URL")]
    api_server_address: Option<String>,
    /// The gateway's addresses (IPs or hostnames, comma-separated). Default:
    /// the gateway Service's LoadBalancer addresses.
    #[arg(long, value_delimiter = ',', value_name = "ADDRS")]
    gateway_addresses: Vec<String>,
    /// The multicluster namespace, in both clusters.
    #[arg(long, default_value = mc::DEFAULT_NAMESPACE)]
    namespace: String,
    /// The target cluster's tandem namespace.
    #[arg(long, default_value = tandem_install::core::DEFAULT_NAMESPACE)]
    control_plane_namespace: String,
    /// The target cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Run the service mirror highly available: two replicas, spread over
    /// nodes where possible, under a PodDisruptionBudget; one leads, the
    /// other stands by (leader election on the Lease
    /// `service-mirror-write-NAME`).
    #[arg(long)]
    ha: bool,
    #[command(flatten)]
    image: ImageArgs,
}

#[derive(Debug, Args)]
pub struct UnlinkArgs {
    #[arg(long)]
    cluster_name: String,
    #[arg(long, default_value = mc::DEFAULT_NAMESPACE)]
    namespace: String,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// This cluster's tandem namespace (whose trust anchors are compared).
    #[arg(long, default_value = tandem_install::core::DEFAULT_NAMESPACE)]
    namespace: String,
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// How long to keep retrying checks that time may fix (a mirror starting).
    #[arg(long, default_value = "30s")]
    wait: GoDuration,
}

#[derive(Debug, Args)]
pub struct GatewaysArgs {
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The Link to serve.
    #[arg(long)]
    link: String,
    /// The Link's namespace.
    #[arg(long, default_value = mc::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Where to serve /live, /ready and /metrics.
    #[arg(long, default_value = "127.0.0.1:9991")]
    admin_addr: SocketAddr,
    /// Create a mirror's namespace when it is missing (instead of reporting it).
    /// Needs `create` on namespaces, which the ClusterRole that `link` prints
    /// does not grant.
    #[arg(long)]
    create_namespaces: bool,
    /// The name of the mirror's own ServiceAccount, Role, RoleBinding and
    /// Deployment in the Link's namespace (what `link` deploys): they are
    /// given the Link as owner, so that they go once the Link is gone.
    #[arg(long, value_name = "NAME", requires = "own_cluster_role")]
    own_name: Option<String>,
    /// The name of the mirror's own ClusterRole and ClusterRoleBinding: the
    /// mirror deletes them once the Link's finalizer has deleted the mirrors.
    #[arg(long, value_name = "NAME", requires = "own_name")]
    own_cluster_role: Option<String>,
    /// How often every mirror is written again even when nothing seems to
    /// have changed (a repair of what the watches could not see).
    #[arg(long, default_value = "5m", value_parser = GoDuration::parse_period)]
    resync_period: GoDuration,
    /// The namespace of the leader-election Lease (`service-mirror-write-LINK`).
    /// Default: the Link's namespace.
    #[arg(long)]
    lease_namespace: Option<String>,
    #[command(flatten)]
    leader: crate::leader::LeaderArgs,
}

pub async fn run(cluster: &ClusterArgs, cmd: MulticlusterCommand) -> Result<ExitCode> {
    match cmd {
        MulticlusterCommand::Install(a) => {
            crate::install::print_objects(&mc::install(&InstallOptions {
                namespace: a.namespace,
                control_plane_namespace: a.control_plane_namespace,
                image: a.image.options(),
                cluster_domain: a.cluster_domain,
                gateway_replicas: a.gateway_replicas.unwrap_or(if a.ha {
                    mc::HA_GATEWAY_REPLICAS
                } else {
                    1
                }),
            }))
        }
        MulticlusterCommand::Link(a) => link(cluster, a).await,
        MulticlusterCommand::Unlink(a) => {
            eprintln!(
                "note: the Link's service mirror deletes its mirror services, then its own account, roles, Deployment and budget go with the Link"
            );
            crate::install::print_objects(&mc::unlink(&a.cluster_name, &a.namespace))
        }
        MulticlusterCommand::Check(a) => check(cluster, a).await,
        MulticlusterCommand::Gateways(a) => gateways(cluster, a).await,
        MulticlusterCommand::Mirror(a) => mirror(cluster, a).await,
    }
}

async fn link(cluster: &ClusterArgs, a: LinkArgs) -> Result<ExitCode> {
    let config = cluster.config().await?;
    let client = kube::Client::try_from(config.clone())?;
    let context = cluster
        .context
        .clone()
        .unwrap_or_else(|| "the current context".into());

    // The read-only token the other cluster will use.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &a.namespace);
    let token_secret = mc::remote_access_token_secret();
    let secret = secrets
        .get_opt(&token_secret)
        .await
        .with_context(|| format!("reading Secret {}/{token_secret} in {context}", a.namespace))?
        .with_context(|| {
            format!(
                "Secret {}/{token_secret} is not in {context}: apply `tandem multicluster install` there first",
                a.namespace
            )
        })?;
    let token = secret
        .data
        .and_then(|mut d| d.remove("token"))
        .map(|t| String::from_utf8_lossy(&t.0).into_owned())
        .filter(|t| !t.is_empty())
        .with_context(|| {
            format!(
                "Secret {}/{token_secret} in {context} has no token yet (kube-controller-manager fills it in); try again in a moment",
                a.namespace
            )
        })?;

    // The CAs the other cluster must trust: the whole bundle this
    // kubeconfig holds.
    let ca_b64 = config
        .root_cert
        .as_deref()
        .filter(|certs| !certs.is_empty())
        .map(pem_bundle_b64)
        .context("the kubeconfig's cluster has no certificate-authority data to pass on")?;
    let server = a.api_server_address.clone().unwrap_or_else(|| {
        config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string()
    });
    let kubeconfig = remote_kubeconfig(&a.cluster_name, &server, &ca_b64, &token)?;

    // The gateway: its LoadBalancer addresses, ports and annotations.
    let services: Api<Service> = Api::namespaced(client, &a.namespace);
    let gw = services
        .get_opt(mc::GATEWAY)
        .await
        .with_context(|| format!("reading the gateway Service in {context}"))?
        .with_context(|| format!("the gateway Service {}/{} is not in {context}: apply `tandem multicluster install` there first", a.namespace, mc::GATEWAY))?;
    let mut addresses = a.gateway_addresses.clone();
    if addresses.is_empty() {
        addresses = gw
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ingress| {
                ingress
                    .iter()
                    .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                    .collect()
            })
            .unwrap_or_default();
    }
    if addresses.is_empty() {
        bail!(
            "the gateway Service {}/{} in {context} has no LoadBalancer address (no LoadBalancer controller assigned one; the testbed has none).\n  Pass the gateway's addresses with --gateway-addresses",
            a.namespace,
            mc::GATEWAY
        );
    }
    let port_of = |name: &str, default: u16| {
        gw.spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some(name)))
            .and_then(|p| u16::try_from(p.port).ok())
            .unwrap_or(default)
    };
    let annotations = gw.metadata.annotations.clone().unwrap_or_default();
    let period = annotations
        .get(mc::PROBE_PERIOD_ANNOTATION)
        .map(|p| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                format!("{p}s")
            } else {
                p.clone()
            }
        })
        .unwrap_or_else(|| format!("{}s", mc::PROBE_PERIOD_SECONDS));
    let objects = mc::link(&LinkOptions {
        cluster_name: a.cluster_name.clone(),
        namespace: a.namespace.clone(),
        image: a.image.options(),
        kubeconfig,
        gateway_addresses: addresses,
        gateway_port: port_of("mc-gateway", mc::GATEWAY_PORT),
        gateway_identity: annotations
            .get(mc::GATEWAY_IDENTITY_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        probe_path: annotations
            .get(mc::PROBE_PATH_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| mc::PROBE_PATH.into()),
        probe_port: port_of("mc-probe", mc::PROBE_PORT),
        probe_period: period,
        target_cluster_domain: a.cluster_domain,
        target_control_plane_namespace: a.control_plane_namespace,
        replicas: if a.ha { mc::HA_REPLICAS } else { 1 },
    });
    crate::install::print_objects(&objects)
}

/// The credentials kubeconfig `link` prints, checked by the same rule the
/// service mirror and `multicluster check` apply to it: an http server is
/// refused here, before the token is handed out.
fn remote_kubeconfig(cluster: &str, server: &str, ca_b64: &str, token: &str) -> Result<String> {
    let kubeconfig = mc::remote_kubeconfig(cluster, server, ca_b64, token);
    let kubeconfig = tandem_api::yaml(&kubeconfig).map_err(anyhow::Error::msg)?;
    if let Err(e) = tandem_api::multicluster::remote_access(&kubeconfig) {
        bail!("refusing to link through the API server {server:?}: {e}");
    }
    Ok(kubeconfig)
}

/// DER certificates as the base64 of their PEM bundle, as kubeconfig's
/// `*-data` wants.
fn pem_bundle_b64(ders: &[Vec<u8>]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut pem = String::new();
    for der in ders {
        let body = b64.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        pem.push_str(&format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        ));
    }
    b64.encode(pem)
}

async fn check(cluster: &ClusterArgs, a: CheckArgs) -> Result<ExitCode> {
    let options = tandem_check::Options {
        pre: false,
        namespace: a.namespace,
        proxy: None,
    };
    let deadline = std::time::Instant::now() + a.wait.as_std();
    let report = loop {
        let client = cluster
            .client()
            .await
            .map_err(|e| tandem_util::error_chain(e.as_ref()));
        let report = tandem_check::run_multicluster(client, options.clone()).await;
        if !report.only_retryable_failures() || std::time::Instant::now() >= deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    match a.output {
        Format::Table => print!("{}", tandem_check::render_table(&report)),
        Format::Json => println!("{}", tandem_check::render_json(&report)),
    }
    Ok(if report.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Debug, Serialize)]
struct GatewayRow {
    cluster: String,
    alive: Option<bool>,
    num_svc: u32,
    latency_ms_p50: Option<u64>,
    latency_ms_p95: Option<u64>,
    latency_ms_p99: Option<u64>,
}

async fn gateways(cluster: &ClusterArgs, a: GatewaysArgs) -> Result<ExitCode> {
    let client = cluster.client().await?;
    let links: Api<Link> = Api::all(client.clone());
    let list = links
        .list(&ListParams::default())
        .await
        .context("listing Links (is `tandem multicluster install` applied?)")?;
    // The mirrors that exist now, by Link: the status may be seconds old.
    let services: Api<Service> = Api::all(client);
    let mirrors = services
        .list_metadata(&ListParams::default().labels(&format!("{MIRRORED_SERVICE_LABEL}=true")))
        .await
        .map(|l| mirrors_by_link(l.items.iter().map(|m| &m.metadata)));
    if let Err(e) = &mirrors {
        eprintln!(
            "warning: cannot list the mirror services ({e}); NUM_SVC is from the Links' status"
        );
    }
    let rows: Vec<GatewayRow> = list
        .items
        .into_iter()
        .map(|l| {
            let label = tandem_multicluster::mirror::link_label(&l);
            let status = l.status.unwrap_or_default();
            let gw = status.gateway;
            GatewayRow {
                cluster: l.spec.target_cluster_name,
                alive: gw.as_ref().and_then(|g| g.alive),
                num_svc: match &mirrors {
                    Ok(m) => m.get(&label).copied().unwrap_or(0),
                    Err(_) => status.mirrored_services,
                },
                latency_ms_p50: gw.as_ref().and_then(|g| g.latency_ms_p50),
                latency_ms_p95: gw.as_ref().and_then(|g| g.latency_ms_p95),
                latency_ms_p99: gw.as_ref().and_then(|g| g.latency_ms_p99),
            }
        })
        .collect();
    match a.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Table => {
            let ms = |v: Option<u64>| v.map(|v| format!("{v}ms")).unwrap_or_else(|| "-".into());
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.cluster.clone(),
                        match r.alive {
                            Some(true) => "True".into(),
                            Some(false) => "False".into(),
                            None => "unknown".into(),
                        },
                        r.num_svc.to_string(),
                        ms(r.latency_ms_p50),
                        ms(r.latency_ms_p95),
                        ms(r.latency_ms_p99),
                    ]
                })
                .collect();
            print!(
                "{}",
                crate::output::table(
                    &[
                        "CLUSTER",
                        "ALIVE",
                        "NUM_SVC",
                        "LATENCY_P50",
                        "LATENCY_P95",
                        "LATENCY_P99"
                    ],
                    &table
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How many mirror Services each Link's label value has.
fn mirrors_by_link<'a>(
    mirrors: impl Iterator<Item = &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
) -> std::collections::HashMap<String, u32> {
    let mut counts = std::collections::HashMap::new();
    for m in mirrors {
        if let Some(link) = m
            .labels
            .as_ref()
            .and_then(|l| l.get(tandem_multicluster::mirror::LINK_LABEL))
        {
            *counts.entry(link.clone()).or_default() += 1;
        }
    }
    counts
}

async fn mirror(cluster: &ClusterArgs, a: MirrorArgs) -> Result<ExitCode> {
    let client = cluster.client().await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::failover::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let lease = a.leader.params(
        a.lease_namespace.as_deref().unwrap_or(&a.namespace),
        &tandem_api::multicluster::mirror_lease_name(&a.link),
        tandem_multicluster::FIELD_MANAGER,
    );
    tandem_multicluster::run_mirror(
        client,
        tandem_multicluster::MirrorSettings {
            lease,
            link_namespace: a.namespace,
            link_name: a.link,
            admin_addr: Some(a.admin_addr),
            create_namespaces: a.create_namespaces,
            dns_refresh: Duration::from_secs(30),
            status_interval: Duration::from_secs(5),
            resync_period: a.resync_period.into(),
            own: a
                .own_name
                .zip(a.own_cluster_role)
                .map(|(name, cluster_role)| tandem_multicluster::OwnObjects { name, cluster_role }),
        },
        stopped,
    )
    .await
    .map_err(|e| crate::leader::with_hint(e, "the service mirror", "tandem multicluster link"))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_ca_bundle_is_passed_on() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let bundle = pem_bundle_b64(&[vec![1, 2, 3], vec![4, 5, 6]]);
        let pem = String::from_utf8(b64.decode(bundle).unwrap()).unwrap();
        assert_eq!(
            pem.matches("-----BEGIN CERTIFICATE-----").count(),
            2,
            "{pem}"
        );
        assert!(pem.contains(&b64.encode([1, 2, 3])) && pem.contains(&b64.encode([4, 5, 6])));
    }

    #[test]
    fn link_refuses_an_http_api_server() {
        let err = remote_kubeconfig("west", "http://198.18.0.1:8080", "Q0E=", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refusing to link through the API server \"http://198.18.0.1:8080\"")
                && err.contains("the token would travel in clear"),
            "{err}"
        );
        let ok = remote_kubeconfig("west", "https://198.18.0.1:6443", "Q0E=", "t").unwrap();
        assert!(ok.contains("https://198.18.0.1:6443"), "{ok}");
    }

    #[test]
    fn num_svc_counts_the_mirrors_that_exist_by_link() {
        let meta =
            |link: Option<&str>| k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                labels: link.map(|l| {
                    [(
                        tandem_multicluster::mirror::LINK_LABEL.to_string(),
                        l.to_string(),
                    )]
                    .into()
                }),
                ..Default::default()
            };
        let all = [
            meta(Some("mc.west")),
            meta(Some("mc.west")),
            meta(Some("mc.north")),
            meta(None),
        ];
        let counts = mirrors_by_link(all.iter());
        assert_eq!(counts.get("mc.west"), Some(&2));
        assert_eq!(counts.get("mc.north"), Some(&1));
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn a_zero_period_is_refused() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            mirror: MirrorArgs,
        }
        let parse = |period: &str| {
            Cli::try_parse_from(["mirror", "--link=west", "--resync-period", period])
        };
        let err = parse("0s").unwrap_err().to_string();
        assert!(err.contains("longer than zero"), "{err}");
        let ok = parse("5m").unwrap();
        assert_eq!(ok.mirror.resync_period, GoDuration::from_secs(300));
    }
}

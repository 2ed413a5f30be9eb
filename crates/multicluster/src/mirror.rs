//! What a mirror looks like: pure functions from a remote Service and a Link
//! to the local Service and EndpointSlice, and the Link's spec checked into a
//! typed [`LinkConfig`]. No client, no clock.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use k8s_openapi::{
    api::{
        core::v1::{Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
};
use tandem_api::multicluster::{
    CLUSTER_NAME_LABEL, EXPORT_LABEL, Link, MIRROR_MANAGED_BY, MIRRORED_SERVICE_LABEL,
    REMOTE_GATEWAY_IDENTITY_ANNOTATION, REMOTE_SVC_FQ_NAME_ANNOTATION,
};

/// Labels and annotations under this prefix are never copied from the remote.
const MIRROR_PREFIX: &str = "mirror.linkerd.io/";
/// Which Link owns a mirror: two Links to clusters of the same name (or a
/// mirror left by another tool) never delete each other's mirrors.
pub const LINK_LABEL: &str = "multicluster.tandem.io/link";
/// The owning Link as `namespace/name`, for people.
pub const LINK_ANNOTATION: &str = "multicluster.tandem.io/link";
pub use tandem_api::endpoints::SERVICE_NAME_LABEL;
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Copied to a mirror it would make `kubectl apply` diff against the other
/// cluster's object; never copied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Service names are DNS-1035 labels.
const MAX_NAME: usize = 63;

/// `<svc>-<cluster>`.
pub fn mirror_name(svc: &str, cluster: &str) -> String {
    format!("{svc}-{cluster}")
}

/// The EndpointSlice of a mirror: one per mirror, at the gateway.
pub fn slice_name(mirror: &str) -> String {
    format!("{mirror}-gateway")
}

/// Whether `key` matches one of `patterns`: exactly, or by prefix when the
/// pattern ends in `/*` (`example.com/*` matches `example.com/anything`).
pub fn excluded(key: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => key.starts_with(prefix),
        _ => key == p,
    })
}

/// The label selector of the remote Service watch: the Link's, or
/// `mirror.linkerd.io/exported=true` when it has none. An empty selector
/// matches nothing, as in linkerd, and so does an invalid one (which
/// [`LinkConfig::from_link`] reports).
pub fn link_selector(link: &Link) -> String {
    match &link.spec.selector {
        None => format!("{EXPORT_LABEL}=true"),
        Some(s) => selector_string(s).unwrap_or_else(|_| nothing_selector()),
    }
}

/// A selector no object matches.
fn nothing_selector() -> String {
    format!("{EXPORT_LABEL},!{EXPORT_LABEL}")
}

/// A LabelSelector in the string syntax of list and watch calls.
fn selector_string(s: &LabelSelector) -> Result<String, String> {
    let mut parts = vec![];
    for (k, v) in s.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        let need_values = |op: &str| {
            if values.is_empty() {
                Err(format!(
                    "selector: operator {op} on {:?} needs values",
                    e.key
                ))
            } else {
                Ok(values.join(","))
            }
        };
        let no_values = |op: &str| {
            if values.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "selector: operator {op} on {:?} takes no values",
                    e.key
                ))
            }
        };
        match e.operator.as_str() {
            "In" => parts.push(format!("{} in ({})", e.key, need_values("In")?)),
            "NotIn" => parts.push(format!("{} notin ({})", e.key, need_values("NotIn")?)),
            "Exists" => {
                no_values("Exists")?;
                parts.push(e.key.clone());
            }
            "DoesNotExist" => {
                no_values("DoesNotExist")?;
                parts.push(format!("!{}", e.key));
            }
            other => {
                return Err(format!(
                    "selector: unknown operator {other:?} (use In, NotIn, Exists or DoesNotExist)"
                ));
            }
        }
    }
    if parts.is_empty() {
        return Ok(nothing_selector());
    }
    Ok(parts.join(","))
}

/// The value of [`LINK_LABEL`] for the Link `namespace/name`:
/// `namespace.name` (a namespace has no dot, so this is unambiguous) when
/// that is a valid label value, else a shortened one and a hash.
pub fn link_label_value(namespace: &str, name: &str) -> String {
    let value = format!("{namespace}.{name}");
    if value.len() <= MAX_NAME {
        return value;
    }
    // FNV-1a: stable across runs and builds, unlike std's hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in value.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    // Only what a label value may hold, so that odd input never makes an
    // invalid (or panicking) cut.
    let head: String = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(MAX_NAME - 9)
        .collect();
    let head = head.trim_matches(['-', '.', '_']);
    format!("{head}-{:08x}", h as u32)
}

/// [`link_label_value`] of a Link.
pub fn link_label(link: &Link) -> String {
    link_label_value(
        link.metadata.namespace.as_deref().unwrap_or_default(),
        link.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The Link's spec, checked: what the service mirror runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    pub cluster: String,
    pub domain: String,
    pub credentials_secret: String,
    /// The gateway's addresses as written: IPs and hostnames.
    pub gateway_addresses: Vec<String>,
    pub gateway_port: u16,
    pub gateway_identity: String,
    pub probe: ProbeConfig,
    pub selector: String,
    pub excluded_labels: Vec<String>,
    pub excluded_annotations: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    pub path: String,
    pub port: u16,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

impl LinkConfig {
    /// Checks a Link's spec; the error lists every problem, for the Link's
    /// condition.
    pub fn from_link(link: &Link) -> Result<Self, String> {
        let s = &link.spec;
        let mut errors = vec![];
        if s.target_cluster_name.is_empty() {
            errors.push("targetClusterName is empty".to_string());
        } else if !is_dns_label(&s.target_cluster_name) {
            errors.push(format!(
                "targetClusterName {:?} is not a DNS label (lowercase letters, digits and '-')",
                s.target_cluster_name
            ));
        }
        if s.cluster_credentials_secret.is_empty() {
            errors.push("clusterCredentialsSecret is empty".to_string());
        }
        let gateway_addresses: Vec<String> = s
            .gateway_address
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if gateway_addresses.is_empty() {
            errors.push("gatewayAddress is empty".to_string());
        }
        if s.gateway_port == 0 {
            errors.push("gatewayPort is 0".to_string());
        }
        let p = &s.probe_spec;
        if p.port == 0 {
            errors.push("probeSpec.port is 0".to_string());
        }
        if !p.path.starts_with('/') {
            errors.push(format!(
                "probeSpec.path {:?} does not start with '/'",
                p.path
            ));
        }
        let mut duration = |field: &str, v: &str| match v.parse::<tandem_api::Duration>() {
            Ok(d) if d.is_zero() => {
                errors.push(format!("probeSpec.{field} {v:?} is zero"));
                None
            }
            Ok(d) => Some(d.into()),
            Err(e) => {
                errors.push(format!("probeSpec.{field} {v:?}: {}", e.reason()));
                None
            }
        };
        let period = duration("period", &p.period);
        let timeout = duration("timeout", &p.timeout);
        if p.failure_threshold == 0 {
            errors.push("probeSpec.failureThreshold is 0".to_string());
        }
        let selector = match &s.selector {
            None => Ok(link_selector(link)),
            Some(sel) => selector_string(sel),
        };
        let selector = selector.map_err(|e| errors.push(e)).ok();
        match (period, timeout, selector) {
            (Some(period), Some(timeout), Some(selector)) if errors.is_empty() => Ok(Self {
                cluster: s.target_cluster_name.clone(),
                domain: s.target_cluster_domain.clone(),
                credentials_secret: s.cluster_credentials_secret.clone(),
                gateway_addresses,
                gateway_port: s.gateway_port,
                gateway_identity: s.gateway_identity.clone(),
                probe: ProbeConfig {
                    path: p.path.clone(),
                    port: p.port,
                    period,
                    timeout,
                    failure_threshold: p.failure_threshold,
                },
                selector,
                excluded_labels: s.excluded_labels.clone(),
                excluded_annotations: s.excluded_annotations.clone(),
            }),
            _ => Err(errors.join("; ")),
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The labels and annotations to copy: all but `mirror.linkerd.io/*` and
/// the excluded ones.
fn copy_filtered(
    from: Option<&BTreeMap<String, String>>,
    patterns: &[String],
) -> BTreeMap<String, String> {
    from.into_iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with(MIRROR_PREFIX) && !excluded(k, patterns))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The local mirror of a remote Service, as it should be: the error says why
/// it cannot be mirrored (the `InvalidService` reason).
pub fn mirror_service(remote: &Service, link: &Link) -> Result<Service, String> {
    let name = remote
        .metadata
        .name
        .as_deref()
        .ok_or("the Service has no name")?;
    let namespace = remote
        .metadata
        .namespace
        .as_deref()
        .ok_or("the Service has no namespace")?;
    let cluster = &link.spec.target_cluster_name;
    let mirror = mirror_name(name, cluster);
    if mirror.len() > MAX_NAME {
        return Err(format!(
            "the mirror's name {mirror:?} is longer than {MAX_NAME} characters"
        ));
    }
    let spec = remote.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err("an ExternalName Service has no endpoints to mirror".to_string());
    }
    let remote_ports = spec.ports.unwrap_or_default();
    if remote_ports.is_empty() {
        return Err("the Service has no ports".to_string());
    }
    // The slice's ports are matched to the Service's by name.
    if remote_ports.len() > 1 && remote_ports.iter().any(|p| p.name.is_none()) {
        return Err("a Service with several ports must name each of them".to_string());
    }
    let ports = remote_ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.port,
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: p.app_protocol.clone(),
            ..Default::default()
        })
        .collect();

    let mut labels = copy_filtered(remote.metadata.labels.as_ref(), &link.spec.excluded_labels);
    labels.remove(LINK_LABEL);
    labels.insert(MIRRORED_SERVICE_LABEL.into(), "true".into());
    labels.insert(CLUSTER_NAME_LABEL.into(), cluster.clone());
    labels.insert(LINK_LABEL.into(), link_label(link));

    let mut annotations = copy_filtered(
        remote.metadata.annotations.as_ref(),
        &link.spec.excluded_annotations,
    );
    annotations.remove(LAST_APPLIED);
    annotations.insert(
        REMOTE_SVC_FQ_NAME_ANNOTATION.into(),
        format!("{name}.{namespace}.svc.{}", link.spec.target_cluster_domain),
    );
    if !link.spec.gateway_identity.is_empty() {
        annotations.insert(
            REMOTE_GATEWAY_IDENTITY_ANNOTATION.into(),
            link.spec.gateway_identity.clone(),
        );
    }
    annotations.insert(LINK_ANNOTATION.into(), link_ref(link));

    Ok(Service {
        metadata: ObjectMeta {
            name: Some(mirror),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    })
}

fn link_ref(link: &Link) -> String {
    format!(
        "{}/{}",
        link.metadata.namespace.as_deref().unwrap_or_default(),
        link.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The EndpointSlice of a mirror: one endpoint per gateway IP (IPv4; the
/// slice's address type), every port mapped to the gateway port, all ready
/// or all not. The mirror's uid, when known, makes it the slice's owner.
pub fn mirror_slice(
    mirror: &Service,
    link: &Link,
    gateway_ips: &[IpAddr],
    ready: bool,
) -> EndpointSlice {
    let name = mirror.metadata.name.clone().unwrap_or_default();
    let cluster = &link.spec.target_cluster_name;
    let mut labels = BTreeMap::new();
    labels.insert(SERVICE_NAME_LABEL.to_string(), name.clone());
    labels.insert(MANAGED_BY_LABEL.to_string(), MIRROR_MANAGED_BY.to_string());
    labels.insert(CLUSTER_NAME_LABEL.to_string(), cluster.clone());
    labels.insert(LINK_LABEL.to_string(), link_label(link));
    let mut annotations = BTreeMap::new();
    if !link.spec.gateway_identity.is_empty() {
        annotations.insert(
            REMOTE_GATEWAY_IDENTITY_ANNOTATION.to_string(),
            link.spec.gateway_identity.clone(),
        );
    }
    let owner = mirror.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: None,
    });

    let mut ips: Vec<IpAddr> = gateway_ips
        .iter()
        .copied()
        .filter(IpAddr::is_ipv4)
        .collect();
    ips.sort();
    ips.dedup();
    let endpoints = ips
        .iter()
        .map(|ip| Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(ready),
                terminating: Some(false),
            }),
            ..Default::default()
        })
        .collect();
    let ports = mirror
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| EndpointPort {
            name: p.name.clone(),
            port: Some(i32::from(link.spec.gateway_port)),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();

    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(&name)),
            namespace: mirror.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports),
    }
}

/// Whether a live mirror Service lost something this mirror wrote (someone
/// edited it): labels, annotations, type or ports. What others added is
/// theirs under server-side apply and does not count.
pub fn service_drifted(live: &Service, desired: &Service) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>,
                  have: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    if !subset(&desired.metadata.labels, &live.metadata.labels)
        || !subset(&desired.metadata.annotations, &live.metadata.annotations)
    {
        return true;
    }
    let (Some(want), Some(have)) = (&desired.spec, &live.spec) else {
        return desired.spec.is_some();
    };
    let ports = |s: &ServiceSpec| {
        let mut p: Vec<(Option<String>, i32, String)> = s
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone(),
                    p.port,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                )
            })
            .collect();
        p.sort();
        p
    };
    want.type_ != have.type_ || ports(want) != ports(have)
}

/// Whether a live mirror slice differs from what was written: its
/// endpoints (addresses and readiness), ports or address type.
pub fn slice_drifted(live: &EndpointSlice, desired: &EndpointSlice) -> bool {
    let endpoints = |s: &EndpointSlice| {
        s.endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses.clone(),
                    e.conditions.as_ref().and_then(|c| c.ready),
                )
            })
            .collect::<Vec<_>>()
    };
    let ports = |s: &EndpointSlice| {
        s.ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.port, p.protocol.clone()))
            .collect::<Vec<_>>()
    };
    live.address_type != desired.address_type
        || endpoints(live) != endpoints(desired)
        || ports(live) != ports(desired)
}

#[cfg(test)]
mod tests;

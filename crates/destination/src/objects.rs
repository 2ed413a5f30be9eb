//! The objects the index keeps, folded from what the API serves as they
//! arrive: only what answering Get and GetProfile needs. Pure: no client.

use std::net::IpAddr;

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::api::DynamicObject;
use serde_json::Value;
use tandem_api::{
    endpoints::SERVICE_NAME_LABEL,
    multicluster::{
        CLUSTER_NAME_LABEL, MIRRORED_SERVICE_LABEL, REMOTE_GATEWAY_IDENTITY_ANNOTATION,
        REMOTE_SVC_FQ_NAME_ANNOTATION,
    },
    smi::v1alpha1::TrafficSplit,
};
use tandem_core::failover::{ServiceRef, resolve_backend};

/// The label the injector sets on meshed pods: the control plane's namespace.
pub const CONTROL_PLANE_NS_LABEL: &str = "linkerd.io/control-plane-ns";
/// Ports whose inbound traffic skips the proxy: no identity, no hint.
pub const SKIP_INBOUND_PORTS_ANNOTATION: &str = "config.linkerd.io/skip-inbound-ports";
/// Ports whose traffic is opaque TCP (no protocol detection), on a pod or a Service.
pub const OPAQUE_PORTS_ANNOTATION: &str = "config.linkerd.io/opaque-ports";
/// Linkerd's default opaque ports, for objects without the annotation.
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";
/// The proxy's inbound port unless its container says otherwise.
pub const DEFAULT_INBOUND_PORT: u16 = 4143;
const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// A Service, by namespace and name.
pub type SvcKey = ServiceRef;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub key: SvcKey,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<SvcPort>,
    /// Its opaque ports (the annotation, else Linkerd's defaults).
    pub opaque_ports: Vec<(u16, u16)>,
    /// Set on a mirror of a Service of another cluster.
    pub mirror: Option<Mirror>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcPort {
    pub name: String,
    pub port: u16,
}

/// What the service mirror writes on a mirror Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mirror {
    /// `mirror.linkerd.io/remote-svc-fq-name`: `<svc>.<ns>.svc.<domain>`.
    pub remote_fq_name: Option<String>,
    pub gateway_identity: Option<String>,
    pub cluster: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    pub namespace: String,
    pub name: String,
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service: Option<String>,
    pub ports: Vec<SlicePort>,
    /// Ready endpoints only.
    pub endpoints: Vec<EndpointInfo>,
    pub gateway_identity: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    pub addresses: Vec<IpAddr>,
    /// The Pod of the targetRef, if it names one.
    pub pod: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub service_account: String,
    /// Set when the pod is meshed.
    pub control_plane_ns: Option<String>,
    /// The owner as a metric label: (`deployment`, `web`), (`statefulset`, `db`), ...
    pub owner: Option<(String, String)>,
    pub pod_template_hash: Option<String>,
    pub skip_inbound_ports: Vec<(u16, u16)>,
    /// Its opaque ports (the annotation, else Linkerd's defaults).
    pub opaque_ports: Vec<(u16, u16)>,
    /// The proxy's inbound port, where opaque traffic is sent.
    pub inbound_port: u16,
}

/// What kind of object a split was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SplitKind {
    TrafficSplit,
    HttpRoute,
}

/// A TrafficSplit or an HTTPRoute as a split of an apex Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitInfo {
    pub kind: SplitKind,
    pub namespace: String,
    pub name: String,
    /// RFC 3339; the oldest split of an apex wins.
    pub created: Option<String>,
    pub apex: Option<SvcKey>,
    /// An HTTPRoute parentRef's port, if it names one.
    pub port: Option<u16>,
    /// The backends, or why the object could not be read.
    pub backends: Result<Vec<Backend>, String>,
    /// Backends left out, with why (another namespace, a bad name).
    pub skipped: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub service: SvcKey,
    /// Thousandths: `1` is 1000, `500m` is 500.
    pub millis: u64,
}

// === Services ===

pub fn service(svc: Service) -> ServiceInfo {
    let meta = svc.metadata;
    let key = SvcKey::new(
        meta.namespace.unwrap_or_default(),
        meta.name.unwrap_or_default(),
    );
    let labels = meta.labels.unwrap_or_default();
    let annotations = meta.annotations.unwrap_or_default();
    let spec = svc.spec.unwrap_or_default();
    let mut cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .unwrap_or_default()
        .iter()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    cluster_ips.sort();
    cluster_ips.dedup();
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(SvcPort {
                name: p.name.unwrap_or_default(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    let mirror =
        (labels.get(MIRRORED_SERVICE_LABEL).map(String::as_str) == Some("true")).then(|| Mirror {
            remote_fq_name: annotations.get(REMOTE_SVC_FQ_NAME_ANNOTATION).cloned(),
            gateway_identity: annotations.get(REMOTE_GATEWAY_IDENTITY_ANNOTATION).cloned(),
            cluster: labels.get(CLUSTER_NAME_LABEL).cloned(),
        });
    ServiceInfo {
        key,
        cluster_ips,
        ports,
        opaque_ports: opaque_ports(annotations.get(OPAQUE_PORTS_ANNOTATION)),
        mirror,
    }
}

// === EndpointSlices ===

/// A slice with its ready endpoints only (ready unset counts as ready, as
/// the API says; terminating ones are out).
pub fn slice(slice: EndpointSlice) -> SliceInfo {
    let meta = slice.metadata;
    let ports = slice
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(SlicePort {
                name: p.name.unwrap_or_default(),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    let endpoints = slice
        .endpoints
        .into_iter()
        .filter(|e| {
            let c = e.conditions.as_ref();
            c.and_then(|c| c.ready).unwrap_or(true)
                && !c.and_then(|c| c.terminating).unwrap_or(false)
        })
        .map(|e| EndpointInfo {
            addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            pod: e
                .target_ref
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name),
        })
        .collect();
    SliceInfo {
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        service: meta
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned(),
        ports,
        endpoints,
        gateway_identity: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(REMOTE_GATEWAY_IDENTITY_ANNOTATION))
            .cloned(),
    }
}

// === Pods ===

pub fn pod(pod: Pod) -> PodInfo {
    let meta = pod.metadata;
    let labels = meta.labels.unwrap_or_default();
    let spec = pod.spec.unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    let inbound_port = spec
        .containers
        .iter()
        .filter(|c| c.name == "linkerd-proxy")
        .flat_map(|c| c.env.iter().flatten())
        .find(|e| e.name == "LINKERD2_PROXY_INBOUND_LISTEN_ADDR")
        .and_then(|e| e.value.as_deref()?.rsplit_once(':')?.1.parse().ok())
        .unwrap_or(DEFAULT_INBOUND_PORT);
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .unwrap_or_default()
        .iter()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    let owners: Vec<(String, String)> = meta
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.controller == Some(true))
        .map(|o| (o.kind, o.name))
        .collect();
    PodInfo {
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        ips,
        service_account: spec
            .service_account_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        control_plane_ns: labels.get(CONTROL_PLANE_NS_LABEL).cloned(),
        owner: owner_label(
            &owners,
            labels.get(POD_TEMPLATE_HASH_LABEL).map(String::as_str),
        ),
        pod_template_hash: labels.get(POD_TEMPLATE_HASH_LABEL).cloned(),
        skip_inbound_ports: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(SKIP_INBOUND_PORTS_ANNOTATION))
            .map(|s| port_ranges(s))
            .unwrap_or_default(),
        opaque_ports: opaque_ports(
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(OPAQUE_PORTS_ANNOTATION)),
        ),
        inbound_port,
    }
}

/// The owner label of a pod: a ReplicaSet named `<deploy>-<pod-template-hash>`
/// is its Deployment's, as Linkerd labels it; any other controller by its
/// own kind, lower-cased.
pub fn owner_label(
    controllers: &[(String, String)],
    hash: Option<&str>,
) -> Option<(String, String)> {
    let (kind, name) = controllers.first()?;
    if kind == "ReplicaSet"
        && let Some(hash) = hash
        && let Some(deploy) = name.strip_suffix(hash).and_then(|n| n.strip_suffix('-'))
        && !deploy.is_empty()
    {
        return Some(("deployment".into(), deploy.into()));
    }
    Some((kind.to_lowercase(), name.clone()))
}

/// The opaque ports an annotation names, else Linkerd's defaults.
pub fn opaque_ports(annotation: Option<&String>) -> Vec<(u16, u16)> {
    port_ranges(annotation.map_or(DEFAULT_OPAQUE_PORTS, String::as_str))
}

/// Whether `port` is in one of `ranges`.
pub fn in_ranges(ranges: &[(u16, u16)], port: u16) -> bool {
    ranges.iter().any(|(a, b)| (*a..=*b).contains(&port))
}

/// `4190,8000-8100` as ranges; what does not parse is left out.
pub fn port_ranges(s: &str) -> Vec<(u16, u16)> {
    s.split(',')
        .map(str::trim)
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                (a <= b).then_some((a, b))
            }
            None => part.parse().ok().map(|p| (p, p)),
        })
        .collect()
}

// === Splits ===

/// A TrafficSplit (read as v1alpha1: it is stored, so a v1alpha2 object
/// reads the same, and its int-or-string weights cover both versions).
pub fn traffic_split(ts: TrafficSplit, cluster_domain: &str) -> SplitInfo {
    let meta = ts.metadata;
    let namespace = meta.namespace.unwrap_or_default();
    let mut skipped = vec![];
    let apex = apex_in(
        resolve_backend(&ts.spec.service, &namespace, cluster_domain).ok(),
        &namespace,
        &mut skipped,
    );
    let backends = (|| {
        let mut out = vec![];
        for (i, b) in ts.spec.backends.iter().enumerate() {
            let millis = tandem_api::smi::quantity_millis(&b.weight)
                .map_err(|e| format!("spec.backends[{i}]: {e}"))?;
            if let Some(service) = backend(&b.service, &namespace, cluster_domain, &mut skipped) {
                out.push(Backend { service, millis });
            }
        }
        Ok(out)
    })();
    SplitInfo {
        kind: SplitKind::TrafficSplit,
        namespace,
        name: meta.name.unwrap_or_default(),
        created: meta.creation_timestamp.map(|t| t.0.to_string()),
        apex,
        port: None,
        backends,
        skipped,
    }
}

/// The apex, if it is in the split's own namespace: a split never steers
/// another namespace's traffic (that would need the client's namespace).
fn apex_in(apex: Option<SvcKey>, ns: &str, skipped: &mut Vec<String>) -> Option<SvcKey> {
    match apex {
        Some(a) if a.namespace != ns => {
            skipped.push(format!(
                "the apex {a} is in another namespace; the split is ignored"
            ));
            None
        }
        a => a,
    }
}

/// A backend in the split's own namespace; others are left out with why,
/// as SMI and linkerd-smi only ever name backends next to the apex.
fn backend(name: &str, ns: &str, domain: &str, skipped: &mut Vec<String>) -> Option<SvcKey> {
    match resolve_backend(name, ns, domain) {
        Ok(svc) if svc.namespace == ns => Some(svc),
        Ok(svc) => {
            skipped.push(format!(
                "backend {name:?} is in another namespace ({})",
                svc.namespace
            ));
            None
        }
        Err(e) => {
            skipped.push(e.to_string());
            None
        }
    }
}

/// An HTTPRoute whose parentRef is a Service (the apex): the backendRefs of
/// its first rule that has any, each weighing 1 unless it says otherwise.
pub fn http_route(route: DynamicObject, cluster_domain: &str) -> SplitInfo {
    let meta = route.metadata;
    let namespace = meta.namespace.unwrap_or_default();
    let spec = &route.data["spec"];
    let parent = spec["parentRefs"].as_array().and_then(|refs| {
        refs.iter().find(|p| {
            p["kind"].as_str() == Some("Service")
                && matches!(p["group"].as_str(), None | Some("") | Some("core"))
        })
    });
    let mut skipped = vec![];
    let apex = parent.and_then(|p| {
        let ns = p["namespace"].as_str().unwrap_or(&namespace);
        Some(SvcKey::new(ns, p["name"].as_str()?))
    });
    let apex = apex_in(apex, &namespace, &mut skipped);
    let port = parent
        .and_then(|p| p["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok());
    let backends = (|| {
        let Some(refs) = spec["rules"].as_array().and_then(|rules| {
            rules
                .iter()
                .filter_map(|r| r["backendRefs"].as_array())
                .find(|refs| !refs.is_empty())
        }) else {
            return Ok(vec![]);
        };
        let mut out = vec![];
        for (i, b) in refs.iter().enumerate() {
            let kind = b["kind"].as_str().unwrap_or("Service");
            if kind != "Service" || !b["group"].as_str().unwrap_or("").is_empty() {
                skipped.push(format!("backendRefs[{i}] is a {kind}, not a Service"));
                continue;
            }
            let name = b["name"]
                .as_str()
                .ok_or_else(|| format!("backendRefs[{i}].name is missing"))?;
            let millis = match &b["weight"] {
                Value::Null => 1000,
                w => w
                    .as_u64()
                    .filter(|w| *w <= 1_000_000)
                    .map(|w| w * 1000)
                    .ok_or_else(|| {
                        format!(
                            "backendRefs[{i}].weight {w} is not a whole number from 0 to 1000000"
                        )
                    })?,
            };
            let ns = b["namespace"].as_str().unwrap_or(&namespace);
            if ns != namespace {
                skipped.push(format!("backend {name:?} is in another namespace ({ns})"));
                continue;
            }
            if let Some(service) = backend(name, &namespace, cluster_domain, &mut skipped) {
                out.push(Backend { service, millis });
            }
        }
        Ok(out)
    })();
    SplitInfo {
        kind: SplitKind::HttpRoute,
        namespace,
        name: meta.name.unwrap_or_default(),
        created: meta.creation_timestamp.map(|t| t.0.to_string()),
        apex,
        port,
        backends,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_port_ranges() {
        let rs = |n: &str| vec![("ReplicaSet".to_string(), n.to_string())];
        let d = |n: &str| Some(("deployment".to_string(), n.to_string()));
        assert_eq!(owner_label(&rs("web-5d8f"), Some("5d8f")), d("web"));
        assert_eq!(
            owner_label(&rs("web-x"), Some("5d8f")),
            Some(("replicaset".into(), "web-x".into()))
        );
        assert_eq!(
            owner_label(&[("StatefulSet".into(), "db".into())], None),
            Some(("statefulset".into(), "db".into()))
        );
        assert_eq!(owner_label(&[], None), None);
        assert_eq!(port_ranges("22, 9000-9100,x,5-1"), [(22, 22), (9000, 9100)]);
    }
}

//! The decisions of the index, as pure functions: what an address of a pod
//! or a gateway carries, which split an apex uses, and the overrides it
//! makes.

use std::collections::BTreeMap;

use tandem_meshtls::Name;

use crate::{
    index::{Addr, Config, DEFAULT_WEIGHT, Override},
    objects::{Mirror, PodInfo, SplitInfo, SplitKind, SvcKey, in_ranges},
};

/// An address of a pod: with its identity and the h2 hint when it is
/// meshed and `port` does not skip the proxy.
pub fn pod_addr(config: &Config, pod: &PodInfo, port: u16) -> Addr {
    let mut labels = BTreeMap::from([
        ("pod".to_string(), pod.name.clone()),
        ("serviceaccount".to_string(), pod.service_account.clone()),
    ]);
    if let Some((kind, name)) = &pod.owner {
        labels.insert(kind.clone(), name.clone());
    }
    if let Some(h) = &pod.pod_template_hash {
        labels.insert("pod_template_hash".into(), h.clone());
    }
    if let Some(cp) = &pod.control_plane_ns {
        labels.insert("control_plane_ns".into(), cp.clone());
    }
    // Any control plane's proxy takes HTTP/2; only ours shares identity
    // (Linkerd's rule).
    let skipped = in_ranges(&pod.skip_inbound_ports, port);
    let h2 = pod.control_plane_ns.is_some() && !skipped;
    let identity = (pod.control_plane_ns.as_deref() == Some(config.control_plane_ns.as_str())
        && !skipped)
        .then(|| {
            Name::service_account(
                &pod.service_account,
                &pod.namespace,
                &config.control_plane_ns,
                &config.trust_domain,
            )
            .ok()
        })
        .flatten();
    let opaque_transport =
        (identity.is_some() && in_ranges(&pod.opaque_ports, port)).then_some(pod.inbound_port);
    Addr {
        weight: DEFAULT_WEIGHT,
        labels,
        h2,
        identity: identity.map(|n| n.to_string()),
        opaque_transport,
        authority_override: None,
    }
}

/// An address with nothing known about it.
pub fn plain_addr() -> Addr {
    Addr {
        weight: DEFAULT_WEIGHT,
        labels: BTreeMap::new(),
        identity: None,
        h2: false,
        opaque_transport: None,
        authority_override: None,
    }
}

/// A gateway address of a mirror: the gateway's identity, the remote
/// Service's name and port as the authority, h2.
pub fn mirror_addr(mirror: &Mirror, identity: Option<&String>, port: u16) -> Addr {
    let mut labels = BTreeMap::new();
    if let Some(c) = &mirror.cluster {
        labels.insert("target_cluster".to_string(), c.clone());
    }
    if let Some(fq) = &mirror.remote_fq_name {
        let mut parts = fq.split('.');
        if let (Some(svc), Some(ns)) = (parts.next(), parts.next()) {
            labels.insert("target_service".into(), svc.into());
            labels.insert("target_service_namespace".into(), ns.into());
        }
    }
    Addr {
        weight: DEFAULT_WEIGHT,
        labels,
        identity: identity.cloned(),
        h2: true,
        opaque_transport: None,
        authority_override: mirror
            .remote_fq_name
            .as_ref()
            .map(|fq| format!("{fq}:{port}")),
    }
}

/// `<name>.<ns>.svc.<domain>`.
pub fn fqdn(svc: &SvcKey, domain: &str) -> String {
    format!("{}.{}.svc.{domain}", svc.name, svc.namespace)
}

/// The split an apex uses when several name it: the oldest, then by kind
/// and name, so that every replica picks the same.
pub fn choose_split<'a>(splits: impl IntoIterator<Item = &'a SplitInfo>) -> Option<&'a SplitInfo> {
    splits.into_iter().min_by(|a, b| {
        let key = |s: &SplitInfo| {
            (
                s.created.clone().unwrap_or_default(),
                s.kind,
                s.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    })
}

/// A split's backends as Linkerd's destination sends them: the authority
/// with the port, the weight as thousandths times 10 (`1` is 10000). Zero
/// weights stay in (the proxy drops them).
pub fn overrides(split: &SplitInfo, port: u16, domain: &str) -> Vec<Override> {
    split
        .backends
        .as_ref()
        .map(|bs| {
            bs.iter()
                .map(|b| Override {
                    authority: format!("{}:{port}", fqdn(&b.service, domain)),
                    weight: u32::try_from(b.millis.saturating_mul(10)).unwrap_or(u32::MAX),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One log line for a split that can't be used, or that leaves backends out.
pub fn report(s: &SplitInfo) {
    let kind = match s.kind {
        SplitKind::TrafficSplit => "TrafficSplit",
        SplitKind::HttpRoute => "HTTPRoute",
    };
    match &s.backends {
        Err(e) => {
            tracing::warn!(kind, namespace = %s.namespace, name = %s.name, error = %e, "ignoring a split that cannot be read")
        }
        Ok(_) if !s.skipped.is_empty() => {
            tracing::warn!(kind, namespace = %s.namespace, name = %s.name, skipped = ?s.skipped, "parts of a split are ignored")
        }
        Ok(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses() {
        let cfg = Config {
            cluster_domain: "cluster.local".into(),
            control_plane_ns: "tandem".into(),
            trust_domain: "cluster.local".into(),
        };
        let pod = |cp: Option<&str>, skip: &[(u16, u16)], opaque: &[(u16, u16)]| PodInfo {
            namespace: "ev".into(),
            name: "p".into(),
            ips: vec![],
            service_account: "emoji".into(),
            control_plane_ns: cp.map(Into::into),
            owner: None,
            pod_template_hash: None,
            skip_inbound_ports: skip.to_vec(),
            opaque_ports: opaque.to_vec(),
            inbound_port: 4143,
        };
        let id = "emoji.ev.serviceaccount.identity.tandem.cluster.local";
        // (case, pod, port, identity, h2, opaque transport)
        #[rustfmt::skip]
    let cases = [
        ("meshed", pod(Some("tandem"), &[], &[]), 8080, Some(id), true, None),
        ("unmeshed", pod(None, &[], &[]), 8080, None, false, None),
        ("another control plane: h2, no identity", pod(Some("linkerd"), &[], &[]), 8080, None, true, None),
        ("skipped inbound port", pod(Some("tandem"), &[(8000, 9000)], &[]), 8080, None, false, None),
        ("opaque port", pod(Some("tandem"), &[], &[(3306, 3306)]), 3306, Some(id), true, Some(4143)),
        ("opaque but unmeshed", pod(None, &[], &[(3306, 3306)]), 3306, None, false, None),
    ];
        for (name, pod, port, identity, h2, opaque) in cases {
            let a = pod_addr(&cfg, &pod, port);
            assert_eq!(
                (a.identity.as_deref(), a.h2, a.opaque_transport),
                (identity, h2, opaque),
                "{name}"
            );
            assert_eq!(a.weight, 10_000, "{name}");
        }
    }
}

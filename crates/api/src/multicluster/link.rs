//! A Link's spec, checked into what the service mirror runs with
//! ([`LinkConfig`]): the one rule that the mirror and `check` both use.
//! Pure: no client, no clock.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{EXPORT_LABEL, Link};

/// Names (a cluster's, a mirror's) are DNS-1035 labels.
pub const MAX_NAME: usize = 63;

/// Why a Link's spec is refused: every problem at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct InvalidLink {
    pub problems: Vec<String>,
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
    pub fn from_link(link: &Link) -> Result<Self, InvalidLink> {
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
        let mut duration = |field: &str, v: &str| match v.parse::<crate::Duration>() {
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
            _ => Err(InvalidLink { problems: errors }),
        }
    }
}

/// A DNS label: lowercase letters, digits and '-', not at either end.
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use serde_json::json;

    fn mk_link(spec: serde_json::Value) -> Link {
        let mut s = json!({
            "targetClusterName": "west",
            "clusterCredentialsSecret": "cluster-credentials-west",
            "gatewayAddress": "127.20.0.1",
        });
        for (k, v) in spec.as_object().unwrap() {
            s[k] = v.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "multicluster.tandem.io/v1alpha1",
            "kind": "Link",
            "metadata": {"name": "west", "namespace": "tandem-multicluster"},
            "spec": s,
        }))
        .unwrap()
    }

    #[test]
    fn selectors() {
        let expr = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        };
        let nothing = format!("{EXPORT_LABEL},!{EXPORT_LABEL}");
        let cases: Vec<(Option<LabelSelector>, String)> = vec![
            (None, "mirror.linkerd.io/exported=true".into()),
            (
                Some(LabelSelector {
                    match_labels: Some(
                        [(
                            "mirror.linkerd.io/exported".into(),
                            "remote-discovery".into(),
                        )]
                        .into(),
                    ),
                    match_expressions: None,
                }),
                "mirror.linkerd.io/exported=remote-discovery".into(),
            ),
            (
                Some(LabelSelector {
                    match_labels: Some([("a".into(), "1".into()), ("b".into(), "2".into())].into()),
                    match_expressions: Some(vec![
                        expr("env", "In", &["prod", "staging"]),
                        expr("tier", "NotIn", &["cache"]),
                        expr("team", "Exists", &[]),
                        expr("legacy", "DoesNotExist", &[]),
                    ]),
                }),
                "a=1,b=2,env in (prod,staging),tier notin (cache),team,!legacy".into(),
            ),
            // An empty selector matches nothing, as in linkerd.
            (Some(LabelSelector::default()), nothing.clone()),
            // An invalid one too (and the spec check reports it).
            (
                Some(LabelSelector {
                    match_labels: None,
                    match_expressions: Some(vec![expr("env", "Near", &["x"])]),
                }),
                nothing.clone(),
            ),
            (
                Some(LabelSelector {
                    match_labels: None,
                    match_expressions: Some(vec![expr("env", "In", &[])]),
                }),
                nothing,
            ),
        ];
        for (selector, want) in cases {
            let mut link = mk_link(json!({}));
            link.spec.selector = selector.clone();
            assert_eq!(link_selector(&link), want, "{selector:?}");
        }
    }

    #[test]
    fn link_specs_are_checked() {
        let ok = LinkConfig::from_link(&mk_link(json!({
            "gatewayAddress": " 127.20.0.1, gw.example ,,",
            "probeSpec": {"period": "500ms", "timeout": "300ms", "failureThreshold": 2},
        })))
        .unwrap();
        assert_eq!(ok.gateway_addresses, ["127.20.0.1", "gw.example"]);
        assert_eq!(ok.probe.period, Duration::from_millis(500));
        assert_eq!(ok.probe.timeout, Duration::from_millis(300));
        assert_eq!(ok.probe.failure_threshold, 2);
        assert_eq!(ok.selector, "mirror.linkerd.io/exported=true");
        let defaults = LinkConfig::from_link(&mk_link(json!({}))).unwrap();
        assert_eq!(defaults.probe.period, Duration::from_secs(3));
        assert_eq!(defaults.probe.port, 4191);
        assert_eq!(defaults.gateway_port, 4143);

        // (spec, a phrase the error must hold)
        let cases = [
            (json!({"gatewayAddress": ""}), "gatewayAddress is empty"),
            (json!({"gatewayAddress": " , "}), "gatewayAddress is empty"),
            (
                json!({"probeSpec": {"period": "3 s"}}),
                "probeSpec.period \"3 s\"",
            ),
            (
                json!({"probeSpec": {"period": "soon"}}),
                "probeSpec.period \"soon\"",
            ),
            (json!({"probeSpec": {"period": "-3s"}}), "negative"),
            (
                json!({"probeSpec": {"period": "0"}}),
                "probeSpec.period \"0\" is zero",
            ),
            (
                json!({"probeSpec": {"timeout": ""}}),
                "probeSpec.timeout \"\"",
            ),
            (json!({"probeSpec": {"timeout": "10"}}), "no unit"),
            (
                json!({"probeSpec": {"failureThreshold": 0}}),
                "failureThreshold is 0",
            ),
            (json!({"probeSpec": {"port": 0}}), "probeSpec.port is 0"),
            (
                json!({"probeSpec": {"path": "ready"}}),
                "does not start with '/'",
            ),
            (json!({"gatewayPort": 0}), "gatewayPort is 0"),
            (
                json!({"targetClusterName": ""}),
                "targetClusterName is empty",
            ),
            (json!({"targetClusterName": "West_1"}), "not a DNS label"),
            (
                json!({"clusterCredentialsSecret": ""}),
                "clusterCredentialsSecret is empty",
            ),
            (
                json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
                "unknown operator \"Near\"",
            ),
        ];
        for (spec, want) in cases {
            let err = LinkConfig::from_link(&mk_link(spec.clone()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
        // Every problem is listed at once.
        let err = LinkConfig::from_link(&mk_link(json!({
            "gatewayAddress": "",
            "probeSpec": {"period": "x", "timeout": "y"},
        })))
        .unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        assert_eq!(err.to_string().matches("; ").count(), 2, "{err}");
    }
}

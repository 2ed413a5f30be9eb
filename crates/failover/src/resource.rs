//! The objects the controller rewrites, read into [`Split`]s and written back
//! as patches. Pure: no client here.
//!
//! - A TrafficSplit (v1alpha1 or v1alpha2) is one split of `spec.backends`.
//!   Weights are int-or-string under both versions (v1alpha1 is stored, so
//!   a quantity such as `"500m"` reads through v1alpha2 too), and are
//!   written as integers: what v1alpha2 requires, and a valid quantity.
//! - An HTTPRoute is one split per rule, of the rule's Service `backendRefs`
//!   (a ref without a weight weighs 1, as the Gateway API says). A rule with
//!   no backendRefs (a redirect, say) is skipped.

use std::{collections::BTreeMap, fmt, sync::Arc};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use tandem_core::failover::{
    BackendSpec, DECISION_ANNOTATIONS, LAST_TRANSITION_TIME_ANNOTATION, STATE_ANNOTATION, Split,
    State,
};

/// What kind of object a split is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    TrafficSplit,
    HttpRoute,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TrafficSplit => "TrafficSplit",
            Kind::HttpRoute => "HTTPRoute",
        }
    }
}

/// Which API version the cluster serves for a kind: decides how weights are
/// read and written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    pub api: ApiResource,
}

impl Resource {
    pub fn traffic_split(version: &str) -> Self {
        Self {
            kind: Kind::TrafficSplit,
            api: ApiResource::from_gvk(&GroupVersionKind::gvk(
                tandem_api::smi::GROUP,
                version,
                "TrafficSplit",
            )),
        }
    }

    pub fn http_route(version: &str) -> Self {
        Self {
            kind: Kind::HttpRoute,
            api: ApiResource::from_gvk(&GroupVersionKind::gvk(
                "gateway.networking.k8s.io",
                version,
                "HTTPRoute",
            )),
        }
    }
}

/// A split's identity in the index and the queue. Shared strings: the
/// index keeps a key per backend of each split, and clones cost nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: Kind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// An object read into splits, with only what deciding and writing back
/// need: the index holds one per controlled object, so it stays small (no
/// managedFields, no last-applied configuration, no unrelated annotations).
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: Key,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// The state annotation the controller last wrote, if any.
    pub state: Option<String>,
    /// When the state last changed, as the controller wrote it.
    pub last_transition_time: Option<String>,
    /// One split per group of weights: a TrafficSplit has one, an HTTPRoute
    /// one per rule that has backends. Each keeps only the annotations the
    /// rules read (none, on most splits: an empty map costs nothing).
    pub groups: Vec<Split>,
    /// An HTTPRoute's `spec.rules` as read: a merge patch replaces the list
    /// whole, so everything but the weights is written back as it was.
    pub rules: Option<Value>,
    /// For an HTTPRoute, the rule each group was read from.
    pub group_rules: Vec<usize>,
    /// Why the object could not be read as splits, if it could not.
    pub unreadable: Option<String>,
}

impl Entry {
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// The state the controller last wrote, if any.
    pub fn recorded_state(&self) -> Option<&str> {
        self.state.as_deref()
    }
}

/// Reads an object of `res` into an [`Entry`]. A malformed spec gives an
/// entry with `unreadable` set rather than an error, so that it is reported
/// and the rest of the cluster is served.
pub fn read(res: &Resource, object: DynamicObject) -> Entry {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let key = Key {
        kind: res.kind,
        namespace: namespace.as_str().into(),
        name: name.as_str().into(),
    };
    let mut all = object.metadata.annotations.unwrap_or_default();
    let state = all.remove(STATE_ANNOTATION);
    let last_transition_time = all.remove(LAST_TRANSITION_TIME_ANNOTATION);
    let annotations: BTreeMap<String, String> = DECISION_ANNOTATIONS
        .iter()
        .filter_map(|k| all.remove_entry(*k))
        .collect();
    drop(all);
    let groups = match res.kind {
        Kind::TrafficSplit => read_traffic_split(&object.data).map(|g| vec![(0, g)]),
        Kind::HttpRoute => read_http_route(&object.data),
    };
    let (groups, group_rules, unreadable) = match groups {
        Ok(groups) => {
            let (rules, groups): (Vec<usize>, Vec<Split>) = groups
                .into_iter()
                .map(|(rule, backends)| {
                    let split = Split {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        backends,
                        annotations: annotations.clone(),
                    };
                    (rule, split)
                })
                .unzip();
            (groups, rules, None)
        }
        Err(e) => (vec![], vec![], Some(e)),
    };
    let group_rules = match res.kind {
        Kind::HttpRoute => group_rules,
        Kind::TrafficSplit => vec![],
    };
    let rules = match res.kind {
        Kind::HttpRoute if unreadable.is_none() => Some(object.data["spec"]["rules"].clone()),
        _ => None,
    };
    Entry {
        key,
        uid: object.metadata.uid,
        resource_version: object.metadata.resource_version,
        state,
        last_transition_time,
        groups,
        rules,
        group_rules,
        unreadable,
    }
}

/// `spec.backends`, with int-or-string weights under every version: v1alpha1
/// is stored and `conversion: None`, so a split written as v1alpha1 with
/// quantities (`"500m"`) reads the same through v1alpha2.
fn read_traffic_split(data: &Value) -> Result<Vec<BackendSpec>, String> {
    let backends = data["spec"]["backends"]
        .as_array()
        .ok_or("spec.backends is missing or not a list")?;
    let mut out = vec![];
    for (i, b) in backends.iter().enumerate() {
        let service = b["service"]
            .as_str()
            .ok_or_else(|| format!("spec.backends[{i}].service is missing"))?;
        let weight = read_weight(&b["weight"]).map_err(|e| format!("spec.backends[{i}]: {e}"))?;
        out.push(BackendSpec {
            service: service.to_string(),
            weight,
        });
    }
    Ok(out)
}

/// An int-or-string weight: an integer, or a quantity (`1`, `"1"`, `"500m"`).
///
/// Whole numbers compare as themselves, and fractions as thousandths, so
/// that they stay distinct from 0 and 1: the rules only ask whether a weight
/// is 0, and a weight read is only ever written back unchanged.
fn read_weight(w: &Value) -> Result<u32, String> {
    let millis = match w {
        Value::Number(n) => {
            return n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("weight {n} is not a whole number from 0 to {}", u32::MAX));
        }
        Value::String(s) => tandem_api::smi::quantity_millis(&IntOrString::String(s.clone()))?,
        Value::Null => return Err("weight is missing".into()),
        other => return Err(format!("weight {other} is neither a number nor a quantity")),
    };
    let w = if millis % 1000 == 0 {
        millis / 1000
    } else {
        millis
    };
    u32::try_from(w).map_err(|_| format!("weight {w} is too large"))
}

/// One group per rule that has backendRefs, with the rule's index. A rule
/// without any (a redirect, say) sends no traffic to fail over: skipped.
fn read_http_route(data: &Value) -> Result<Vec<(usize, Vec<BackendSpec>)>, String> {
    let rules = match data["spec"]["rules"].as_array() {
        Some(r) => r,
        None => return Ok(vec![]),
    };
    let mut out = vec![];
    for (r, rule) in rules.iter().enumerate() {
        if rule["backendRefs"].as_array().is_none_or(Vec::is_empty) {
            continue;
        }
        let mut group = vec![];
        for (i, b) in rule["backendRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let kind = b["kind"].as_str().unwrap_or("Service");
            let group_name = b["group"].as_str().unwrap_or("");
            if kind != "Service" || !group_name.is_empty() {
                return Err(format!(
                    "spec.rules[{r}].backendRefs[{i}] is a {kind}, not a Service"
                ));
            }
            let name = b["name"]
                .as_str()
                .ok_or_else(|| format!("spec.rules[{r}].backendRefs[{i}].name is missing"))?;
            let service = match b["namespace"].as_str() {
                Some(ns) => format!("{name}.{ns}"),
                None => name.to_string(),
            };
            let weight = match &b["weight"] {
                Value::Null => 1,
                w => w
                    .as_u64()
                    .and_then(|w| u32::try_from(w).ok())
                    .ok_or_else(|| {
                        format!("spec.rules[{r}].backendRefs[{i}].weight is not a whole number")
                    })?,
            };
            group.push(BackendSpec { service, weight });
        }
        out.push((r, group));
    }
    Ok(out)
}

/// The merge patch that writes `weights` (one list per group) and the state
/// annotations, with the resourceVersion the decision was made on: the API
/// server refuses it if the object changed since.
pub fn patch(
    res: &Resource,
    entry: &Entry,
    weights: Option<&[Vec<u32>]>,
    state: State,
    transition_time: Option<&str>,
) -> Value {
    let mut annotations = json!({ STATE_ANNOTATION: state.as_str() });
    if let Some(t) = transition_time {
        annotations[LAST_TRANSITION_TIME_ANNOTATION] = json!(t);
    }
    let mut patch = json!({
        "metadata": {
            "resourceVersion": entry.resource_version(),
            "annotations": annotations,
        }
    });
    if let Some(weights) = weights {
        patch["spec"] = match res.kind {
            Kind::TrafficSplit => traffic_split_spec(entry, weights),
            Kind::HttpRoute => http_route_spec(entry, weights),
        };
    }
    patch
}

fn traffic_split_spec(entry: &Entry, weights: &[Vec<u32>]) -> Value {
    let group = weights.first().map(Vec::as_slice).unwrap_or_default();
    // A backend is a service and a weight, nothing else: written whole. The
    // integer form of a weight is a valid quantity too (v1alpha1).
    let backends: Vec<Value> = entry
        .groups
        .first()
        .map(|g| g.backends.as_slice())
        .unwrap_or_default()
        .iter()
        .zip(group)
        .map(|(b, w)| json!({ "service": b.service, "weight": w }))
        .collect();
    json!({ "backends": backends })
}

fn http_route_spec(entry: &Entry, weights: &[Vec<u32>]) -> Value {
    let mut rules = entry
        .rules
        .as_ref()
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (&r, group) in entry.group_rules.iter().zip(weights) {
        let Some(rule) = rules.get_mut(r) else {
            continue;
        };
        if let Some(refs) = rule["backendRefs"].as_array_mut() {
            for (b, w) in refs.iter_mut().zip(group) {
                b["weight"] = json!(w);
            }
        }
    }
    // A merge patch replaces lists whole: every rule goes back as it was,
    // but for its weights.
    json!({ "rules": rules })
}

#[cfg(test)]
mod tests;

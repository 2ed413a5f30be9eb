//! The objects the controller rewrites, read into [`Split`]s and written back
//! as patches. Pure: no client here.
//!
//! - A TrafficSplit (v1alpha1 or v1alpha2) is one split of `spec.backends`.
//! - An HTTPRoute is one split per rule, of the rule's Service `backendRefs`
//!   (a ref without a weight weighs 1, as the Gateway API says).

use std::{collections::BTreeMap, fmt};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use tandem_core::failover::{
    BackendSpec, LAST_TRANSITION_TIME_ANNOTATION, STATE_ANNOTATION, Split, State,
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

    /// v1alpha1 TrafficSplit weights are quantities; everything else integers.
    fn quantity_weights(&self) -> bool {
        self.kind == Kind::TrafficSplit && self.api.version == "v1alpha1"
    }
}

/// A split's identity in the index and the queue.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Key {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
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
    /// The `failover.*` annotations only.
    pub annotations: BTreeMap<String, String>,
    /// One split per group of weights (a TrafficSplit has one, an HTTPRoute one per rule).
    pub groups: Vec<Split>,
    /// An HTTPRoute's `spec.rules` as read: a merge patch replaces the list
    /// whole, so everything but the weights is written back as it was.
    pub rules: Option<Value>,
    /// Why the object could not be read as splits, if it could not.
    pub unreadable: Option<String>,
}

/// Annotations the controller reads or writes all start with this.
const ANNOTATION_PREFIX: &str = "failover.";

impl Entry {
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.annotations.clone()
    }

    /// The state the controller last wrote, if any.
    pub fn recorded_state(&self) -> Option<&str> {
        self.annotations.get(STATE_ANNOTATION).map(String::as_str)
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
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let annotations: BTreeMap<String, String> = object
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let groups = match res.kind {
        Kind::TrafficSplit => read_traffic_split(res, &object.data),
        Kind::HttpRoute => read_http_route(&object.data),
    };
    let (groups, unreadable) = match groups {
        Ok(backends) => (
            backends
                .into_iter()
                .map(|backends| Split {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    backends,
                    annotations: annotations.clone(),
                })
                .collect(),
            None,
        ),
        Err(e) => (vec![], Some(e)),
    };
    let rules = match res.kind {
        Kind::HttpRoute if unreadable.is_none() => Some(object.data["spec"]["rules"].clone()),
        _ => None,
    };
    Entry {
        key,
        uid: object.metadata.uid,
        resource_version: object.metadata.resource_version,
        annotations,
        groups,
        rules,
        unreadable,
    }
}

fn read_traffic_split(res: &Resource, data: &Value) -> Result<Vec<Vec<BackendSpec>>, String> {
    let backends = data["spec"]["backends"]
        .as_array()
        .ok_or("spec.backends is missing or not a list")?;
    let mut out = vec![];
    for (i, b) in backends.iter().enumerate() {
        let service = b["service"]
            .as_str()
            .ok_or_else(|| format!("spec.backends[{i}].service is missing"))?;
        let weight = if res.quantity_weights() {
            let q: IntOrString = serde_json::from_value(b["weight"].clone())
                .map_err(|_| format!("spec.backends[{i}].weight is not a quantity"))?;
            let millis = tandem_api::smi::quantity_millis(&q)
                .map_err(|e| format!("spec.backends[{i}]: {e}"))?;
            // Whole numbers compare as themselves; fractions stay distinct from 0 and 1.
            let w = if millis % 1000 == 0 {
                millis / 1000
            } else {
                millis
            };
            u32::try_from(w).map_err(|_| format!("spec.backends[{i}].weight is too large"))?
        } else {
            let w = b["weight"]
                .as_i64()
                .ok_or_else(|| format!("spec.backends[{i}].weight is not an integer"))?;
            u32::try_from(w)
                .map_err(|_| format!("spec.backends[{i}].weight {w} is out of range"))?
        };
        out.push(BackendSpec {
            service: service.to_string(),
            weight,
        });
    }
    Ok(vec![out])
}

fn read_http_route(data: &Value) -> Result<Vec<Vec<BackendSpec>>, String> {
    let rules = match data["spec"]["rules"].as_array() {
        Some(r) => r,
        None => return Ok(vec![]),
    };
    let mut out = vec![];
    for (r, rule) in rules.iter().enumerate() {
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
        out.push(group);
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
    for (rule, group) in rules.iter_mut().zip(weights) {
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
mod tests {
    use super::*;

    fn obj(res: &Resource, data: Value) -> DynamicObject {
        let mut o = DynamicObject::new("s", &res.api).within("ns").data(data);
        o.metadata.resource_version = Some("42".into());
        o
    }

    #[test]
    fn the_workshop_split_reads_under_both_versions() {
        for (version, weights) in [
            ("v1alpha2", json!([1, 0])),
            ("v1alpha1", json!(["1", "0"])),
            ("v1alpha1", json!([1, "0m"])),
        ] {
            let res = Resource::traffic_split(version);
            let e = read(
                &res,
                obj(
                    &res,
                    json!({"spec": {"service": "emoji-svc", "backends": [
                        {"service": "emoji-svc", "weight": weights[0]},
                        {"service": "emoji-svc-west", "weight": weights[1]},
                    ]}}),
                ),
            );
            assert_eq!(e.unreadable, None, "{version}");
            let ws: Vec<u32> = e.groups[0].backends.iter().map(|b| b.weight).collect();
            assert_eq!(ws, [1, 0], "{version} {weights}");
        }
    }

    #[test]
    fn malformed_specs_are_unreadable_not_errors() {
        let res = Resource::traffic_split("v1alpha2");
        for data in [
            json!({"spec": {}}),
            json!({"spec": {"backends": [{"weight": 1}]}}),
            json!({"spec": {"backends": [{"service": "a", "weight": "x"}]}}),
            json!({"spec": {"backends": [{"service": "a", "weight": -1}]}}),
        ] {
            let e = read(&res, obj(&res, data.clone()));
            assert!(e.unreadable.is_some(), "{data}");
            assert!(e.groups.is_empty());
        }
    }

    #[test]
    fn http_routes_split_per_rule_with_default_weights() {
        let res = Resource::http_route("v1");
        let e = read(
            &res,
            obj(
                &res,
                json!({"spec": {"rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                     "backendRefs": [{"name": "a", "port": 80}, {"name": "b", "namespace": "other", "port": 80, "weight": 0}]},
                    {"backendRefs": [{"name": "c", "port": 80, "weight": 5}]},
                ]}}),
            ),
        );
        assert_eq!(e.groups.len(), 2);
        let g0: Vec<(&str, u32)> = e.groups[0]
            .backends
            .iter()
            .map(|b| (b.service.as_str(), b.weight))
            .collect();
        assert_eq!(g0, [("a", 1), ("b.other", 0)]);

        let p = patch(
            &res,
            &e,
            Some(&[vec![0, 1], vec![1]]),
            State::Failover,
            Some("t"),
        );
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(p["spec"]["rules"][0]["backendRefs"][1]["weight"], 1);
        assert_eq!(p["spec"]["rules"][0]["backendRefs"][0]["weight"], 0);
        assert_eq!(
            p["spec"]["rules"][0]["matches"][0]["path"]["value"], "/",
            "the rest of each rule is kept"
        );
        assert_eq!(p["metadata"]["annotations"][STATE_ANNOTATION], "failover");
    }

    #[test]
    fn non_service_backend_refs_are_unreadable() {
        let res = Resource::http_route("v1");
        let e = read(
            &res,
            obj(
                &res,
                json!({"spec": {"rules": [{"backendRefs": [{"kind": "Bucket", "group": "s3", "name": "x"}]}]}}),
            ),
        );
        assert!(e.unreadable.unwrap().contains("not a Service"));
    }

    #[test]
    fn a_state_only_patch_leaves_the_spec_alone() {
        let res = Resource::traffic_split("v1alpha2");
        let e = read(
            &res,
            obj(
                &res,
                json!({"spec": {"service": "a", "backends": [{"service": "a", "weight": 1}]}}),
            ),
        );
        let p = patch(
            &res,
            &e,
            None,
            State::NoReadyBackends,
            Some("2026-01-01T00:00:00Z"),
        );
        assert!(p.get("spec").is_none());
        assert_eq!(
            p["metadata"]["annotations"][LAST_TRANSITION_TIME_ANNOTATION],
            "2026-01-01T00:00:00Z"
        );
    }
}

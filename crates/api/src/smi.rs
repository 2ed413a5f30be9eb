//! The SMI TrafficSplit (`split.smi-spec.io`), compatible with linkerd-smi's
//! CRD: v1alpha1 is stored and its weights are int-or-string quantities;
//! v1alpha2 is served and its weights are integers. `conversion: None`, so
//! the same object reads under both versions.

use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceConversion, CustomResourceDefinition,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "split.smi-spec.io";
pub const CRD_NAME: &str = "trafficsplits.split.smi-spec.io";

/// The workshop's TrafficSplit, exactly as the seed writes it, under the
/// SMI API `version` and in `namespace` (the seed's is `emojivoto`): the
/// demo applies it, and the tests check tandem against it.
pub fn workshop_split(version: &str, namespace: &str) -> String {
    format!(
        r#"apiVersion: split.smi-spec.io/{version}
kind: TrafficSplit
metadata:
  name: emoji-svc
  namespace: {namespace}
  labels:
      failover.linkerd.io/controlled-by: linkerd-failover
  annotations:
      failover.linkerd.io/primary-service: emoji-svc
spec:
  service: emoji-svc
  backends:
  - service: emoji-svc
    weight: 1
  - service: emoji-svc-west
    weight: 0
"#
    )
}

pub mod v1alpha1 {
    use super::*;

    /// TrafficSplit v1alpha1, the storage version.
    #[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha1",
        kind = "TrafficSplit",
        namespaced,
        shortname = "ts",
        printcolumn = r#"{"name":"Service","type":"string","description":"The apex service of this split.","jsonPath":".spec.service"}"#
    )]
    pub struct TrafficSplitSpec {
        /// The apex service that clients address.
        pub service: String,
        /// The services traffic is split between.
        pub backends: Vec<TrafficSplitBackend>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct TrafficSplitBackend {
        pub service: String,
        /// A Kubernetes quantity: `1`, `"500m"`, `"1k"`.
        pub weight: IntOrString,
    }
}

pub mod v1alpha2 {
    use super::*;

    /// TrafficSplit v1alpha2: the version the workshop writes.
    #[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha2",
        kind = "TrafficSplit",
        namespaced,
        shortname = "ts",
        printcolumn = r#"{"name":"Service","type":"string","description":"The apex service of this split.","jsonPath":".spec.service"}"#
    )]
    pub struct TrafficSplitSpec {
        /// The apex service that clients address.
        pub service: String,
        /// The services traffic is split between.
        pub backends: Vec<TrafficSplitBackend>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct TrafficSplitBackend {
        pub service: String,
        pub weight: i64,
    }
}

/// The TrafficSplit CRD with both versions, v1alpha1 stored.
pub fn trafficsplit_crd() -> CustomResourceDefinition {
    let mut crd = kube::core::crd::merge_crds(
        vec![v1alpha1::TrafficSplit::crd(), v1alpha2::TrafficSplit::crd()],
        "v1alpha1",
    )
    .expect("the two TrafficSplit versions share group, kind and scope");
    crd.spec.conversion = Some(CustomResourceConversion {
        strategy: "None".into(),
        webhook: None,
    });
    crd.metadata.labels = Some(
        [(super::PART_OF_LABEL.to_string(), "tandem".to_string())]
            .into_iter()
            .collect(),
    );
    crd
}

/// Parses a quantity weight into thousandths ("500m" is 500, "1" is 1000).
///
/// Only non-negative decimal quantities with an optional SI or binary suffix
/// are weights; anything else is an error naming the value.
pub fn quantity_millis(q: &IntOrString) -> Result<u64, String> {
    let s = match q {
        IntOrString::Int(i) if *i >= 0 => return Ok(*i as u64 * 1000),
        IntOrString::Int(i) => return Err(format!("weight {i} is negative")),
        IntOrString::String(s) => s.trim(),
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("weight {s:?} is not a quantity")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("weight {s:?} is not a quantity"))?;
    Ok((n * factor * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_serves_both_versions_and_stores_v1alpha1() {
        let crd = trafficsplit_crd();
        assert_eq!(crd.metadata.name.as_deref(), Some(CRD_NAME));
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["ts".to_string()]));
        let versions: Vec<(&str, bool, bool)> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect();
        assert_eq!(
            versions,
            [("v1alpha1", true, true), ("v1alpha2", true, false)]
        );
        assert_eq!(crd.spec.conversion.unwrap().strategy, "None");
    }

    fn weight_schema(version: &str) -> serde_json::Value {
        let crd = trafficsplit_crd();
        let v = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == version)
            .unwrap();
        let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
        schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["backends"]["items"]
            ["properties"]["weight"]
            .clone()
    }

    #[test]
    fn weights_are_quantities_in_v1alpha1_and_integers_in_v1alpha2() {
        assert_eq!(
            weight_schema("v1alpha1")["x-kubernetes-int-or-string"],
            true
        );
        assert_eq!(weight_schema("v1alpha2")["type"], "integer");
    }

    #[test]
    fn the_workshop_manifest_parses_as_v1alpha2() {
        let ts: v1alpha2::TrafficSplit = serde_json::from_value(serde_json::json!({
            "apiVersion": "split.smi-spec.io/v1alpha2",
            "kind": "TrafficSplit",
            "metadata": {"name": "emoji-svc", "namespace": "emojivoto"},
            "spec": {"service": "emoji-svc", "backends": [
                {"service": "emoji-svc", "weight": 1},
                {"service": "emoji-svc-west", "weight": 0}
            ]}
        }))
        .unwrap();
        assert_eq!(ts.spec.backends[1].weight, 0);
    }

    #[test]
    fn quantities_parse_to_millis() {
        for (q, want) in [
            (IntOrString::Int(1), Ok(1000)),
            (IntOrString::Int(0), Ok(0)),
            (IntOrString::String("1".into()), Ok(1000)),
            (IntOrString::String("500m".into()), Ok(500)),
            (IntOrString::String("1.5".into()), Ok(1500)),
            (IntOrString::String("2k".into()), Ok(2_000_000)),
            (IntOrString::String("0m".into()), Ok(0)),
        ] {
            assert_eq!(quantity_millis(&q), want, "{q:?}");
        }
        for bad in [
            IntOrString::Int(-1),
            IntOrString::String("".into()),
            IntOrString::String("abc".into()),
            IntOrString::String("1x".into()),
            IntOrString::String("-5".into()),
        ] {
            assert!(quantity_millis(&bad).is_err(), "{bad:?}");
        }
    }
}

//! Kubernetes API types of tandem: the CRDs it installs (generated from these
//! types, then committed) and the resources it reads and writes.

#![forbid(unsafe_code)]

pub mod duration;
pub mod endpoints;
pub mod multicluster;
pub mod smi;

pub use duration::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The label every object tandem renders carries, with the part it belongs to.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";

/// The CRDs of `tandem install --crds`.
///
/// Splitting is a core layer of tandem (the failover controller rewrites
/// TrafficSplits), so the TrafficSplit CRD ships with the core. `tandem smi
/// install` prints the same CRD, so that the workshop's step works too, and
/// applying both is harmless.
pub fn core_crds() -> Vec<CustomResourceDefinition> {
    vec![smi::trafficsplit_crd()]
}

/// Renders objects as one multi-document YAML stream.
pub fn to_yaml_stream<T: serde::Serialize>(objects: &[T]) -> Result<String, String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        let v = serde_json::to_value(o).map_err(|e| e.to_string())?;
        out.push_str(&yaml(&v)?);
    }
    Ok(out)
}

/// One object as YAML, through the serializer kube itself uses.
pub fn yaml(v: &serde_json::Value) -> Result<String, String> {
    serde_saphyr::to_string(v).map_err(|e| e.to_string())
}

//! Reading EndpointSlices the way both controllers need to.

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Endpoints that are ready and not terminating. An unset `ready` counts as
/// ready, as the EndpointSlice API says consumers should read it.
pub fn ready_endpoints(slice: &EndpointSlice) -> usize {
    slice
        .endpoints
        .iter()
        .filter(|e| {
            let c = e.conditions.as_ref();
            c.and_then(|c| c.ready).unwrap_or(true)
                && !c.and_then(|c| c.terminating).unwrap_or(false)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    fn ep(ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec!["127.10.0.1".into()],
            conditions: Some(EndpointConditions {
                ready,
                terminating,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_ready_and_not_terminating_endpoints_count() {
        let slice = EndpointSlice {
            endpoints: vec![
                ep(Some(true), None),
                ep(None, None),
                ep(Some(false), None),
                ep(Some(true), Some(true)),
            ],
            ..Default::default()
        };
        assert_eq!(ready_endpoints(&slice), 2);
        assert_eq!(ready_endpoints(&EndpointSlice::default()), 0);
    }
}

//! The trust anchors a control plane holds (ConfigMap
//! `tandem-identity-trust-roots`), read one way for every category that
//! needs them: the identity checks, the multicluster checks (clusters
//! share an anchor) and the data plane checks (proxies carry the current
//! anchors).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use tandem_install::core::{TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY};

/// The bundle's PEM text, or one reason why not: the ConfigMap is
/// unreadable or missing, or lacks the key.
pub(crate) async fn read_pem(client: &Client, namespace: &str) -> Result<String, String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = cms
        .get_opt(TRUST_ROOTS_CONFIGMAP)
        .await
        .map_err(|e| format!("ConfigMap {namespace}/{TRUST_ROOTS_CONFIGMAP}: {e}"))?
        .ok_or_else(|| format!("ConfigMap {namespace}/{TRUST_ROOTS_CONFIGMAP} is missing"))?;
    cm.data
        .and_then(|mut d| d.remove(TRUST_ROOTS_KEY))
        .ok_or_else(|| {
            format!("ConfigMap {namespace}/{TRUST_ROOTS_CONFIGMAP} has no key {TRUST_ROOTS_KEY}")
        })
}

/// The bundle as a set of certificates, compared by content: each is its
/// PEM body with the whitespace taken out, so that line breaks and order
/// do not matter. Fails when the bundle holds no certificate.
pub(crate) async fn read_set(client: &Client, namespace: &str) -> Result<BTreeSet<String>, String> {
    let blocks = certificates(&read_pem(client, namespace).await?);
    if blocks.is_empty() {
        return Err(format!(
            "ConfigMap {namespace}/{TRUST_ROOTS_CONFIGMAP} holds no certificate"
        ));
    }
    Ok(blocks)
}

/// The certificates of a PEM bundle, as [`read_set`] compares them.
pub(crate) fn certificates(pem: &str) -> BTreeSet<String> {
    pem.split("-----END CERTIFICATE-----")
        .filter_map(|b| {
            b.split_once("-----BEGIN CERTIFICATE-----")
                .map(|(_, body)| body)
        })
        .map(|body| body.split_whitespace().collect::<String>())
        .filter(|b| !b.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_compare_by_content_not_layout() {
        let a = "-----BEGIN CERTIFICATE-----\nAAAA\nBBBB\n-----END CERTIFICATE-----\n";
        let b = "-----BEGIN CERTIFICATE-----\nCCCC\n-----END CERTIFICATE-----";
        let one = certificates(&format!("{a}{b}"));
        let other = certificates(&format!("{}\r\n{}", b, a.replace('\n', "\r\n")));
        assert_eq!(one, other);
        assert_eq!(one.len(), 2);
        assert!(one.contains("AAAABBBB"));
        assert!(certificates("no certificate here").is_empty());
        assert!(
            certificates("-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----").is_empty()
        );
    }
}

//! Kubeconfig files: one for the user, with a context per cluster named after
//! it, and one per component.

use std::{fs, path::Path};

use base64::Engine;

use serde_json::{Value, json};

use crate::{ClusterLayout, Component, Error, pki::Pki};

fn b64(path: &Path) -> Result<String, Error> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The user's kubeconfig: every cluster, with certificates embedded so that
/// the file works from anywhere. The current context is the first cluster.
pub fn user_kubeconfig(layouts: &[ClusterLayout]) -> Result<String, Error> {
    let mut clusters = vec![];
    let mut users = vec![];
    let mut contexts = vec![];
    for l in layouts {
        let pki = Pki::new(l);
        let admin = pki.admin();
        clusters.push(json!({
            "name": l.name,
            "cluster": {
                "server": l.apiserver_url(),
                "certificate-authority-data": b64(&pki.ca().cert)?,
            }
        }));
        users.push(json!({
            "name": format!("{}-admin", l.name),
            "user": {
                "client-certificate-data": b64(&admin.cert)?,
                "client-key-data": b64(&admin.key)?,
            }
        }));
        contexts.push(json!({
            "name": l.name,
            "context": { "cluster": l.name, "user": format!("{}-admin", l.name) }
        }));
    }
    let current = layouts.first().map(|l| l.name.clone()).unwrap_or_default();
    to_yaml(&json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": users,
        "contexts": contexts,
        "current-context": current,
        "preferences": {},
    }))
}

/// A component's kubeconfig, pointing at its certificate files.
pub fn component_kubeconfig(l: &ClusterLayout, c: Component) -> Result<String, Error> {
    let pki = Pki::new(l);
    let own = pki.component(c);
    to_yaml(&json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": l.name,
            "cluster": {
                "server": l.apiserver_url(),
                "certificate-authority": pki.ca().cert.display().to_string(),
            }
        }],
        "users": [{
            "name": c.name(),
            "user": {
                "client-certificate": own.cert.display().to_string(),
                "client-key": own.key.display().to_string(),
            }
        }],
        "contexts": [{ "name": l.name, "context": { "cluster": l.name, "user": c.name() } }],
        "current-context": l.name,
    }))
}

fn to_yaml(v: &Value) -> Result<String, Error> {
    serde_saphyr::to_string(v).map_err(|e| Error::InvalidConfig(format!("kubeconfig: {e}")))
}

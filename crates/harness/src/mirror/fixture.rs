//! The starting point most mirror tests share: east linked to west, the
//! mirror running, and west's `emoji` exported and mirrored ready in east.

use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};

use super::{LinkedPair, Mirror, SETTLE, export, link_pair, wait_ready};
use crate::{Env, TestNamespace};

/// A test's own namespace (in both clusters), its Link, its running
/// mirror, and `emoji` mirrored as `emoji-west`, ready at the gateway.
pub struct Mirrored {
    pub ns: TestNamespace,
    pub link: String,
    pub east: Client,
    pub west: Client,
    /// East's Services in the test's namespace (where the mirrors are).
    pub services: Api<Service>,
    pub pair: LinkedPair,
    pub mirror: Mirror,
}

impl Mirrored {
    /// `name` prefixes the namespace and the Link; `probe_ip` is the
    /// gateway's address, where the test serves its probe.
    pub async fn start(env: &Env, name: &str, probe_ip: &str) -> Self {
        let ns = env.namespace(&format!("mirror-{name}"), &["east", "west"]);
        let n = ns.name.clone();
        let link = format!("{name}-west");
        let east = env.client("east").await;
        let west = env.client("west").await;
        let pair = link_pair(env, &east, &west, &n, &link, probe_ip).await;
        let mirror = Mirror::start(env, &n, &link).await;
        export(&west, &n, "emoji", &n, 1).await;
        wait_ready(
            &east,
            &n,
            "emoji-west",
            true,
            SETTLE,
            "emoji is mirrored, ready at the gateway",
        )
        .await;
        Self {
            services: Api::namespaced(east.clone(), &n),
            ns,
            link,
            east,
            west,
            pair,
            mirror,
        }
    }

    /// The test's namespace.
    pub fn n(&self) -> &str {
        &self.ns.name
    }
}

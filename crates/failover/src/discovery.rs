//! Which version of a kind the cluster serves. A failed discovery is retried
//! with backoff, and a group not served yet is asked again later, so that
//! neither a transient error at start nor CRDs installed after the
//! controller leave a kind uncontrolled until a restart.

use std::time::Duration;

use kube::Client;
use tokio::sync::watch;

use crate::call::{self, CallError, call};

/// What discovery said about an API group.
#[derive(Debug)]
pub enum Discovered {
    /// The first of the wanted versions the cluster serves.
    Served(String),
    /// The group, or every wanted version of it, is not served.
    NotServed,
    /// Discovery itself failed: ask again.
    Failed(CallError),
}

/// Asks once which of `versions` (in order of preference) the cluster
/// serves for `group`.
pub async fn discover(client: &Client, group: &str, versions: &[&str]) -> Discovered {
    match call("discovery", kube::discovery::group(client, group)).await {
        Ok(g) => {
            let served: Vec<String> = g.versions().map(String::from).collect();
            match versions.iter().find(|v| served.iter().any(|s| s == *v)) {
                Some(v) => Discovered::Served(v.to_string()),
                None => Discovered::NotServed,
            }
        }
        Err(CallError::Api {
            source: kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_)),
            ..
        }) => Discovered::NotServed,
        Err(e) => Discovered::Failed(e),
    }
}

/// How [`served_version`] waits.
#[derive(Clone, Copy, Debug)]
pub struct Wait<'a> {
    /// How often to ask again while the group is not served.
    pub recheck: Duration,
    /// Logged (as a warning) once while the group is not served; without
    /// it, that is only a debug line.
    pub hint: Option<&'a str>,
}

/// Waits until the cluster serves one of `versions` of `group`, and returns
/// it; `None` on shutdown.
pub async fn served_version(
    client: &Client,
    group: &str,
    versions: &[&str],
    wait: Wait<'_>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    let mut failures = 0u32;
    let mut said = false;
    loop {
        let after = match discover(client, group, versions).await {
            Discovered::Served(v) => return Some(v),
            Discovered::NotServed => {
                failures = 0;
                match wait.hint {
                    Some(hint) if !said => tracing::warn!(group, "{hint}"),
                    _ => tracing::debug!(group, ?versions, "not served; asking again later"),
                }
                said = true;
                wait.recheck
            }
            Discovered::Failed(e) => {
                failures += 1;
                let after = call::backoff(Duration::from_secs(1), failures).min(wait.recheck);
                tracing::warn!(
                    group,
                    error = %e,
                    retry_in_ms = after.as_millis() as u64,
                    "API discovery failed; retrying"
                );
                after
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(after) => {}
            _ = shutdown.wait_for(|s| *s) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use serde_json::json;

    use super::*;
    use tandem_runtime::mock::{self, Reply};

    const GROUP: &str = "gateway.networking.k8s.io";

    fn group_list(served: bool) -> serde_json::Value {
        let groups = if served {
            json!([{
                "name": GROUP,
                "versions": [{"groupVersion": format!("{GROUP}/v1"), "version": "v1"}],
                "preferredVersion": {"groupVersion": format!("{GROUP}/v1"), "version": "v1"},
            }])
        } else {
            json!([])
        };
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn resources() -> serde_json::Value {
        json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/v1"),
            "resources": [{"name": "httproutes", "singularName": "httproute", "namespaced": true,
                "kind": "HTTPRoute", "verbs": ["get", "list", "watch", "patch"]}],
        })
    }

    /// An API whose first `bad` discoveries go wrong as `first` says.
    fn api(bad: usize, first: fn(usize) -> Reply) -> (Client, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        let client = mock::client(move |_, path, _| match path {
            "/apis" => {
                let n = count.fetch_add(1, Ordering::SeqCst);
                if n < bad {
                    first(n)
                } else {
                    Reply::json(200, group_list(true))
                }
            }
            p if p == format!("/apis/{GROUP}/v1") => Reply::json(200, resources()),
            _ => Reply::json(404, json!({})),
        });
        (client, asked)
    }

    fn wait() -> Wait<'static> {
        Wait {
            recheck: Duration::from_secs(60),
            hint: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_error_is_retried_until_the_group_is_served() {
        let (_stop, mut stopped) = watch::channel(false);
        for (what, first) in [
            (
                "an error",
                (|_| Reply::json(503, json!({}))) as fn(usize) -> Reply,
            ),
            ("no answer", |_| Reply::Hang),
        ] {
            let (client, asked) = api(2, first);
            let v = served_version(&client, GROUP, &["v1"], wait(), &mut stopped).await;
            assert_eq!(v.as_deref(), Some("v1"), "after {what}");
            assert_eq!(asked.load(Ordering::SeqCst), 3, "after {what}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_served_later_is_found() {
        let (_stop, mut stopped) = watch::channel(false);
        let (client, asked) = api(3, |_| Reply::json(200, group_list(false)));
        let started = tokio::time::Instant::now();
        let v = served_version(&client, GROUP, &["v1"], wait(), &mut stopped).await;
        assert_eq!(v.as_deref(), Some("v1"));
        assert_eq!(asked.load(Ordering::SeqCst), 4);
        assert!(
            started.elapsed() >= wait().recheck * 3,
            "asked every recheck"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn classifies_served_missing_and_failed() {
        let (client, _) = api(1, |_| Reply::json(200, group_list(false)));
        assert!(matches!(
            discover(&client, GROUP, &["v1"]).await,
            Discovered::NotServed
        ));
        assert!(matches!(
            discover(&client, GROUP, &["v1beta1"]).await,
            Discovered::NotServed
        ));
        assert!(matches!(
            discover(&client, GROUP, &["v1beta1", "v1"]).await,
            Discovered::Served(v) if v == "v1"
        ));
        let (client, _) = api(1, |_| Reply::json(500, json!({})));
        assert!(matches!(
            discover(&client, GROUP, &["v1"]).await,
            Discovered::Failed(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait() {
        let (stop, mut stopped) = watch::channel(false);
        let (client, _) = api(usize::MAX, |_| Reply::json(200, group_list(false)));
        let waiting = tokio::spawn(async move {
            served_version(&client, GROUP, &["v1"], wait(), &mut stopped).await
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        stop.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), None);
    }
}

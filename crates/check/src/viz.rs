//! The viz extension's categories, as `linkerd check` has them once
//! `linkerd viz install` ran (the workshop checks right after it):
//!
//! - `tandem-viz`: Prometheus runs and answers a query, through the API
//!   server's service proxy as `viz stat` asks it;
//! - `tandem-viz-data-plane`, with `--proxy`: every ready proxy of the
//!   data plane's scope is scraped (Linkerd's "data plane proxy metrics are
//!   present in Prometheus"). A proxy Prometheus does not see is a pod
//!   `viz stat` silently leaves out.
//!
//! Prometheus' answers are gathered, then judged by pure functions.

use std::collections::BTreeSet;

use tandem_viz::prom;

use crate::{
    Category, CheckResult, Context, core,
    data_plane::{self, Gathered},
};

pub(crate) const CATEGORY: &str = "tandem-viz";
pub(crate) const DATA_PLANE_CATEGORY: &str = "tandem-viz-data-plane";
const ANSWERS: &str = "prometheus answers queries";
const SCRAPED: &str = "data plane proxy metrics are present in Prometheus";

/// Every proxy target Prometheus scraped at its last try.
const SCRAPED_QUERY: &str = r#"up{job="linkerd-proxy"} == 1"#;

pub(crate) async fn categories(ctx: &Context, namespace: &str) -> Vec<Category> {
    let mut checks = vec![
        CheckResult::ok(format!("viz extension namespace '{namespace}' exists")),
        core::deployments_available(
            ctx,
            "prometheus is running",
            namespace,
            &[prom::SERVICE],
            "see `kubectl -n NS get deploy,pods` and the pods' events",
        )
        .await,
    ];
    let answer = prom::query(&ctx.client, "vector(1)")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    checks.push(judge_answer(answer));
    let mut categories = vec![Category {
        name: CATEGORY.into(),
        checks,
    }];
    if let Some(data_plane) = &ctx.data_plane {
        let scraped = prom::query(&ctx.client, SCRAPED_QUERY)
            .await
            .map(|samples| {
                samples
                    .iter()
                    .map(|s| format!("{}/{}", s.label("namespace"), s.label("pod")))
                    .collect()
            })
            .map_err(|e| e.to_string());
        categories.push(Category {
            name: DATA_PLANE_CATEGORY.into(),
            checks: vec![judge_scraped(data_plane, scraped)],
        });
    }
    categories
}

/// Prometheus may still be starting: its failures are retryable.
fn judge_answer(answer: Result<(), String>) -> CheckResult {
    match answer {
        Ok(()) => CheckResult::ok(ANSWERS),
        Err(e) => CheckResult::fail(
            ANSWERS,
            e,
            "wait for `kubectl -n tandem-viz rollout status deploy/prometheus`, then see its logs",
        )
        .retryable(),
    }
}

/// The ready proxies of the data plane's scope that Prometheus has no
/// successful scrape of. A pod that just started waits for the next scrape,
/// so a miss is retryable.
fn judge_scraped(data_plane: &Gathered, scraped: Result<BTreeSet<String>, String>) -> CheckResult {
    let scraped = match scraped {
        Ok(s) => s,
        Err(e) => {
            return CheckResult::fail(SCRAPED, e, "is Prometheus running? see `tandem check`")
                .retryable();
        }
    };
    let ready = data_plane
        .pods
        .iter()
        .flatten()
        .filter(|p| p.not_ready.is_none());
    let missing: Vec<String> = ready
        .map(|p| p.name.clone())
        .filter(|name| !scraped.contains(name))
        .collect();
    if missing.is_empty() {
        return CheckResult::ok(SCRAPED);
    }
    CheckResult::fail(
        SCRAPED,
        format!(
            "Data plane metrics not found for:\n{}",
            data_plane::listed(&missing)
        ),
        "Prometheus keeps the proxies of this control plane only (label linkerd.io/control-plane-ns); see its targets: `kubectl -n tandem-viz port-forward deploy/prometheus 9090`, then http://localhost:9090/targets",
    )
    .retryable()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::{Outcome, data_plane::ProxyPod};

    fn pod(name: &str, ready: bool) -> ProxyPod {
        ProxyPod {
            name: name.into(),
            not_ready: (!ready).then(|| "ContainerCreating".into()),
            version: None,
            anchors: None,
            labels: vec![],
        }
    }

    #[test]
    fn every_ready_proxy_must_be_scraped() {
        let g = Gathered {
            namespace: None,
            pods: Ok(vec![
                pod("app/a", true),
                pod("app/b", true),
                pod("app/c", false),
            ]),
            services: Ok(vec![]),
            anchors: Ok(BTreeSet::new()),
        };
        let set = |names: &[&str]| Ok(names.iter().map(|n| n.to_string()).collect());
        // (scraped, outcome, what the error says)
        let cases = [
            (set(&["app/a", "app/b"]), Outcome::Success, ""),
            // A proxy that is not ready is the data plane category's to report.
            (set(&["app/a", "app/b", "other/x"]), Outcome::Success, ""),
            (
                set(&["app/a"]),
                Outcome::Error,
                "Data plane metrics not found for:\n* app/b",
            ),
            (set(&[]), Outcome::Error, "* app/a\n* app/b"),
            (
                Err("viz is not installed".to_string()),
                Outcome::Error,
                "viz is not installed",
            ),
        ];
        for (scraped, outcome, says) in cases {
            let r = judge_scraped(&g, scraped.clone());
            assert_eq!(r.outcome, outcome, "{scraped:?}");
            assert!(r.error.unwrap_or_default().contains(says), "{scraped:?}");
            assert_eq!(r.retryable, outcome == Outcome::Error, "{scraped:?}");
        }
        // No pods listed: nothing to miss.
        let none = Gathered {
            pods: Err("forbidden".into()),
            ..g
        };
        assert_eq!(judge_scraped(&none, set(&[])).outcome, Outcome::Success);
    }

    #[test]
    fn a_prometheus_that_does_not_answer_may_be_starting() {
        assert_eq!(judge_answer(Ok(())).outcome, Outcome::Success);
        let r = judge_answer(Err("viz is not installed in this cluster".into()));
        assert_eq!(r.outcome, Outcome::Error);
        assert!(r.retryable);
    }
}

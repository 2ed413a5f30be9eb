//! The failover controller on Gateway API HTTPRoutes (linkerd2#11472)
//! against real kube-apiservers (fixtures: `tandem_harness::failover`).

use std::path::Path;

use tandem_harness::{
    Env, TestNamespace, eventually,
    failover::{FLIP, annotation, backend, controller, scale, wait_event},
};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

fn env() -> Env {
    tandem_harness::failover::env(tandem_bin())
}

/// Case 7: the HTTPRoute version of case 1 (linkerd2#11472).
#[tokio::test]
async fn an_http_route_fails_over_and_back() {
    let env = env();
    let ns = env.namespace("route", &["east"]);
    ns.apply("east", &backend("emoji", "emoji-svc", 1));
    ns.apply("east", &backend("emoji-west", "emoji-svc-west", 1));
    let label = ns.name.clone();
    ns.apply(
        "east",
        &format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: emoji-route
  labels: {{failover.linkerd.io/controlled-by: {label}}}
  annotations: {{failover.linkerd.io/primary-service: emoji-svc}}
spec:
  parentRefs:
  - {{group: "", kind: Service, name: emoji-svc, port: 8080}}
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs:
    - {{name: emoji-svc, port: 8080, weight: 1}}
    - {{name: emoji-svc-west, port: 8080, weight: 0}}
"#
        ),
    );
    let _c = controller(&env, "east", &label, &[]);
    async fn wait_route(ns: &TestNamespace, want: &str) {
        eventually(&format!("HTTPRoute weights {want}"), FLIP, || {
            let got = ns.kubectl(
                "east",
                &[
                    "get",
                    "httproute",
                    "emoji-route",
                    "-o",
                    "jsonpath={.spec.rules[0].backendRefs[*].weight}",
                ],
            );
            let want = want.to_string();
            async move { if got == want { Ok(()) } else { Err(got) } }
        })
        .await
    }
    let wait = |want: &'static str| wait_route(&ns, want);
    wait("1 0").await;
    scale(&ns, "east", "emoji", 0);
    wait("0 1").await;
    assert_eq!(
        annotation(
            &ns,
            "east",
            "httproute",
            "emoji-route",
            "failover.tandem.io/state"
        )
        .as_deref(),
        Some("failover")
    );
    wait_event(&ns, "east", "emoji-route", "FailoverToFallback", 1).await;
    // The rest of the rule is untouched.
    let path = ns.kubectl(
        "east",
        &[
            "get",
            "httproute",
            "emoji-route",
            "-o",
            "jsonpath={.spec.rules[0].matches[0].path.value}",
        ],
    );
    assert_eq!(path, "/");
    scale(&ns, "east", "emoji", 1);
    wait("1 0").await;
}

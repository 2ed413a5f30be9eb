//! The gateway's export watch against a real kube-apiserver: a Service
//! becomes forwardable when labelled `mirror.linkerd.io/exported=true`, and
//! is refused again once the label goes (or the Service does).

use std::{path::Path, time::Duration};

use tandem_harness::Env;
use tandem_meshtls::{
    Name,
    gateway::{Ask, Gateway, Refusal, Suffixes, Target},
};
use tandem_proxy::gateway::Exports;

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Deadline for a change to reach the index: an expected outcome, not a
/// speed measure.
const ARRIVES: Duration = Duration::from_secs(15);

const GW: &str = "tandem-gateway.tandem-multicluster.serviceaccount.identity.tandem.cluster.local";
const CLIENT: &str = "web.emojivoto.serviceaccount.identity.tandem.cluster.local";

/// The gateway's decision for `svc.ns:8080` with the index as it is now.
fn decide(exports: &Exports, ns: &str, svc: &str) -> Result<(), Refusal> {
    let rules = Gateway {
        identity: GW.parse().unwrap(),
        suffixes: Suffixes::default(),
    };
    let client: Name = CLIENT.parse().unwrap();
    let ask = Ask {
        target: Target {
            name: format!("{svc}.{ns}.svc.cluster.local").parse().unwrap(),
            port: 8080,
        },
        client_id: Some(&client),
        forwarded: &[],
    };
    rules
        .decide(&ask, |ns, svc| exports.contains(ns, svc))
        .map(|_| ())
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(ARRIVES, async {
        while !ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what} within {ARRIVES:?}");
}

#[tokio::test]
async fn labelling_a_service_exports_it_and_unlabelling_refuses_it() {
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("gateway", &["east"]);
    ns.apply(
        "east",
        r#"---
apiVersion: v1
kind: Service
metadata: {name: emoji-svc}
spec:
  ports: [{name: grpc, port: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: voting-svc
  labels: {mirror.linkerd.io/exported: "true"}
spec:
  ports: [{name: grpc, port: 8080}]
"#,
    );
    let exports = Exports::default();
    let watch = tokio::spawn(tandem::gateway::follow_exports(
        env.client("east").await,
        exports.clone(),
    ));
    let n = ns.name.as_str();

    // Labelled before the watch started: in the first list.
    until("voting-svc (labelled at creation) forwardable", || {
        decide(&exports, n, "voting-svc").is_ok()
    })
    .await;
    assert!(matches!(
        decide(&exports, n, "emoji-svc"),
        Err(Refusal::NotExported { .. })
    ));

    ns.kubectl(
        "east",
        &[
            "label",
            "service",
            "emoji-svc",
            "mirror.linkerd.io/exported=true",
        ],
    );
    until("emoji-svc forwardable once labelled", || {
        decide(&exports, n, "emoji-svc").is_ok()
    })
    .await;

    ns.kubectl(
        "east",
        &[
            "label",
            "service",
            "emoji-svc",
            "mirror.linkerd.io/exported-",
        ],
    );
    until("emoji-svc refused once unlabelled", || {
        matches!(
            decide(&exports, n, "emoji-svc"),
            Err(Refusal::NotExported { .. })
        )
    })
    .await;

    // A value other than "true" does not export.
    ns.kubectl(
        "east",
        &[
            "label",
            "--overwrite",
            "service",
            "voting-svc",
            "mirror.linkerd.io/exported=false",
        ],
    );
    until("voting-svc refused with exported=false", || {
        decide(&exports, n, "voting-svc").is_err()
    })
    .await;
    ns.kubectl(
        "east",
        &[
            "label",
            "--overwrite",
            "service",
            "voting-svc",
            "mirror.linkerd.io/exported=true",
        ],
    );
    until("voting-svc forwardable again", || {
        decide(&exports, n, "voting-svc").is_ok()
    })
    .await;
    ns.kubectl("east", &["delete", "service", "voting-svc"]);
    until("voting-svc refused once deleted", || {
        decide(&exports, n, "voting-svc").is_err()
    })
    .await;
    watch.abort();
}

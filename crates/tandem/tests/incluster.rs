//! Everything tandem installs, running as real pods on real nodes: the
//! workshop's control-plane path with no side process. Install, check, link
//! without `--gateway-addresses`, export, and a failover done by the
//! failover controller's pod.

use std::{path::Path, time::Duration};

use tandem_harness::{Env, TestNamespace, eventually, run, run_ok};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

const CLUSTERS: [&str; 2] = ["east", "west"];

fn rollout(env: &Env, cluster: &str, ns: &str, deploy: &str) {
    run_ok(env.kubectl(cluster).args([
        "-n",
        ns,
        "rollout",
        "status",
        &format!("deploy/{deploy}"),
        "--timeout=120s",
    ]));
}

/// `emoji`: any ready Deployment (the tandem image, probed on /ready), and
/// `emoji-svc` in front of it, exported.
fn emoji_app() -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: emoji
spec:
  replicas: 1
  selector:
    matchLabels: {{app: emoji-svc}}
  template:
    metadata:
      labels: {{app: emoji-svc}}
    spec:
      containers:
      - name: emoji
        image: ghcr.io/tandem-io/tandem:{version}
        imagePullPolicy: Never
        args: ["gateway", "--probe-only", "--admin-addr", "0.0.0.0:8080"]
        ports:
        - {{name: grpc, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /ready, port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: emoji-svc
  labels:
    mirror.linkerd.io/exported: "true"
spec:
  selector: {{app: emoji-svc}}
  ports:
  - {{name: grpc, port: 8080, targetPort: 8080}}
"#,
        version = env!("CARGO_PKG_VERSION")
    )
}

fn weights(ns: &TestNamespace) -> String {
    ns.kubectl(
        "east",
        &[
            "get",
            "trafficsplits.split.smi-spec.io",
            "emoji-svc",
            "-o",
            "jsonpath={range .spec.backends[*]}{.service}={.weight} {end}",
        ],
    )
    .trim()
    .to_string()
}

async fn wait_weights(ns: &TestNamespace, want: &str) {
    eventually(
        &format!("weights {want}"),
        Duration::from_secs(60),
        || async {
            let w = weights(ns);
            if w == want { Ok(()) } else { Err(w) }
        },
    )
    .await;
}

#[tokio::test]
async fn the_workshop_control_plane_runs_in_cluster_and_fails_over() {
    let env = Env::real(tandem_bin());
    let certs = tempfile::tempdir().unwrap();
    tandem_harness::workshop_certificates(tandem_bin(), certs.path(), &CLUSTERS);
    let file = |name: &str| certs.path().join(name).display().to_string();

    for c in CLUSTERS {
        // (`check --pre` is the demo's test: this testbed is shared, and
        // tandem stays installed in it from one run to the next.)
        env.apply_tandem(c, &["install", "--crds", "--context", c]);
        env.apply_tandem(
            c,
            &[
                "install",
                "--context",
                c,
                "--identity-trust-anchors-file",
                &file("root.crt"),
                "--identity-issuer-certificate-file",
                &file(&format!("{c}-issuer.crt")),
                "--identity-issuer-key-file",
                &file(&format!("{c}-issuer.key")),
            ],
        );
        env.apply_tandem(c, &["smi", "install", "--context", c]);
        env.apply_tandem(c, &["failover", "install", "--context", c]);
        env.apply_tandem(c, &["multicluster", "install", "--context", c]);
    }
    for c in CLUSTERS {
        // A new trust anchor each run: restart identity so it reads it, then
        // the gateway, which reads the anchors once at start (as a proxy
        // does) and would otherwise refuse identity's new certificate.
        run_ok(env.kubectl(c).args([
            "-n",
            "tandem",
            "rollout",
            "restart",
            "deploy/tandem-identity",
        ]));
        rollout(&env, c, "tandem", "tandem-identity");
        run_ok(env.kubectl(c).args([
            "-n",
            "tandem-multicluster",
            "rollout",
            "restart",
            "deploy/tandem-gateway",
        ]));
        rollout(&env, c, "tandem-failover", "tandem-failover");
        rollout(&env, c, "tandem-multicluster", "tandem-gateway");
        let out = run(env
            .tandem()
            .args(["--context", c, "check", "--wait", "60s"]));
        assert!(
            out.status.success(),
            "tandem check in {c}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The gateway got a LoadBalancer address from the testbed.
        let lb = run_ok(env.kubectl(c).args([
            "-n",
            "tandem-multicluster",
            "get",
            "svc",
            "tandem-gateway",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]));
        assert!(lb.starts_with("198.18."), "{c}: gateway address {lb:?}");
    }

    // Linked both ways exactly as the workshop types it, but with no
    // --api-server-address or --gateway-addresses: the testbed's apiserver
    // and LoadBalancer addresses are reachable from the other cluster's pods.
    // East's mirror of west runs highly available (`--ha`).
    for (target, other, ha) in [("west", "east", "--ha"), ("east", "west", "")] {
        let context = format!("--context={target}");
        let name = format!("--cluster-name={target}");
        let mut link = vec!["multicluster", &context, "link", &name];
        link.extend((!ha.is_empty()).then_some(ha));
        env.apply_tandem(other, &link);
        rollout(
            &env,
            other,
            "tandem-multicluster",
            &format!("tandem-service-mirror-{target}"),
        );
    }

    // Two replicas of east's mirror: one holds the Lease; when its pod
    // goes, another replica takes the Lease (and mirrors what follows).
    let lease_holder = || {
        run_ok(env.kubectl("east").args([
            "-n",
            "tandem-multicluster",
            "get",
            "lease",
            "service-mirror-write-west",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]))
    };
    // The link may have rolled the mirror out again: wait until the old
    // replicas have gone, so that exactly the two new ones are left.
    let replicas = eventually(
        "east's mirror of west runs exactly two replicas, none terminating",
        Duration::from_secs(90),
        || async {
            let pods = run_ok(env.kubectl("east").args([
                "-n",
                "tandem-multicluster",
                "get",
                "pods",
                "-l",
                "mirror.linkerd.io/cluster-name=west",
                "-o",
                "json",
            ]));
            let pods: serde_json::Value = serde_json::from_str(&pods).unwrap();
            let pods = pods["items"].as_array().cloned().unwrap_or_default();
            let running: Vec<String> = pods
                .iter()
                .filter(|p| {
                    p["status"]["phase"] == "Running"
                        && p["metadata"]["deletionTimestamp"].is_null()
                })
                .map(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            if pods.len() == 2 && running.len() == 2 {
                Ok(running)
            } else {
                Err(format!("{} pods, running: {running:?}", pods.len()))
            }
        },
    )
    .await;
    // Under their budget, which the mirror made the Link's: the disruption
    // controller counts both running replicas, and lets one go at a time.
    eventually(
        "east's mirror of west has a budget of the Link's that counts its two replicas",
        Duration::from_secs(60),
        || async {
            let pdb = run_ok(env.kubectl("east").args([
                "-n",
                "tandem-multicluster",
                "get",
                "poddisruptionbudget",
                "tandem-service-mirror-west",
                "-o",
                "jsonpath={.metadata.ownerReferences[*].kind}/{.status.currentHealthy}/{.status.disruptionsAllowed}",
            ]));
            (pdb == "Link/2/1").then_some(()).ok_or(pdb)
        },
    )
    .await;
    let leader = eventually(
        "a mirror replica holds the Lease",
        Duration::from_secs(60),
        || async {
            let h = lease_holder();
            replicas.contains(&h).then_some(h.clone()).ok_or(h)
        },
    )
    .await;
    run_ok(env.kubectl("east").args([
        "-n",
        "tandem-multicluster",
        "delete",
        "pod",
        &leader,
        "--wait=false",
    ]));
    eventually(
        "another replica takes the Lease",
        Duration::from_secs(60),
        || async {
            let h = lease_holder();
            (!h.is_empty() && h != leader).then_some(()).ok_or(h)
        },
    )
    .await;

    let ns = env.namespace("incluster", &CLUSTERS);
    for c in CLUSTERS {
        ns.apply(c, &emoji_app());
    }
    for c in CLUSTERS {
        ns.kubectl(c, &["rollout", "status", "deploy/emoji", "--timeout=90s"]);
    }
    let west_gateway = run_ok(env.kubectl("west").args([
        "-n",
        "tandem-multicluster",
        "get",
        "svc",
        "tandem-gateway",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}",
    ]));
    // The in-cluster mirror made emoji-svc-west, with endpoints at west's
    // gateway address, ready because west has a ready emoji.
    eventually(
        "emoji-svc-west in east, ready at west's gateway",
        Duration::from_secs(60),
        || async {
            let out = ns.kubectl(
            "east",
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=emoji-svc-west",
                "-o",
                "jsonpath={range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready} {end}",
            ],
        );
            if out.trim() == format!("{west_gateway}=true") {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
    let out = run(env
        .tandem()
        .args(["--context", "east", "multicluster", "check"]));
    assert!(
        out.status.success(),
        "multicluster check:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The failover controller's pod, and nothing else, moves the weights.
    env.apply(
        "east",
        &tandem_api::smi::workshop_split("v1alpha2", &ns.name),
    );
    wait_weights(&ns, "emoji-svc=1 emoji-svc-west=0").await;
    ns.kubectl("east", &["scale", "deploy/emoji", "--replicas=0"]);
    wait_weights(&ns, "emoji-svc=0 emoji-svc-west=1").await;
    ns.kubectl("east", &["scale", "deploy/emoji", "--replicas=1"]);
    wait_weights(&ns, "emoji-svc=1 emoji-svc-west=0").await;
    let events = ns.kubectl(
        "east",
        &[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.reason} {.source.component}{.reportingComponent}\n{end}",
        ],
    );
    assert!(events.contains("FailoverToFallback"), "{events}");
    assert!(events.contains("FailbackToPrimary"), "{events}");
}

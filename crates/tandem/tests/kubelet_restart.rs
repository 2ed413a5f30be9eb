//! Kubelets that start at the same moment on one machine. Every kubelet's
//! device plugin registry listens on one fixed host path; two that start at
//! once could race for it, and the loser exited (seen in CI: its node went
//! NotReady and a test failed). The testbed starts one kubelet at a time.
//!
//! In a file of its own: restarting the kubelets must not disturb the tests
//! of another file, and test files run one after the other.

use std::{path::Path, process::Stdio, time::Duration};

use k8s_openapi::{api::core::v1::Node, jiff::Timestamp};
use kube::Api;
use tandem_harness::{CLUSTERS, Env, eventually, run_ok};

fn env() -> Env {
    Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")))
}

/// The Ready condition's status and heartbeat of `cluster`'s real node.
async fn ready(env: &Env, cluster: &str) -> Result<(String, Timestamp), String> {
    let nodes: Api<Node> = Api::all(env.client(cluster).await);
    let node = nodes
        .get(&format!("{cluster}-node-0"))
        .await
        .map_err(|e| e.to_string())?;
    let c = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .ok_or("no Ready condition")?;
    let heartbeat = c.last_heartbeat_time.ok_or("no heartbeat")?.0;
    Ok((c.status, heartbeat))
}

#[tokio::test]
async fn two_kubelets_started_at_once_both_come_back_and_report_ready() {
    let env = env();
    let dir = env.dir.display().to_string();
    for cluster in CLUSTERS {
        run_ok(env.tandem().args([
            "testbed",
            "stop",
            "--dir",
            &dir,
            "--cluster",
            cluster,
            "kubelet",
        ]));
    }
    // The API keeps whole seconds.
    let since = Timestamp::from_second(Timestamp::now().as_second()).unwrap();

    let starts: Vec<_> = CLUSTERS
        .iter()
        .map(|cluster| {
            let child = env
                .tandem()
                .args([
                    "testbed",
                    "start",
                    "--dir",
                    &dir,
                    "--cluster",
                    cluster,
                    "kubelet",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("tandem runs");
            (cluster, child)
        })
        .collect();
    for (cluster, child) in starts {
        let out = child.wait_with_output().expect("tandem ran");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "starting {cluster}'s kubelet failed:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("{cluster}: kubelet is healthy")),
            "{stderr}"
        );
    }

    // Each node reports Ready again, from its restarted kubelet: a stale
    // status from before the restart does not count.
    for cluster in CLUSTERS {
        eventually(
            &format!("{cluster}'s node Ready with a heartbeat after the restart"),
            Duration::from_secs(60),
            || async {
                match ready(&env, cluster).await? {
                    (status, beat) if status == "True" && beat >= since => Ok(()),
                    (status, beat) => Err(format!("Ready={status}, heartbeat {beat}")),
                }
            },
        )
        .await;
    }
    // Both kubelets still run once the other has started: the one that
    // started first was not made to exit by the second.
    let status = run_ok(
        env.tandem()
            .args(["testbed", "status", "--dir", &dir, "-o", "json"]),
    );
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    for cluster in status["clusters"].as_array().expect("clusters") {
        let kubelet = cluster["components"]
            .as_array()
            .expect("components")
            .iter()
            .find(|c| c["component"] == "kubelet")
            .expect("a real node has a kubelet");
        assert_eq!(kubelet["healthy"], true, "{cluster}");
    }
}

//! A Job injected with `tandem inject --native-sidecar` on a real node: the
//! proxy is an init container that keeps running (`restartPolicy: Always`),
//! ready before the Job's own init container, which so talks through the
//! mesh; and the Job completes, because kubelet stops a native sidecar once
//! the pod's containers are done (a classic sidecar would keep it running).

use std::path::Path;

use tandem_harness::{
    Env,
    dataplane::{self, ProxyIdentity, SERVICE_PORT, TOOLBOX},
};

const CLUSTER: &str = "east";

/// A Job whose init container and container each GET `/` of Service
/// `server` by its DNS name, as ServiceAccount `job`.
fn job() -> String {
    let get = format!("wget -q -O- http://server:{SERVICE_PORT}/");
    format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: fetch
spec:
  backoffLimit: 0
  template:
    spec:
      serviceAccountName: job
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      initContainers:
      - name: before
        image: {TOOLBOX}
        imagePullPolicy: Never
        command: ["sh", "-c", "{get}"]
      containers:
      - name: app
        image: {TOOLBOX}
        imagePullPolicy: Never
        command: ["sh", "-c", "{get}"]
"#
    )
}

#[tokio::test]
async fn a_native_sidecar_serves_the_jobs_init_container_and_lets_the_job_complete() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    dataplane::control_plane(&env, CLUSTER);
    let ns = env.namespace("dp-native", &[CLUSTER]);
    dataplane::apply_meshed_backend(&env, &ns, CLUSTER, "server");
    ns.apply(CLUSTER, &dataplane::service_account("job"));
    dataplane::wait_rollout(&ns, CLUSTER, "server");
    ns.apply(
        CLUSTER,
        &dataplane::inject_native(&env, CLUSTER, &job(), ProxyIdentity::FromCluster),
    );
    // With a classic sidecar this wait would time out: the proxy would
    // keep the pod running after `app` exits.
    ns.kubectl(
        CLUSTER,
        &[
            "wait",
            "--for=condition=Complete",
            "job/fetch",
            "--timeout=180s",
        ],
    );

    let pod = ns.kubectl(
        CLUSTER,
        &[
            "get",
            "pods",
            "-l",
            "job-name=fetch",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let field = |path: &str| {
        ns.kubectl(
            CLUSTER,
            &["get", "pod", &pod, "-o", &format!("jsonpath={path}")],
        )
    };
    assert_eq!(
        field("{.spec.initContainers[*].name}|{.spec.containers[*].name}"),
        "tandem-init tandem-proxy before|app"
    );
    assert_eq!(
        field("{.spec.initContainers[?(@.name==\"tandem-proxy\")].restartPolicy}"),
        "Always"
    );
    assert_eq!(field("{.status.phase}"), "Succeeded");
    // Both of the Job's containers were answered by the server.
    let server_pod = ns.kubectl(
        CLUSTER,
        &[
            "get",
            "pods",
            "-l",
            "app=server",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    for container in ["before", "app"] {
        let logs = ns.kubectl(CLUSTER, &["logs", &pod, "-c", container]);
        assert_eq!(logs.trim(), server_pod, "{container}'s GET");
    }

    // And both went through the Job's proxy, with its mesh identity.
    let server = dataplane::pod_netns(&env, &ns, CLUSTER, &server_pod);
    let client_id = format!(
        "job.{}.serviceaccount.identity.tandem.cluster.local",
        ns.name
    );
    let (meshed, metrics) = dataplane::mtls_inbound_from(&server, &client_id);
    assert_eq!(
        meshed, 2.0,
        "the server's proxy counts one mTLS request from {client_id} per container of the Job:\n{metrics}"
    );
}

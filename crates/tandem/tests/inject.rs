//! `tandem inject` as a user runs it: a file or stdin in, YAML out, piped
//! into a real API server (`kubectl apply --dry-run=server`, so that every
//! injected object passes the API server's validation); the trust anchors
//! from a file or from the cluster's ConfigMap; a broken document stops it
//! with nothing on stdout.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;
use tandem_harness::Env;

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

fn anchors_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../inject/tests/golden/ca.crt")
}

/// Runs `cmd` with `stdin`, whatever its outcome.
fn with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// One of each workload kind, a List, and a Service, in namespace `ns`.
fn manifest(ns: &str) -> String {
    let template = |app: &str| {
        format!(
            "    metadata:\n      labels: {{app: {app}}}\n    spec:\n      containers:\n      - name: app\n        image: registry.local/app:1\n        ports:\n        - containerPort: 8080\n"
        )
    };
    let selector = |app: &str| format!("  selector:\n    matchLabels: {{app: {app}}}\n");
    let workload = |kind: &str, name: &str, extra: &str| {
        format!(
            "---\napiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{}{extra}  template:\n{}",
            selector(name),
            template(name)
        )
    };
    let mut m = String::new();
    m += &workload("Deployment", "web", "");
    m += &workload("StatefulSet", "db", "  serviceName: db\n");
    m += &workload("DaemonSet", "agent", "");
    m += &workload("ReplicaSet", "rs", "");
    m += &format!(
        "---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\n  namespace: {ns}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {{name: once, image: registry.local/job:1}}\n"
    );
    m += &format!(
        "---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: nightly\n  namespace: {ns}\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n          - {{name: nightly, image: registry.local/job:1}}\n"
    );
    m += &format!(
        "---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {{name: web-svc, namespace: {ns}}}\n  spec:\n    selector: {{app: web}}\n    ports: [{{port: 80, targetPort: 8080}}]\n- apiVersion: v1\n  kind: Pod\n  metadata: {{name: bare, namespace: {ns}}}\n  spec:\n    containers: [{{name: bare, image: registry.local/app:1}}]\n"
    );
    m
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("the output parses")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

#[test]
fn injected_workloads_of_every_kind_pass_the_api_servers_validation() {
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("inject", &["east"]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("app.yaml");
    std::fs::write(&input, manifest(&ns.name)).unwrap();

    // `tandem inject FILE FLAGS...`: its stderr and stdout.
    let inject = |flags: &[&str]| {
        let out = Command::new(tandem_bin())
            .arg("inject")
            .arg(&input)
            .args(flags)
            .arg("--trust-anchors-file")
            .arg(anchors_file())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "tandem inject failed: {stderr}");
        (stderr, String::from_utf8(out.stdout).unwrap())
    };
    // The names the API server gives the objects of `yaml` on a dry run.
    let dry_run = |yaml: &str| {
        let applied = with_stdin(
            env.kubectl("east")
                .args(["apply", "--dry-run=server", "-o", "name", "-f", "-"]),
            yaml,
        );
        assert!(
            applied.status.success(),
            "kubectl apply --dry-run=server refused the output:\n{}\n{yaml}",
            String::from_utf8_lossy(&applied.stderr)
        );
        String::from_utf8_lossy(&applied.stdout).into_owned()
    };

    let (stderr, yaml) = inject(&[]);
    for line in [
        "deployment \"web\" injected",
        "statefulset \"db\" injected",
        "daemonset \"agent\" injected",
        "replicaset \"rs\" injected",
        "job \"once\" injected",
        "cronjob \"nightly\" injected",
        "service \"web-svc\" skipped",
        "pod \"bare\" injected",
    ] {
        assert!(stderr.contains(line), "{line:?} missing from:\n{stderr}");
    }
    let objects = docs(&yaml);
    assert_eq!(objects.len(), 7, "one document per input document");
    let web = &objects[0]["spec"]["template"]["spec"];
    assert_eq!(web["containers"][0]["name"], "tandem-proxy");
    assert_eq!(web["initContainers"][0]["name"], "tandem-init");

    // The API server accepts every injected object as it is.
    let names = dry_run(&yaml);
    for name in [
        "deployment.apps/web",
        "statefulset.apps/db",
        "daemonset.apps/agent",
        "replicaset.apps/rs",
        "job.batch/once",
        "cronjob.batch/nightly",
        "service/web-svc",
        "pod/bare",
    ] {
        assert!(names.contains(name), "{name} missing from:\n{names}");
    }

    // As native sidecars too: the API server takes an init container with
    // restartPolicy: Always and a postStart hook, in every kind.
    let (_, native) = inject(&["--native-sidecar"]);
    let web = &docs(&native)[0]["spec"]["template"]["spec"];
    assert_eq!(web["initContainers"][1]["name"], "tandem-proxy");
    assert_eq!(web["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(dry_run(&native), names);

    // Injecting the output again changes nothing.
    let again = with_stdin(
        Command::new(tandem_bin())
            .args(["inject", "-", "--trust-anchors-file"])
            .arg(anchors_file()),
        &yaml,
    );
    assert!(again.status.success());
    assert_eq!(String::from_utf8(again.stdout).unwrap(), yaml);
    assert!(!String::from_utf8_lossy(&again.stderr).contains(" injected"));
}

#[test]
fn the_trust_anchors_are_read_from_the_clusters_configmap() {
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("inject-anchors", &["east"]);
    let anchors = std::fs::read_to_string(anchors_file()).unwrap();
    let cm = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "tandem-identity-trust-roots" },
        "data": { "ca-bundle.crt": anchors },
    });
    ns.apply("east", &cm.to_string());
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: app, image: app:1}]}\n";
    let out = with_stdin(
        env.tandem()
            .args(["inject", "--context", "east", "-L", &ns.name]),
        deploy,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let injected = docs(&String::from_utf8(out.stdout).unwrap());
    let proxy = &injected[0]["spec"]["template"]["spec"]["containers"][0];
    let env_value = |name: &str| {
        proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["value"]
            .clone()
    };
    assert_eq!(
        env_value("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"),
        anchors.as_str()
    );
    assert_eq!(
        env_value("LINKERD2_PROXY_IDENTITY_SVC_NAME"),
        format!(
            "tandem-identity.{0}.serviceaccount.identity.{0}.cluster.local",
            ns.name
        )
        .as_str()
    );

    // No tandem-config (an install from before it): the init container.
    let inits = |doc: &Value| doc["spec"]["template"]["spec"]["initContainers"].clone();
    assert_eq!(inits(&injected[0])[0]["name"], "tandem-init");
    // `tandem inject` after an install whose tandem-config holds `data`.
    let installed_with = |data: Value| {
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "tandem-config" },
            "data": data,
        });
        ns.apply("east", &config.to_string());
        let out = with_stdin(
            env.tandem()
                .args(["inject", "--context", "east", "-L", &ns.name]),
            deploy,
        );
        assert!(out.status.success(), "{out:?}");
        docs(&String::from_utf8(out.stdout).unwrap())
    };
    // Installed with --linkerd-cni-enabled: CNI mode, without the flag.
    let injected = installed_with(serde_json::json!({ "cniEnabled": "true" }));
    assert_eq!(inits(&injected[0]), Value::Null, "{:#}", injected[0]);
    let annotations = &injected[0]["spec"]["template"]["metadata"]["annotations"];
    assert!(
        annotations["cni.tandem.io/proxy-init"]
            .as_str()
            .is_some_and(|a| a.contains("--proxy-uid")),
        "{annotations:#}"
    );

    // Installed with --native-sidecar too: the proxy is an init container
    // that keeps running, again without a flag.
    let injected =
        installed_with(serde_json::json!({ "cniEnabled": "true", "nativeSidecar": "true" }));
    let inits = inits(&injected[0]);
    assert_eq!(inits[0]["name"], "tandem-proxy", "{:#}", injected[0]);
    assert_eq!(inits[0]["restartPolicy"], "Always");
    let containers = &injected[0]["spec"]["template"]["spec"]["containers"];
    assert!(
        containers
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "tandem-proxy"),
        "{containers:#}"
    );

    // No ConfigMap in that namespace: a clear error, nothing on stdout.
    let out = with_stdin(
        env.tandem()
            .args(["inject", "--context", "east", "-L", "no-such-control-plane"]),
        deploy,
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-control-plane/tandem-identity-trust-roots")
            && stderr.contains("--trust-anchors-file"),
        "{stderr}"
    );
}

#[test]
fn a_broken_document_fails_naming_the_file_and_the_document_and_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\nkind: Deployment\nmetadata: {name: [unclosed\n",
    )
    .unwrap();
    let out = Command::new(tandem_bin())
        .arg("inject")
        .arg(&file)
        .arg("--trust-anchors-file")
        .arg(anchors_file())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "half a stream was written");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("document 2 (line 5)"),
        "{stderr}"
    );
    // A file that does not exist, and anchors that are not PEM: clear errors.
    let missing = run_fail(
        &["inject", "/no/such/file.yaml", "--trust-anchors-file"],
        &anchors_file(),
    );
    assert!(missing.contains("/no/such/file.yaml"), "{missing}");
    let bad = run_fail(
        &["inject", file.to_str().unwrap(), "--trust-anchors-file"],
        &file,
    );
    assert!(bad.contains("trust anchors"), "{bad}");
}

fn run_fail(args: &[&str], last: &Path) -> String {
    let out = Command::new(tandem_bin())
        .args(args)
        .arg(last)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An admin port stand-in: answers `/ready` with 503 for the first
/// `not_ready` requests, then 200; returns its port and a count of requests.
fn readiness_server(not_ready: usize) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::{
        io::Read,
        sync::{Arc, atomic::AtomicUsize, atomic::Ordering},
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap_or(0);
            if !buf[..n].starts_with(b"GET /ready ") {
                continue;
            }
            let i = count.fetch_add(1, Ordering::SeqCst);
            let reply: &[u8] = if i < not_ready {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 10\r\n\r\nnot ready\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n"
            };
            let _ = conn.write_all(reply);
        }
    });
    (port, seen)
}

#[test]
fn proxy_await_returns_once_ready_answers_200_and_fails_after_its_timeout() {
    use std::sync::atomic::Ordering;
    let (port, seen) = readiness_server(3);
    let out = Command::new(tandem_bin())
        .args(["proxy-await", "--port", &port.to_string()])
        .args(["--timeout", "30s", "--backoff", "50ms"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(seen.load(Ordering::SeqCst), 4, "three 503s, then the 200");

    let (port, _) = readiness_server(usize::MAX);
    let out = Command::new(tandem_bin())
        .args(["proxy-await", "--port", &port.to_string()])
        .args(["--timeout", "500ms", "--backoff", "50ms"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not ready within 500ms") && stderr.contains("503"),
        "{stderr}"
    );
}

//! `tandem multicluster unlink` while the service mirror runs, on a private
//! two-cluster testbed: the Link and its mirrors go, then the mirror's own
//! account, roles, Deployment and (`link --ha`) PodDisruptionBudget.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use tandem_harness::{Env, Process, cli::Cli, run, run_ok};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Polls `check` every 200ms until it returns true, or fails after `secs`.
fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let last = match check() {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {secs}s; last seen: {last}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `tandem multicluster unlink | kubectl delete -f -`, as the workshop types
/// it, while the service mirror runs as `link` deploys it: the Deployment's
/// own arguments, with a token of its own ServiceAccount. The Link goes
/// within a bound and its mirrors with it; then the mirror's own account,
/// roles and Deployment go too.
#[test]
fn unlink_with_a_running_mirror_lets_the_link_and_its_mirrors_go() {
    let tb = tandem_harness::PrivateTestbed::start(tandem_bin(), &["east", "west"], 12440);
    let env = &tb.env;
    let dir = tempfile::tempdir().unwrap();
    let sh = Cli::new(tandem_bin(), dir.path(), &env.kubeconfig);
    let cp = env.namespace("cp", &["east", "west"]);
    let mc = env.namespace("mc", &["east", "west"]);
    let app = env.namespace("app", &["east", "west"]);
    let link = "west";
    for ctx in ["east", "west"] {
        sh.pipe(
            &[
                "multicluster",
                "install",
                "--namespace",
                &mc.name,
                "--control-plane-namespace",
                &cp.name,
            ],
            &["--context", ctx, "apply"],
        );
    }
    run_ok(env.kubectl("west").args([
        "-n",
        &mc.name,
        "wait",
        "--for=jsonpath={.data.token}",
        "secret/tandem-service-mirror-remote-access-default-token",
        "--timeout=60s",
    ]));
    sh.pipe(
        &[
            "multicluster",
            "--context=west",
            "link",
            "--cluster-name",
            link,
            "--namespace",
            &mc.name,
            "--control-plane-namespace",
            &cp.name,
            "--gateway-addresses",
            "127.20.19.8",
            "--ha",
        ],
        &["--context", "east", "apply"],
    );
    let cluster_role = format!("tandem-service-mirror-{link}-{}", mc.name);
    let _cluster_objects = [
        ("clusterrolebinding", cluster_role.clone()),
        ("clusterrole", cluster_role.clone()),
    ]
    .map(|(kind, name)| Leftover {
        env: env.clone(),
        args: vec![
            "delete".into(),
            kind.into(),
            name,
            "--ignore-not-found".into(),
            "--wait=false".into(),
        ],
    });
    let _release = Leftover {
        env: env.clone(),
        args: [
            "-n",
            &mc.name,
            "patch",
            "links.multicluster.tandem.io",
            link,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]
        .map(String::from)
        .to_vec(),
    };

    // The mirror as its pod would run it: the Deployment's arguments, and
    // a token of its ServiceAccount (its RBAC, nothing more).
    let mirror = format!("tandem-service-mirror-{link}");
    let args = run_ok(env.kubectl("east").args([
        "-n",
        &mc.name,
        "get",
        "deployment",
        &mirror,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ]));
    let mut args: Vec<String> = serde_json::from_str(&args).expect("the mirror's arguments");
    let admin = args
        .iter()
        .position(|a| a == "--admin-addr")
        .expect("--admin-addr");
    let admin_port = tandem_harness::free_port();
    args[admin + 1] = format!("127.0.0.1:{admin_port}");
    let kubeconfig = dir.path().join("mirror.kubeconfig");
    env.service_account_kubeconfig("east", &mc.name, &mirror, &kubeconfig);
    let mut cmd = Command::new(tandem_bin());
    cmd.args(&args).env("KUBECONFIG", &kubeconfig);
    let _mirror = Process::spawn("service mirror", cmd, admin_port);

    // West's gateway probe, where the Link says it is, passes: so the
    // mirror writes its slice too (an endpoint at the gateway, not ready:
    // west's Service has no ready endpoint).
    let probe =
        std::net::TcpListener::bind("127.20.19.8:4191").expect("the gateway probe's address");
    std::thread::spawn(move || {
        for conn in probe.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });

    // An exported Service in west is mirrored in east, by the mirror's own rights.
    app.apply(
        "west",
        r#"
apiVersion: v1
kind: Service
metadata:
  name: emoji
  labels: {mirror.linkerd.io/exported: "true"}
spec:
  ports: [{name: grpc, port: 8080}]
"#,
    );
    let get = |ctx: &str, ns: &str, what: &str| {
        run(env
            .kubectl(ctx)
            .args(["-n", ns, "get", what, "-o", "name", "--ignore-not-found"]))
    };
    let mirrored = format!("service/emoji-{link}");
    wait_for("the Service is mirrored in east", 90, || {
        let out = get("east", &app.name, &mirrored);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (text == mirrored)
            .then_some(())
            .ok_or(format!("{text:?} {}", String::from_utf8_lossy(&out.stderr)))
    });
    // Its slice too, at the gateway's address.
    wait_for("the mirror's slice is written", 90, || {
        let out = run(env.kubectl("east").args([
            "-n",
            &app.name,
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name=emoji-{link}"),
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[*]}",
        ]));
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (text == "127.20.19.8")
            .then_some(())
            .ok_or(format!("{text:?} {}", String::from_utf8_lossy(&out.stderr)))
    });
    // `gateways` counts it at once: the mirrors that exist, not a status
    // written seconds later.
    let rows: serde_json::Value = serde_json::from_str(&sh.tandem_ok(&[
        "--context",
        "east",
        "multicluster",
        "gateways",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(rows[0]["cluster"], link, "{rows}");
    assert_eq!(rows[0]["num_svc"], 1, "{rows}");

    // The mirror gave its own objects to the Link (what lets unlink print
    // only the Link and its Secret).
    for kind in ["deployment", "poddisruptionbudget"] {
        wait_for(
            &format!("the mirror's {kind} is owned by the Link"),
            60,
            || {
                let owner = run_ok(env.kubectl("east").args([
                    "-n",
                    &mc.name,
                    "get",
                    kind,
                    &mirror,
                    "-o",
                    "jsonpath={.metadata.ownerReferences[*].kind}",
                ]));
                (owner == "Link").then_some(()).ok_or(owner)
            },
        );
    }

    // It leads through Linkerd's Lease, which it created with the Link as
    // owner (so that the Lease goes with the Link too).
    let lease = run_ok(env.kubectl("east").args([
        "-n",
        &mc.name,
        "get",
        "lease",
        &format!("service-mirror-write-{link}"),
        "-o",
        "jsonpath={.metadata.ownerReferences[*].kind}/{.metadata.ownerReferences[*].name}/{.spec.holderIdentity}",
    ]));
    let (owner, holder) = lease.rsplit_once('/').unwrap();
    assert_eq!(owner, format!("Link/{link}"), "{lease}");
    assert!(!holder.is_empty(), "{lease}");

    // unlink | kubectl delete -f -: kubectl waits for the Link to go.
    let manifest = sh.tandem_ok(&[
        "multicluster",
        "unlink",
        "--cluster-name",
        link,
        "--namespace",
        &mc.name,
    ]);
    let mut delete = env
        .kubectl("east")
        .args(["delete", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    delete
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let status = loop {
        if let Some(status) = delete.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = delete.kill();
            let link_now = run(env
                .kubectl("east")
                .args(["-n", &mc.name, "get", "link", link, "-o", "yaml"]));
            panic!(
                "`unlink | kubectl delete -f -` did not finish within 90s: the Link stays:\n{}",
                String::from_utf8_lossy(&link_now.stdout)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let out = delete.wait_with_output().unwrap();
    assert!(
        status.success(),
        "kubectl delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = |ctx: &str, ns: &str, what: &str| {
        let out = get(ctx, ns, what);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && text.is_empty())
            .then_some(())
            .ok_or(format!("{what}: {text:?}"))
    };
    assert_eq!(gone("east", &mc.name, &format!("link/{link}")), Ok(()));
    assert_eq!(
        gone("east", &app.name, &mirrored),
        Ok(()),
        "the Link's mirrors go with it"
    );
    // Then the mirror's own objects go: the garbage collector takes them.
    for what in [
        format!("deployment/{mirror}"),
        format!("serviceaccount/{mirror}"),
        format!("role/{mirror}"),
        format!("rolebinding/{mirror}"),
        format!("poddisruptionbudget/{mirror}"),
        format!("lease/service-mirror-write-{link}"),
    ] {
        wait_for(&format!("{what} goes with the Link"), 60, || {
            gone("east", &mc.name, &what)
        });
    }
    for what in [
        format!("clusterrolebinding/{cluster_role}"),
        format!("clusterrole/{cluster_role}"),
    ] {
        wait_for(&format!("{what} goes"), 60, || {
            let out =
                run(env
                    .kubectl("east")
                    .args(["get", &what, "-o", "name", "--ignore-not-found"]));
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            text.is_empty().then_some(()).ok_or(text)
        });
    }
}

/// Runs a kubectl command on east when dropped: cleanup of what a failed
/// test leaves.
struct Leftover {
    env: Env,
    args: Vec<String>,
}

impl Drop for Leftover {
    fn drop(&mut self) {
        let _ = run(self.env.kubectl("east").args(&self.args));
    }
}

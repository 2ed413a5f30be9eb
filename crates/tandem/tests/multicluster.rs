//! `tandem multicluster install`, `link`, `check` and `unlink` through the
//! CLI, between the two clusters of the shared testbed. (The service mirror
//! itself is tested in `mirror.rs`, and the whole path in `demo.rs`.)
//!
//! Every object lives in namespaces of this test, so it runs beside others.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use tandem_harness::{Env, TestNamespace, run, run_ok};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

struct Shell<'a> {
    env: &'a Env,
    dir: &'a Path,
}

impl Shell<'_> {
    fn tandem(&self, args: &[&str]) -> std::process::Output {
        run(Command::new(tandem_bin())
            .args(args)
            .current_dir(self.dir)
            .env("KUBECONFIG", &self.env.kubeconfig))
    }

    fn tandem_ok(&self, args: &[&str]) -> String {
        let out = self.tandem(args);
        assert!(
            out.status.success(),
            "tandem {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `tandem ARGS | kubectl --context CTX VERB -f -`.
    fn pipe(&self, args: &[&str], ctx: &str, verb: &str) {
        let manifest = self.tandem_ok(args);
        let mut child = self
            .env
            .kubectl(ctx)
            .args([verb, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {verb} of `tandem {args:?}` in {ctx}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn cert(&self, args: &[&str]) {
        let mut all = vec!["certificate", "create"];
        all.extend(args);
        all.extend(["--no-password", "--insecure"]);
        self.tandem_ok(&all);
    }
}

fn install_core(sh: &Shell, ctx: &str, ns: &TestNamespace, root: &str, issuer: &str) {
    let crt = format!("{issuer}.crt");
    let key = format!("{issuer}.key");
    sh.pipe(
        &[
            "install",
            "--namespace",
            &ns.name,
            "--identity-trust-anchors-file",
            root,
            "--identity-issuer-certificate-file",
            &crt,
            "--identity-issuer-key-file",
            &key,
        ],
        ctx,
        "apply",
    );
}

/// The line of `multicluster check` about one Link's trust anchors.
fn anchor_line(out: &str, link: &str) -> String {
    out.lines()
        .find(|l| {
            l.contains(&format!(
                "/{link}: this cluster and {link} share a trust anchor"
            ))
        })
        .unwrap_or_else(|| panic!("no trust-anchor line for {link} in:\n{out}"))
        .to_string()
}

#[test]
fn link_then_check_compares_trust_anchors_and_unlink_removes_it() {
    let env = Env::shared(tandem_bin());
    let dir = tempfile::tempdir().unwrap();
    let sh = Shell {
        env: &env,
        dir: dir.path(),
    };
    let cp_east = env.namespace("cp", &["east"]);
    let cp_west = env.namespace("cp", &["west"]);
    let mc = env.namespace("mc", &["east", "west"]);
    let link = format!("w{}", &mc.name[mc.name.len() - 6..]);

    sh.cert(&["root-a", "a.crt", "a.key", "--profile", "root-ca"]);
    sh.cert(&["root-b", "b.crt", "b.key", "--profile", "root-ca"]);
    for (issuer, ca) in [("east", "a"), ("west", "a"), ("west-b", "b")] {
        sh.cert(&[
            "identity.linkerd.cluster.local",
            &format!("{issuer}.crt"),
            &format!("{issuer}.key"),
            "--profile",
            "intermediate-ca",
            "--ca",
            &format!("{ca}.crt"),
            "--ca-key",
            &format!("{ca}.key"),
        ]);
    }
    for ctx in ["east", "west"] {
        sh.pipe(&["install", "--crds"], ctx, "apply");
    }
    install_core(&sh, "east", &cp_east, "a.crt", "east");
    install_core(&sh, "west", &cp_west, "a.crt", "west");
    sh.pipe(
        &[
            "multicluster",
            "install",
            "--namespace",
            &mc.name,
            "--control-plane-namespace",
            &cp_east.name,
        ],
        "east",
        "apply",
    );
    sh.pipe(
        &[
            "multicluster",
            "install",
            "--namespace",
            &mc.name,
            "--control-plane-namespace",
            &cp_west.name,
        ],
        "west",
        "apply",
    );

    // Without a LoadBalancer address, link says what to do.
    let out = sh.tandem(&[
        "multicluster",
        "--context=west",
        "link",
        "--cluster-name",
        &link,
        "--namespace",
        &mc.name,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no LoadBalancer address") && err.contains("--gateway-addresses"),
        "{err}"
    );

    // The token Secret is filled in by kube-controller-manager: wait for it.
    tandem_harness::run_ok(env.kubectl("west").args([
        "-n",
        &mc.name,
        "wait",
        "--for=jsonpath={.data.token}",
        "secret/tandem-service-mirror-remote-access-default-token",
        "--timeout=30s",
    ]));
    let link_args = [
        "multicluster",
        "--context=west",
        "link",
        "--cluster-name",
        &link,
        "--namespace",
        &mc.name,
        "--control-plane-namespace",
        &cp_west.name,
        "--gateway-addresses",
        "127.20.9.1",
    ];
    sh.pipe(&link_args, "east", "apply");
    let spec = run_ok(env.kubectl("east").args([
        "-n",
        &mc.name,
        "get",
        "link",
        &link,
        "-o",
        "jsonpath={.spec.gatewayAddress} {.spec.targetClusterNamespace}",
    ]));
    assert_eq!(spec, format!("127.20.9.1 {}", cp_west.name));

    let check = |sh: &Shell| {
        let out = sh.tandem(&[
            "--context",
            "east",
            "multicluster",
            "check",
            "--namespace",
            &cp_east.name,
            "--wait",
            "0s",
        ]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = check(&sh);
    assert!(anchor_line(&out, &link).starts_with('√'), "{out}");
    assert!(
        out.contains(&format!(
            "√ Link {}/{link}: the credentials for cluster {link} work",
            mc.name
        )),
        "{out}"
    );
    // No mirror runs for this Link: check says so (and how to start one).
    assert!(
        out.contains(&format!(
            "× Link {}/{link}: the service mirror is running",
            mc.name
        )),
        "{out}"
    );

    // West is reinstalled with another root: the anchors no longer match.
    install_core(&sh, "west", &cp_west, "b.crt", "west-b");
    let out = check(&sh);
    let line = anchor_line(&out, &link);
    assert!(line.starts_with('×'), "{out}");
    assert!(out.contains("no anchor in common"), "{out}");

    // The credentials really are read-only.
    let secret = run_ok(env.kubectl("east").args([
        "-n",
        &mc.name,
        "get",
        "secret",
        &format!("cluster-credentials-{link}"),
        "-o",
        "jsonpath={.data.kubeconfig}",
    ]));
    let kubeconfig = dir.path().join("remote.kubeconfig");
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .unwrap();
    std::fs::write(&kubeconfig, text).unwrap();
    let read = run(Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "services", "-A"]));
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let write = run(Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "secrets", "-A"]));
    assert!(
        !write.status.success(),
        "the remote-access account cannot read secrets"
    );

    // A Link whose Secret holds an exec plugin: check refuses it, and the
    // plugin never runs on this machine.
    let marker = dir.path().join("exec-ran");
    let evil = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\ncontexts: [{{name: x, context: {{cluster: x, user: x}}}}]\nclusters: [{{name: x, cluster: {{server: 'https://127.0.0.1:1'}}}}]\nusers: [{{name: x, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: touch, args: ['{}']}}}}}}]\n",
        marker.display()
    );
    mc.apply(
        "east",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "evil-credentials"},
                 "type": "mirror.linkerd.io/remote-kubeconfig", "stringData": {"kubeconfig": evil}},
                {"apiVersion": "multicluster.tandem.io/v1alpha1", "kind": "Link", "metadata": {"name": "evil"},
                 "spec": {"targetClusterName": "evil", "clusterCredentialsSecret": "evil-credentials", "gatewayAddress": "127.20.9.9"}},
            ]
        })
        .to_string(),
    );
    let out = check(&sh);
    assert!(
        out.contains(&format!(
            "× Link {}/evil: the credentials for cluster evil work",
            mc.name
        )) && out.contains("users[0].user.exec is refused (an exec plugin runs a command)"),
        "{out}"
    );
    assert!(!marker.exists(), "the exec plugin ran on this machine");
    run_ok(
        env.kubectl("east")
            .args(["-n", &mc.name, "delete", "link", "evil"]),
    );

    // unlink prints what to delete; the Link goes away (no mirror, no finalizer).
    sh.pipe(
        &[
            "multicluster",
            "unlink",
            "--cluster-name",
            &link,
            "--namespace",
            &mc.name,
        ],
        "east",
        "delete",
    );
    let gone = run(env
        .kubectl("east")
        .args(["-n", &mc.name, "get", "link", &link]));
    assert!(!gone.status.success(), "the Link is deleted");
}

/// A process this test started; killed (by its own pid) when dropped, its
/// log printed if the test failed.
struct Child {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "===== the service mirror's log =====\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
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
    let sh = Shell {
        env,
        dir: dir.path(),
    };
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
            ctx,
            "apply",
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
        ],
        "east",
        "apply",
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
    args[admin + 1] = format!("127.0.0.1:{}", tandem_harness::free_port());
    let token = run_ok(env.kubectl("east").args([
        "-n",
        &mc.name,
        "create",
        "token",
        &mirror,
        "--duration=1h",
    ]));
    let server = run_ok(env.kubectl("east").args([
        "config",
        "view",
        "--minify",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.server} {.clusters[0].cluster.certificate-authority-data}",
    ]));
    let (server, ca) = server.split_once(' ').expect("server and CA");
    let kubeconfig = dir.path().join("mirror.kubeconfig");
    std::fs::write(
        &kubeconfig,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "east", "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": "mirror", "user": {"token": token.trim()}}],
            "contexts": [{"name": "east", "context": {"cluster": "east", "user": "mirror"}}],
            "current-context": "east",
        })
        .to_string(),
    )
    .unwrap();
    let log = dir.path().join("mirror.log");
    let _mirror = Child {
        child: Command::new(tandem_bin())
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("TANDEM_LOG", "tandem_multicluster=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the mirror starts"),
        log,
    };

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
    wait_for("the mirror's Deployment is owned by the Link", 60, || {
        let owner = run_ok(env.kubectl("east").args([
            "-n",
            &mc.name,
            "get",
            "deployment",
            &mirror,
            "-o",
            "jsonpath={.metadata.ownerReferences[*].kind}",
        ]));
        (owner == "Link").then_some(()).ok_or(owner)
    });

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

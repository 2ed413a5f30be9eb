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

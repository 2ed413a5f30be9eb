//! `tandem multicluster install`, `link` and `check` through the CLI, between
//! the two clusters of the shared testbed: check compares the clusters' trust
//! anchors, and `unlink` removes a Link no mirror serves. (The service mirror
//! itself is tested in `mirror.rs`, and the whole path in `demo.rs`.)
//!
//! Every object lives in namespaces of this test, so it runs beside others.

use std::{path::Path, process::Command};

use tandem_harness::{Env, cli::Cli, run, run_ok};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
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
    let sh = Cli::new(tandem_bin(), dir.path(), &env.kubeconfig);
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
        sh.pipe(&["install", "--crds"], &["--context", ctx, "apply"]);
    }
    sh.install_core("east", &cp_east.name, "a.crt", "east");
    sh.install_core("west", &cp_west.name, "a.crt", "west");
    sh.pipe(
        &[
            "multicluster",
            "install",
            "--namespace",
            &mc.name,
            "--control-plane-namespace",
            &cp_east.name,
        ],
        &["--context", "east", "apply"],
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
        &["--context", "west", "apply"],
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
    sh.pipe(&link_args, &["--context", "east", "apply"]);
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

    let check = |sh: &Cli| {
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
    sh.install_core("west", &cp_west.name, "b.crt", "west-b");
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
        &["--context", "east", "delete"],
    );
    let gone = run(env
        .kubectl("east")
        .args(["-n", &mc.name, "get", "link", &link]));
    assert!(!gone.status.success(), "the Link is deleted");
}

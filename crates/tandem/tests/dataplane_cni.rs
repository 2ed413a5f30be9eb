//! CNI mode on a real node, as linkerd-cni: `tandem install-cni` runs its
//! DaemonSet, which puts the `tandem-cni` plugin in the node's CNI bin dir
//! and at the end of its conflist; pods injected with
//! `--linkerd-cni-enabled` then start with no init container, their
//! network namespace has proxy-init's rules, and their traffic goes
//! through the proxies. Deleting the DaemonSet takes the plugin out again.

use std::{path::Path, time::Duration};

use tandem_harness::{
    Env,
    dataplane::{self, ROUTING_IDENTITY},
    eventually, run_ok,
};

const CLUSTER: &str = "east";

/// The node's conflist (the testbed writes one) and whether it names our
/// plugin.
fn conflist(dir: &Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
        .collect();
    files.sort();
    let first = files.first().expect("the node has a conflist");
    std::fs::read_to_string(first).unwrap()
}

fn plugin_types(conflist: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(conflist).expect("the conflist is JSON");
    v["plugins"]
        .as_array()
        .expect("a plugins list")
        .iter()
        .map(|p| p["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn in_cni_mode_pods_start_without_an_init_container_and_are_redirected() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    dataplane::control_plane(&env, CLUSTER);
    let dirs = dataplane::cni_dirs(&env, CLUSTER);
    let install_cni = [
        "install-cni",
        "--dest-cni-net-dir",
        dirs.net_dir.to_str().unwrap(),
        "--dest-cni-bin-dir",
        dirs.bin_dir.to_str().unwrap(),
    ];
    env.apply_tandem(CLUSTER, &install_cni);
    // Ready means installed: its probe is `tandem cni-install --check`.
    run_ok(env.kubectl(CLUSTER).args([
        "-n",
        "tandem-cni",
        "rollout",
        "status",
        "ds/tandem-cni",
        "--timeout=120s",
    ]));
    let types = plugin_types(&conflist(&dirs.net_dir));
    assert_eq!(
        types.last().map(String::as_str),
        Some("tandem-cni"),
        "{types:?}"
    );
    assert!(types.contains(&"bridge".to_string()), "{types:?}");
    assert!(dirs.bin_dir.join("tandem-cni").is_file());
    // `tandem check` sees it (its tandem-cni category).
    let report = tandem_harness::run(env.tandem().args([
        "check",
        "--context",
        CLUSTER,
        "--wait",
        "0s",
        "-o",
        "json",
    ]));
    let report = tandem_harness::check::report(&report);
    let cni = tandem_harness::check::category(&report, "tandem-cni");
    let results: Vec<(&str, &str)> = cni.iter().map(|c| c.outcome()).collect();
    assert_eq!(
        results,
        [
            ("the tandem-cni DaemonSet exists", "success"),
            (
                "the tandem-cni plugin is installed on every node",
                "success"
            ),
        ]
    );

    let ns = env.namespace("dp-cni", &[CLUSTER]);
    let mesh = |m: &str| dataplane::inject_cni(&env, CLUSTER, m, ROUTING_IDENTITY);
    ns.apply(CLUSTER, &mesh(&dataplane::backend("quiet", 1, false)));
    ns.apply(CLUSTER, &mesh(&dataplane::client_pod("client")));
    dataplane::wait_rollout(&ns, CLUSTER, "quiet");
    dataplane::wait_pod_ready(&ns, CLUSTER, "client");

    let inits = ns.kubectl(
        CLUSTER,
        &[
            "get",
            "pod",
            "client",
            "-o",
            "jsonpath={.spec.initContainers[*].name}",
        ],
    );
    assert_eq!(inits.trim(), "", "no init container in CNI mode");
    let client = dataplane::pod_netns(&env, &ns, CLUSTER, "client");
    let rules = client.nat_rules();
    let ours = rules
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains("PROXY_INIT_"))
        .count();
    assert_eq!(ours, 8, "proxy-init's 8 rules, from the plugin:\n{rules}");

    // The undeclared port, through both proxies: only the redirect can
    // bring the client's connection to its proxy.
    let svc = dataplane::service_addr(&ns, CLUSTER, "quiet");
    let pod = dataplane::answer_through_mesh(&client, svc, "quiet").await;
    dataplane::assert_outbound_counted(&client, "quiet", &pod);

    // Uninstalled: the DaemonSet's pod takes the plugin out as it stops.
    run_ok(
        env.kubectl(CLUSTER)
            .args(["delete", "namespace", "tandem-cni", "--timeout=60s"]),
    );
    eventually(
        "tandem-cni gone from the node's CNI config",
        Duration::from_secs(60),
        || {
            let types = plugin_types(&conflist(&dirs.net_dir));
            let bin = dirs.bin_dir.join("tandem-cni").exists();
            async move {
                if types.iter().any(|t| t == "tandem-cni") || bin {
                    Err(format!("plugins {types:?}, binary there: {bin}"))
                } else {
                    Ok(())
                }
            }
        },
    )
    .await;
}

//! The Helm chart of the failover controller renders what `tandem failover
//! install` prints, for its defaults and for each value a user may set.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tandem_harness::run_ok;

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// The objects of a YAML stream, as JSON values.
fn objects(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("YAML parses");
    let mut docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    docs.sort_by_key(|d| d.to_string());
    docs
}

#[test]
fn the_helm_chart_renders_what_the_cli_prints() {
    let bin_dir = run_ok(Command::new(tandem_bin()).args(["testbed", "build"]));
    let helm = PathBuf::from(bin_dir.trim()).join("helm");
    assert!(
        helm.is_file(),
        "helm was built from its Go module into {}",
        helm.display()
    );
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/tandem-failover");

    for (sets, cli) in [
        (vec![], vec![]),
        (
            vec![
                "replicas=3",
                "namespace=ops",
                "image=registry.local/tandem:dev",
                "selector=team/failover",
                "logLevel=debug",
            ],
            vec![
                "--replicas",
                "3",
                "--namespace",
                "ops",
                "--image",
                "registry.local/tandem:dev",
                "--selector",
                "team/failover",
                "--log-level",
                "debug",
            ],
        ),
        // One replica: no budget and no spread, in both.
        (vec!["replicas=1"], vec!["--replicas", "1"]),
        (
            vec!["registry=mirror.local/x", "tag=1.2.3"],
            vec!["--registry", "mirror.local/x", "--tag", "1.2.3"],
        ),
    ] {
        let mut cmd = Command::new(&helm);
        cmd.args(["template", "tandem-failover"]).arg(&chart);
        for s in &sets {
            cmd.args(["--set", s]);
        }
        let from_helm = run_ok(&mut cmd);
        let mut args = vec!["failover", "install"];
        args.extend(&cli);
        let from_cli = run_ok(Command::new(tandem_bin()).args(&args));
        assert_eq!(
            objects(&from_helm),
            objects(&from_cli),
            "helm --set {sets:?} vs tandem {cli:?}"
        );
        let budgets = objects(&from_cli)
            .iter()
            .filter(|o| o["kind"] == "PodDisruptionBudget")
            .count();
        let replicated = !sets.contains(&"replicas=1");
        assert_eq!(budgets, usize::from(replicated), "tandem {cli:?}");
    }
}

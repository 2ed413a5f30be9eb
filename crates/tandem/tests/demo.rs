//! `tandem demo`, start to finish: the workshop's control-plane path on its
//! own testbed of real nodes, with every tandem component running as a pod,
//! and the failover and failback checked by the demo itself.

use std::{path::Path, process::Command};

#[test]
fn the_demo_runs_the_workshop_and_cleans_up() {
    let tandem = Path::new(env!("CARGO_BIN_EXE_tandem"));
    // The binaries (real nodes' too) are built once, by the shared testbed.
    tandem_harness::Env::real(tandem);
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");

    let out = Command::new(tandem)
        .args(["demo", "--base-port", "22440", "--dir"])
        .arg(&dir)
        .env_remove("KUBECONFIG")
        .output()
        .expect("tandem demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");

    // Every step ran, showing the workshop's commands with `tandem`.
    for step in 1..=12 {
        assert!(
            stdout.contains(&format!("== Step {step}:")),
            "step {step}:\n{stdout}"
        );
    }
    for command in [
        "$ tandem certificate create root.linkerd.cluster.local root.crt root.key --profile root-ca --no-password --insecure",
        "$ tandem check --pre --context east",
        "$ tandem install --crds --context east | kubectl apply --context east -f -",
        "$ tandem smi --context=east install | kubectl --context=east apply -f -",
        "$ kubectl --context=east -n emojivoto label svc/emoji-svc mirror.linkerd.io/exported=true",
        "$ kubectl --context east -n emojivoto scale deploy emoji --replicas=0",
        // Linked as the workshop types it, with no address flags: the
        // mirror and the gateway run in-cluster.
        "$ tandem multicluster --context=west link --cluster-name=west | kubectl --context east apply -f -",
        "$ kubectl --context east -n tandem-multicluster rollout status deploy/tandem-service-mirror-west --timeout=120s",
        "$ kubectl --context east -n tandem-failover rollout status deploy/tandem-failover --timeout=120s",
    ] {
        assert!(stdout.contains(command), "{command:?} shown:\n{stdout}");
    }
    assert!(
        stdout.contains("emoji-svc-west"),
        "the mirror appears:\n{stdout}"
    );
    assert!(stdout.contains("== Done: every step held =="), "{stdout}");
    let ms = |label: &str| -> u64 {
        stdout
            .lines()
            .find(|l| l.starts_with(label))
            .and_then(|l| l.split_whitespace().rev().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{label} timing in:\n{stdout}"))
    };
    assert!(ms("failover") > 0 && ms("failback") > 0);

    // Without --keep: nothing is left running, the directory is gone.
    assert!(!dir.exists(), "the demo removed its directory");
    assert!(tandem_testbed::leftover_processes(&dir).is_empty());
    let leftovers: Vec<u32> =
        tandem_testbed::process::processes_mentioning(&dir.display().to_string());
    assert!(leftovers.is_empty(), "no demo process left: {leftovers:?}");
    // The demo started no side process: every `tandem` it ran was a command.
    assert!(!stdout.contains("in the background"), "{stdout}");
}

#[test]
fn a_second_demo_while_one_is_up_gets_a_clear_message() {
    let tandem = Path::new(env!("CARGO_BIN_EXE_tandem"));
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");
    std::fs::create_dir_all(&dir).unwrap();
    // What a running or kept demo leaves.
    std::fs::write(dir.join("demo.json"), "{\"pid\": 1}\n").unwrap();
    let out = Command::new(tandem)
        .args(["demo", "--base-port", "22540", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already up") && err.contains("tandem demo --down"),
        "{err}"
    );
    // --down clears it.
    let out = Command::new(tandem)
        .args(["demo", "--down", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.exists());
}

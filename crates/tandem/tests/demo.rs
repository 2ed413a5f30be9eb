//! `tandem demo`, start to finish: the whole workshop on its own testbed of
//! real nodes, with every tandem component running as a pod and the meshed
//! emojivoto app making traffic; the failover and failback are checked by
//! the demo itself, with no failed vote-bot request.

use std::{path::Path, process::Command};

use tandem_harness::demo;

#[test]
fn the_demo_runs_the_workshop_and_cleans_up() {
    let tandem = Path::new(env!("CARGO_BIN_EXE_tandem"));
    let run = demo::run(tandem, 22440, &["--rate", "10"]);
    let stdout = &run.stdout;

    // Every step ran, showing the workshop's commands with `tandem`.
    for step in 1..=16 {
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
        "$ tandem --context=east viz install --set grafana.url=grafana.example:3000 | kubectl --context=east apply -f -",
        "$ cat emojivoto.yml | tandem inject --context west - | kubectl --context west apply -f -",
        "$ tandem --context west check --proxy -n emojivoto",
        "$ kubectl --context east -n emojivoto scale deploy emoji --replicas=1",
        "$ tandem --context east viz stat -n emojivoto svc -t 30s",
    ] {
        assert!(stdout.contains(command), "{command:?} shown:\n{stdout}");
    }
    // The workshop's own setup: no CNI plugin, classic sidecars.
    assert!(!stdout.contains("install-cni"), "{stdout}");
    assert!(!stdout.contains("--native-sidecar"), "{stdout}");
    demo::assert_held(&run);
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

//! `tandem demo`, start to finish: the whole workshop on its own testbed of
//! real nodes, with every tandem component running as a pod and the meshed
//! emojivoto app making traffic; the failover and failback are checked by
//! the demo itself, with no failed vote-bot request.

use std::{path::Path, process::Command};

#[test]
fn the_demo_runs_the_workshop_and_cleans_up() {
    let tandem = Path::new(env!("CARGO_BIN_EXE_tandem"));
    // The binaries (real nodes' too) are built once, by the shared testbed.
    tandem_harness::Env::real(tandem);
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");

    let out = Command::new(tandem)
        .args(["demo", "--rate", "10", "--base-port", "22440", "--dir"])
        .arg(&dir)
        .env_remove("KUBECONFIG")
        .output()
        .expect("tandem demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");

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
    assert!(
        stdout.contains("emoji-svc-west"),
        "the mirror appears:\n{stdout}"
    );
    assert!(stdout.contains("== Done: every step held =="), "{stdout}");
    // The figures, as the demo prints them and as its JSON summary line.
    assert!(
        stdout.contains("vote-bot requests failed during failover and failback: 0 "),
        "{stdout}"
    );
    let summary: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("a JSON summary line in:\n{stdout}"));
    assert_eq!(summary["failed_requests"], 0, "{summary}");
    assert_eq!(summary["failovers"], 1, "{summary}");
    // vote-bot voted all along (10/s for well over 10 s), and 15% of its
    // votes are for :doughnut:.
    assert!(summary["ok_requests"].as_u64().unwrap() > 100, "{summary}");
    assert!(
        summary["doughnut_failures"].as_u64().unwrap() > 0,
        "{summary}"
    );
    for times in ["failover_ms", "failback_ms"] {
        let ms = summary[times][0].as_u64().unwrap_or(0);
        // A move takes some polls, and the demo gives up after 60 s.
        assert!(ms > 0 && ms < 60_000, "{times}: {summary}");
    }
    // Where the time went: the endpoints changed, then the controller wrote
    // the weights (it reacts to that change, with a write in between), both
    // within the move, not long after the traffic had moved.
    for (times, steps) in [
        ("failover_ms", "failover_steps"),
        ("failback_ms", "failback_steps"),
    ] {
        let step = &summary[steps][0];
        let (endpoints, weights) = (step["endpoints_ms"].as_u64(), step["weights_ms"].as_u64());
        let (Some(endpoints), Some(weights)) = (endpoints, weights) else {
            panic!("{steps}: both milestones seen: {summary}");
        };
        let traffic = summary[times][0].as_u64().unwrap_or(0);
        assert!(endpoints <= weights, "{steps}: {summary}");
        assert!(weights <= traffic + 1_000, "{steps}: {summary}");
    }
    assert!(
        stdout.contains("failback, where the time went: emoji-svc's endpoint ready at "),
        "{stdout}"
    );
    // viz stat showed emoji's traffic on emoji-svc-west, about vote-bot's
    // rate or more (each tick is a list and a lookup at least).
    let west = summary["stat_west_rps"].as_f64().unwrap_or(0.0);
    assert!(west > 0.0, "{summary}");
    let table = stdout
        .split("viz stat during the failover")
        .nth(1)
        .unwrap_or_default();
    assert!(
        table
            .lines()
            .any(|l| l.trim_start().starts_with("emoji-svc-west ") && l.contains("rps")),
        "the west row in the table:\n{stdout}"
    );

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

//! `tandem demo` under test: one whole run, and the checks that every mode
//! of it must hold (no failed vote-bot request, both moves timed and split
//! into their steps, `viz stat`'s west row, nothing left running).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tempfile::TempDir;

/// A finished `tandem demo`: what it printed and its JSON summary line.
pub struct DemoRun {
    pub stdout: String,
    pub summary: Value,
    /// The demo's directory, removed by the demo itself at its end.
    pub dir: PathBuf,
    _parent: TempDir,
}

/// Runs `tandem demo --base-port PORT FLAGS...` in a fresh directory, with
/// no KUBECONFIG of the caller's; it must succeed and print its summary.
pub fn run(tandem: &Path, base_port: u16, flags: &[&str]) -> DemoRun {
    // The binaries (real nodes' too) are built once, by the shared testbed.
    crate::Env::real(tandem);
    let parent = tempfile::tempdir().expect("a temporary directory");
    let dir = parent.path().join("demo");
    let out = Command::new(tandem)
        .arg("demo")
        .args(["--base-port", &base_port.to_string()])
        .args(flags)
        .arg("--dir")
        .arg(&dir)
        .env_remove("KUBECONFIG")
        .output()
        .expect("tandem demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    let summary = stdout
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("a JSON summary line in:\n{stdout}"));
    DemoRun {
        stdout,
        summary,
        dir,
        _parent: parent,
    }
}

/// The checks of one failover and failback at vote-bot's low rate.
pub fn assert_held(run: &DemoRun) {
    let (stdout, summary) = (&run.stdout, &run.summary);
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
    let dir = &run.dir;
    assert!(!dir.exists(), "the demo removed its directory");
    assert!(tandem_testbed::leftover_processes(dir).is_empty());
    let leftovers: Vec<u32> =
        tandem_testbed::process::processes_mentioning(&dir.display().to_string());
    assert!(leftovers.is_empty(), "no demo process left: {leftovers:?}");
    // The demo started no side process: every `tandem` it ran was a command.
    assert!(!stdout.contains("in the background"), "{stdout}");
}

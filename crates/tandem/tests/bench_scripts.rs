//! The benchmark scripts' command lines (bench/*.sh): `--help` prints the
//! script's header, and a wrong argument is refused with exit status 2
//! before anything is built or started.

use std::{path::PathBuf, process::Command};

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench")
        .join(name)
}

/// Runs `bash bench/<name> args...`: exit status, stdout, stderr.
fn run(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("bash")
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running bash {name}: {e} (bash is needed)"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every script with options, and one option of it that takes a value.
const SCRIPTS: &[(&str, &str)] = &[
    ("churn.sh", "--requests"),
    ("destination.sh", "--json"),
    ("failover.sh", "--json"),
    ("mirror.sh", "--json"),
    ("proxy-init.sh", "--rounds"),
    ("proxy-weights.sh", "--json"),
    ("proxy.sh", "--rps"),
    ("workshop.sh", "--json"),
];

#[test]
fn help_prints_the_scripts_header() {
    for (name, option) in SCRIPTS {
        let (status, out, err) = run(name, &["--help"]);
        assert_eq!(status, 0, "{name} --help: {err}");
        assert!(out.starts_with("Benchmarks "), "{name} --help:\n{out}");
        assert!(
            out.contains(&format!("bench/{name}")) && out.contains(option),
            "{name} --help gives no usage line with {option}:\n{out}"
        );
        assert!(
            !out.contains("set -euo") && !out.lines().any(|l| l.starts_with('#')),
            "{name} --help prints more than its header:\n{out}"
        );
    }
}

#[test]
fn a_wrong_argument_is_refused_before_anything_runs() {
    for (name, option) in SCRIPTS {
        let (status, out, err) = run(name, &["--no-such-option", "1"]);
        assert_eq!(status, 2, "{name} --no-such-option: {out}{err}");
        assert!(
            err.contains("unknown argument --no-such-option"),
            "{name}: {err}"
        );
        let (status, out, err) = run(name, &[option]);
        assert_eq!(status, 2, "{name} {option} with no value: {out}{err}");
        assert!(
            err.contains(&format!("{option} needs a value")),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_controller_that_is_no_program_is_refused_before_anything_runs() {
    let missing = "/nonexistent/tandem";
    let (status, out, err) = run("failover.sh", &["--controller", missing]);
    assert_eq!(status, 2, "failover.sh --controller {missing}: {out}{err}");
    assert!(
        err.contains(&format!("--controller {missing} is not an executable file")),
        "{err}"
    );
}

#[test]
fn a_workshop_mode_or_sidecar_kind_that_is_unknown_is_refused_before_anything_runs() {
    let (status, out, err) = run("workshop.sh", &["--mode", "sidecar"]);
    assert_eq!(status, 2, "workshop.sh --mode sidecar: {out}{err}");
    assert!(
        err.contains("--mode is init or cni, not sidecar"),
        "workshop.sh: {err}"
    );
    let (status, out, err) = run("workshop.sh", &["--sidecar", "ambient"]);
    assert_eq!(status, 2, "workshop.sh --sidecar ambient: {out}{err}");
    assert!(
        err.contains("--sidecar is classic or native, not ambient"),
        "workshop.sh: {err}"
    );
}

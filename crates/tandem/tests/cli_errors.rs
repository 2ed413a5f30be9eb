//! A failed command says what went wrong on one line, each cause once, and
//! names what the user gave it.

use std::process::{Command, Output};

fn tandem(args: &[&str], home: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home)
        .output()
        .expect("running tandem")
}

/// stderr, after checking that the command failed with an error.
fn error(out: &Output) -> String {
    assert!(!out.status.success(), "the command succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.starts_with("error: "), "stderr: {err}");
    err
}

/// [`error`], which must be one line.
fn error_line(out: &Output) -> String {
    let err = error(out);
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    err
}

#[test]
fn a_missing_kubeconfig_is_named_and_its_cause_given_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let missing = missing.to_str().unwrap();
    let once = |text: &str, what: &str| {
        assert!(
            text.contains(&format!("reading kubeconfig {missing}")),
            "{what}: {text}"
        );
        assert_eq!(
            text.matches("No such file or directory").count(),
            1,
            "{what}: {text}"
        );
    };
    for args in [
        vec!["failover", "run", "--kubeconfig", missing],
        vec!["multicluster", "gateways", "--kubeconfig", missing],
    ] {
        once(&error_line(&tandem(&args, dir.path())), &args.join(" "));
    }
    // `check` reports it as a failed check, as linkerd does.
    let out = tandem(&["check", "--kubeconfig", missing], dir.path());
    assert!(!out.status.success(), "check succeeded");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("× can initialize the client"), "{report}");
    once(&report, "check");
}

#[test]
fn with_no_kubeconfig_at_all_the_error_says_what_to_pass() {
    let home = tempfile::tempdir().unwrap();
    let err = error_line(&tandem(&["failover", "run"], home.path()));
    assert!(err.contains("pass --kubeconfig and --context"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn a_kubeconfig_that_is_not_yaml_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "clusters: [unclosed").unwrap();
    let broken = broken.to_str().unwrap();
    // The parser's message points at the line and column (a few lines).
    let err = error(&tandem(
        &["failover", "run", "--kubeconfig", broken],
        dir.path(),
    ));
    assert!(
        err.contains(&format!("reading kubeconfig {broken}")),
        "{err}"
    );
    assert!(err.contains("line 1 column 11"), "{err}");
    assert_eq!(
        err.matches("failed to parse kubeconfig YAML").count(),
        1,
        "{err}"
    );
}

#[test]
fn check_takes_a_data_plane_namespace_only_with_proxy() {
    let home = tempfile::tempdir().unwrap();
    // Linkerd's flags: -n is the data plane's namespace, -L the control plane's.
    let out = tandem(&["check", "-n", "emojivoto"], home.path());
    let err = error(&out);
    assert!(err.contains("--proxy"), "{err}");
    let out = tandem(&["check", "--pre", "--proxy"], home.path());
    let err = error(&out);
    assert!(err.contains("cannot be used with"), "{err}");
}

//! Whole streams against committed output. After a deliberate change,
//! regenerate with `TANDEM_UPDATE_GOLDEN=1 cargo test -p tandem-inject
//! --test golden` and review the diff.

use std::{fs, path::PathBuf};

use tandem_inject::{Config, StreamError, inject_stream, summary};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn cfg() -> Config {
    let anchors = fs::read_to_string(dir().join("ca.crt")).unwrap();
    Config::new(
        "tandem",
        "cluster.local",
        "ghcr.io/tandem-io/tandem:0.0.0-test",
        &anchors,
        "0.0.0-test",
    )
    .unwrap()
}

/// Compares `actual` with the committed file, or rewrites it when asked.
#[track_caller]
fn golden(name: &str, actual: &str) {
    let path = dir().join(name);
    if std::env::var_os("TANDEM_UPDATE_GOLDEN").is_some() {
        fs::write(&path, actual).unwrap();
        return;
    }
    let want = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (set TANDEM_UPDATE_GOLDEN=1 to write it)",
            path.display()
        )
    });
    assert!(
        want == actual,
        "{} differs from the output (set TANDEM_UPDATE_GOLDEN=1 to accept):\n{actual}",
        path.display()
    );
}

#[test]
fn every_workload_kind_a_list_and_the_skipped_cases() {
    let input = fs::read_to_string(dir().join("workloads.yaml")).unwrap();
    let out = inject_stream(&input, &cfg()).unwrap();
    golden("workloads.golden.yaml", &out.yaml);
    golden("workloads.report.txt", &summary(&out.reports));
}

#[test]
fn native_sidecars_by_default_and_a_template_that_opts_out() {
    let input = fs::read_to_string(dir().join("native-sidecar.yaml")).unwrap();
    let out = inject_stream(&input, &cfg().with_native_sidecar(true)).unwrap();
    golden("native-sidecar.golden.yaml", &out.yaml);
    golden("native-sidecar.report.txt", &summary(&out.reports));
}

#[test]
fn injecting_the_output_again_gives_the_same_text() {
    let input = fs::read_to_string(dir().join("workloads.yaml")).unwrap();
    let once = inject_stream(&input, &cfg()).unwrap();
    let twice = inject_stream(&once.yaml, &cfg()).unwrap();
    assert_eq!(twice.yaml, once.yaml);
    assert!(
        twice
            .reports
            .iter()
            .all(|r| r.outcome != tandem_inject::Outcome::Injected),
        "{}",
        summary(&twice.reports)
    );
}

#[test]
fn a_stream_with_broken_documents_names_them_all_and_returns_nothing() {
    let input = fs::read_to_string(dir().join("broken.yaml")).unwrap();
    let err = inject_stream(&input, &cfg()).unwrap_err();
    let StreamError::Broken(docs) = &err else {
        panic!("{err:?}");
    };
    let at: Vec<(usize, usize)> = docs.iter().map(|d| (d.index, d.line)).collect();
    assert_eq!(at, [(2, 5), (3, 10)], "{err}");
    golden("broken.error.txt", &format!("{err}\n"));
}

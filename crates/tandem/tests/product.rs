//! The product binary leaves the development tools out, and still runs them
//! as its `testbed` and `demo` subcommands.

use std::{path::Path, process::Command};

fn bin(name: &str) -> &'static Path {
    match name {
        "tandem" => Path::new(env!("CARGO_BIN_EXE_tandem")),
        "tandem-testbed" => Path::new(env!("CARGO_BIN_EXE_tandem-testbed")),
        "emojivoto" => Path::new(env!("CARGO_BIN_EXE_emojivoto")),
        _ => Path::new(env!("CARGO_BIN_EXE_tandem-demo")),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_product_binary_carries_no_testbed() {
    // The testbed compiles its Go modules' files in; this line is one of them.
    let marker = b"module tandem.io/tools/kube";
    let product = std::fs::read(bin("tandem")).unwrap();
    let testbed = std::fs::read(bin("tandem-testbed")).unwrap();
    assert!(contains(&testbed, marker), "the marker is a fair test");
    assert!(!contains(&product, marker), "tandem links the testbed");
    // Nor the demo's script: one of the workshop commands it prints.
    let demo_marker = b"rollout status deploy/tandem-service-mirror-";
    let demo = std::fs::read(bin("tandem-demo")).unwrap();
    assert!(
        contains(&demo, demo_marker),
        "the demo marker is a fair test"
    );
    assert!(!contains(&product, demo_marker), "tandem links the demo");
    // Nor the demo app (its page is built into web).
    let app_marker = b"Tap to vote for your favorite emoji";
    let app = std::fs::read(bin("emojivoto")).unwrap();
    assert!(contains(&app, app_marker), "the app marker is a fair test");
    assert!(!contains(&product, app_marker), "tandem links the demo app");
}

#[test]
fn testbed_and_demo_run_through_the_product_binary() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("tandem"))
        .args(["testbed", "status", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tandem testbed up"),
        "tandem-testbed answered: {err}"
    );

    let help = Command::new(bin("tandem"))
        .args(["demo", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("Usage: tandem demo") && text.contains("--keep"),
        "{text}"
    );

    let help = Command::new(bin("tandem")).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("testbed") && text.contains("demo"), "{text}");
}

//! `tandem demo --cni --native-sidecar`, start to finish: the workshop with
//! the tandem-cni plugin and the app's proxies as native sidecars (the
//! setup whose failback BENCHMARKS.md times under 2 s). The same checks as
//! the workshop's own setup hold: no failed vote-bot request, `viz stat`
//! finds the proxies (init containers now) and `check --proxy` passes.

use std::path::Path;

use tandem_harness::demo;

#[test]
fn the_demo_with_the_cni_plugin_and_native_sidecars_holds_its_checks() {
    let tandem = Path::new(env!("CARGO_BIN_EXE_tandem"));
    let run = demo::run(
        tandem,
        22640,
        &["--rate", "10", "--cni", "--native-sidecar"],
    );
    let stdout = &run.stdout;
    for command in [
        "$ tandem install-cni --dest-cni-net-dir ",
        "$ tandem install --context east --linkerd-cni-enabled --native-sidecar --identity-trust-anchors-file root.crt",
        "$ tandem install --context west --linkerd-cni-enabled --native-sidecar --identity-trust-anchors-file root.crt",
        "$ tandem --context west check --proxy -n emojivoto",
    ] {
        assert!(stdout.contains(command), "{command:?} shown:\n{stdout}");
    }
    demo::assert_held(&run);
}

//! The failover controller across an apiserver restart, on a private
//! testbed (ports 23440 and up), since it stops an apiserver (fixtures:
//! `tandem_harness::failover`).

use std::{path::Path, time::Duration};

use tandem_harness::{
    PrivateTestbed, eventually,
    failover::{backend, controller, scale, split, wait_weights, weights},
};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Case 9: an apiserver restart; the next flip is still handled. On a
/// private testbed, since it stops an apiserver.
#[tokio::test]
async fn the_next_flip_after_an_apiserver_restart_is_handled() {
    let tb = PrivateTestbed::start(tandem_bin(), &["east"], 23440);
    let env = tb.env.clone();
    let ns = env.namespace("restart", &["east"]);
    let crd =
        tandem_harness::run_ok(std::process::Command::new(tandem_bin()).args(["smi", "install"]));
    ns.apply("east", &crd);
    ns.kubectl(
        "east",
        &[
            "wait",
            "--for=condition=Established",
            "crd/trafficsplits.split.smi-spec.io",
        ],
    );
    ns.apply("east", &backend("p", "p", 1));
    ns.apply("east", &backend("f", "f", 1));
    ns.apply("east", &split("s", "restart", &["p", "f"], &[]));
    let _c = controller(&env, "east", "restart", &[]);
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;

    env.testbed_process("stop", "kube-apiserver", "east");
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.testbed_process("start", "kube-apiserver", "east");
    scale(&ns, "east", "p", 0);
    eventually(
        "the flip after the restart",
        Duration::from_secs(60),
        || {
            let got = weights(&ns, "east", "s");
            async move {
                if got == [("p".to_string(), 0), ("f".to_string(), 1)] {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            }
        },
    )
    .await;
}

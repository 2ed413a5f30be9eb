//! The failover controller's leader election: two replicas with one
//! writer, and a Lease namespace that does not exist (fixtures:
//! `tandem_harness::failover`).

use std::{path::Path, time::Duration};

use tandem_harness::{
    Env, eventually,
    failover::{FLIP, backend, controller, scale, split, wait_weights},
};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

fn env() -> Env {
    tandem_harness::failover::env(tandem_bin())
}

/// Case 8: two replicas: only the leader writes; when it dies, the other
/// takes over and handles the next flip.
#[tokio::test]
async fn two_replicas_elect_one_writer_and_survive_its_death() {
    let env = env();
    let ns = env.namespace("replicas", &["east"]);
    ns.apply("east", &backend("p", "p", 1));
    ns.apply("east", &backend("f", "f", 1));
    let label = ns.name.clone();
    ns.apply("east", &split("s", &label, &["p", "f"], &[]));
    let lease = [
        "--lease-namespace",
        &ns.name,
        "--lease-duration",
        "3s",
        "--renew-period",
        "500ms",
    ];
    let mut a = controller(
        &env,
        "east",
        &label,
        &[&lease[..], &["--identity", "replica-a"]].concat(),
    );
    let mut b = controller(
        &env,
        "east",
        &label,
        &[&lease[..], &["--identity", "replica-b"]].concat(),
    );
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;

    let holder = eventually("a lease holder", FLIP, || {
        let h = ns.kubectl(
            "east",
            &[
                "get",
                "lease",
                "tandem-failover",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        );
        async move {
            if h.is_empty() {
                Err("none".to_string())
            } else {
                Ok(h)
            }
        }
    })
    .await;
    let (leader, follower, follower_id) = if holder == "replica-a" {
        (&mut a, &mut b, "replica-b")
    } else {
        (&mut b, &mut a, "replica-a")
    };
    assert_eq!(leader.metric("tandem_failover_leader "), Some(1.0));
    assert_eq!(follower.metric("tandem_failover_leader "), Some(0.0));

    scale(&ns, "east", "p", 0);
    wait_weights(&ns, "east", "s", &[("p", 0), ("f", 1)]).await;
    let transitions = "tandem_failover_transitions_total{";
    assert!(
        leader.metric(transitions).is_some(),
        "the leader wrote the flip"
    );
    assert_eq!(
        follower.metric(transitions),
        None,
        "the follower wrote nothing"
    );

    leader.kill();
    let new_holder = eventually(
        "the follower takes the lease",
        Duration::from_secs(20),
        || {
            let h = ns.kubectl(
                "east",
                &[
                    "get",
                    "lease",
                    "tandem-failover",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ],
            );
            let old = holder.clone();
            async move {
                if !h.is_empty() && h != old {
                    Ok(h)
                } else {
                    Err(h)
                }
            }
        },
    )
    .await;
    assert_eq!(new_holder, follower_id);
    scale(&ns, "east", "p", 1);
    wait_weights(&ns, "east", "s", &[("p", 1), ("f", 0)]).await;
    assert!(
        follower.metric(transitions).is_some(),
        "the new leader wrote the failback"
    );
}

/// `failover run` from a workstation with no failover namespace: it stops
/// at once and says what to do, rather than retrying the Lease forever.
#[tokio::test]
async fn a_missing_lease_namespace_stops_the_controller_with_a_hint() {
    let env = env();
    let missing = format!(
        "tandem-failover-missing-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            % 0xffffff
    );
    let mut cmd = tokio::process::Command::from(env.tandem());
    cmd.args(["--context", "east", "failover", "run", "--lease-namespace"])
        .arg(&missing)
        .arg("--admin-addr")
        .arg(format!("127.0.0.1:{}", tandem_harness::free_port()))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // A deadline for an expected outcome: the first Lease write fails at once.
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("`failover run` stops instead of retrying the Lease")
        .expect("tandem runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for hint in [
        missing.as_str(),
        "tandem failover install",
        "--lease-namespace",
        "--no-leader-election",
    ] {
        assert!(stderr.contains(hint), "no {hint:?} in:\n{stderr}");
    }
}

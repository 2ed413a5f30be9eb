//! A TrafficSplit 3:1 between two backend Services behind an apex Service,
//! honoured by the client pod's own proxy: of 400 requests sent from inside
//! the meshed client pod to the apex's ClusterIP, each backend gets its
//! weight's share within ±8 points.

use std::{path::Path, time::Duration};

use tandem_harness::{
    Env,
    dataplane::{self, Load, LoadSpec, count_by},
    eventually,
};

const CLUSTER: &str = "east";

#[tokio::test]
async fn a_3_to_1_split_sends_each_backend_its_share() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    dataplane::control_plane(&env, CLUSTER);
    let ns = env.namespace("dp-split", &[CLUSTER]);
    let dataplane::RoutedSplit {
        apex,
        client: netns,
    } = dataplane::routed_split(&env, &ns, CLUSTER, [2, 1], [3, 1]);
    // The proxy has the split once both backends answer through the apex.
    eventually(
        "both backends answering through the apex",
        Duration::from_secs(60),
        || async {
            let load = Load::start(
                &netns,
                LoadSpec {
                    target: apex,
                    path: "/".into(),
                    rate: 50,
                    count: 20,
                },
            );
            let counts = count_by(&load.finish(), &["b1", "b2"]);
            if counts.contains_key("b1") && counts.contains_key("b2") && counts.len() == 2 {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        },
    )
    .await;

    let samples = Load::start(
        &netns,
        LoadSpec {
            target: apex,
            path: "/".into(),
            rate: 100,
            count: 400,
        },
    )
    .finish();
    let counts = count_by(&samples, &["b1", "b2"]);
    eprintln!("400 requests to the apex split 3:1: {counts:?}");
    assert_eq!(samples.len(), 400);
    let failed: Vec<_> = samples.iter().filter(|s| s.failed()).take(5).collect();
    assert!(
        failed.is_empty(),
        "failed requests ({counts:?}): {failed:?}"
    );
    for (backend, weight) in [("b1", 0.75), ("b2", 0.25)] {
        let share = *counts.get(backend).unwrap_or(&0) as f64 / 400.0;
        assert!(
            (share - weight).abs() <= 0.08,
            "{backend} got {:.1}% of the requests, its weight is {:.0}%: {counts:?}",
            share * 100.0,
            weight * 100.0
        );
    }
}

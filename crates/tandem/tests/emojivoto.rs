//! The emojivoto-compatible demo app on real nodes: its manifest
//! (`examples/emojivoto.yml`) meshed with `tandem inject` and applied in
//! east; from a meshed client pod, web-svc lists the emojis, counts a vote,
//! fails `:doughnut:`'s on purpose and ranks the votes; vote-bot's count of
//! ok votes grows; and web's proxy carries its gRPC to emoji-svc over mTLS.

use std::{path::Path, time::Duration};

use tandem_harness::{
    Env,
    app::{self, BotCounts, LogsOnFailure},
    dataplane::{self, ROUTING_IDENTITY, metric_sum},
    eventually,
};

const CLUSTER: &str = "east";

#[tokio::test]
async fn the_meshed_app_votes_fails_the_doughnut_and_speaks_mtls() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    dataplane::control_plane(&env, CLUSTER);
    let ns = env.namespace("emojivoto", &[CLUSTER]);
    let _logs = LogsOnFailure {
        env: &env,
        ns: &ns.name,
        clusters: &[CLUSTER],
    };
    app::install(&env, &ns, CLUSTER, &tandem_emojivoto::manifest(&ns.name));
    let client = dataplane::inject(
        &env,
        CLUSTER,
        &dataplane::client_pod("client"),
        ROUTING_IDENTITY,
    );
    ns.apply(CLUSTER, &client);
    dataplane::wait_pod_ready(&ns, CLUSTER, "client");

    let client = dataplane::pod_netns(&env, &ns, CLUSTER, "client");
    let web = dataplane::service_addr(&ns, CLUSTER, "web-svc");
    let list = eventually(
        "web-svc's /api/list through the mesh",
        Duration::from_secs(60),
        || {
            let got = client.get(web, "/api/list");
            async move {
                match got {
                    Ok(r) if r.status == 200 => Ok(r.body),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    let list: serde_json::Value = serde_json::from_str(&list).expect("a JSON list");
    let list = list.as_array().expect("a JSON list");
    assert_eq!(list.len(), tandem_emojivoto::emoji::ALL.len());
    assert!(
        list.iter()
            .any(|e| e["shortcode"] == ":doughnut:" && e["unicode"] == "🍩"),
        "no doughnut in {list:?}"
    );

    let vote = |choice: &str| {
        client
            .get(web, &format!("/api/vote?choice={choice}"))
            .unwrap_or_else(|e| panic!("voting for {choice}: {e}"))
    };
    for _ in 0..3 {
        let ok = vote(":rocket:");
        assert_eq!((ok.status, ok.body.as_str()), (200, ""));
    }
    let doughnut = vote(":doughnut:");
    assert_eq!(doughnut.status, 500, "{}", doughnut.body);
    assert_eq!(doughnut.body, r#"{"error":"ERROR"}"#);
    assert_eq!(vote(":no_such_emoji:").status, 400);

    let board = client
        .get(web, "/api/leaderboard")
        .expect("the leaderboard");
    assert_eq!(board.status, 200, "{}", board.body);
    let board: serde_json::Value = serde_json::from_str(&board.body).expect("a JSON list");
    let rocket = board
        .as_array()
        .expect("a JSON list")
        .iter()
        .find(|e| e["shortcode"] == ":rocket:")
        .unwrap_or_else(|| panic!("no :rocket: on the leaderboard {board}"));
    // vote-bot may have voted for it too.
    assert!(rocket["votes"].as_i64().unwrap_or(0) >= 3, "{board}");
    assert_eq!(rocket["unicode"], "🚀");
    assert!(!board.to_string().contains(":doughnut:"), "{board}");

    // vote-bot votes on: its count of ok votes grows, and nothing but the
    // doughnut fails. Counted from here, once the app has answered: votes
    // sent while voting was still starting are not the app's failures.
    let bot = app::netns_of(&env, &ns, CLUSTER, "app=vote-bot");
    let before = BotCounts::read(&bot).expect("vote-bot's /metrics");
    let after = eventually(
        "vote-bot's ok votes growing",
        Duration::from_secs(60),
        || {
            let now = BotCounts::read(&bot);
            async move {
                match now {
                    Ok(now) if now.vote_ok >= before.vote_ok + 2.0 => Ok(now),
                    other => Err(format!("{before:?} before, now {other:?}")),
                }
            }
        },
    )
    .await;
    let since = after.since(&before);
    assert!(since.vote_ok >= 2.0, "{since:?}");
    assert_eq!(
        (since.vote_failed, since.list_failed),
        (0.0, 0.0),
        "vote-bot saw real failures: {since:?} since {before:?}"
    );

    // web's proxy sent its gRPC to emoji-svc over mTLS.
    let web_pod = app::netns_of(&env, &ns, CLUSTER, "app=web-svc");
    let metrics = dataplane::proxy_metrics(&web_pod, "web");
    let to_emoji = |tls| {
        metric_sum(
            &metrics,
            "response_total",
            &[
                ("direction", "outbound"),
                ("dst_service", "emoji-svc"),
                ("tls", tls),
            ],
        )
    };
    assert!(
        to_emoji("true") >= 1.0,
        "web's proxy counted no mTLS response from emoji-svc:\n{metrics}"
    );
    assert_eq!(to_emoji("no_identity"), 0.0, "{metrics}");
}

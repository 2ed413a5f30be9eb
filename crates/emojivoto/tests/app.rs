//! The whole app in one process on loopback ports: emoji-svc and voting-svc
//! over real gRPC, web over real HTTP, and vote-bot voting through web.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use prometheus_client::registry::Registry;
use tandem_emojivoto::{
    bot::{self, BotConfig, BotMetrics, Verdict},
    metrics::GrpcMetrics,
    voting::Ballot,
    web,
};
use tokio::net::TcpListener;

struct App {
    web: SocketAddr,
    registry: Registry,
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port")
}

/// emoji-svc, voting-svc (doughnut votes always fail) and web, each on its
/// own port; their gRPC counters in one registry.
async fn start() -> App {
    let mut registry = Registry::default();
    let grpc = GrpcMetrics::register(&mut registry);
    let (emoji, voting, web) = (listener().await, listener().await, listener().await);
    let host = |l: &TcpListener| l.local_addr().unwrap().to_string();
    let backends = web::Backends::new(
        web::client::channel(&host(&emoji)).unwrap(),
        web::client::channel(&host(&voting)).unwrap(),
    );
    let web_addr = web.local_addr().unwrap();
    tokio::spawn(tandem_emojivoto::serve_emoji(emoji, grpc.clone()));
    tokio::spawn(tandem_emojivoto::serve_voting(
        voting,
        Arc::new(Ballot::new(1.0)),
        grpc,
    ));
    tokio::spawn(async move { axum::serve(web, web::router(backends)).await });
    App {
        web: web_addr,
        registry,
    }
}

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri = format!("http://{addr}{path}").parse().unwrap();
    let res = client.get(uri).await.expect("web answers");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn json(a: &Answer) -> serde_json::Value {
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", a.body))
}

#[tokio::test]
async fn web_lists_votes_and_ranks_over_real_grpc() {
    let app = start().await;

    let list = get(app.web, "/api/list").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let list = json(&list);
    let list = list.as_array().expect("a list");
    assert_eq!(list.len(), 99, "emojivoto's list");
    assert_eq!(
        list[0],
        serde_json::json!({"shortcode": ":joy:", "unicode": "😂"})
    );
    assert!(list.iter().any(|e| e["shortcode"] == ":doughnut:"));

    for (query, status) in [
        ("?choice=:joy:", 200),
        ("?choice=%3Ajoy%3A", 200),
        ("?choice=:pizza:", 200),
        ("?choice=:joy:", 200),
        ("?choice=", 400),
        ("", 400),
        ("?choice=:nothing:", 400),
        ("?choice=joy", 400),
    ] {
        let a = get(app.web, &format!("/api/vote{query}")).await;
        assert_eq!(a.status, status, "/api/vote{query}: {}", a.body);
        if status == 200 {
            assert_eq!(a.body, "", "a counted vote answers an empty body");
        }
    }
    let doughnut = get(app.web, "/api/vote?choice=:doughnut:").await;
    assert_eq!(doughnut.status, 500);
    assert_eq!(doughnut.content_type, "application/json");
    assert_eq!(json(&doughnut), serde_json::json!({"error": "ERROR"}));

    let board = get(app.web, "/api/leaderboard").await;
    assert_eq!(board.status, 200, "{}", board.body);
    assert_eq!(
        json(&board),
        serde_json::json!([
            {"votes": 3, "unicode": "😂", "shortcode": ":joy:"},
            {"votes": 1, "unicode": "🍕", "shortcode": ":pizza:"},
        ])
    );

    // voting-svc counted the failure with its gRPC code.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &app.registry).unwrap();
    for series in [
        r#"grpc_server_handled_total{grpc_service="emojivoto.v1.VotingService",grpc_method="VoteDoughnut",grpc_code="Unknown"} 1"#,
        r#"grpc_server_handled_total{grpc_service="emojivoto.v1.VotingService",grpc_method="VoteJoy",grpc_code="OK"} 3"#,
        r#"grpc_server_handled_total{grpc_service="emojivoto.v1.EmojiService",grpc_method="ListAll",grpc_code="OK"} 1"#,
    ] {
        assert!(text.contains(series), "no {series} in:\n{text}");
    }

    let page = get(app.web, "/").await;
    assert_eq!(
        (page.status, page.content_type.as_str()),
        (200, "text/html; charset=utf-8")
    );
    assert!(page.body.contains("id=\"emoji-list\""));
    assert_eq!(get(app.web, "/leaderboard").await.body, page.body);
    let js = get(app.web, "/js").await;
    assert_eq!(
        (js.status, js.content_type.as_str()),
        (200, "application/javascript")
    );
    assert!(js.body.contains("/api/vote?choice="));
}

#[tokio::test]
async fn a_votes_failure_is_a_500_when_voting_is_down() {
    // voting-svc's port is closed: web answers 500 with the gRPC error.
    let mut registry = Registry::default();
    let grpc = GrpcMetrics::register(&mut registry);
    let (emoji, web) = (listener().await, listener().await);
    let closed = listener().await.local_addr().unwrap();
    let backends = web::Backends::new(
        web::client::channel(&emoji.local_addr().unwrap().to_string()).unwrap(),
        web::client::channel(&closed.to_string()).unwrap(),
    );
    let web_addr = web.local_addr().unwrap();
    tokio::spawn(tandem_emojivoto::serve_emoji(emoji, grpc));
    tokio::spawn(async move { axum::serve(web, web::router(backends)).await });
    let a = get(web_addr, "/api/vote?choice=:joy:").await;
    assert_eq!(a.status, 500, "{}", a.body);
    assert!(
        json(&a)["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        a.body
    );
    assert_eq!(get(web_addr, "/api/leaderboard").await.status, 500);
    assert_eq!(get(web_addr, "/api/list").await.status, 200);
}

/// Waits up to 30 s for `done`, checking every 50 ms.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn vote_bot_counts_ok_doughnut_and_real_failures_apart() {
    let app = start().await;
    let metrics = BotMetrics::register(&mut Registry::default());
    let config = BotConfig {
        web_host: app.web.to_string(),
        rate: 100.0,
        timeout: Duration::from_secs(5),
        wait_for_web: true,
    };
    let running = tokio::spawn(bot::run(config, metrics.clone()));
    wait_for("vote-bot's ok and doughnut votes", || {
        metrics.get(bot::VOTE_PATH, Verdict::ok) >= 30
            && metrics.get(bot::VOTE_PATH, Verdict::doughnut) >= 2
    })
    .await;
    running.abort();
    assert_eq!(metrics.get(bot::VOTE_PATH, Verdict::failed), 0);
    assert_eq!(metrics.get(bot::LIST_PATH, Verdict::failed), 0);
    assert!(metrics.get(bot::LIST_PATH, Verdict::ok) >= 30);
    // The leaderboard holds the bot's ok votes, and no doughnut.
    let board = json(&get(app.web, "/api/leaderboard").await);
    let counted: i64 = board
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["votes"].as_i64().unwrap())
        .sum();
    assert!(counted >= 30, "{board}");
    assert!(!board.to_string().contains(":doughnut:"), "{board}");

    // Against a closed port every request is a real failure (once the bot
    // no longer waits for web to come up).
    let closed = listener().await.local_addr().unwrap();
    let metrics = BotMetrics::register(&mut Registry::default());
    let config = BotConfig {
        web_host: closed.to_string(),
        rate: 50.0,
        timeout: Duration::from_secs(5),
        wait_for_web: false,
    };
    let running = tokio::spawn(bot::run(config, metrics.clone()));
    wait_for("vote-bot's failures", || {
        metrics.get(bot::VOTE_PATH, Verdict::failed) >= 5
    })
    .await;
    running.abort();
    assert_eq!(metrics.get(bot::VOTE_PATH, Verdict::ok), 0);
    assert_eq!(metrics.get(bot::VOTE_PATH, Verdict::doughnut), 0);
    assert!(metrics.get(bot::LIST_PATH, Verdict::failed) >= 5);
}

#[tokio::test]
async fn vote_bot_waits_uncounted_until_web_lists_the_emojis() {
    // web's port is bound but not served yet: the bot's first request is
    // dropped unanswered, and must not count.
    let mut registry = Registry::default();
    let grpc = GrpcMetrics::register(&mut registry);
    let (emoji, voting, web) = (listener().await, listener().await, listener().await);
    let host = |l: &TcpListener| l.local_addr().unwrap().to_string();
    let backends = web::Backends::new(
        web::client::channel(&host(&emoji)).unwrap(),
        web::client::channel(&host(&voting)).unwrap(),
    );
    let metrics = BotMetrics::register(&mut Registry::default());
    let config = BotConfig {
        web_host: host(&web),
        rate: 50.0,
        // The dropped request fails at once whatever the timeout; a short
        // one would make a slow answer on a busy machine a failure.
        timeout: Duration::from_secs(5),
        wait_for_web: true,
    };
    let running = tokio::spawn(bot::run(config, metrics.clone()));
    let (refused, _) = web.accept().await.expect("the bot's first request");
    drop(refused);
    tokio::spawn(tandem_emojivoto::serve_emoji(emoji, grpc.clone()));
    tokio::spawn(tandem_emojivoto::serve_voting(
        voting,
        Arc::new(Ballot::new(1.0)),
        grpc,
    ));
    tokio::spawn(async move { axum::serve(web, web::router(backends)).await });
    wait_for("vote-bot's ok votes once web serves", || {
        metrics.get(bot::VOTE_PATH, Verdict::ok) >= 10
    })
    .await;
    running.abort();
    assert_eq!(metrics.get(bot::LIST_PATH, Verdict::failed), 0);
    assert_eq!(metrics.get(bot::VOTE_PATH, Verdict::failed), 0);
}

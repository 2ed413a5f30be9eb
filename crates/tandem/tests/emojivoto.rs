//! The emojivoto-compatible demo app on real nodes: its manifest
//! (`examples/emojivoto.yml`) meshed with `tandem inject` and applied in
//! east; from a meshed client pod, web-svc lists the emojis, counts a vote,
//! fails `:doughnut:`'s on purpose and ranks the votes; vote-bot's count of
//! ok votes grows; and web's proxy carries its gRPC to emoji-svc over mTLS.

use std::{path::Path, time::Duration};

use tandem_harness::{
    Env, TestNamespace,
    dataplane::{self, PodNetns, ROUTING_IDENTITY, metric_sum},
    eventually, run,
};

const CLUSTER: &str = "east";
const DEPLOYMENTS: [&str; 4] = ["emoji", "voting", "web", "vote-bot"];

#[tokio::test]
async fn the_meshed_app_votes_fails_the_doughnut_and_speaks_mtls() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    dataplane::control_plane(&env, CLUSTER);
    let ns = env.namespace("emojivoto", &[CLUSTER]);
    let _logs = LogsOnFailure(&env, &ns.name);
    let app = tandem_emojivoto::manifest(&ns.name);
    ns.apply(
        CLUSTER,
        &dataplane::inject(&env, CLUSTER, &app, ROUTING_IDENTITY),
    );
    let client = dataplane::inject(
        &env,
        CLUSTER,
        &dataplane::client_pod("client"),
        ROUTING_IDENTITY,
    );
    ns.apply(CLUSTER, &client);
    for deploy in DEPLOYMENTS {
        dataplane::wait_rollout(&ns, CLUSTER, deploy);
    }
    dataplane::wait_pod_ready(&ns, CLUSTER, "client");
    for deploy in DEPLOYMENTS {
        let containers = pod_of(&ns, deploy_selector(deploy), ".spec.containers[*].name");
        assert!(
            containers.contains("tandem-proxy"),
            "{deploy} is not meshed: containers {containers:?}"
        );
    }

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
    // doughnut fails.
    let bot = netns_of(&env, &ns, "app=vote-bot");
    let prom = "127.0.0.1:8801".parse().unwrap();
    let ok_votes = |bot: &PodNetns| {
        let m = bot.get(prom, "/metrics").map_err(|e| e.to_string())?;
        let sum = |result| {
            metric_sum(
                &m.body,
                "votebot_requests_total",
                &[("path", "/api/vote"), ("result", result)],
            )
        };
        Ok::<_, String>((sum("ok"), sum("failed"), m.body))
    };
    let (before, _, _) = ok_votes(&bot).expect("vote-bot's /metrics");
    let (after, failed, text) = eventually(
        "vote-bot's ok votes growing",
        Duration::from_secs(60),
        || {
            let now = ok_votes(&bot);
            async move {
                match now {
                    Ok((ok, failed, text)) if ok >= before + 2.0 => Ok((ok, failed, text)),
                    other => Err(format!("{before} ok votes before, now {other:?}")),
                }
            }
        },
    )
    .await;
    assert!(after >= 2.0, "{text}");
    assert_eq!(failed, 0.0, "vote-bot saw real failures:\n{text}");

    // web's proxy sent its gRPC to emoji-svc over mTLS.
    let web_pod = netns_of(&env, &ns, "app=web-svc");
    let metrics = web_pod
        .get("127.0.0.1:4191".parse().unwrap(), "/metrics")
        .expect("web's proxy metrics");
    let to_emoji = |tls| {
        metric_sum(
            &metrics.body,
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
        "web's proxy counted no mTLS response from emoji-svc:\n{}",
        metrics.body
    );
    assert_eq!(to_emoji("no_identity"), 0.0, "{}", metrics.body);
}

/// The pod selector of a Deployment of the manifest: emojivoto's pods are
/// labelled `app: <x>-svc`, not by the Deployment's name.
fn deploy_selector(deploy: &str) -> &'static str {
    match deploy {
        "emoji" => "app=emoji-svc",
        "voting" => "app=voting-svc",
        "web" => "app=web-svc",
        _ => "app=vote-bot",
    }
}

/// A field (`.metadata.name`) of the first pod matching `selector`.
fn pod_of(ns: &TestNamespace, selector: &str, path: &str) -> String {
    ns.kubectl(
        CLUSTER,
        &[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            &format!("jsonpath={{.items[0]{path}}}"),
        ],
    )
}

fn netns_of(env: &Env, ns: &TestNamespace, selector: &str) -> PodNetns {
    let pod = pod_of(ns, selector, ".metadata.name");
    dataplane::pod_netns(env, ns, CLUSTER, pod.trim())
}

/// Prints the app's logs if the test fails (the namespace's objects are
/// dumped by [`TestNamespace`]).
struct LogsOnFailure<'a>(&'a Env, &'a str);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for deploy in DEPLOYMENTS {
            let out = run(self.0.kubectl(CLUSTER).args([
                "-n",
                self.1,
                "logs",
                &format!("deploy/{deploy}"),
                "--all-containers",
                "--tail=50",
            ]));
            eprintln!(
                "===== logs of {deploy} =====\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

//! The acceptance of viz against the app, on real nodes: with viz
//! installed and the meshed app's vote-bot at a known rate (each tick is
//! `/api/list` and one vote, 15% of them the failing `:doughnut:`),
//! vote-bot sends within ±20% of that rate, and `tandem viz stat` shows
//! web's and voting's RPS within ±20% of both the set rate and what
//! vote-bot itself counted over the same window, and SUCCESS near the share
//! vote-bot saw succeed (web ≈ 92.5%, voting ≈ 85%). The other ways to ask
//! (`--from`, `--to`, `-A`, `po` with STATUS, `ns`, `-o wide`) show the same
//! load.
//! Then `tandem viz dashboard --context east`, seen in headless Chromium,
//! shows emojivoto's services with their RPS and success.

use std::{path::Path, process::Command, time::Duration};

use serde_json::Value;
use tandem_harness::{
    Env, Process, TestNamespace,
    app::{self, BotCounts, LogsOnFailure},
    browser::Browser,
    dataplane, eventually, free_port,
};

const CLUSTER: &str = "east";
/// vote-bot's ticks a second: twice as many requests to web.
const TICKS: u32 = 5;
/// The window of `viz stat -t`.
const WINDOW: Duration = Duration::from_secs(30);
/// `increase()` undercounts a series younger than its window: the
/// figures are Linkerd's once the traffic has run a window and two 10 s
/// scrapes.
const WARM_UP: Duration = Duration::from_secs(25);
/// How many standard deviations of chance SUCCESS may differ by from
/// vote-bot's own share (see [`success_slack`]).
const SIGMAS: f64 = 4.0;
/// The least slack: the figures are rounded, and the windows' ends differ
/// by up to a second.
const MIN_SLACK: f64 = 0.02;

fn stat_json(env: &Env, ns: &TestNamespace, kind: &str) -> Result<Vec<Value>, String> {
    tandem_harness::app::viz_stat_json(env, CLUSTER, &["-n", &ns.name, kind])
}

/// How far SUCCESS may be from vote-bot's share `p` of its `n` requests by
/// chance alone. Which vote is a `:doughnut:` is random (15%), and the two
/// figures do not count the same requests: `increase()` over 30 s spans
/// the window's first and last scrapes, 10 s apart, so it counts about the
/// last 20 s of vote-bot's 30 s, a subset of `m = 2n/3` of its requests. A
/// subset's share differs from the whole's with σ = √(p(1−p)(1/m − 1/n)),
/// here √(p(1−p)/2n): 0.022 for voting's 150 votes at p = 1/6. A fixed
/// slack of 0.05 (2.3σ) fails about one run in fifty; [`SIGMAS`] σ, about
/// one in 16,000, and still fails a SUCCESS that counts the doughnuts as
/// successes (1.0 against 0.83: a slack of 0.086).
fn success_slack(p: f64, n: f64) -> f64 {
    (SIGMAS * (p * (1.0 - p) / (2.0 * n)).sqrt()).max(MIN_SLACK)
}

/// The figures vote-bot gives a row: the rate it was set to, what it
/// counted, its share of successes and how many requests that share is of.
#[derive(Clone, Copy, Debug)]
struct Load {
    nominal: f64,
    rps: f64,
    success: f64,
    n: f64,
}

/// Row `name`'s RPS within ±20% of both the set rate and vote-bot's count,
/// and its SUCCESS within [`success_slack`] of vote-bot's share.
fn check(rows: &[Value], name: &str, load: Load) -> Result<(), String> {
    let Load {
        nominal,
        rps,
        success,
        n,
    } = load;
    let row = rows
        .iter()
        .find(|r| r["name"] == name)
        .ok_or_else(|| format!("no row {name} in {rows:?}"))?;
    let (got_rps, got_success) = match (row["rps"].as_f64(), row["success"].as_f64()) {
        (Some(r), Some(s)) => (r, s),
        _ => return Err(format!("{name} has no traffic yet: {row}")),
    };
    for (want, what) in [(rps, "vote-bot counted"), (nominal, "vote-bot is set to")] {
        if (got_rps - want).abs() > want * 0.2 {
            return Err(format!("{name}: {got_rps:.2} rps, {what} {want:.2}: {row}"));
        }
    }
    let slack = success_slack(success, n);
    if (got_success - success).abs() > slack {
        return Err(format!(
            "{name}: success {got_success:.3}, vote-bot saw {success:.3} of {n} (slack {slack:.3}): {row}"
        ));
    }
    Ok(())
}

#[tokio::test]
async fn viz_stat_and_the_dashboard_show_vote_bots_load_and_its_doughnuts() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    dataplane::control_plane(&env, CLUSTER);
    app::install_viz(&env, CLUSTER);
    let ns = env.namespace("vizapp", &[CLUSTER]);
    let _logs = LogsOnFailure {
        env: &env,
        ns: &ns.name,
        clusters: &[CLUSTER],
    };
    let manifest = app::with_bot_rate(&tandem_emojivoto::manifest(&ns.name), TICKS);
    app::install(&env, &ns, CLUSTER, &manifest);

    // vote-bot's traffic flows: it counts only once web first answered.
    let bot = app::netns_of(&env, &ns, CLUSTER, "app=vote-bot");
    eventually("vote-bot voting", Duration::from_secs(60), || {
        let now = BotCounts::read(&bot);
        async move {
            match now {
                Ok(c) if c.vote_ok > 0.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    tokio::time::sleep(WARM_UP).await;
    let start = BotCounts::read(&bot).expect("vote-bot's counters");
    tokio::time::sleep(WINDOW).await;
    let end = BotCounts::read(&bot).expect("vote-bot's counters");
    let deploy = stat_json(&env, &ns, "deploy").unwrap_or_else(|e| panic!("{e}"));
    let svc = stat_json(&env, &ns, "svc").unwrap_or_else(|e| panic!("{e}"));
    check_proxy_sees_every_proxy_scraped(&env, &ns.name);
    let sent = end.since(&start);
    let secs = WINDOW.as_secs_f64();
    let (web_rps, vote_rps) = (sent.requests() / secs, sent.votes() / secs);
    eprintln!(
        "vote-bot over {secs}s: {sent:?}: web {web_rps:.2} rps at {:.3}, voting {vote_rps:.2} rps at {:.3}\ndeploy: {deploy:?}\nsvc: {svc:?}",
        sent.web_success(),
        sent.vote_success()
    );
    // The known load: vote-bot sends what it is set to.
    let (web_nominal, vote_nominal) = (f64::from(2 * TICKS), f64::from(TICKS));
    for (what, got, want) in [
        ("requests", web_rps, web_nominal),
        ("votes", vote_rps, vote_nominal),
    ] {
        assert!(
            (got - want).abs() <= want * 0.2,
            "vote-bot, set to {TICKS} votes a second, sent {got:.2} {what} a second, not {want} ±20%"
        );
    }
    assert_eq!(
        (sent.list_failed, sent.vote_failed),
        (0.0, 0.0),
        "vote-bot saw real failures"
    );
    let web = Load {
        nominal: web_nominal,
        rps: web_rps,
        success: sent.web_success(),
        n: sent.requests(),
    };
    let voting = Load {
        nominal: vote_nominal,
        rps: vote_rps,
        success: sent.vote_success(),
        n: sent.votes(),
    };
    for (rows, name, load) in [
        (&deploy, "web", web),
        (&deploy, "voting", voting),
        (&svc, "web-svc", web),
        (&svc, "voting-svc", voting),
    ] {
        check(rows, name, load).unwrap_or_else(|e| panic!("{e}"));
    }
    // The failure is the doughnut's, and shows: well below 100%.
    for (rows, name) in [(&deploy, "voting"), (&svc, "voting-svc")] {
        let row = rows.iter().find(|r| r["name"] == name).unwrap();
        assert!(row["success"].as_f64() < Some(0.95), "{row}");
    }

    other_ways_to_ask(&env, &ns, web, voting);

    // The dashboard's Services, in a browser.
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.env("KUBECONFIG", &env.kubeconfig).args([
        "viz",
        "dashboard",
        "--context",
        CLUSTER,
        "--addr",
        &format!("127.0.0.1:{port}"),
    ]);
    let mut dashboard = Process::spawn("dashboard", cmd, port);
    dashboard.wait_http_ok("/api/state", Duration::from_secs(60));
    let browser = Browser::launch().unwrap_or_else(|e| panic!("{e}"));
    let mut page = browser.page().await.unwrap_or_else(|e| panic!("{e}"));
    page.goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let row = |svc: &str| format!("tr[data-service=\"{CLUSTER}/{}/{svc}\"]", ns.name);
    let cells = |svc: &str| format!("[...document.querySelectorAll('{} td')]", row(svc));
    let shown = format!(
        "['web-svc', 'emoji-svc', 'voting-svc'].every(s => document.querySelector(`tr[data-service=\"{CLUSTER}/{}/${{s}}\"]`)) && \
         parseFloat({}[2]?.textContent) > 0 && parseFloat({}[1]?.textContent) < 100",
        ns.name,
        cells("web-svc"),
        cells("voting-svc"),
    );
    page.wait_until(
        "emojivoto's services with traffic on the dashboard",
        &shown,
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dashboard.log_text()));
    for (svc, rps) in [("web-svc", web_rps), ("voting-svc", vote_rps)] {
        let cells = page
            .texts(&format!("{} td", row(svc)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("dashboard: {cells:?}");
        let text = cells.join(" ");
        assert_eq!(cells.first(), Some(&format!("{}/{svc}", ns.name)), "{text}");
        let shown: f64 = cells
            .last()
            .and_then(|c| c.strip_suffix("rps"))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no RPS in {text:?}"));
        // The dashboard's window is a minute, half of it before the
        // window above: a wider margin.
        assert!(
            (shown - rps).abs() <= rps * 0.35,
            "{svc}: {text} vs {rps:.2}"
        );
        assert!(cells[1].ends_with('%'), "{text}");
    }
}

/// `--from`, `--to`, `-A`, `po` (with STATUS, `-o wide`) and `ns` over the
/// same load: each shows web's traffic where it should.
fn other_ways_to_ask(env: &Env, ns: &TestNamespace, web: Load, voting: Load) {
    let stat = |args: &[&str]| {
        tandem_harness::app::viz_stat_json(env, CLUSTER, args)
            .unwrap_or_else(|e| panic!("viz stat {args:?}: {e}"))
    };
    // Only what vote-bot sends: all of it to web-svc, none to voting-svc.
    let from = stat(&["-n", &ns.name, "svc", "--from", "deploy/vote-bot"]);
    check(&from, "web-svc", web).unwrap_or_else(|e| panic!("--from: {e}"));
    assert!(
        from.iter()
            .all(|r| r["name"] != "voting-svc" || r["rps"].is_null()),
        "vote-bot sends nothing to voting-svc: {from:?}"
    );
    // Who calls voting-svc: web alone, with the votes' rate and doughnuts.
    let to = stat(&["-n", &ns.name, "deploy", "--to", "svc/voting-svc"]);
    check(&to, "web", voting).unwrap_or_else(|e| panic!("--to: {e}"));
    assert!(
        to.iter().all(|r| r["name"] == "web" || r["rps"].is_null()),
        "only web calls voting-svc: {to:?}"
    );
    // Every namespace: this one's web among them.
    let all = stat(&["-A", "deploy"]);
    let row = all
        .iter()
        .find(|r| r["namespace"] == ns.name.as_str() && r["name"] == "web")
        .unwrap_or_else(|| panic!("-A has no web of {}: {all:?}", ns.name));
    check(std::slice::from_ref(row), "web", web).unwrap_or_else(|e| panic!("-A: {e}"));
    // The namespace: every pod meshed, and at least web's traffic.
    let nss = stat(&["ns", &ns.name]);
    let [row] = nss.as_slice() else {
        panic!("ns {}: one row expected: {nss:?}", ns.name)
    };
    let meshed = row["meshed"].as_str().unwrap_or_default();
    let (m, total) = meshed.split_once('/').unwrap_or_default();
    assert!(m == total && m != "0", "ns: every pod meshed: {row}");
    assert!(row["rps"].as_f64() > Some(web.rps * 0.8), "ns: {row}");
    // Pods, wide, as a table: STATUS and the byte rates.
    let table = app::StatTable::get(env, CLUSTER, &["-n", &ns.name, "po", "-o", "wide"])
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", table.text);
    assert_eq!(
        table.header(),
        [
            "NAME",
            "STATUS",
            "MESHED",
            "SUCCESS",
            "RPS",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99",
            "TCP_CONN",
            "READ_BYTES/SEC",
            "WRITE_BYTES/SEC"
        ]
    );
    let web_pod = table
        .row("web-")
        .unwrap_or_else(|| panic!("no web pod in\n{}", table.text));
    assert_eq!(&web_pod[1..3], ["Running", "1/1"], "{web_pod:?}");
    assert!(
        web_pod[9].ends_with("B/s") && web_pod[10].ends_with("B/s"),
        "{web_pod:?}"
    );
}

/// `tandem check --proxy -n NS`, with viz installed: the app's proxies are
/// ready, and Prometheus has scraped each of them (the categories
/// `tandem-viz` and `tandem-viz-data-plane`, as `linkerd check` has them
/// once viz is installed).
fn check_proxy_sees_every_proxy_scraped(env: &Env, ns: &str) {
    let out = tandem_harness::run(env.tandem().args([
        "--context",
        CLUSTER,
        "check",
        "--proxy",
        "-n",
        ns,
        "--wait",
        "60s",
        "-o",
        "json",
    ]));
    let report = tandem_harness::check::report(&out);
    for (name, checks) in [
        ("tandem-viz", 3),
        ("tandem-viz-data-plane", 1),
        ("tandem-data-plane", 6),
    ] {
        let results = tandem_harness::check::category(&report, name);
        assert_eq!(results.len(), checks, "{name}: {report:#}");
        for c in results {
            assert_eq!(c.result, "success", "{name}: {c:#?}");
        }
    }
}

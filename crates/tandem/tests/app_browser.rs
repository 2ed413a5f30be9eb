//! The app from the browser, on real nodes: the emojivoto-compatible app,
//! meshed with `tandem inject`, runs in east and in west; its `web-svc` is a
//! LoadBalancer Service (`examples/emojivoto.yml`), so each cluster's
//! testbed LoadBalancer controller gives it an address of that cluster's
//! pool, reachable from the host. Headless Chromium loads the page from each
//! address: it lists the emojis; a click votes (`#vote-status`) and the
//! leaderboard counts it; a `:doughnut:` vote fails on purpose.

use std::{net::IpAddr, path::Path, time::Duration};

use tandem_harness::{
    Env,
    app::{self, LogsOnFailure},
    browser::{Browser, Page},
    dataplane,
};

const CLUSTERS: [&str; 2] = ["east", "west"];
/// A vote of the page reaching the leaderboard: web -> voting through both
/// proxies, and the page's next read of the board.
const SHOWN_WITHIN: Duration = Duration::from_secs(20);
/// The first load: the page, then `/api/list` through web's proxy to emoji.
const FIRST_RENDER: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_page_lists_votes_and_ranks_from_east_and_from_west() {
    let env = Env::real(Path::new(env!("CARGO_BIN_EXE_tandem")));
    for cluster in CLUSTERS {
        dataplane::control_plane(&env, cluster);
    }
    let ns = env.namespace("app", &CLUSTERS);
    let _logs = LogsOnFailure {
        env: &env,
        ns: &ns.name,
        clusters: &CLUSTERS,
    };
    // Without vote-bot: the leaderboard counts the test's votes alone.
    let manifest = app::without_bot(&tandem_emojivoto::manifest(&ns.name));
    for cluster in CLUSTERS {
        app::install(&env, &ns, cluster, &manifest);
    }
    let mut addresses = vec![];
    for cluster in CLUSTERS {
        addresses.push(app::lb_address(&ns, cluster, "web-svc").await);
    }
    eprintln!("web-svc's LoadBalancer addresses: {addresses:?}");
    assert_ne!(
        addresses[0], addresses[1],
        "east and west gave web-svc one address"
    );

    let browser = Browser::launch().unwrap_or_else(|e| panic!("{e}"));
    for (cluster, address) in CLUSTERS.into_iter().zip(addresses) {
        let mut page = browser.page().await.unwrap_or_else(|e| panic!("{e}"));
        vote_from_the_page(&mut page, cluster, address).await;
    }
}

/// Loads the page from `address`, sees every emoji, votes for `:rocket:`
/// twice and for `:doughnut:` once, and reads the leaderboard.
async fn vote_from_the_page(page: &mut Page, cluster: &str, address: IpAddr) {
    let url = format!("http://{address}/");
    page.goto(&url)
        .await
        .unwrap_or_else(|e| panic!("{cluster}: {e}"));
    let all = tandem_emojivoto::emoji::ALL.len();
    page.wait_until(
        &format!("{cluster}: the emoji list at {url}"),
        &format!("document.querySelectorAll('#emoji-list button.emoji').length === {all}"),
        FIRST_RENDER,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let shown = page
        .texts("#emoji-list button.emoji")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(shown.iter().any(|e| e == "🚀"), "{cluster}: {shown:?}");
    assert!(shown.iter().any(|e| e == "🍩"), "{cluster}: {shown:?}");

    for n in 1..=2 {
        click(page, ":rocket:").await;
        page.wait_until(
            &format!("{cluster}: vote {n} for :rocket: counted"),
            &format!(
                "document.getElementById('vote-status').dataset.status === '200' && \
                 document.querySelector('#leaderboard tr[data-shortcode=\":rocket:\"] td.votes')?.textContent === '{n}'"
            ),
            SHOWN_WITHIN,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let status = page
        .text("#vote-status")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(status, "You voted for 🚀", "{cluster}");

    // The deliberate failure shows as one, and counts nothing.
    click(page, ":doughnut:").await;
    page.wait_until(
        &format!("{cluster}: the :doughnut: vote failing"),
        "document.getElementById('vote-status').dataset.shortcode === ':doughnut:' && \
         document.getElementById('vote-status').dataset.status === '500'",
        SHOWN_WITHIN,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let board = page
        .texts("#leaderboard tr.leaderboard-row")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(board.len(), 1, "{cluster}: {board:?}");
    assert!(board[0].contains(":rocket:"), "{cluster}: {board:?}");
}

async fn click(page: &mut Page, shortcode: &str) {
    let clicked = page
        .eval(&format!(
            "(() => {{ const b = document.querySelector('#emoji-list button.emoji[data-shortcode=\"{shortcode}\"]'); if (b) b.click(); return !!b; }})()"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        clicked,
        serde_json::json!(true),
        "no button for {shortcode}"
    );
}

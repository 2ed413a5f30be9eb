//! vote-bot: each tick, `GET /api/list` then a vote (15% `:doughnut:`,
//! otherwise another emoji at random), at `REQUEST_RATE` ticks a second.
//!
//! It counts every request by outcome for the demo,
//! `votebot_requests_total{path, result}`: `ok`; `doughnut`, the deliberate
//! 500 of a `:doughnut:` vote; `failed`, anything else (a connection error,
//! a timeout, any other non-2xx), which is also logged. Until web first
//! lists the emojis the bot only waits (uncounted), so that the pods'
//! start-up order does not show as failures.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::sync::Semaphore;

use crate::emoji::{self, DOUGHNUT, Emoji};

/// The share of votes that go to `:doughnut:`, as emojivoto's bot.
pub const DOUGHNUT_SHARE: f64 = 0.15;
pub const LIST_PATH: &str = "/api/list";
pub const VOTE_PATH: &str = "/api/vote";
/// Ticks in flight at most; beyond, the bot waits (and slows down) rather
/// than piling up requests.
const MAX_IN_FLIGHT: usize = 256;

// === decisions ===

/// The emoji of a vote: `:doughnut:` when `roll` (uniform in [0, 1)) is
/// under [`DOUGHNUT_SHARE`], else the `pick`-th of the others.
pub fn choose(roll: f64, pick: usize) -> &'static Emoji {
    let others: Vec<&'static Emoji> = emoji::ALL
        .iter()
        .filter(|e| e.shortcode != DOUGHNUT)
        .collect();
    match emoji::find(DOUGHNUT) {
        Some(d) if roll < DOUGHNUT_SHARE => d,
        _ => others[pick % others.len()],
    }
}

/// What one request came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// No answer: the connection failed or the request timed out.
    NoAnswer(String),
}

/// A request's result as counted.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Verdict {
    ok,
    failed,
    doughnut,
}

/// 2xx is `ok`; a `:doughnut:` vote's 500 is `doughnut`; all else `failed`.
pub fn verdict(doughnut_vote: bool, reply: &Reply) -> Verdict {
    match reply {
        Reply::Status(s) if (200..300).contains(s) => Verdict::ok,
        Reply::Status(500) if doughnut_vote => Verdict::doughnut,
        _ => Verdict::failed,
    }
}

// === metrics ===

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub path: String,
    pub result: Verdict,
}

/// `votebot_requests_total`.
#[derive(Clone, Debug, Default)]
pub struct BotMetrics {
    requests: Family<RequestLabels, Counter>,
}

impl BotMetrics {
    /// The counters, registered in `registry`, every series at 0.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "votebot_requests",
            "vote-bot's requests to web, by path and result (doughnut: the deliberate failure of a :doughnut: vote)",
            m.requests.clone(),
        );
        for (path, result) in [
            (LIST_PATH, Verdict::ok),
            (LIST_PATH, Verdict::failed),
            (VOTE_PATH, Verdict::ok),
            (VOTE_PATH, Verdict::failed),
            (VOTE_PATH, Verdict::doughnut),
        ] {
            let _created = m.requests.get_or_create(&labels(path, result));
        }
        m
    }

    pub fn count(&self, path: &str, result: Verdict) {
        self.requests.get_or_create(&labels(path, result)).inc();
    }

    /// The count of one series (for tests and logs).
    pub fn get(&self, path: &str, result: Verdict) -> u64 {
        self.requests.get_or_create(&labels(path, result)).get()
    }
}

fn labels(path: &str, result: Verdict) -> RequestLabels {
    RequestLabels {
        path: path.into(),
        result,
    }
}

// === the loop ===

/// What vote-bot needs.
#[derive(Clone, Debug)]
pub struct BotConfig {
    /// `host:port` of web, emojivoto's `WEB_HOST`.
    pub web_host: String,
    /// Ticks a second.
    pub rate: f64,
    /// The longest a request may take.
    pub timeout: Duration,
    /// Wait, uncounted, until `/api/list` answers 2xx before voting.
    pub wait_for_web: bool,
}

/// Votes until the task is dropped.
pub async fn run(config: BotConfig, metrics: BotMetrics) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http();
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    if config.wait_for_web {
        wait_for_web(&client, &config).await;
    }
    // Made after the wait: an interval made before it would fire every tick
    // missed while waiting at once, a burst of requests at a web just up.
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate));
    tracing::info!(web = %config.web_host, rate = config.rate, "voting");
    loop {
        ticks.tick().await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, config, metrics) = (client.clone(), config.clone(), metrics.clone());
        tokio::spawn(async move {
            tick(&client, &config, &metrics).await;
            drop(slot);
        });
    }
}

/// Asks `/api/list` once a second until it answers 2xx.
async fn wait_for_web(client: &HttpClient, config: &BotConfig) {
    loop {
        match get(client, config, LIST_PATH).await {
            Reply::Status(s) if (200..300).contains(&s) => return,
            reply => tracing::info!(web = %config.web_host, ?reply, "waiting for web"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

async fn tick(client: &HttpClient, config: &BotConfig, metrics: &BotMetrics) {
    let listed = get(client, config, LIST_PATH).await;
    record(metrics, LIST_PATH, false, &listed);
    let choice = choose(rand::random::<f64>(), rand::random::<u32>() as usize);
    let path = format!("{VOTE_PATH}?choice={}", choice.shortcode);
    let voted = get(client, config, &path).await;
    record(metrics, VOTE_PATH, choice.shortcode == DOUGHNUT, &voted);
}

fn record(metrics: &BotMetrics, path: &str, doughnut_vote: bool, reply: &Reply) {
    let v = verdict(doughnut_vote, reply);
    if v == Verdict::failed {
        tracing::warn!(path, ?reply, "request failed");
    }
    metrics.count(path, v);
}

/// GET `path` of web, its body read, within the timeout.
async fn get(client: &HttpClient, config: &BotConfig, path: &str) -> Reply {
    let uri = format!("http://{}{path}", config.web_host);
    let call = async {
        let uri: http::Uri = uri.parse().map_err(|e| format!("bad URI {uri}: {e}"))?;
        let res = client.get(uri).await.map_err(|e| format!("{e:?}"))?;
        let status = res.status().as_u16();
        res.into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?;
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(config.timeout, call).await {
        Ok(Ok(status)) => Reply::Status(status),
        Ok(Err(e)) => Reply::NoAnswer(e),
        Err(_) => Reply::NoAnswer(format!("no answer within {:?}", config.timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_is_doughnut_below_its_share_and_never_above() {
        assert_eq!(choose(0.0, 7).shortcode, DOUGHNUT);
        assert_eq!(choose(0.1499, 0).shortcode, DOUGHNUT);
        for pick in 0..500 {
            assert_ne!(choose(0.15, pick).shortcode, DOUGHNUT, "pick {pick}");
            assert_ne!(choose(0.99, pick).shortcode, DOUGHNUT, "pick {pick}");
        }
        // Every other emoji can be chosen.
        let picked: std::collections::HashSet<_> =
            (0..99).map(|p| choose(0.5, p).shortcode).collect();
        assert_eq!(picked.len(), emoji::ALL.len() - 1);
        assert_ne!(choose(0.5, usize::MAX).shortcode, DOUGHNUT);
    }

    #[test]
    fn verdicts_keep_the_doughnut_apart_from_real_failures() {
        let none = Reply::NoAnswer("connection refused".into());
        let cases = [
            (false, Reply::Status(200), Verdict::ok),
            (true, Reply::Status(200), Verdict::ok),
            (false, Reply::Status(204), Verdict::ok),
            (true, Reply::Status(500), Verdict::doughnut),
            (false, Reply::Status(500), Verdict::failed),
            (true, Reply::Status(502), Verdict::failed),
            (true, Reply::Status(503), Verdict::failed),
            (false, Reply::Status(400), Verdict::failed),
            (true, Reply::Status(404), Verdict::failed),
            (false, Reply::Status(302), Verdict::failed),
            (true, none.clone(), Verdict::failed),
            (false, none, Verdict::failed),
        ];
        for (doughnut, reply, want) in cases {
            assert_eq!(verdict(doughnut, &reply), want, "{doughnut} {reply:?}");
        }
    }

    #[test]
    fn every_series_is_exported_from_the_start() {
        let mut registry = Registry::default();
        let m = BotMetrics::register(&mut registry);
        m.count(VOTE_PATH, Verdict::doughnut);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for series in [
            r#"votebot_requests_total{path="/api/list",result="ok"} 0"#,
            r#"votebot_requests_total{path="/api/vote",result="failed"} 0"#,
            r#"votebot_requests_total{path="/api/vote",result="doughnut"} 1"#,
        ] {
            assert!(text.contains(series), "no {series} in:\n{text}");
        }
        assert_eq!(m.get(VOTE_PATH, Verdict::doughnut), 1);
    }
}

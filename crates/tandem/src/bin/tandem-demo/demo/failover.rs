//! The workshop's payoff, measured: scale emoji in east to 0 and back to 1
//! while vote-bot votes, and time how long until web's proxy sends all of
//! emoji's traffic to west (and back), counting vote-bot's failed requests.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{
    Demo,
    measure::{Poll, Spread, http_get, metric_sum, moved_at, stat_rps},
    milestones::{FAILBACK, FAILOVER, Milestones, Recorder, where_it_went},
};

/// How often web's proxy is polled while traffic moves.
const POLL: Duration = Duration::from_millis(50);
/// How long the traffic must stay put before the move counts as done.
const QUIET: Duration = Duration::from_secs(3);
/// The longest a move may take before the demo fails.
const MOVE_TIMEOUT: Duration = Duration::from_secs(60);
/// `viz stat`'s window: Prometheus scrapes every 10 s, so 30 s holds a few.
const STAT_WINDOW: &str = "30s";

// === figures ===

/// What the demo measured, printed at the end and as one JSON line.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub rate: f64,
    pub failovers: usize,
    #[serde(serialize_with = "millis")]
    pub failover_ms: Vec<Duration>,
    #[serde(serialize_with = "millis")]
    pub failback_ms: Vec<Duration>,
    /// Where each failover's time went (`milestones`).
    pub failover_steps: Vec<Milestones>,
    /// Where each failback's time went.
    pub failback_steps: Vec<Milestones>,
    /// vote-bot's failed requests during the failovers and failbacks.
    pub failed_requests: u64,
    /// The deliberate `:doughnut:` failures in the same time.
    pub doughnut_failures: u64,
    /// vote-bot's successful requests in the same time.
    pub ok_requests: u64,
    /// `viz stat` showed emoji's traffic on emoji-svc-west (its RPS).
    pub stat_west_rps: Option<f64>,
}

fn millis<S: serde::Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|d| d.as_millis() as u64))
}

impl Figures {
    pub fn print(&self) {
        let (fo, fb) = (Spread::of(&self.failover_ms), Spread::of(&self.failback_ms));
        let ms = |d: Duration| d.as_millis();
        println!(
            "failover (scale to 0 → all of emoji's traffic on west): {:>6} ms  (p50 {} ms, p99 {} ms, max {} ms over {})",
            ms(fo.p50),
            ms(fo.p50),
            ms(fo.p99),
            ms(fo.max),
            self.failovers
        );
        println!(
            "failback (scale to 1 → all of emoji's traffic back):    {:>6} ms  (p50 {} ms, p99 {} ms, max {} ms over {})",
            ms(fb.p50),
            ms(fb.p50),
            ms(fb.p99),
            ms(fb.max),
            self.failovers
        );
        for (what, goal, traffic, steps) in [
            (
                "failover",
                FAILOVER,
                &self.failover_ms,
                &self.failover_steps,
            ),
            (
                "failback",
                FAILBACK,
                &self.failback_ms,
                &self.failback_steps,
            ),
        ] {
            println!(
                "  {what}, where the time went: {}",
                where_it_went(goal, traffic, steps)
            );
        }
        println!(
            "vote-bot requests failed during failover and failback: {} (ok {}, deliberate :doughnut: failures {}, at {}/s)",
            self.failed_requests, self.ok_requests, self.doughnut_failures, self.rate
        );
        match self.stat_west_rps {
            Some(rps) => {
                println!("viz stat showed emoji's traffic on emoji-svc-west: {rps:.1} rps")
            }
            None => println!("viz stat showed emoji's traffic on emoji-svc-west: no"),
        }
        println!(
            "summary: {}",
            serde_json::to_string(self).unwrap_or_default()
        );
    }
}

/// vote-bot's counters, read from its `/metrics`.
#[derive(Clone, Copy, Debug)]
struct Votes {
    ok: f64,
    failed: f64,
    doughnut: f64,
}

impl Demo {
    // === the rounds ===

    /// Fails over and back `rounds` times; `viz stat` is shown (and checked)
    /// in the first round only.
    pub(super) async fn failovers(&mut self, rounds: usize, rate: f64) -> Result<Figures> {
        let web = self.pod_addr("app=web-svc", 4191)?;
        let bot = self.pod_addr("app=vote-bot", 8801)?;
        let east = tandem_util::client::from_file(&self.kubeconfig(), Some("east"))
            .await
            .context("a client of east, to watch emoji-svc's slices and split")?;
        let mut figures = Figures {
            rate,
            failovers: rounds,
            ..Figures::default()
        };

        self.title("viz stat before the failover: emoji's traffic on emoji-svc");
        self.stat_until("emoji-svc", "emoji-svc-west").await?;

        self.healthy(bot).await?;
        let start = votes(bot).await?;
        let restarts = self.bot_restarts()?;
        for round in 1..=rounds {
            let of = if rounds > 1 {
                format!(" (round {round} of {rounds})")
            } else {
                String::new()
            };
            self.title(&format!(
                "scale emoji in east to 0: its traffic moves to emoji-svc-west{of}"
            ));
            let (took, steps) = self.move_traffic(0, web, &east).await?;
            figures.failover_ms.push(took);
            figures.failover_steps.push(steps);
            if round == 1 {
                self.sh("tandem --context east failover status")?;
                self.title("viz stat during the failover: emoji's traffic on emoji-svc-west");
                figures.stat_west_rps = Some(self.stat_until("emoji-svc-west", "emoji-svc").await?);
            }
            self.progress(bot, start).await;

            self.title(&format!(
                "scale emoji back to 1: its traffic fails back{of}"
            ));
            let (took, steps) = self.move_traffic(1, web, &east).await?;
            figures.failback_ms.push(took);
            figures.failback_steps.push(steps);
            self.progress(bot, start).await;
        }

        self.title("viz stat after the failback: emoji's traffic back on emoji-svc");
        self.stat_until("emoji-svc", "emoji-svc-west").await?;
        self.sh("kubectl --context east -n emojivoto get events --field-selector involvedObject.kind=TrafficSplit")?;

        let end = votes(bot).await?;
        // A restarted vote-bot starts its counters again: its failures
        // before the restart would be lost, so the count would prove nothing.
        let now = self.bot_restarts()?;
        if now != restarts || end.ok < start.ok || end.failed < start.failed {
            bail!(
                "vote-bot restarted during the failovers (pod/restarts {restarts} → {now}): its counts of failed requests are lost"
            );
        }
        figures.failed_requests = (end.failed - start.failed).max(0.0) as u64;
        if figures.failed_requests > 0 {
            // Why they failed, from vote-bot and from web's side.
            self.title("why vote-bot's requests failed");
            for (deploy, container) in [
                ("vote-bot", "vote-bot"),
                ("web", "web"),
                ("web", "tandem-proxy"),
            ] {
                let _ = self.sh(&format!(
                    "kubectl --context east -n emojivoto logs deploy/{deploy} -c {container} --since=10m | grep -iE 'warn|error|fail' | grep -v doughnut | tail -8 || true"
                ));
            }
        }
        figures.doughnut_failures = (end.doughnut - start.doughnut).max(0.0) as u64;
        figures.ok_requests = (end.ok - start.ok).max(0.0) as u64;
        Ok(figures)
    }

    /// Prints vote-bot's counts since `start` (for the audience only: a
    /// slow read is shown, not fatal).
    async fn progress(&self, bot: SocketAddr, start: Votes) {
        match votes(bot).await {
            Ok(now) => println!(
                "  vote-bot so far: {} ok, {} failed, {} :doughnut:",
                now.ok - start.ok,
                now.failed - start.failed,
                now.doughnut - start.doughnut
            ),
            Err(e) => println!("  (vote-bot's counts are not readable now: {e:#})"),
        }
    }

    /// Waits until vote-bot's requests succeed for 5 s in a row before
    /// anything is scaled, so that failures counted later are the
    /// failover's, not an app (or a machine) that was failing already.
    async fn healthy(&self, bot: SocketAddr) -> Result<()> {
        // The counts at the start of the current stretch without failures.
        let mut base = votes(bot).await?;
        let mut since = Instant::now();
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = votes(bot).await?;
            if now.failed > base.failed || now.ok < base.ok {
                (base, since) = (now, Instant::now());
            } else if since.elapsed() >= Duration::from_secs(5) && now.ok > base.ok {
                println!(
                    "  ✓ vote-bot's requests succeed (none failed for 5 s) before the failover"
                );
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!(
                    "vote-bot's requests were failing before any failover ({} failed, {} ok so far): the app is not healthy (an overloaded machine? try a lower --rate)",
                    now.failed,
                    now.ok
                );
            }
        }
    }

    /// Scales emoji in east to `replicas` (0: a failover, 1: a failback),
    /// times until all of emoji's traffic from web moved, and checks the
    /// split's weights followed; the time it took, and where it went.
    async fn move_traffic(
        &self,
        replicas: u32,
        web: SocketAddr,
        east: &kube::Client,
    ) -> Result<(Duration, Milestones)> {
        let (from, to, goal) = match replicas {
            0 => ("emoji-svc", "emoji-svc-west", FAILOVER),
            _ => ("emoji-svc-west", "emoji-svc", FAILBACK),
        };
        let recorder = Recorder::start(east, "emojivoto", goal).await?;
        let scale = Instant::now();
        let took = self.scale_and_time(scale, replicas, web, from, to).await?;
        self.wait_for(
            &format!("weights {}", goal.weights.replace(' ', ", ")),
            Duration::from_secs(30),
            || Ok(self.split_weights()? == goal.weights),
        )
        .await?;
        let steps = recorder.finish(scale);
        println!("    {}", steps.describe(goal));
        Ok((took, steps))
    }

    /// How often vote-bot's container has restarted (its counters with it).
    fn bot_restarts(&self) -> Result<String> {
        let out = self.app_get("east", &["pods", "-l", "app=vote-bot"], "{.items[*].metadata.name}/{.items[*].status.containerStatuses[?(@.name==\"vote-bot\")].restartCount}")?;
        Ok(out.trim().to_string())
    }

    /// Scales emoji in east to `replicas` and polls web's proxy until all
    /// of emoji's traffic goes to `to` instead of `from`; returns the time
    /// from `scale` (just before the `kubectl scale`) to that instant.
    async fn scale_and_time(
        &self,
        scale: Instant,
        replicas: u32,
        web: SocketAddr,
        from: &str,
        to: &str,
    ) -> Result<Duration> {
        let counts = |text: &str| {
            (
                metric_sum(
                    text,
                    "response_total",
                    &[("direction", "outbound"), ("dst_service", from)],
                ),
                metric_sum(
                    text,
                    "response_total",
                    &[("direction", "outbound"), ("dst_service", to)],
                ),
            )
        };
        self.sh(&format!(
            "kubectl --context east -n emojivoto scale deploy emoji --replicas={replicas}"
        ))?;
        let mut polls = Vec::new();
        loop {
            let at = scale.elapsed();
            match http_get(web, "/metrics") {
                Ok(text) => {
                    let (from, to) = counts(&text);
                    polls.push(Poll { at, from, to });
                }
                Err(e) => tracing::debug!("polling web's proxy: {e:#}"),
            }
            if let Some(t) = moved_at(&polls, QUIET) {
                println!(
                    "  ✓ all of emoji's traffic from web reaches {to}, {} ms after the scale",
                    t.as_millis()
                );
                return Ok(t);
            }
            if at > MOVE_TIMEOUT {
                let last = polls.last().map(|p| format!("{p:?}")).unwrap_or_default();
                bail!(
                    "emoji's traffic did not move from {from} to {to} within {}s (last poll of web's proxy at {web}: {last})",
                    MOVE_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    // === viz stat ===

    /// Polls `viz stat -n emojivoto svc` until the row `name` has more
    /// traffic than the row `other` (its window still holds what came
    /// before), then prints the table as a user would see it; returns the
    /// RPS of `name`.
    async fn stat_until(&self, name: &str, other: &str) -> Result<f64> {
        let json =
            format!("tandem --context east viz stat -n emojivoto svc -t {STAT_WINDOW} -o json");
        let mut rps = None;
        self.wait_for(
            &format!(
                "Prometheus to show more traffic on {name} than on {other} (it scrapes every 10 s)"
            ),
            Duration::from_secs(90),
            || {
                let out = self.quiet(&json)?;
                rps = stat_rps(&out, name)?;
                let theirs = stat_rps(&out, other)?.unwrap_or(0.0);
                Ok(rps.is_some_and(|r| r > theirs))
            },
        )
        .await?;
        self.sh(&format!(
            "tandem --context east viz stat -n emojivoto svc -t {STAT_WINDOW}"
        ))?;
        rps.context("viz stat showed no traffic")
    }

    // === pods ===

    /// The address of the first pod in east's emojivoto matching `selector`.
    fn pod_addr(&self, selector: &str, port: u16) -> Result<SocketAddr> {
        let ip = self.app_get(
            "east",
            &["pods", "-l", selector],
            "{.items[0].status.podIP}",
        )?;
        let ip: std::net::IpAddr = ip
            .trim()
            .parse()
            .with_context(|| format!("the pod IP of {selector}: {ip:?}"))?;
        Ok(SocketAddr::new(ip, port))
    }
}

/// vote-bot's counters now. Its pod's proxy may be restarting (a liveness
/// probe on a busy machine), so a failed read is retried for 60 s.
async fn votes(bot: SocketAddr) -> Result<Votes> {
    let start = Instant::now();
    let text = loop {
        match http_get(bot, "/metrics") {
            Ok(text) => break text,
            Err(e) if start.elapsed() > Duration::from_secs(60) => {
                return Err(e.context("reading vote-bot's /metrics"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let sum = |result| metric_sum(&text, "votebot_requests_total", &[("result", result)]);
    Ok(Votes {
        ok: sum("ok"),
        failed: sum("failed"),
        doughnut: sum("doughnut"),
    })
}

//! Fixtures of the tests of the emojivoto-compatible app on real nodes.
//!
//! - [`with_bot_rate`] and [`without_bot`] shape the app's manifest (the
//!   text of `tandem_emojivoto::manifest`, so that the harness does not
//!   depend on the app's crate).
//! - [`install`] meshes the manifest with the real `tandem inject`, applies
//!   it in a cluster and waits until every Deployment rolled out meshed.
//! - [`lb_address`] waits for the address the testbed's LoadBalancer
//!   controller gave a Service (reachable from the host).
//! - [`install_viz`] installs viz (Prometheus) as the workshop does.
//! - [`BotCounts`] reads vote-bot's own counters from inside its pod.
//! - [`LogsOnFailure`] prints the app's logs when a test fails.

use std::{net::IpAddr, time::Duration};

use crate::{
    Env, TestNamespace,
    dataplane::{self, PodNetns, ROUTING_IDENTITY, metric_sum},
    eventually, run,
};

/// The app's Deployments, and the `app` label of their pods (emojivoto's
/// pods are labelled `app: <x>-svc`, not by the Deployment's name).
pub const DEPLOYMENTS: [(&str, &str); 4] = [
    ("emoji", "app=emoji-svc"),
    ("voting", "app=voting-svc"),
    ("web", "app=web-svc"),
    ("vote-bot", "app=vote-bot"),
];

/// vote-bot's metrics port (`PROM_PORT`).
pub const BOT_PROM_PORT: u16 = 8801;

// === manifest ===

/// `manifest` with vote-bot at `rate` ticks a second (`REQUEST_RATE`; a
/// tick is `GET /api/list` and one vote).
pub fn with_bot_rate(manifest: &str, rate: u32) -> String {
    let from = "- name: REQUEST_RATE\n          value: \"1\"";
    assert!(
        manifest.contains(from),
        "the app's manifest sets no REQUEST_RATE of 1"
    );
    manifest.replace(
        from,
        &format!("- name: REQUEST_RATE\n          value: \"{rate}\""),
    )
}

/// `manifest` without vote-bot's Deployment: only the test votes.
pub fn without_bot(manifest: &str) -> String {
    manifest
        .split("\n---\n")
        .filter(|doc| !(doc.contains("kind: Deployment\n") && doc.contains("\n  name: vote-bot\n")))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

// === install ===

/// Injects `manifest` with `tandem inject`, applies it in `cluster` and
/// waits until its Deployments rolled out, each pod with a proxy.
pub fn install(env: &Env, ns: &TestNamespace, cluster: &str, manifest: &str) {
    ns.apply(
        cluster,
        &dataplane::inject(env, cluster, manifest, ROUTING_IDENTITY),
    );
    for (deploy, selector) in deployments(manifest) {
        dataplane::wait_rollout(ns, cluster, deploy);
        let containers = pod_of(ns, cluster, selector, ".spec.containers[*].name");
        assert!(
            containers.contains("tandem-proxy"),
            "{deploy} in {cluster} is not meshed: containers {containers:?}"
        );
    }
}

/// The app's Deployments that `manifest` has.
pub fn deployments(manifest: &str) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    DEPLOYMENTS
        .into_iter()
        .filter(move |(d, _)| manifest.contains(&format!("\n  name: {d}\n")))
}

/// A field (`.metadata.name`) of the first pod matching `selector`.
pub fn pod_of(ns: &TestNamespace, cluster: &str, selector: &str, path: &str) -> String {
    ns.kubectl(
        cluster,
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

/// The network namespace of the first pod matching `selector`.
pub fn netns_of(env: &Env, ns: &TestNamespace, cluster: &str, selector: &str) -> PodNetns {
    let pod = pod_of(ns, cluster, selector, ".metadata.name");
    dataplane::pod_netns(env, ns, cluster, pod.trim())
}

/// The address the testbed's LoadBalancer controller gave Service `svc`
/// in `cluster`, once it has one.
pub async fn lb_address(ns: &TestNamespace, cluster: &str, svc: &str) -> IpAddr {
    eventually(
        &format!("a LoadBalancer address for {svc} in {cluster}"),
        Duration::from_secs(60),
        || {
            let ip = ns.kubectl(
                cluster,
                &[
                    "get",
                    "svc",
                    svc,
                    "-o",
                    "jsonpath={.status.loadBalancer.ingress[0].ip}",
                ],
            );
            async move {
                ip.trim()
                    .parse::<IpAddr>()
                    .map_err(|e| format!("{ip:?}: {e}"))
            }
        },
    )
    .await
}

/// `tandem viz install | kubectl apply -f -` in `cluster`, then waits
/// until Prometheus is Ready (on failure, its pods and logs are printed).
pub fn install_viz(env: &Env, cluster: &str) {
    env.apply_tandem(cluster, &["viz", "install"]);
    wait_prometheus(env, cluster);
}

/// Waits for viz's Prometheus to roll out in `cluster`; if it does not,
/// fails with its pods described and its last log lines.
pub fn wait_prometheus(env: &Env, cluster: &str) {
    let rollout = run(env.kubectl(cluster).args([
        "-n",
        VIZ_NS,
        "rollout",
        "status",
        "deploy/prometheus",
        "--timeout=120s",
    ]));
    if !rollout.status.success() {
        let pods = run(env
            .kubectl(cluster)
            .args(["-n", VIZ_NS, "describe", "pods"]));
        let logs = run(env.kubectl(cluster).args([
            "-n",
            VIZ_NS,
            "logs",
            "deploy/prometheus",
            "--tail=40",
        ]));
        panic!(
            "Prometheus in {cluster} is not Ready: {}\n{}\n{}",
            String::from_utf8_lossy(&rollout.stderr),
            String::from_utf8_lossy(&pods.stdout),
            String::from_utf8_lossy(&logs.stdout)
        );
    }
}

/// viz's namespace.
pub const VIZ_NS: &str = "tandem-viz";

// === vote-bot's counters ===

/// vote-bot's `votebot_requests_total`, by path and result.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BotCounts {
    pub list_ok: f64,
    pub list_failed: f64,
    pub vote_ok: f64,
    /// The deliberate 500s of `:doughnut:` votes.
    pub vote_doughnut: f64,
    pub vote_failed: f64,
}

impl BotCounts {
    /// Reads vote-bot's `/metrics` from inside its pod.
    pub fn read(bot: &PodNetns) -> Result<Self, String> {
        let m = bot.get(([127, 0, 0, 1], BOT_PROM_PORT).into(), "/metrics")?;
        if m.status != 200 {
            return Err(format!("vote-bot's /metrics: {} {}", m.status, m.body));
        }
        Ok(Self::parse(&m.body))
    }

    /// The counters of a Prometheus text exposition.
    pub fn parse(text: &str) -> Self {
        let sum = |path, result| {
            metric_sum(
                text,
                "votebot_requests_total",
                &[("path", path), ("result", result)],
            )
        };
        Self {
            list_ok: sum("/api/list", "ok"),
            list_failed: sum("/api/list", "failed"),
            vote_ok: sum("/api/vote", "ok"),
            vote_doughnut: sum("/api/vote", "doughnut"),
            vote_failed: sum("/api/vote", "failed"),
        }
    }

    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            list_ok: self.list_ok - earlier.list_ok,
            list_failed: self.list_failed - earlier.list_failed,
            vote_ok: self.vote_ok - earlier.vote_ok,
            vote_doughnut: self.vote_doughnut - earlier.vote_doughnut,
            vote_failed: self.vote_failed - earlier.vote_failed,
        }
    }

    /// Votes, whatever their result.
    pub fn votes(&self) -> f64 {
        self.vote_ok + self.vote_doughnut + self.vote_failed
    }

    /// Requests to web, whatever their result.
    pub fn requests(&self) -> f64 {
        self.list_ok + self.list_failed + self.votes()
    }

    /// The share of web's requests that succeeded.
    pub fn web_success(&self) -> f64 {
        (self.list_ok + self.vote_ok) / self.requests()
    }

    /// The share of votes that succeeded (voting's success).
    pub fn vote_success(&self) -> f64 {
        self.vote_ok / self.votes()
    }
}

// === logs ===

/// Prints the app's logs in `clusters` if the test fails (the namespace's
/// objects are dumped by [`TestNamespace`]).
pub struct LogsOnFailure<'a> {
    pub env: &'a Env,
    pub ns: &'a str,
    pub clusters: &'a [&'a str],
}

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for cluster in self.clusters {
            for (deploy, _) in DEPLOYMENTS {
                let out = run(self.env.kubectl(cluster).args([
                    "-n",
                    self.ns,
                    "logs",
                    &format!("deploy/{deploy}"),
                    "--all-containers",
                    "--tail=50",
                ]));
                eprintln!(
                    "===== logs of {deploy} in {cluster} =====\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// `tandem --context CLUSTER viz stat ARGS... -t 30s EXTRA...`.
fn viz_stat(env: &Env, cluster: &str, args: &[&str], extra: &[&str]) -> Result<String, String> {
    let out = run(env
        .tandem()
        .args(["--context", cluster, "viz", "stat"])
        .args(args)
        .args(["-t", "30s"])
        .args(extra));
    if !out.status.success() {
        return Err(format!(
            "viz stat {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `tandem --context CLUSTER viz stat ARGS... -t 30s -o json` (ARGS: the
/// namespace, the type and any flags, e.g. `["-n", NS, "svc", "--from",
/// "deploy/web"]`): its rows, or why there are none (the command failed,
/// or printed no JSON array).
pub fn viz_stat_json(
    env: &Env,
    cluster: &str,
    args: &[&str],
) -> Result<Vec<serde_json::Value>, String> {
    let out = viz_stat(env, cluster, args, &["-o", "json"])?;
    serde_json::from_str(&out)
        .map_err(|e| format!("viz stat -o json printed no JSON array ({e}): {out}"))
}

/// `viz stat`'s table, as people read it.
#[derive(Clone, Debug)]
pub struct StatTable {
    pub text: String,
}

impl StatTable {
    /// `tandem --context CLUSTER viz stat ARGS... -t 30s` (ARGS may add
    /// `-o wide`), or why it failed.
    pub fn get(env: &Env, cluster: &str, args: &[&str]) -> Result<Self, String> {
        viz_stat(env, cluster, args, &[]).map(|text| Self { text })
    }

    /// The column names.
    pub fn header(&self) -> Vec<&str> {
        self.text
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect()
    }

    /// The cells of the first row whose first cell starts with `prefix`.
    pub fn row(&self, prefix: &str) -> Option<Vec<&str>> {
        self.text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cells| cells.first().is_some_and(|c| c.starts_with(prefix)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "kind: Deployment\nmetadata:\n  name: web\nspec:\n  x: 1\n---\nkind: Deployment\nmetadata:\n  name: vote-bot\nspec:\n        - name: REQUEST_RATE\n          value: \"1\"\n---\nkind: Service\nmetadata:\n  name: web-svc\n";

    #[test]
    fn the_bot_is_set_or_left_out() {
        let fast = with_bot_rate(MANIFEST, 5);
        assert!(
            fast.contains("REQUEST_RATE\n          value: \"5\""),
            "{fast}"
        );
        let names: Vec<_> = deployments(&fast).map(|(d, _)| d).collect();
        assert_eq!(names, ["web", "vote-bot"]);
        let quiet = without_bot(MANIFEST);
        assert!(!quiet.contains("vote-bot") && quiet.contains("name: web-svc"));
        let names: Vec<_> = deployments(&quiet).map(|(d, _)| d).collect();
        assert_eq!(names, ["web"]);
    }

    #[test]
    fn the_bots_counters_give_the_expected_success() {
        let text = "votebot_requests_total{path=\"/api/list\",result=\"ok\"} 100\n\
                    votebot_requests_total{path=\"/api/vote\",result=\"ok\"} 85\n\
                    votebot_requests_total{path=\"/api/vote\",result=\"doughnut\"} 15\n\
                    votebot_requests_total{path=\"/api/vote\",result=\"failed\"} 0\n";
        let now = BotCounts::parse(text);
        let d = now.since(&BotCounts::default());
        assert_eq!(d.requests(), 200.0);
        assert_eq!(d.vote_success(), 0.85);
        assert_eq!(d.web_success(), 0.925);
    }
}

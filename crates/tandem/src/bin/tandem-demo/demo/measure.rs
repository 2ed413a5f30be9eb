//! The demo's figures, decided by pure functions: sums over Prometheus'
//! text format, the instant a proxy's traffic has moved from one service
//! to another, percentiles, and what `viz stat -o json` shows. Plus the one
//! impure helper they feed on: a plain HTTP GET of a pod's `/metrics`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result, bail};

// === Prometheus text ===

/// The sum of every series of `name` whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let matches = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            matches.then(|| value.trim().parse::<f64>().ok()).flatten()
        })
        .sum()
}

// === when traffic has moved ===

/// One poll of a client proxy: how many responses it has had from the
/// service traffic leaves (`from`) and the one it goes to (`to`), `at` a
/// time since the `kubectl scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Poll {
    pub at: Duration,
    pub from: f64,
    pub to: f64,
}

/// The first instant after which `from` stops growing while `to` grows:
/// the time of the first poll showing `from`'s final count, provided `to`
/// grew since then and `from` has been still for at least `quiet` (so that
/// the answer cannot change with more polls). `None` until then.
pub fn moved_at(polls: &[Poll], quiet: Duration) -> Option<Duration> {
    let last = polls.last()?;
    // The first poll of the final run of equal `from` counts.
    let start = polls
        .iter()
        .rposition(|p| p.from != last.from)
        .map_or(0, |i| i + 1);
    let first = polls[start];
    let settled = last.at.saturating_sub(first.at) >= quiet && last.to > first.to;
    settled.then_some(first.at)
}

// === figures ===

/// p50, p99 and max of a set of durations (nearest rank).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Spread {
    pub fn of(times: &[Duration]) -> Spread {
        let mut sorted = times.to_vec();
        sorted.sort();
        let rank = |q: f64| -> Duration {
            if sorted.is_empty() {
                return Duration::ZERO;
            }
            let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[i - 1]
        };
        Spread {
            p50: rank(0.50),
            p99: rank(0.99),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }
}

/// The RPS `viz stat -o json` shows for the row `name`, if it has traffic.
pub fn stat_rps(json: &str, name: &str) -> Result<Option<f64>> {
    let rows: serde_json::Value =
        serde_json::from_str(json).context("viz stat -o json is not JSON")?;
    let Some(rows) = rows.as_array() else {
        bail!("viz stat -o json is not an array: {json}");
    };
    Ok(rows
        .iter()
        .find(|r| r["name"] == name)
        .and_then(|r| r["rps"].as_f64())
        .filter(|rps| *rps > 0.0))
}

// === fetching /metrics ===

/// GETs `path` from `addr` over plain HTTP/1.1 and returns the body, with
/// a timeout that a busy machine's proxies meet.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading {addr}{path}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP response from {addr}{path}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{addr}{path}: {}", head.lines().next().unwrap_or_default());
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

/// The body of a chunked response.
fn dechunk(body: &str) -> String {
    let mut body = body.as_bytes();
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let rest = &body[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        body = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "measure_tests.rs"]
mod tests;

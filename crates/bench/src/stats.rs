//! Pure arithmetic over what the benchmark measured: percentiles of samples,
//! quantiles of a Prometheus histogram, and /proc memory figures.

use std::time::Duration;

use serde_json::{Value, json};

/// Percentiles of a set of durations, in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// `None` for no samples.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Some(Self {
            n: ms.len(),
            p50: nearest_rank(&ms, 0.50),
            p90: nearest_rank(&ms, 0.90),
            p99: nearest_rank(&ms, 0.99),
            max: ms[ms.len() - 1],
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "n": self.n,
            "p50_ms": round(self.p50),
            "p90_ms": round(self.p90),
            "p99_ms": round(self.p99),
            "max_ms": round(self.max),
            "mean_ms": round(self.mean),
        })
    }
}

/// The nearest-rank percentile of sorted, non-empty samples.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

// === histogram ===

/// A cumulative Prometheus histogram: `(upper bound, count)` in bound order,
/// the last bound being +Inf, with its sum and count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// Reads histogram `name` from Prometheus/OpenMetrics text; `None` if absent.
    pub fn parse(text: &str, name: &str) -> Option<Self> {
        let mut h = Histogram::default();
        let mut found = false;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            if let Some(labels) = series.strip_prefix(&format!("{name}_bucket{{")) {
                let Some(le) = label(labels, "le") else {
                    continue;
                };
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    match le.parse() {
                        Ok(b) => b,
                        Err(_) => continue,
                    }
                };
                h.buckets.push((bound, value));
                found = true;
            } else if series == format!("{name}_sum") {
                h.sum = value;
                found = true;
            } else if series == format!("{name}_count") {
                h.count = value;
                found = true;
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        found.then_some(h)
    }

    /// What was observed between `before` and `self`.
    pub fn since(&self, before: &Histogram) -> Histogram {
        let old = |bound: f64| {
            before
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(b, c)| (*b, (c - old(*b)).max(0.0)))
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The q-quantile, interpolated within its bucket as Prometheus'
    /// `histogram_quantile` does; `None` when nothing was observed.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, cum) in &self.buckets {
            if cum >= rank {
                if bound.is_infinite() {
                    // Beyond the largest finite bound: that bound is all we know.
                    return Some(lower.0);
                }
                let in_bucket = cum - lower.1;
                let frac = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * frac);
            }
            lower = (bound, cum);
        }
        Some(lower.0)
    }

    pub fn to_json_ms(&self) -> Value {
        let q = |q: f64| self.quantile(q).map(|s| round(s * 1e3));
        json!({
            "n": self.count,
            "mean_ms": (self.count > 0.0).then(|| round(self.sum / self.count * 1e3)),
            "p50_ms": q(0.50),
            "p90_ms": q(0.90),
            "p99_ms": q(0.99),
        })
    }
}

/// The value of label `key` in `a="x",b="y"}`.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// Sums every sample of counter `name` (all label sets), 0 when absent.
pub fn counter_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// Sums the samples of metric `name` whose labels include every
/// `key="value"` of `labels`; 0 when there are none.
pub fn series_total(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (series, value) = rest.rsplit_once(' ')?;
            let matches = match series.strip_prefix('{') {
                Some(set) => labels.iter().all(|(k, v)| label(set, k) == Some(*v)),
                None => series.is_empty() && labels.is_empty(),
            };
            matches.then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

// === /proc ===

/// A `kB` field of a /proc/PID/status text (`VmRSS:`), in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()
}

/// `VmRSS` and `VmHWM` of a /proc/PID/status text, in KiB.
pub fn memory_kib(status: &str) -> Option<(u64, u64)> {
    Some((status_kib(status, "VmRSS:")?, status_kib(status, "VmHWM:")?))
}

/// `RssAnon` and `RssFile` of a /proc/PID/status text, in KiB: the heap and
/// stacks, and the pages of mapped files (the binary's code and data).
pub fn resident_kinds_kib(status: &str) -> Option<(u64, u64)> {
    Some((
        status_kib(status, "RssAnon:")?,
        status_kib(status, "RssFile:")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(Summary::of(&[]), None);
        let one = Summary::of(&ms(&[7])).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        let hundred: Vec<u64> = (1..=100).rev().collect();
        let s = Summary::of(&ms(&hundred)).unwrap();
        assert_eq!(
            (s.n, s.p50, s.p90, s.p99, s.max),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(s.mean, 50.5);
        // 200 samples: p99 is the 198th, so two outliers do not move it.
        let mut two_hundred: Vec<u64> = vec![10; 198];
        two_hundred.extend([5000, 9000]);
        let s = Summary::of(&ms(&two_hundred)).unwrap();
        assert_eq!((s.p99, s.max), (10.0, 9000.0));
    }

    const METRICS: &str = "\
# HELP tandem_failover_reaction_seconds Time from an endpoint change observed to the weights written.
# TYPE tandem_failover_reaction_seconds histogram
tandem_failover_reaction_seconds_sum 0.5
tandem_failover_reaction_seconds_count 10
tandem_failover_reaction_seconds_bucket{le=\"0.001\"} 0
tandem_failover_reaction_seconds_bucket{le=\"0.002\"} 0
tandem_failover_reaction_seconds_bucket{le=\"0.004\"} 2
tandem_failover_reaction_seconds_bucket{le=\"0.008\"} 8
tandem_failover_reaction_seconds_bucket{le=\"+Inf\"} 10
# TYPE tandem_failover_write_errors counter
tandem_failover_write_errors_total{kind=\"TrafficSplit\",reason=\"conflict\"} 2
tandem_failover_write_errors_total{kind=\"TrafficSplit\",reason=\"api\"} 1
tandem_failover_write_errors_total_other 9
";

    #[test]
    fn histograms_parse_and_interpolate() {
        let h = Histogram::parse(METRICS, "tandem_failover_reaction_seconds").unwrap();
        assert_eq!(h.buckets.len(), 5);
        assert_eq!((h.sum, h.count), (0.5, 10.0));
        // Rank 5 of 10 lies in (0.004, 0.008], half-way through its 6 samples.
        assert!((h.quantile(0.5).unwrap() - 0.006).abs() < 1e-12);
        // Rank 1 lies in (0.002, 0.004].
        assert!((h.quantile(0.1).unwrap() - 0.003).abs() < 1e-12);
        // In the +Inf bucket: the largest finite bound.
        assert_eq!(h.quantile(0.99), Some(0.008));
        assert!(Histogram::parse(METRICS, "nope").is_none());
    }

    #[test]
    fn histogram_deltas_subtract_bucket_by_bucket() {
        let after = Histogram::parse(METRICS, "tandem_failover_reaction_seconds").unwrap();
        let before = Histogram {
            buckets: vec![(0.004, 2.0), (0.008, 2.0), (f64::INFINITY, 2.0)],
            sum: 0.01,
            count: 2.0,
        };
        let d = after.since(&before);
        assert_eq!(d.count, 8.0);
        assert_eq!(d.buckets.last(), Some(&(f64::INFINITY, 8.0)));
        assert_eq!(d.buckets[2], (0.004, 0.0));
        assert_eq!(Histogram::default().since(&before).quantile(0.5), None);
    }

    #[test]
    fn counters_sum_over_label_sets_only_of_their_name() {
        assert_eq!(
            counter_total(METRICS, "tandem_failover_write_errors_total"),
            3.0
        );
        assert_eq!(counter_total(METRICS, "absent_total"), 0.0);
    }

    #[test]
    fn series_sum_only_the_matching_label_sets() {
        let text = "\
# TYPE tandem_mirror_gateway_probes counter
tandem_mirror_gateway_probes_total{cluster=\"west\",successful=\"true\"} 4
tandem_mirror_gateway_probes_total{cluster=\"west\",successful=\"false\"} 1
tandem_mirror_gateway_probes_total{cluster=\"east\",successful=\"true\"} 2
tandem_mirror_mirror_writes_total 7
tandem_mirror_mirror_writes_total_other 9
";
        let probes = "tandem_mirror_gateway_probes_total";
        assert_eq!(
            series_total(text, probes, &[("cluster", "west"), ("successful", "true")]),
            4.0
        );
        assert_eq!(series_total(text, probes, &[("successful", "true")]), 6.0);
        assert_eq!(series_total(text, probes, &[]), 7.0);
        assert_eq!(
            series_total(text, "tandem_mirror_mirror_writes_total", &[]),
            7.0
        );
        assert_eq!(series_total(text, probes, &[("cluster", "north")]), 0.0);
    }

    #[test]
    fn memory_reads_from_proc_status() {
        let status = "Name:\ttandem\nVmPeak:\t  900 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\n";
        assert_eq!(memory_kib(status), Some((30720, 40960)));
        assert_eq!(memory_kib("Name:\tx\n"), None);
        assert_eq!(resident_kinds_kib(status), None);
        let status = format!("{status}RssAnon:\t   20480 kB\nRssFile:\t    9216 kB\n");
        assert_eq!(resident_kinds_kib(&status), Some((20480, 9216)));
    }
}

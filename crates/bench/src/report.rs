//! What every benchmark's report shares: progress lines, the machine it ran
//! on, memory readings, and how percentiles and targets are written.

use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    controller::Controller,
    stats::{self, Summary},
};

/// The pause before a memory reading, so that the process is at rest.
pub(crate) const SETTLE: Duration = Duration::from_secs(5);

/// Progress lines on stderr, timed from the start.
pub(crate) struct Progress {
    start: Instant,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    pub(crate) fn say(&self, msg: impl std::fmt::Display) {
        eprintln!("[{:6.1}s] {msg}", self.start.elapsed().as_secs_f64());
    }
}

/// The machine a benchmark ran on, from /proc.
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) mem_total_mib: u64,
    pub(crate) load: String,
}

impl Machine {
    pub(crate) fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        let load = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            mem_total_mib,
            load,
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} CPUs ({}), {:.1} GiB, load average {} (anything else running skews the figures)",
            self.cpus,
            self.cpu_model,
            self.mem_total_mib as f64 / 1024.0,
            self.load
        )
    }

    /// The machine as the JSON summaries give it, with the load average
    /// read again at the end.
    pub(crate) fn to_json(&self, load_after: &str) -> Value {
        json!({
            "cpus": self.cpus,
            "cpu_model": self.cpu_model,
            "mem_total_mib": self.mem_total_mib,
            "load_before": self.load,
            "load_after": load_after,
        })
    }
}

/// Kibibytes in mebibytes.
pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A process's resident memory, now and at its peak, and now by kind:
/// anonymous (heap, stacks) and file-backed (the binary's pages).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rss {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
    /// `(RssAnon, RssFile)`, where the kernel tells them apart.
    pub(crate) kinds_kib: Option<(u64, u64)>,
}

impl Rss {
    pub(crate) fn read(process: &Controller) -> Result<Self> {
        let status = process.proc_status()?;
        let (rss_kib, hwm_kib) = stats::memory_kib(&status)
            .ok_or_else(|| anyhow!("no VmRSS/VmHWM in /proc/{}/status", process.pid()))?;
        Ok(Self {
            rss_kib,
            hwm_kib,
            kinds_kib: stats::resident_kinds_kib(&status),
        })
    }

    /// `VmRSS 12.3 MiB (VmHWM 14.0 MiB; anonymous 9.0, file-backed 3.3 MiB`,
    /// left open for more.
    pub(crate) fn describe_open(&self) -> String {
        let mut s = format!(
            "VmRSS {:.1} MiB (VmHWM {:.1} MiB",
            mib(self.rss_kib),
            mib(self.hwm_kib)
        );
        if let Some((anon, file)) = self.kinds_kib {
            s.push_str(&format!(
                "; anonymous {:.1}, file-backed {:.1} MiB",
                mib(anon),
                mib(file)
            ));
        }
        s
    }

    pub(crate) fn describe(&self) -> String {
        format!("{})", self.describe_open())
    }

    /// Adds the reading's fields to a JSON object.
    pub(crate) fn add_to(&self, object: &mut Value) {
        object["vm_rss_kib"] = self.rss_kib.into();
        object["vm_hwm_kib"] = self.hwm_kib.into();
        object["vm_rss_mib"] = stats::round(mib(self.rss_kib)).into();
        object["vm_hwm_mib"] = stats::round(mib(self.hwm_kib)).into();
        if let Some((anon, file)) = self.kinds_kib {
            object["rss_anon_kib"] = anon.into();
            object["rss_file_kib"] = file.into();
        }
    }
}

/// Percentiles in a line of the text report.
pub(crate) fn describe(s: Option<Summary>) -> String {
    match s {
        Some(s) => format!(
            "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms (n {})",
            s.p50, s.p90, s.p99, s.max, s.mean, s.n
        ),
        None => "no samples".into(),
    }
}

/// Percentiles of `samples` in the JSON summary; `null` for none.
pub(crate) fn summary(samples: &[Duration]) -> Value {
    Summary::of(samples).map_or(Value::Null, |s| s.to_json())
}

/// A target's verdict in the text report.
pub(crate) fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    }
}

/// Seconds since the Unix epoch, for the JSON summary.
pub(crate) fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds, to the millisecond.
pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_verdicts_read_as_the_reports_print_them() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(describe(None), "no samples");
        assert_eq!(
            describe(Summary::of(&ms(&[10, 20, 30, 40]))),
            "p50 20.0 ms, p90 40.0 ms, p99 40.0 ms, max 40.0 ms, mean 25.0 ms (n 4)"
        );
        assert_eq!(summary(&[]), Value::Null);
        assert_eq!(summary(&ms(&[5]))["p99_ms"], 5.0);
        assert_eq!(
            [verdict(Some(true)), verdict(Some(false)), verdict(None)],
            ["met", "MISSED", "not measured"]
        );
        assert_eq!(secs(Duration::from_micros(1_234_567)), 1.235);
    }

    #[test]
    fn a_memory_reading_adds_its_fields_in_kib_and_mib() {
        let r = Rss {
            rss_kib: 30720,
            hwm_kib: 40960,
            kinds_kib: None,
        };
        let mut v = json!({"splits": 3});
        r.add_to(&mut v);
        assert_eq!(v["splits"], 3);
        assert_eq!(v["vm_rss_kib"], 30720);
        assert_eq!(v["vm_hwm_mib"], 40.0);
        assert!(v.get("rss_file_kib").is_none());
        assert_eq!(r.describe(), "VmRSS 30.0 MiB (VmHWM 40.0 MiB)");
        let r = Rss {
            kinds_kib: Some((20480, 10240)),
            ..r
        };
        r.add_to(&mut v);
        assert_eq!(
            (v["rss_anon_kib"].clone(), v["rss_file_kib"].clone()),
            (json!(20480), json!(10240))
        );
        assert_eq!(
            r.describe(),
            "VmRSS 30.0 MiB (VmHWM 40.0 MiB; anonymous 20.0, file-backed 10.0 MiB)"
        );
    }
}

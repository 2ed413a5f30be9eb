//! `viz stat`'s output in Linkerd's formats (`viz/cmd/stat.go`): the table
//! (`-o table`, `-o wide`) and JSON (`-o json`). Pure.

use serde::Serialize;

use crate::{
    query::Window,
    stats::{Row, Traffic},
};

/// What `viz stat` prints when there are no rows, on stderr.
pub const NO_TRAFFIC: &str = "No traffic found.";

/// Columns between cells; Linkerd's tabwriter padding.
const PADDING: usize = 3;

/// How the table looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// Prepend NAMESPACE (`-A`).
    pub all_namespaces: bool,
    /// Append the TCP byte rates (`-o wide`).
    pub wide: bool,
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

/// The cells of one row, after NAME (and NAMESPACE).
fn cells(row: &Row, window: Window, wide: bool) -> Vec<String> {
    let meshed = match row.meshed {
        Some(m) => format!("{}/{}", m.meshed, m.total),
        None => "-".into(),
    };
    let mut out = vec![meshed];
    let t: Option<&Traffic> = row.traffic.as_ref();
    let requests = t.filter(|t| t.total() > 0.0);
    out.push(or_dash(
        requests
            .and_then(Traffic::success_rate)
            .map(|r| format!("{:.2}%", r * 100.0)),
    ));
    out.push(or_dash(
        requests.map(|t| format!("{:.1}rps", t.total() / window.seconds())),
    ));
    for i in 0..3 {
        out.push(or_dash(
            requests
                .and_then(|t| t.latency_ms[i])
                .map(|ms| format!("{}ms", ms.max(0.0) as u64)),
        ));
    }
    out.push(or_dash(
        t.and_then(|t| t.tcp_connections)
            .map(|c| format!("{}", c.max(0.0).round() as u64)),
    ));
    if wide {
        for v in [
            t.and_then(|t| t.read_bytes_per_sec),
            t.and_then(|t| t.write_bytes_per_sec),
        ] {
            out.push(or_dash(v.map(|b| format!("{:.1}B/s", b.max(0.0)))));
        }
    }
    out
}

/// The table: NAMESPACE and NAME left-aligned, the figures right-aligned,
/// three spaces between columns, as Linkerd prints it. No rows gives an
/// empty string (the caller prints [`NO_TRAFFIC`] on stderr).
pub fn table(rows: &[Row], window: Window, o: TableOptions) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut header: Vec<&str> = vec![];
    if o.all_namespaces {
        header.push("NAMESPACE");
    }
    header.extend([
        "NAME",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TCP_CONN",
    ]);
    if o.wide {
        header.extend(["READ_BYTES/SEC", "WRITE_BYTES/SEC"]);
    }
    let left = if o.all_namespaces { 2 } else { 1 };
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let mut line = vec![];
        if o.all_namespaces {
            line.push(row.key.namespace.clone());
        }
        line.push(row.key.name.clone());
        line.extend(cells(row, window, o.wide));
        lines.push(line);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i < left {
                if i > 0 {
                    text.push_str(&" ".repeat(PADDING));
                }
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str(&" ".repeat(PADDING + pad));
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// One row of `-o json`, with Linkerd's field names.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonRow {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meshed: Option<String>,
    /// success / total, 0 to 1.
    pub success: Option<f64>,
    pub rps: Option<f64>,
    pub latency_ms_p50: Option<u64>,
    pub latency_ms_p95: Option<u64>,
    pub latency_ms_p99: Option<u64>,
    pub tcp_open_connections: Option<u64>,
}

/// The rows as Linkerd's JSON objects.
pub fn json_rows(rows: &[Row], window: Window) -> Vec<JsonRow> {
    rows.iter()
        .map(|row| {
            let t = row.traffic.as_ref();
            let requests = t.filter(|t| t.total() > 0.0);
            let ms = |i: usize| {
                requests
                    .and_then(|t| t.latency_ms[i])
                    .map(|v| v.max(0.0) as u64)
            };
            JsonRow {
                namespace: row.key.namespace.clone(),
                kind: row.kind.name().into(),
                name: row.key.name.clone(),
                meshed: row.meshed.map(|m| format!("{}/{}", m.meshed, m.total)),
                success: requests.and_then(Traffic::success_rate),
                rps: requests.map(|t| t.total() / window.seconds()),
                latency_ms_p50: ms(0),
                latency_ms_p95: ms(1),
                latency_ms_p99: ms(2),
                tcp_open_connections: t
                    .and_then(|t| t.tcp_connections)
                    .map(|c| c.max(0.0).round() as u64),
            }
        })
        .collect()
}

/// `-o json`: a pretty-printed array, as Linkerd prints it.
pub fn json(rows: &[Row], window: Window) -> String {
    let mut s =
        serde_json::to_string_pretty(&json_rows(rows, window)).unwrap_or_else(|_| "[]".into());
    s.push('\n');
    s
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;

//! `viz stat`'s output in Linkerd's formats (`viz/cmd/stat.go`): the table
//! (`-o table`, `-o wide`) and JSON (`-o json`). Pure.

use serde::Serialize;

use crate::{
    query::{Kind, Window},
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

/// The traffic of a row that had requests: Linkerd prints every figure of
/// a row without requests as `-`, TCP_CONN too.
fn requests(row: &Row) -> Option<&Traffic> {
    row.traffic.as_ref().filter(|t| t.total() > 0.0)
}

/// Whether rows of this kind show TCP_CONN (and, wide, the byte rates):
/// all but `ts`, as Linkerd's `showTCPConns`.
fn shows_tcp(kind: Kind) -> bool {
    kind != Kind::TrafficSplit
}

/// Latency `i` (p50, p95, p99) in whole ms, as Linkerd prints it.
fn latency_ms(t: &Traffic, i: usize) -> Option<u64> {
    t.latency_ms[i].map(|ms| ms.max(0.0) as u64)
}

/// The TCP figures of a row with requests, as Linkerd prints them: what
/// Prometheus did not answer is 0.
struct Tcp {
    connections: u64,
    read_bytes_per_sec: f64,
    write_bytes_per_sec: f64,
}

impl Tcp {
    fn of(t: &Traffic) -> Self {
        let rate = |v: Option<f64>| v.unwrap_or(0.0).max(0.0);
        Self {
            connections: t.tcp_connections.unwrap_or(0.0).max(0.0).round() as u64,
            read_bytes_per_sec: rate(t.read_bytes_per_sec),
            write_bytes_per_sec: rate(t.write_bytes_per_sec),
        }
    }
}

/// A column: its header, and whether its cells are left-aligned.
struct Column {
    header: &'static str,
    left: bool,
}

const fn col(header: &'static str, left: bool) -> Column {
    Column { header, left }
}

/// The columns of a table of `kind`, as Linkerd's `printSingleStatTable`.
fn columns(kind: Kind, o: TableOptions) -> Vec<Column> {
    let mut c = vec![];
    if o.all_namespaces {
        c.push(col("NAMESPACE", true));
    }
    c.push(col("NAME", true));
    match kind {
        Kind::Pod => c.extend([col("STATUS", false), col("MESHED", false)]),
        Kind::TrafficSplit => {
            c.extend([col("APEX", true), col("LEAF", true), col("WEIGHT", false)])
        }
        _ => c.push(col("MESHED", false)),
    }
    for h in [
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
    ] {
        c.push(col(h, false));
    }
    if shows_tcp(kind) {
        c.push(col("TCP_CONN", false));
        if o.wide {
            c.extend([col("READ_BYTES/SEC", false), col("WRITE_BYTES/SEC", false)]);
        }
    }
    c
}

/// The cells of one row, in the order of [`columns`].
fn cells(row: &Row, window: Window, o: TableOptions) -> Vec<String> {
    let mut out = vec![];
    if o.all_namespaces {
        out.push(row.key.namespace.clone());
    }
    let meshed = || match row.meshed {
        Some(m) => format!("{}/{}", m.meshed, m.total),
        None => "-".into(),
    };
    match (row.kind, &row.split) {
        (Kind::TrafficSplit, Some(s)) => out.extend([
            s.split.clone(),
            s.apex.clone(),
            row.key.name.clone(),
            s.weight.clone(),
        ]),
        (Kind::TrafficSplit, None) => {
            out.extend([row.key.name.clone(), "-".into(), "-".into(), "-".into()])
        }
        (Kind::Pod, _) => out.extend([row.key.name.clone(), or_dash(row.status.clone()), meshed()]),
        _ => out.extend([row.key.name.clone(), meshed()]),
    }
    let t = requests(row);
    out.push(or_dash(
        t.and_then(Traffic::success_rate)
            .map(|r| format!("{:.2}%", r * 100.0)),
    ));
    out.push(or_dash(
        t.map(|t| format!("{:.1}rps", t.total() / window.seconds())),
    ));
    for i in 0..3 {
        out.push(or_dash(
            t.and_then(|t| latency_ms(t, i)).map(|ms| format!("{ms}ms")),
        ));
    }
    if shows_tcp(row.kind) {
        let tcp = t.map(Tcp::of);
        out.push(or_dash(tcp.as_ref().map(|c| c.connections.to_string())));
        if o.wide {
            for b in [
                tcp.as_ref().map(|c| c.read_bytes_per_sec),
                tcp.as_ref().map(|c| c.write_bytes_per_sec),
            ] {
                out.push(or_dash(b.map(|b| format!("{b:.1}B/s"))));
            }
        }
    }
    out
}

/// The table: NAMESPACE, NAME, APEX and LEAF left-aligned, the rest
/// right-aligned, three spaces between columns, as Linkerd prints it. The
/// columns are those of the first row's kind (one request is one kind). No
/// rows gives an empty string (the caller prints [`NO_TRAFFIC`] on stderr).
pub fn table(rows: &[Row], window: Window, o: TableOptions) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let columns = columns(first.kind, o);
    let mut lines: Vec<Vec<String>> = vec![columns.iter().map(|c| c.header.to_string()).collect()];
    lines.extend(rows.iter().map(|row| cells(row, window, o)));
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, (cell, column)) in line.iter().zip(&columns).enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                text.push_str(&" ".repeat(PADDING));
            }
            if column.left {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// One row of `-o json`, with Linkerd's field names: the figures are
/// `null` without requests; the TCP fields are left out then, and for `ts`,
/// whose rows have `apex`, `leaf` and `weight` instead of `meshed`.
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_open_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_read_bytes_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_write_bytes_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<String>,
}

/// The rows as Linkerd's JSON objects.
pub fn json_rows(rows: &[Row], window: Window) -> Vec<JsonRow> {
    rows.iter()
        .map(|row| {
            let t = requests(row);
            let ms = |i: usize| t.and_then(|t| latency_ms(t, i));
            let tcp = t.filter(|_| shows_tcp(row.kind)).map(Tcp::of);
            let split = row.split.as_ref();
            JsonRow {
                namespace: row.key.namespace.clone(),
                kind: row.kind.name().into(),
                name: split.map_or_else(|| row.key.name.clone(), |s| s.split.clone()),
                meshed: row.meshed.map(|m| format!("{}/{}", m.meshed, m.total)),
                success: t.and_then(Traffic::success_rate),
                rps: t.map(|t| t.total() / window.seconds()),
                latency_ms_p50: ms(0),
                latency_ms_p95: ms(1),
                latency_ms_p99: ms(2),
                tcp_open_connections: tcp.as_ref().map(|c| c.connections),
                tcp_read_bytes_rate: tcp.as_ref().map(|c| c.read_bytes_per_sec),
                tcp_write_bytes_rate: tcp.as_ref().map(|c| c.write_bytes_per_sec),
                apex: split.map(|s| s.apex.clone()),
                leaf: split.map(|_| row.key.name.clone()),
                weight: split.map(|s| s.weight.clone()),
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

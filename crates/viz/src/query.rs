//! The PromQL of `viz stat`, built as Linkerd's metrics-api builds it
//! (`viz/metrics-api/stat_summary.go`, `prometheus.go`): pure, from the
//! resource kind, namespace, name, `--from` or `--to`, and window.
//!
//! - Requests: `sum(increase(response_total{L}[W])) by (G, classification, tls)`.
//! - Latency: `histogram_quantile(q, sum(irate(response_latency_ms_bucket{L}[W])) by (le, G))`.
//! - Connections: `sum(tcp_open_connections{L}) by (G)`.
//!
//! Inbound kinds (`deploy`, `po`, `ns`) select `direction="inbound"` and group
//! by the workload's labels. `svc` selects the outbound traffic to the
//! service's authority and groups by `dst_namespace, dst_service`, so rows
//! are named by the destination service (after a failover, the mirror
//! `emoji-svc-west`). `ts` is `svc` for the split's apex service: its rows
//! are the backends (leaves) the apex's traffic reached. `--from RES` turns
//! a kind's rows into what RES sent them (outbound, named by the `dst_`
//! labels); `--to RES` into what they sent RES (outbound, named by their
//! own labels).

use std::{fmt, str::FromStr, time::Duration};

use crate::Error;

/// The resource kinds `viz stat` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Deployment,
    Service,
    Pod,
    TrafficSplit,
    Namespace,
}

impl Kind {
    /// The kind's name in output (`kind` in JSON), as Linkerd prints it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::Service => "service",
            Kind::Pod => "pod",
            Kind::TrafficSplit => "trafficsplit",
            Kind::Namespace => "namespace",
        }
    }

    /// The Prometheus label naming a resource of this kind on the proxy's
    /// metrics (from the scrape's relabeling).
    fn label(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::Pod => "pod",
            Kind::Namespace => "namespace",
            Kind::Service | Kind::TrafficSplit => "service",
        }
    }
}

impl FromStr for Kind {
    type Err = Error;

    /// kubectl's names: singular, plural and short.
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "deploy" | "deployment" | "deployments" => Kind::Deployment,
            "svc" | "service" | "services" => Kind::Service,
            "po" | "pod" | "pods" => Kind::Pod,
            "ts" | "trafficsplit" | "trafficsplits" => Kind::TrafficSplit,
            "ns" | "namespace" | "namespaces" => Kind::Namespace,
            _ => {
                return Err(Error::BadArgument(format!(
                    "unknown resource type {s:?}: use deploy, svc, po, ts or ns"
                )));
            }
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `KIND[/NAME]` as kubectl takes it (`deploy/web`, `svc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    pub name: Option<String>,
    /// For `--from`/`--to`: the resource's namespace when it is not the
    /// request's (`--from-namespace`, `--to-namespace`).
    pub namespace: Option<String>,
}

impl FromStr for Resource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) if !n.is_empty() && !n.contains('/') => (k, Some(n.to_string())),
            Some(_) => {
                return Err(Error::BadArgument(format!(
                    "{s:?} is not KIND or KIND/NAME"
                )));
            }
            None => (s, None),
        };
        Ok(Self {
            kind: kind.parse()?,
            name,
            namespace: None,
        })
    }
}

/// A Prometheus range (`30s`, `1m`, `2h`): whole seconds, minutes or hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window(Duration);

impl Window {
    pub const DEFAULT: Window = Window(Duration::from_secs(60));

    pub fn seconds(self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl Default for Window {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for Window {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::BadArgument(format!(
                "invalid time window {s:?}: give a number and a unit, as 30s, 1m or 1h"
            ))
        };
        let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = s[..unit_at].parse().map_err(|_| bad())?;
        let secs = match &s[unit_at..] {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            _ => return Err(bad()),
        };
        if secs == 0 {
            return Err(bad());
        }
        Ok(Window(Duration::from_secs(secs)))
    }
}

impl fmt::Display for Window {
    /// In the largest whole unit, as Prometheus reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        if s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

/// What one `viz stat` asks: which resources, where, from whom, over what
/// window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatRequest {
    pub kind: Kind,
    /// `None` for all namespaces (`-A`).
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `--from KIND/NAME`: only the traffic this resource sends.
    pub from: Option<Resource>,
    /// `--to KIND/NAME`: only the traffic the rows send this resource.
    pub to: Option<Resource>,
    pub window: Window,
    /// The cluster's DNS domain, for `svc`'s authority.
    pub cluster_domain: String,
    /// `--unmeshed`: keep the resources without a meshed pod.
    pub unmeshed: bool,
}

impl StatRequest {
    /// A request for every resource of `kind` in every namespace, over the
    /// default window; set the rest with struct update syntax.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            namespace: None,
            name: None,
            from: None,
            to: None,
            window: Window::DEFAULT,
            cluster_domain: "cluster.local".into(),
            unmeshed: false,
        }
    }

    /// Why the request asks for nothing a query can answer, if it does:
    /// `--to` with `svc` or `ts`, whose rows are destinations already.
    pub fn check(&self) -> Result<(), Error> {
        if self.to.is_some() && matches!(self.kind, Kind::Service | Kind::TrafficSplit) {
            return Err(Error::BadArgument(format!(
                "--to shows what deploy, po or ns send; for {} use --from",
                self.kind.name()
            )));
        }
        Ok(())
    }
}

/// The PromQL strings of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queries {
    pub requests: String,
    /// p50, p95, p99.
    pub latency: [String; 3],
    pub tcp_connections: String,
    /// Read and write bytes per second (`-o wide`).
    pub tcp_read: String,
    pub tcp_write: String,
    /// The labels naming a row, in `requests`' grouping: (namespace label,
    /// name label).
    pub row_labels: (&'static str, &'static str),
}

/// The quantiles of the latency columns.
pub const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// Escapes a value for a PromQL string literal.
fn quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Escapes a value for use inside a regular expression.
fn regex_escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// Label matchers `{a="x", b=~"y"}`, in order.
#[derive(Default)]
struct Selector(Vec<String>);

impl Selector {
    fn eq(mut self, label: &str, value: &str) -> Self {
        self.0.push(format!("{label}={}", quote(value)));
        self
    }

    fn re(mut self, label: &str, value: &str) -> Self {
        self.0.push(format!("{label}=~{}", quote(value)));
        self
    }

    fn render(&self) -> String {
        format!("{{{}}}", self.0.join(", "))
    }
}

/// The selector, grouping labels and row labels of a request; `tcp_peer`
/// is the `peer` of the TCP metrics (`src` inbound, `dst` outbound).
fn plan(
    r: &StatRequest,
) -> (
    Selector,
    Vec<&'static str>,
    (&'static str, &'static str),
    &'static str,
) {
    let outbound_to = |kind: Kind| -> (Vec<&'static str>, (&'static str, &'static str)) {
        match kind {
            Kind::Namespace => (vec!["dst_namespace"], ("dst_namespace", "dst_namespace")),
            Kind::Deployment => (
                vec!["dst_namespace", "dst_deployment"],
                ("dst_namespace", "dst_deployment"),
            ),
            Kind::Pod => (
                vec!["dst_namespace", "dst_pod"],
                ("dst_namespace", "dst_pod"),
            ),
            Kind::Service | Kind::TrafficSplit => (
                vec!["dst_namespace", "dst_service"],
                ("dst_namespace", "dst_service"),
            ),
        }
    };
    let mut sel = Selector::default();
    match r.kind {
        Kind::Service | Kind::TrafficSplit => {
            // Outbound traffic to the service's authority, from any meshed
            // client (or from `--from`).
            sel = sel.eq("direction", "outbound");
            let name = r.name.as_deref().map(regex_escape);
            let ns = r.namespace.as_deref().map(regex_escape);
            let authority = format!(
                "^{}\\.{}\\.svc\\.{}.*",
                name.as_deref().unwrap_or(".+"),
                ns.as_deref().unwrap_or(".+"),
                regex_escape(&r.cluster_domain)
            );
            sel = sel.re("authority", &authority);
            if let Some(from) = &r.from {
                sel = from_source(sel, from, r.namespace.as_ref());
            }
            let (g, rows) = outbound_to(r.kind);
            (sel, g, rows, "dst")
        }
        kind => {
            // A namespace is named by its name; other kinds by -n and name.
            let (ns, name) = match kind {
                Kind::Namespace => (r.name.as_ref(), None),
                _ => (r.namespace.as_ref(), r.name.as_ref()),
            };
            match (&r.from, &r.to) {
                // What `from` sends to resources of this kind.
                (Some(from), _) => {
                    sel = sel.eq("direction", "outbound");
                    sel = from_source(sel, from, r.namespace.as_ref());
                    if let Some(ns) = ns {
                        sel = sel.eq("dst_namespace", ns);
                    }
                    if let Some(n) = name {
                        sel = sel.eq(&format!("dst_{}", kind.label()), n);
                    }
                    let (g, rows) = outbound_to(kind);
                    (sel, g, rows, "dst")
                }
                // What resources of this kind send `to`.
                (None, Some(to)) => {
                    sel = sel.eq("direction", "outbound");
                    if let Some(ns) = ns {
                        sel = sel.eq("namespace", ns);
                    }
                    if let Some(n) = name {
                        sel = sel.eq(kind.label(), n);
                    }
                    let to_ns = to.namespace.as_ref().or(r.namespace.as_ref());
                    match (to.kind, &to.name) {
                        (Kind::Namespace, Some(n)) => sel = sel.eq("dst_namespace", n),
                        (Kind::Namespace, None) => {}
                        (k, n) => {
                            if let Some(ns) = to_ns {
                                sel = sel.eq("dst_namespace", ns);
                            }
                            if let Some(n) = n {
                                sel = sel.eq(&format!("dst_{}", k.label()), n);
                            }
                        }
                    }
                    let (g, rows) = own_labels(kind);
                    (sel, g, rows, "dst")
                }
                // What resources of this kind receive.
                (None, None) => {
                    sel = sel.eq("direction", "inbound");
                    if let Some(ns) = ns {
                        sel = sel.eq("namespace", ns);
                    }
                    if let Some(n) = name {
                        sel = sel.eq(kind.label(), n);
                    }
                    let (g, rows) = own_labels(kind);
                    (sel, g, rows, "src")
                }
            }
        }
    }
}

/// The grouping and row labels of rows named by their own labels (what
/// they receive, or send with `--to`): a namespace by `namespace`, other
/// kinds by `namespace` and their kind's label.
fn own_labels(kind: Kind) -> (Vec<&'static str>, (&'static str, &'static str)) {
    let g = match kind {
        Kind::Namespace => vec!["namespace"],
        k => vec!["namespace", k.label()],
    };
    (g, ("namespace", kind.label()))
}

/// The source matchers of `--from`: its namespace (its own, or the
/// request's), and its name by its kind's label.
fn from_source(mut sel: Selector, from: &Resource, request_ns: Option<&String>) -> Selector {
    match from.kind {
        Kind::Namespace => {
            if let Some(n) = from.name.as_ref().or(from.namespace.as_ref()) {
                sel = sel.eq("namespace", n);
            }
        }
        kind => {
            if let Some(ns) = from.namespace.as_ref().or(request_ns) {
                sel = sel.eq("namespace", ns);
            }
            if let Some(n) = &from.name {
                sel = sel.eq(kind.label(), n);
            }
        }
    }
    sel
}

/// The queries of a request.
pub fn build(r: &StatRequest) -> Queries {
    let (sel, group, row_labels, peer) = plan(r);
    let l = sel.render();
    let g = group.join(", ");
    let w = r.window;
    let tcp = Selector(sel.0.clone()).eq("peer", peer).render();
    let latency = QUANTILES.map(|q| {
        format!(
            "histogram_quantile({q}, sum(irate(response_latency_ms_bucket{l}[{w}])) by (le, {g}))"
        )
    });
    Queries {
        requests: format!("sum(increase(response_total{l}[{w}])) by ({g}, classification, tls)"),
        latency,
        tcp_connections: format!("sum(tcp_open_connections{tcp}) by ({g})"),
        tcp_read: format!("sum(irate(tcp_read_bytes_total{tcp}[{w}])) by ({g})"),
        tcp_write: format!("sum(irate(tcp_write_bytes_total{tcp}[{w}])) by ({g})"),
        row_labels,
    }
}

#[cfg(test)]
mod tests;

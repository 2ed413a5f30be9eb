//! Which objects hold a pod template, and where; lists; the report.

use std::fmt;

use serde_json::Value;

use crate::{
    Config, INJECT_ANNOTATION,
    pod::{Owner, inject_pod},
};

/// What happened to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The object's kind, lower-case (`deployment`), as linkerd prints it.
    pub kind: String,
    pub name: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// Not a kind with a pod template: passed through.
    NotAWorkload,
    Skipped(Skip),
}

/// Why a workload was left as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `linkerd.io/inject: disabled` on its pod template.
    Disabled,
    /// `hostNetwork: true`: the redirect would capture the node's traffic.
    HostNetwork,
    /// It already runs this container (tandem's or Linkerd's proxy).
    AlreadyInjected(String),
    /// Its pod template is malformed (the reason).
    Invalid(String),
}

impl fmt::Display for Report {
    /// `deployment "web" injected` or `service "web-svc" skipped`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.outcome {
            Outcome::Injected => "injected",
            _ => "skipped",
        };
        write!(f, "{} \"{}\" {what}", self.kind, self.name)
    }
}

impl Report {
    /// Why a workload was skipped, as a warning line; `None` when it was
    /// injected or is not a workload.
    pub fn warning(&self) -> Option<String> {
        let Outcome::Skipped(skip) = &self.outcome else {
            return None;
        };
        let why = match skip {
            Skip::Disabled => format!("its pod template has {INJECT_ANNOTATION}: disabled"),
            Skip::HostNetwork => {
                "it uses hostNetwork, and the proxy needs a network namespace of its own".into()
            }
            Skip::AlreadyInjected(c) => format!("it already has the container {c}"),
            Skip::Invalid(reason) => reason.clone(),
        };
        Some(format!("{} \"{}\" skipped: {why}", self.kind, self.name))
    }
}

/// Where a kind keeps its pod template, if it has one.
fn template_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let path: &'static [&'static str] = match (group, kind) {
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            &["spec", "template"]
        }
        ("", "ReplicationController") => &["spec", "template"],
        ("batch", "Job") => &["spec", "template"],
        ("batch", "CronJob") => &["spec", "jobTemplate", "spec", "template"],
        ("", "Pod") => &[],
        _ => return None,
    };
    Some(path)
}

/// Whether this is a list of objects (`kind: List`, `PodList`, ...).
fn is_list(obj: &Value) -> bool {
    obj["kind"].as_str().is_some_and(|k| k.ends_with("List")) && obj["items"].is_array()
}

/// `obj` injected (lists item by item), or `None` when nothing in it
/// changed. One report per object, lists' items in order (a list itself
/// gets none).
pub fn inject_object(obj: &Value, cfg: &Config, reports: &mut Vec<Report>) -> Option<Value> {
    if is_list(obj) {
        let items = obj["items"].as_array().expect("checked by is_list");
        let mut changed = false;
        let new_items: Vec<Value> = items
            .iter()
            .map(|item| match inject_object(item, cfg, reports) {
                Some(new) => {
                    changed = true;
                    new
                }
                None => item.clone(),
            })
            .collect();
        if !changed {
            return None;
        }
        let mut out = obj.clone();
        out["items"] = Value::Array(new_items);
        return Some(out);
    }
    let kind = obj["kind"].as_str().unwrap_or("object");
    let name = obj["metadata"]["name"]
        .as_str()
        .or_else(|| obj["metadata"]["generateName"].as_str())
        .unwrap_or("");
    let mut report = Report {
        kind: kind.to_lowercase(),
        name: name.into(),
        outcome: Outcome::NotAWorkload,
    };
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    let Some(path) = template_path(api_version, kind) else {
        reports.push(report);
        return None;
    };
    let owner = Owner {
        kind: (kind != "Pod").then(|| kind.to_lowercase()),
        name: Some(name.to_string()).filter(|n| !n.is_empty()),
        namespace: obj["metadata"]["namespace"].as_str().map(String::from),
    };
    let template = path.iter().fold(obj, |v, key| &v[*key]);
    let result = if template.is_object() {
        inject_pod(template, &owner, cfg)
    } else {
        Err(Skip::Invalid(format!(
            "it has no pod template at {}",
            path.join(".")
        )))
    };
    let out = match result {
        Ok(injected) => {
            report.outcome = Outcome::Injected;
            let mut out = obj.clone();
            let slot = path.iter().fold(&mut out, |v, key| &mut v[*key]);
            *slot = injected;
            Some(out)
        }
        Err(skip) => {
            report.outcome = Outcome::Skipped(skip);
            None
        }
    };
    reports.push(report);
    out
}

/// What `tandem inject` prints on stderr: one line per object, then a
/// `warning:` line per skipped workload.
pub fn summary(reports: &[Report]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&r.to_string());
        out.push('\n');
    }
    for w in reports.iter().filter_map(Report::warning) {
        out.push_str("warning: ");
        out.push_str(&w);
        out.push('\n');
    }
    out
}

//! The report as `linkerd check` prints it, or as JSON.

use crate::{Outcome, Report};

const OK: &str = "√";
const WARN: &str = "‼";
const FAIL: &str = "×";

/// One header per category, then a line per check with √, ‼ or ×, and the
/// error and hint indented under each warning and failure.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.categories {
        out.push_str(&c.name);
        out.push('\n');
        out.push_str(&"-".repeat(c.name.chars().count()));
        out.push('\n');
        for check in &c.checks {
            let mark = match check.outcome {
                Outcome::Success => OK,
                Outcome::Warning => WARN,
                Outcome::Error => FAIL,
            };
            out.push_str(&format!("{mark} {}\n", check.description));
            if let Some(e) = &check.error {
                for line in e.lines() {
                    out.push_str(&format!("    {line}\n"));
                }
            }
            if let Some(h) = &check.hint {
                out.push_str(&format!("    hint: {h}\n"));
            }
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "Status check results are {}\n",
        if report.success { OK } else { FAIL }
    ));
    out
}

pub fn render_json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Category, CheckResult};

    #[test]
    fn the_table_reads_like_linkerd_check() {
        let report = Report {
            success: false,
            categories: vec![Category {
                name: "tandem-identity".into(),
                checks: vec![
                    CheckResult::ok("trust anchors parse"),
                    CheckResult::warn(
                        "issuer is within its validity period",
                        "expires in 30 days",
                        "rotate it",
                    ),
                    CheckResult::fail(
                        "issuer is issued by a trust anchor",
                        "signed by another root",
                        "reinstall",
                    ),
                ],
            }],
        };
        let t = render_table(&report);
        assert_eq!(
            t,
            "tandem-identity\n---------------\n√ trust anchors parse\n‼ issuer is within its validity period\n    expires in 30 days\n    hint: rotate it\n× issuer is issued by a trust anchor\n    signed by another root\n    hint: reinstall\n\nStatus check results are ×\n"
        );
        let j: serde_json::Value = serde_json::from_str(&render_json(&report)).unwrap();
        assert_eq!(j["categories"][0]["categoryName"], "tandem-identity");
        assert_eq!(j["categories"][0]["checks"][1]["result"], "warning");
        assert_eq!(j["success"], false);
    }
}

//! Reading the report of `tandem check -o json`, which has Linkerd's shape:
//! `categories[]` with a `categoryName` and `checks[]`, each with a
//! `description`, a `result` (`success`, `warning` or `error`), an `error`
//! and a `hint`.

use std::process::Output;

use serde_json::Value;

/// One check of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub description: String,
    /// `success`, `warning` or `error`.
    pub result: String,
    /// Empty on success.
    pub error: String,
    /// Empty when the check gives none.
    pub hint: String,
}

impl Check {
    /// (description, result): what most assertions compare.
    pub fn outcome(&self) -> (&str, &str) {
        (&self.description, &self.result)
    }
}

/// The report printed by `check -o json`; panics with the whole output when
/// it is not JSON.
pub fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check -o json printed no JSON ({e}): {out:?}"))
}

/// The checks of the category `name`, in order; panics with the report when
/// it has no such category.
pub fn category(report: &Value, name: &str) -> Vec<Check> {
    let found = report["categories"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["categoryName"] == name))
        .unwrap_or_else(|| panic!("no {name} category in {report:#}"));
    let checks = found["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("category {name} has no checks array: {found:#}"));
    checks
        .iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            Check {
                description: text("description"),
                result: text("result"),
                error: text("error"),
                hint: text("hint"),
            }
        })
        .collect()
}

/// The check described as `description`; panics with every check when there
/// is none.
pub fn find<'a>(checks: &'a [Check], description: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.description == description)
        .unwrap_or_else(|| panic!("no check {description:?} in {checks:#?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "success": false,
            "categories": [
                { "categoryName": "a", "checks": [] },
                { "categoryName": "b", "checks": [
                    { "description": "one", "result": "success" },
                    { "description": "two", "result": "error", "error": "broke", "hint": "fix it" },
                ]},
            ],
        })
    }

    #[test]
    fn category_reads_each_check_in_order() {
        let checks = category(&sample(), "b");
        assert_eq!(
            checks.iter().map(Check::outcome).collect::<Vec<_>>(),
            [("one", "success"), ("two", "error")]
        );
        assert_eq!(checks[0].error, "");
        let two = find(&checks, "two");
        assert_eq!((two.error.as_str(), two.hint.as_str()), ("broke", "fix it"));
        assert!(category(&sample(), "a").is_empty());
    }

    #[test]
    #[should_panic(expected = "no c category")]
    fn a_missing_category_names_itself() {
        category(&sample(), "c");
    }

    #[test]
    #[should_panic(expected = "no check \"three\"")]
    fn a_missing_check_names_itself() {
        find(&category(&sample(), "b"), "three");
    }
}

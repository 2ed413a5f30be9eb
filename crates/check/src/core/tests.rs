use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::Outcome;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

#[test]
fn versions_parse_with_a_plus() {
    assert_eq!(parse_version("1", "34+"), Some((1, 34)));
    assert_eq!(parse_version("1", "29"), Some((1, 29)));
    assert_eq!(parse_version("one", "2"), None);
    assert!(parse_version("1", "28").unwrap() < MIN_KUBERNETES);
}

#[test]
fn version_verdicts() {
    let v = |major: &str, minor: &str| Ok((major.to_string(), minor.to_string()));
    for (input, outcome, error_has) in [
        (v("1", "34"), Outcome::Success, ""),
        (v("1", "29+"), Outcome::Success, ""),
        (v("1", "28"), Outcome::Error, "older than 1.29"),
        (v("x", "y"), Outcome::Error, "unreadable version x.y"),
        (
            Err("connection refused".to_string()),
            Outcome::Error,
            "connection refused",
        ),
    ] {
        let r = judge_version(input.clone());
        assert_eq!(r.outcome, outcome, "{input:?}");
        assert!(
            r.error.as_deref().unwrap_or("").contains(error_has),
            "{input:?}: {r:?}"
        );
    }
}

#[test]
fn skew_verdicts_with_now_passed_in() {
    for (facts, now, outcome, error_has) in [
        // Same second, and the reply's second rounds away.
        (
            SkewFacts::Date {
                server: t(100),
                sent: t(100),
            },
            t(101),
            Outcome::Success,
            "",
        ),
        // A slow request is not skew: the date falls between sent and now.
        (
            SkewFacts::Date {
                server: t(110),
                sent: t(100),
            },
            t(120),
            Outcome::Success,
            "",
        ),
        // 60 s ahead: a warning.
        (
            SkewFacts::Date {
                server: t(161),
                sent: t(100),
            },
            t(100),
            Outcome::Warning,
            "60s",
        ),
        // 10 minutes behind: a failure.
        (
            SkewFacts::Date {
                server: t(100),
                sent: t(701),
            },
            t(701),
            Outcome::Error,
            "600s",
        ),
        (
            SkewFacts::NoDateHeader,
            t(0),
            Outcome::Warning,
            "no Date header",
        ),
        (
            SkewFacts::Unreachable("timed out".into()),
            t(0),
            Outcome::Error,
            "timed out",
        ),
    ] {
        let r = judge_skew(&facts, now);
        assert_eq!(r.outcome, outcome, "{facts:?}");
        assert!(
            r.error.as_deref().unwrap_or("").contains(error_has),
            "{facts:?}: {r:?}"
        );
    }
}

#[test]
fn pre_install_verdicts() {
    let facts = |exists: Result<bool, String>, denied: Option<usize>| PreInstallFacts {
        namespace_exists: exists,
        may_create: (0..CREATED_BY_INSTALL.len())
            .map(|i| Ok(Some(i) != denied))
            .collect(),
        skew: SkewFacts::Date {
            server: t(0),
            sent: t(0),
        },
    };
    let all_ok = judge_pre_install("tandem", &facts(Ok(false), None), t(0));
    assert_eq!(all_ok.len(), CREATED_BY_INSTALL.len() + 2);
    assert!(
        all_ok.iter().all(|c| c.outcome == Outcome::Success),
        "{all_ok:?}"
    );

    let installed = judge_pre_install("tandem", &facts(Ok(true), None), t(0));
    assert_eq!(installed[0].outcome, Outcome::Error);
    assert!(
        installed[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("tandem check")
    );

    let secrets = CREATED_BY_INSTALL.len() - 1;
    let denied = judge_pre_install("tandem", &facts(Ok(false), Some(secrets)), t(0));
    let failed: Vec<_> = denied
        .iter()
        .filter(|c| c.outcome == Outcome::Error)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].description, "can create Secrets");
    assert!(
        failed[0]
            .error
            .as_deref()
            .unwrap()
            .contains("may not create secrets")
    );

    let unreadable = judge_pre_install("tandem", &facts(Err("forbidden".into()), None), t(0));
    assert_eq!(unreadable[0].outcome, Outcome::Error);
    assert_eq!(unreadable[0].error.as_deref(), Some("forbidden"));
}

#[test]
fn crd_verdicts_name_every_problem() {
    let crds = |states: Vec<CrdState>| -> Vec<(String, CrdState)> {
        states
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("c{i}.example.com"), s))
            .collect()
    };
    let ok = judge_crds("CRDs", &crds(vec![CrdState::Established; 2]), "hint");
    assert_eq!(ok.outcome, Outcome::Success);
    let bad = judge_crds(
        "CRDs",
        &crds(vec![
            CrdState::Established,
            CrdState::NotEstablished,
            CrdState::Missing,
            CrdState::Unreadable("forbidden".into()),
        ]),
        "install them",
    );
    assert_eq!(bad.outcome, Outcome::Error);
    let error = bad.error.unwrap();
    for needle in [
        "c1.example.com is not established",
        "c2.example.com is missing",
        "c3.example.com: forbidden",
    ] {
        assert!(error.contains(needle), "{needle}: {error}");
    }
    assert!(!error.contains("c0"), "{error}");
    assert_eq!(bad.hint.as_deref(), Some("install them"));
}

#[test]
fn deployment_verdicts_and_what_waiting_can_fix() {
    use DeploymentState::*;
    let judge = |states: Vec<DeploymentState>| {
        let named: Vec<(String, DeploymentState)> = states
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("d{i}"), s))
            .collect();
        judge_deployments("available", "ns", &named, "see `kubectl -n NS get pods`")
    };
    for (states, outcome, retryable, error_has) in [
        (
            vec![Replicas {
                wanted: 2,
                available: 2,
            }],
            Outcome::Success,
            false,
            "",
        ),
        (
            vec![Replicas {
                wanted: 2,
                available: 1,
            }],
            Outcome::Error,
            true,
            "1/2 replicas",
        ),
        (
            vec![Unreadable("timeout".into())],
            Outcome::Error,
            true,
            "timeout",
        ),
        (
            vec![Replicas {
                wanted: 0,
                available: 0,
            }],
            Outcome::Error,
            false,
            "scaled to 0",
        ),
        (vec![Missing], Outcome::Error, false, "ns/d0 is missing"),
        // One problem waiting cannot fix makes the whole check final.
        (
            vec![
                Replicas {
                    wanted: 1,
                    available: 0,
                },
                Missing,
            ],
            Outcome::Error,
            false,
            "ns/d1 is missing",
        ),
    ] {
        let r = judge(states.clone());
        assert_eq!(r.outcome, outcome, "{states:?}");
        assert_eq!(r.retryable, retryable, "{states:?}");
        assert!(
            r.error.as_deref().unwrap_or("").contains(error_has),
            "{states:?}: {r:?}"
        );
        if outcome == Outcome::Error {
            assert_eq!(r.hint.as_deref(), Some("see `kubectl -n ns get pods`"));
        }
    }
}

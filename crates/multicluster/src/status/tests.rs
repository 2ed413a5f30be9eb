use super::*;
use tandem_api::multicluster::MAX_LISTED_FAILURES;

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn gw(ips: &[&str], unresolved: &[&str]) -> GatewayState {
    GatewayState {
        resolved: true,
        ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        unresolved: unresolved.iter().map(|u| u.to_string()).collect(),
        liveness: crate::probe::Liveness::Alive,
        addresses: vec![],
        latency_ms: [Some(1), Some(2), Some(3)],
    }
}

fn healthy<'a>(remote: &'a Remote, g: Option<&'a GatewayState>) -> Health<'a> {
    Health {
        cluster: "west",
        spec: Ok(()),
        credentials: Some(Ok(())),
        remote,
        synced: true,
        gateway: g,
        generation: Some(3),
    }
}

fn cond<'a>(s: &'a LinkStatus, t: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == t).unwrap()
}

#[test]
fn conditions_follow_the_first_problem() {
    let up = Remote::Reachable;
    let down = Remote::Unreachable {
        reason: "Unreachable".into(),
        message: "connection refused".into(),
    };
    let g = gw(&["127.20.0.1"], &[]);
    let none = gw(&[], &["gw.example: no answer"]);
    let bad_period = "probeSpec.period \"3 s\": unknown unit";
    // (health, Ready status/reason, RemoteReachable status/reason)
    type Case<'a> = (Health<'a>, (&'a str, &'a str), (&'a str, &'a str));
    let cases: Vec<Case<'_>> = vec![
        (
            healthy(&up, Some(&g)),
            ("True", "Mirroring"),
            ("True", "Reachable"),
        ),
        (
            Health {
                spec: Err(bad_period),
                ..healthy(&up, Some(&g))
            },
            ("False", "InvalidLink"),
            ("Unknown", "InvalidLink"),
        ),
        (
            Health {
                credentials: Some(Err("broken kubeconfig")),
                ..healthy(&Remote::Unknown, None)
            },
            ("False", "InvalidCredentials"),
            ("False", "InvalidCredentials"),
        ),
        (
            healthy(&down, Some(&g)),
            ("False", "RemoteUnreachable"),
            ("False", "Unreachable"),
        ),
        (
            Health {
                synced: false,
                ..healthy(&Remote::Unknown, Some(&g))
            },
            ("False", "Syncing"),
            ("Unknown", "Connecting"),
        ),
        (
            healthy(&up, Some(&none)),
            ("False", "GatewayUnresolved"),
            ("True", "Reachable"),
        ),
        (
            healthy(&up, None),
            ("False", "GatewayUnresolved"),
            ("True", "Reachable"),
        ),
    ];
    for (h, ready, reachable) in cases {
        let s = link_status(&h, &Summary::default(), None, ts(0));
        let r = cond(&s, READY);
        assert_eq!((r.status.as_str(), r.reason.as_str()), ready, "{h:?}");
        let r = cond(&s, REMOTE_REACHABLE);
        assert_eq!((r.status.as_str(), r.reason.as_str()), reachable, "{h:?}");
        assert_eq!(cond(&s, READY).observed_generation, Some(3));
    }
    // The spec's problem is the Ready message, for `kubectl describe`.
    let s = link_status(
        &Health {
            spec: Err(bad_period),
            ..healthy(&up, Some(&g))
        },
        &Summary::default(),
        None,
        ts(0),
    );
    assert_eq!(cond(&s, READY).message, bad_period);
    assert!(
        !s.conditions.iter().any(|c| c.type_ == GATEWAY_RESOLVED),
        "nothing is resolved for an invalid spec"
    );
}

#[test]
fn a_bad_link_spec_becomes_an_invalid_link_condition() {
    use tandem_api::multicluster::LinkConfig;
    let link: tandem_api::multicluster::Link = serde_json::from_value(serde_json::json!({
        "apiVersion": "multicluster.tandem.io/v1alpha1", "kind": "Link",
        "metadata": {"name": "west", "namespace": "ns"},
        "spec": {"targetClusterName": "west", "clusterCredentialsSecret": "c",
                 "gatewayAddress": "127.20.0.1", "probeSpec": {"period": "soon"}}
    }))
    .unwrap();
    let err = LinkConfig::from_link(&link).unwrap_err().to_string();
    let s = link_status(
        &Health {
            spec: Err(&err),
            ..healthy(&Remote::Unknown, None)
        },
        &Summary::default(),
        None,
        ts(0),
    );
    let r = cond(&s, READY);
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "InvalidLink")
    );
    assert!(
        r.message.contains("probeSpec.period \"soon\""),
        "{}",
        r.message
    );
}

#[test]
fn transition_times_move_only_with_the_status() {
    let up = Remote::Reachable;
    let g = gw(&["127.20.0.1"], &[]);
    let first = link_status(&healthy(&up, Some(&g)), &Summary::default(), None, ts(0));
    let same = link_status(
        &healthy(&up, Some(&g)),
        &Summary::default(),
        Some(&first),
        ts(60),
    );
    assert_eq!(first, same, "nothing changed, nothing moves");
    let down = Remote::Unreachable {
        reason: "Unreachable".into(),
        message: "refused".into(),
    };
    let later = link_status(
        &healthy(&down, Some(&g)),
        &Summary::default(),
        Some(&same),
        ts(90),
    );
    assert_eq!(cond(&later, READY).last_transition_time, Time(ts(90)));
    assert_eq!(
        cond(&later, GATEWAY_RESOLVED).last_transition_time,
        Time(ts(0))
    );
}

#[test]
fn services_gateway_and_counts() {
    let up = Remote::Reachable;
    let mut g = gw(&["127.20.0.1", "127.20.0.2"], &["gw.example: no answer"]);
    g.addresses = vec![
        crate::gateway::AddressState {
            ip: "127.20.0.1".parse().unwrap(),
            liveness: crate::probe::Liveness::Alive,
            last_error: None,
        },
        crate::gateway::AddressState {
            ip: "127.20.0.2".parse().unwrap(),
            liveness: crate::probe::Liveness::Unknown,
            last_error: Some("connecting: refused".into()),
        },
    ];
    let outcomes = [
        (Key::new("ns", "emoji"), Outcome::Mirrored),
        (
            Key::new("ns", "web"),
            Outcome::MissingNamespace("namespace ns is missing".into()),
        ),
        (
            Key::new("ns", "ext"),
            Outcome::Invalid("an ExternalName Service".into()),
        ),
        (Key::new("ns", "x"), Outcome::Error("timed out".into())),
        (Key::new("ns", "y"), Outcome::Pending),
        (
            Key::new("ns", "foo"),
            Outcome::NameTaken("a Service ns/foo-west exists".into()),
        ),
    ];
    let services = summarize(outcomes.iter().map(|(k, o)| (k, o)), MAX_LISTED_FAILURES);
    let s = link_status(&healthy(&up, Some(&g)), &services, None, ts(0));
    assert_eq!(
        (
            s.mirrored_services,
            s.failed_services,
            s.pending_services,
            s.more_failures
        ),
        (1, 4, 1, 0)
    );
    let failures: Vec<(&str, &str)> = s
        .failures
        .iter()
        .map(|f| (f.remote_ref.name.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(
        failures,
        [
            ("ext", "InvalidService"),
            ("foo", "NameTaken"),
            ("web", "MissingNamespace"),
            ("x", "Error"),
        ],
        "the failures only, sorted"
    );
    let gs = s.gateway.as_ref().unwrap();
    assert_eq!(gs.addresses, ["127.20.0.1", "127.20.0.2"]);
    assert_eq!(gs.alive, Some(true));
    let probes: Vec<(&str, Option<bool>, Option<&str>)> = gs
        .probes
        .iter()
        .map(|p| (p.address.as_str(), p.alive, p.last_error.as_deref()))
        .collect();
    assert_eq!(
        probes,
        [
            ("127.20.0.1", Some(true), None),
            ("127.20.0.2", None, Some("connecting: refused")),
        ],
        "each address's probe result is kept"
    );
    assert_eq!(
        (gs.latency_ms_p50, gs.latency_ms_p95, gs.latency_ms_p99),
        (Some(1), Some(2), Some(3))
    );
    let r = cond(&s, GATEWAY_RESOLVED);
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "Unresolvable")
    );
    assert_eq!(
        cond(&s, READY).message,
        "mirroring 1 of 6 services from cluster west"
    );
}

#[test]
fn the_summary_counts_everything_and_lists_the_first_failures() {
    let err = |m: &str| Outcome::Error(m.into());
    let k = |n: &str| Key::new("ns", n);
    // (outcomes, limit, (mirrored, pending, failed), the listed failures)
    type Case = (
        Vec<(Key, Outcome)>,
        usize,
        (u32, u32, u32),
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (vec![], 20, (0, 0, 0), vec![]),
        (
            vec![(k("a"), Outcome::Mirrored), (k("b"), Outcome::Pending)],
            20,
            (1, 1, 0),
            vec![],
        ),
        // Sorted by key whatever the order they come in.
        (
            vec![
                (k("c"), err("x")),
                (k("a"), err("x")),
                (k("b"), Outcome::Mirrored),
            ],
            20,
            (1, 0, 2),
            vec!["a", "c"],
        ),
        // Bounded: the first ones by key, the rest only counted.
        (
            vec![
                (k("d"), err("x")),
                (k("b"), err("x")),
                (k("e"), err("x")),
                (k("a"), err("x")),
                (k("c"), err("x")),
            ],
            2,
            (0, 0, 5),
            vec!["a", "b"],
        ),
        (vec![(k("a"), err("x"))], 0, (0, 0, 1), vec![]),
        // Another namespace sorts by namespace first.
        (
            vec![(Key::new("z", "a"), err("x")), (k("z"), err("x"))],
            1,
            (0, 0, 2),
            vec!["z"],
        ),
    ];
    for (outcomes, limit, counts, listed) in cases {
        let s = summarize(outcomes.iter().map(|(k, o)| (k, o)), limit);
        assert_eq!((s.mirrored, s.pending, s.failed), counts, "{outcomes:?}");
        let names: Vec<&str> = s
            .failures
            .iter()
            .map(|f| f.remote_ref.name.as_str())
            .collect();
        assert_eq!(names, listed, "{outcomes:?}");
    }
    // A long message is cut.
    let long = Outcome::Error("e".repeat(5000));
    let key = k("a");
    let s = summarize([(&key, &long)], 20);
    assert!(s.failures[0].message.len() <= 300);
}

#[test]
fn the_status_of_many_services_stays_small() {
    let outcomes: Vec<(Key, Outcome)> = (0..10_000)
        .map(|i| {
            let o = if i % 3 == 0 {
                Outcome::Error("refused by the API server: a long reason ".repeat(10))
            } else {
                Outcome::Mirrored
            };
            (Key::new("ns", format!("svc-{i:05}")), o)
        })
        .collect();
    let summary = summarize(outcomes.iter().map(|(k, o)| (k, o)), MAX_LISTED_FAILURES);
    let up = Remote::Reachable;
    let g = gw(&["127.20.0.1"], &[]);
    let s = link_status(&healthy(&up, Some(&g)), &summary, None, ts(0));
    assert_eq!(s.failed_services, 3334);
    assert_eq!(s.failures.len(), MAX_LISTED_FAILURES);
    assert_eq!(s.more_failures, 3334 - MAX_LISTED_FAILURES as u32);
    assert_eq!(s.failures[0].remote_ref.name, "svc-00000");
    let bytes = serde_json::to_vec(&status_patch(&s)).unwrap().len();
    assert!(bytes < 16 * 1024, "{bytes} bytes");
}

#[test]
fn an_unknown_gateway_is_written_as_null_so_that_an_old_verdict_goes() {
    let up = Remote::Reachable;
    let mut g = gw(&["127.20.0.1"], &[]);
    g.liveness = crate::probe::Liveness::Unknown;
    let s = link_status(&healthy(&up, Some(&g)), &Summary::default(), None, ts(0));
    assert_eq!(s.gateway.as_ref().unwrap().alive, None);
    let p = status_patch(&s);
    let gateway = p["status"]["gateway"].as_object().unwrap();
    assert_eq!(gateway.get("alive"), Some(&Value::Null));
}

#[test]
fn the_patch_clears_what_is_gone() {
    let p = status_patch(&LinkStatus::default());
    assert_eq!(p["status"]["failures"], Value::Null);
    assert_eq!(
        p["status"]["mirrorServices"],
        Value::Null,
        "what older versions wrote goes"
    );
    assert!(
        p["status"]
            .as_object()
            .unwrap()
            .contains_key("mirrorServices")
    );
    assert!(p["status"].as_object().unwrap().contains_key("gateway"));
    assert_eq!(p["status"]["mirroredServices"], 0);
    assert_eq!(
        rfc3339(Timestamp::from_second(0).unwrap()),
        "1970-01-01T00:00:00Z"
    );
}

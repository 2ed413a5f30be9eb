use super::*;

const NS: &str = "emojivoto";
const DOMAIN: &str = "cluster.local";

// Column types of the case tables.
type Names = &'static [&'static str];
type Weights = &'static [u32];
type Backends = &'static [(&'static str, u32)];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn mk_split(ns: &str, backends: &[(&str, u32)]) -> Split {
    Split {
        namespace: ns.to_string(),
        name: "split".to_string(),
        backends: backends
            .iter()
            .map(|(service, weight)| BackendSpec {
                service: service.to_string(),
                weight: *weight,
            })
            .collect(),
        annotations: BTreeMap::new(),
    }
}

fn annotate(mut split: Split, key: &str, value: &str) -> Split {
    split.annotations.insert(key.to_string(), value.to_string());
    split
}

/// The workshop's split: emoji-svc primary, emoji-svc-west fallback.
fn workshop(weights: [u32; 2]) -> Split {
    let split = mk_split(
        NS,
        &[("emoji-svc", weights[0]), ("emoji-svc-west", weights[1])],
    );
    annotate(split, PRIMARY_SERVICE_ANNOTATION, "emoji-svc")
}

/// Readiness from a set: `name` is in [`NS`], `ns/name` anywhere.
fn ready_set<'a>(set: &'a [&'a str]) -> impl Fn(&ServiceRef) -> bool + 'a {
    move |svc: &ServiceRef| {
        set.iter().any(|entry| match entry.split_once('/') {
            Some((ns, name)) => svc.namespace == ns && svc.name == name,
            None => svc.namespace == NS && svc.name == *entry,
        })
    }
}

fn decide_now(split: &Split, ready: &[&str]) -> Result<Decision, Invalid> {
    decide(
        split,
        DOMAIN,
        &ready_set(ready),
        &Memory::default(),
        secs(100),
    )
}

// === decide: weights and states ===

#[test]
fn weights() {
    use State::*;
    let abc = || mk_split(NS, &[("a", 1), ("b", 0), ("c", 0)]);
    let prio = |value: &str| annotate(abc(), PRIORITY_ANNOTATION, value);
    #[rustfmt::skip]
    let cases: Vec<(&str, Split, Names, Weights, State)> = vec![
        ("workshop: primary ready", workshop([1, 0]), &["emoji-svc", "emoji-svc-west"], &[1, 0], Primary),
        ("workshop: primary down", workshop([1, 0]), &["emoji-svc-west"], &[0, 1], Failover),
        ("workshop: primary back", workshop([0, 1]), &["emoji-svc", "emoji-svc-west"], &[1, 0], Primary),
        ("workshop: primary back, west gone", workshop([0, 1]), &["emoji-svc"], &[1, 0], Primary),
        ("primary defaults to the first backend", mk_split(NS, &[("x", 0), ("y", 1)]), &["x", "y"], &[1, 0], Primary),
        ("primary from annotation, not first",
            annotate(mk_split(NS, &[("x", 1), ("y", 0)]), PRIMARY_SERVICE_ANNOTATION, "y"),
            &["x", "y"], &[0, 1], Primary),
        ("primary annotation written as FQDN",
            annotate(mk_split(NS, &[("x", 1), ("y", 0)]), PRIMARY_SERVICE_ANNOTATION, "y.emojivoto.svc.cluster.local"),
            &["x", "y"], &[0, 1], Primary),
        ("primary annotation with spaces",
            annotate(mk_split(NS, &[("x", 1), ("y", 0)]), PRIMARY_SERVICE_ANNOTATION, " y "),
            &["y"], &[0, 1], Primary),
        ("primary as FQDN backend, bare annotation",
            annotate(mk_split(NS, &[("x", 1), ("y.emojivoto.svc.cluster.local.", 0)]), PRIMARY_SERVICE_ANNOTATION, "y"),
            &["y"], &[0, 1], Primary),
        ("no priority: every ready fallback", abc(), &["b", "c"], &[0, 1, 1], Failover),
        ("no priority: one ready fallback", abc(), &["c"], &[0, 0, 1], Failover),
        ("single backend ready", mk_split(NS, &[("a", 0)]), &["a"], &[1], Primary),
        ("primary ready ignores priority", prio("c,b"), &["a", "b", "c"], &[1, 0, 0], Primary),
        // A priority chain of three, primary listed first, for every readiness of b and c.
        ("chain a,c,b: c and b ready", prio("a,c,b"), &["b", "c"], &[0, 0, 1], Failover),
        ("chain a,c,b: only c ready", prio("a,c,b"), &["c"], &[0, 0, 1], Failover),
        ("chain a,c,b: only b ready", prio("a,c,b"), &["b"], &[0, 1, 0], Failover),
        ("chain a,c,b: nothing ready", prio("a,c,b"), &[], &[1, 0, 0], NoReadyBackends),
        ("chain a,c,b: all ready", prio("a,c,b"), &["a", "b", "c"], &[1, 0, 0], Primary),
        ("chain a,c,b: a and b ready", prio("a,c,b"), &["a", "b"], &[1, 0, 0], Primary),
        ("chain a,c,b: a and c ready", prio("a,c,b"), &["a", "c"], &[1, 0, 0], Primary),
        ("chain a,c,b: only a ready", prio("a,c,b"), &["a"], &[1, 0, 0], Primary),
        ("chain without primary: c first", prio("c,b"), &["b", "c"], &[0, 0, 1], Failover),
        ("unlisted come after, in spec order", prio("c"), &["b"], &[0, 1, 0], Failover),
        ("priority with spaces and FQDN", prio(" c.emojivoto.svc , b "), &["b", "c"], &[0, 0, 1], Failover),
        ("no backend ready keeps weights", abc(), &[], &[1, 0, 0], NoReadyBackends),
        ("no backend ready keeps odd weights", mk_split(NS, &[("a", 50), ("b", 50)]), &[], &[50, 50], NoReadyBackends),
        ("no backend ready keeps all zeros", mk_split(NS, &[("a", 0), ("b", 0)]), &[], &[0, 0], NoReadyBackends),
        ("weights normalised to 0/1", mk_split(NS, &[("a", 100), ("b", 3)]), &["a", "b"], &[1, 0], Primary),
        ("all zeros, primary ready", mk_split(NS, &[("a", 0), ("b", 0)]), &["a", "b"], &[1, 0], Primary),
        ("all zeros, fallback ready", mk_split(NS, &[("a", 0), ("b", 0)]), &["b"], &[0, 1], Failover),
        ("readiness of another namespace's service doesn't count",
            mk_split(NS, &[("a", 1), ("b", 0)]), &["other/a", "other/b"], &[1, 0], NoReadyBackends),
    ];

    for (name, split, ready, want, state) in cases {
        let d = decide_now(&split, ready).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.weights, want, "{name}: weights");
        assert_eq!(d.state, state, "{name}: state");
        let current: Vec<u32> = split.backends.iter().map(|b| b.weight).collect();
        assert_eq!(d.changed, d.weights != current, "{name}: changed");
        assert_eq!(d.requeue_after, None, "{name}: requeue");
    }
}

#[test]
fn unchanged() {
    #[rustfmt::skip]
    let cases: Vec<(&str, Split, Names)> = vec![
        ("primary stays", workshop([1, 0]), &["emoji-svc", "emoji-svc-west"]),
        ("failover stays", workshop([0, 1]), &["emoji-svc-west"]),
        ("nothing ready", workshop([0, 1]), &[]),
        ("nothing ready, all zeros", workshop([0, 0]), &[]),
        ("nothing ready, odd weights", mk_split(NS, &[("a", 7), ("b", 0)]), &[]),
    ];
    for (name, split, ready) in cases {
        let d = decide_now(&split, ready).unwrap_or_else(|e| panic!("{name}: {e}"));
        let current: Vec<u32> = split.backends.iter().map(|b| b.weight).collect();
        assert!(!d.changed, "{name}: changed");
        assert_eq!(d.weights, current, "{name}: weights");
    }
}

#[test]
fn active_backends() {
    let split = mk_split(NS, &[("a", 1), ("b.other", 0), ("c", 0)]);
    let d = decide_now(&split, &["other/b", "c"]).unwrap();
    assert_eq!(
        d.active,
        vec![ServiceRef::new("other", "b"), ServiceRef::new(NS, "c")]
    );
    assert!(d.changed);

    // Kept weights report what keeps carrying traffic.
    let split = mk_split(NS, &[("a", 0), ("b", 1)]);
    let d = decide_now(&split, &[]).unwrap();
    assert_eq!(d.active, vec![ServiceRef::new(NS, "b")]);
}

#[test]
fn other_namespaces_and_domains() {
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Backends, Names, Weights)> = vec![
        ("name.ns", DOMAIN, &[("a", 1), ("b.other", 0)], &["other/b"], &[0, 1]),
        ("name.ns.svc", DOMAIN, &[("a", 1), ("b.other.svc", 0)], &["other/b"], &[0, 1]),
        ("FQDN", DOMAIN, &[("a", 1), ("b.other.svc.cluster.local", 0)], &["other/b"], &[0, 1]),
        ("FQDN with trailing dot", DOMAIN, &[("a", 1), ("b.other.svc.cluster.local.", 0)], &["other/b"], &[0, 1]),
        ("other cluster domain", "east.example", &[("a", 1), ("b.other.svc.east.example", 0)], &["other/b"], &[0, 1]),
        ("cluster domain with trailing dot", "east.example.", &[("a", 1), ("b.other.svc.east.example", 0)], &["other/b"], &[0, 1]),
        ("same name, other namespace is another service", DOMAIN, &[("a", 1), ("a.other", 0)], &["other/a"], &[0, 1]),
        ("bare name not ready in other namespace", DOMAIN, &[("a", 1), ("b.other", 0)], &["b"], &[1, 0]),
    ];
    for (name, domain, backends, ready, want) in cases {
        let split = mk_split(NS, backends);
        let d = decide(
            &split,
            domain,
            &ready_set(ready),
            &Memory::default(),
            secs(1),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.weights, want, "{name}");
    }
}

// === decide: invalid splits ===

#[test]
fn invalid() {
    let abc = || mk_split(NS, &[("a", 1), ("b", 0), ("c", 0)]);
    let prio = |value: &str| annotate(abc(), PRIORITY_ANNOTATION, value);
    let delay = |value: &str| annotate(abc(), FAILBACK_DELAY_ANNOTATION, value);
    #[rustfmt::skip]
    let cases: Vec<(&str, Split, Invalid)> = vec![
        ("no backends", mk_split(NS, &[]), Invalid::NoBackends),
        ("no backends, even with a primary", annotate(mk_split(NS, &[]), PRIMARY_SERVICE_ANNOTATION, "a"), Invalid::NoBackends),
        ("unknown primary", annotate(abc(), PRIMARY_SERVICE_ANNOTATION, "d"), Invalid::UnknownPrimary("d".into())),
        ("primary in another namespace", annotate(abc(), PRIMARY_SERVICE_ANNOTATION, "a.other"), Invalid::UnknownPrimary("a.other".into())),
        ("primary with a bad name", annotate(abc(), PRIMARY_SERVICE_ANNOTATION, "A"), Invalid::UnknownPrimary("A".into())),
        ("empty primary", annotate(abc(), PRIMARY_SERVICE_ANNOTATION, ""), Invalid::UnknownPrimary("".into())),
        ("duplicate", mk_split(NS, &[("a", 1), ("a", 0)]), Invalid::DuplicateBackend("emojivoto/a".into())),
        ("duplicate bare vs FQDN", mk_split(NS, &[("a", 1), ("b", 0), ("a.emojivoto.svc.cluster.local", 0)]), Invalid::DuplicateBackend("emojivoto/a".into())),
        ("duplicate name.ns vs name.ns.svc", mk_split(NS, &[("x.o", 1), ("x.o.svc", 0)]), Invalid::DuplicateBackend("o/x".into())),
        ("priority names a non-backend", prio("c,d"), bad_priority("c,d")),
        ("priority names another namespace", prio("c.other"), bad_priority("c.other")),
        ("priority with an empty entry", prio("c,,b"), bad_priority("c,,b")),
        ("priority with a trailing comma", prio("c,b,"), bad_priority("c,b,")),
        ("priority empty", prio(""), bad_priority("")),
        ("priority blank", prio("  "), bad_priority("  ")),
        ("priority with a bad name", prio("c,B"), bad_priority("c,B")),
        ("priority lists one twice", prio("c,c.emojivoto"), bad_priority("c,c.emojivoto")),
        ("delay without unit", delay("10"), bad_delay("10")),
        ("delay with bad unit", delay("1x"), bad_delay("1x")),
        ("delay empty", delay(""), bad_delay("")),
        ("delay negative", delay("-1s"), bad_delay("-1s")),
    ];
    for (name, split, want) in cases {
        let got = decide_now(&split, &["a", "b", "c"]);
        match (got, want) {
            (Err(got), want) if same_kind(&got, &want) => {
                assert!(!got.to_string().is_empty(), "{name}: message");
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }

    // The names reported are the ones users wrote or can look up.
    let err = decide_now(&annotate(abc(), PRIMARY_SERVICE_ANNOTATION, " d "), &[]).unwrap_err();
    assert_eq!(err, Invalid::UnknownPrimary("d".into()));
    assert!(
        err.to_string()
            .contains("failover.linkerd.io/primary-service")
    );
}

/// Bad names are reported whatever the readiness, and name the backend as written.
#[test]
fn bad_backend_names() {
    let names = [
        "",
        "Emoji-svc",
        "emoji_svc",
        "emoji svc",
        "-emoji",
        "emoji-",
        "1emoji",
        "emoji.other.svc.cluster.example",
        "emoji.other.pod.cluster.local",
        "emoji.other.svc.cluster.local.extra",
        "emoji.other.svc.cluster",
        "emoji.",
        "emoji.other.",
        "emoji.other.svc.",
        "emoji..svc",
        ".emoji",
        "emoji.other.svc.cluster.local..",
        "emoji.Other",
        "emoji.other.svc.Cluster.local",
        "émoji",
        "emoji/other",
        &"a".repeat(64),
        &format!("emoji.{}", "n".repeat(64)),
        &format!("{}.{}.svc.cluster.local", "a".repeat(63), "b".repeat(200)),
    ];
    for name in names {
        let split = mk_split(NS, &[("a", 1), (name, 0)]);
        match decide_now(&split, &["a"]) {
            Err(Invalid::BadBackendName { name: got, reason }) => {
                assert_eq!(got, name);
                assert!(!reason.is_empty(), "{name:?}");
            }
            other => panic!("{name:?}: got {other:?}"),
        }
    }

    // The longest valid labels are fine.
    let long = "a".repeat(63);
    let split = mk_split(NS, &[("a", 1), (&long, 0)]);
    assert!(decide_now(&split, &["a"]).is_ok());
}

fn bad_priority(value: &str) -> Invalid {
    Invalid::BadPriority {
        value: value.into(),
        reason: String::new(),
    }
}

fn bad_delay(value: &str) -> Invalid {
    Invalid::BadFailbackDelay {
        value: value.into(),
        reason: crate::duration::Reason::Empty,
    }
}

/// Equal, ignoring the free-text reasons.
fn same_kind(got: &Invalid, want: &Invalid) -> bool {
    match (got, want) {
        (Invalid::BadPriority { value: a, .. }, Invalid::BadPriority { value: b, .. })
        | (
            Invalid::BadFailbackDelay { value: a, .. },
            Invalid::BadFailbackDelay { value: b, .. },
        ) => a == b,
        _ => got == want,
    }
}

#[test]
fn resolve() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, (&str, &str))] = &[
        ("emoji-svc", NS, DOMAIN, (NS, "emoji-svc")),
        ("emoji-svc.west", NS, DOMAIN, ("west", "emoji-svc")),
        ("emoji-svc.west.svc", NS, DOMAIN, ("west", "emoji-svc")),
        ("emoji-svc.west.svc.cluster.local", NS, DOMAIN, ("west", "emoji-svc")),
        ("emoji-svc.west.svc.cluster.local.", NS, DOMAIN, ("west", "emoji-svc")),
        ("e.0ns.svc.a.b.c", NS, "a.b.c", ("0ns", "e")),
        ("e.ns.svc.local", NS, "local", ("ns", "e")),
    ];
    for (name, ns, domain, (want_ns, want_name)) in cases {
        let got = resolve_backend(name, ns, domain).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, ServiceRef::new(*want_ns, *want_name), "{name}");
    }
    assert_eq!(ServiceRef::new("ns", "svc").to_string(), "ns/svc");
}

#[test]
fn backend_refs_skip_bad_names_and_repeats() {
    let split = mk_split(
        NS,
        &[("a", 1), ("B", 0), ("c.other", 0), ("a.emojivoto", 0)],
    );
    assert_eq!(
        backend_refs(&split, DOMAIN),
        vec![ServiceRef::new(NS, "a"), ServiceRef::new("other", "c")]
    );
    assert!(backend_refs(&mk_split(NS, &[]), DOMAIN).is_empty());
}

// === failback damping ===

#[test]
fn failback_damping() {
    use State::*;
    let damped = |weights: &[(&str, u32)], delay: &str| {
        let split = annotate(mk_split(NS, weights), PRIMARY_SERVICE_ANNOTATION, "a");
        annotate(split, FAILBACK_DELAY_ANNOTATION, delay)
    };
    struct Case {
        name: &'static str,
        split: Split,
        ready: Names,
        since: Option<u64>,
        now: u64,
        weights: Weights,
        state: State,
        requeue: Option<Duration>,
        since_after: Option<u64>,
    }
    let on_b = &[("a", 0), ("b", 1), ("c", 0)];
    let on_a = &[("a", 1), ("b", 0), ("c", 0)];
    let cases = vec![
        Case {
            name: "primary just back: held, memory set",
            split: damped(on_b, "30s"),
            ready: &["a", "b"],
            since: None,
            now: 100,
            weights: &[0, 1, 0],
            state: Failover,
            requeue: Some(secs(30)),
            since_after: Some(100),
        },
        Case {
            name: "still held: requeue counts down",
            split: damped(on_b, "30s"),
            ready: &["a", "b"],
            since: Some(100),
            now: 110,
            weights: &[0, 1, 0],
            state: Failover,
            requeue: Some(secs(20)),
            since_after: Some(100),
        },
        Case {
            name: "released after the delay",
            split: damped(on_b, "30s"),
            ready: &["a", "b"],
            since: Some(100),
            now: 130,
            weights: &[1, 0, 0],
            state: Primary,
            requeue: None,
            since_after: Some(100),
        },
        Case {
            name: "released immediately when fallbacks are dead",
            split: damped(on_b, "30s"),
            ready: &["a"],
            since: None,
            now: 100,
            weights: &[1, 0, 0],
            state: Primary,
            requeue: None,
            since_after: Some(100),
        },
        Case {
            name: "held: a dead fallback is dropped for a ready one",
            split: damped(on_b, "30s"),
            ready: &["a", "c"],
            since: Some(100),
            now: 105,
            weights: &[0, 0, 1],
            state: Failover,
            requeue: Some(secs(25)),
            since_after: Some(100),
        },
        Case {
            name: "held: follows the priority",
            split: annotate(
                damped(&[("a", 0), ("b", 1), ("c", 1)], "1m"),
                PRIORITY_ANNOTATION,
                "c,b",
            ),
            ready: &["a", "b", "c"],
            since: Some(100),
            now: 100,
            weights: &[0, 0, 1],
            state: Failover,
            requeue: Some(secs(60)),
            since_after: Some(100),
        },
        Case {
            name: "primary already carries traffic: nothing to damp",
            split: damped(on_a, "30s"),
            ready: &["a", "b"],
            since: None,
            now: 100,
            weights: &[1, 0, 0],
            state: Primary,
            requeue: None,
            since_after: Some(100),
        },
        Case {
            name: "primary shares traffic: nothing to damp",
            split: damped(&[("a", 1), ("b", 1), ("c", 0)], "30s"),
            ready: &["a", "b"],
            since: None,
            now: 100,
            weights: &[1, 0, 0],
            state: Primary,
            requeue: None,
            since_after: Some(100),
        },
        Case {
            name: "all zeros: nothing to damp",
            split: damped(&[("a", 0), ("b", 0), ("c", 0)], "30s"),
            ready: &["a", "b"],
            since: None,
            now: 100,
            weights: &[1, 0, 0],
            state: Primary,
            requeue: None,
            since_after: Some(100),
        },
        Case {
            name: "delay 0s: immediate failback",
            split: damped(on_b, "0s"),
            ready: &["a", "b"],
            since: None,
            now: 100,
            weights: &[1, 0, 0],
            state: Primary,
            requeue: None,
            since_after: Some(100),
        },
        Case {
            name: "no annotation: immediate failback",
            split: annotate(mk_split(NS, on_b), PRIMARY_SERVICE_ANNOTATION, "a"),
            ready: &["a", "b"],
            since: None,
            now: 100,
            weights: &[1, 0, 0],
            state: Primary,
            requeue: None,
            since_after: Some(100),
        },
        Case {
            name: "sub-second delay",
            split: damped(on_b, "1500ms"),
            ready: &["a", "b"],
            since: Some(100),
            now: 101,
            weights: &[0, 1, 0],
            state: Failover,
            requeue: Some(Duration::from_millis(500)),
            since_after: Some(100),
        },
        Case {
            name: "primary down: memory cleared",
            split: damped(on_a, "30s"),
            ready: &["b"],
            since: Some(100),
            now: 120,
            weights: &[0, 1, 0],
            state: Failover,
            requeue: None,
            since_after: None,
        },
        Case {
            name: "nothing ready: memory cleared",
            split: damped(on_b, "30s"),
            ready: &[],
            since: Some(100),
            now: 120,
            weights: &[0, 1, 0],
            state: NoReadyBackends,
            requeue: None,
            since_after: None,
        },
        Case {
            name: "clock before since: held for the full delay",
            split: damped(on_b, "30s"),
            ready: &["a", "b"],
            since: Some(100),
            now: 90,
            weights: &[0, 1, 0],
            state: Failover,
            requeue: Some(secs(30)),
            since_after: Some(100),
        },
    ];

    for c in cases {
        let memory = Memory {
            primary_ready_since: c.since.map(secs),
        };
        let d = decide(&c.split, DOMAIN, &ready_set(c.ready), &memory, secs(c.now))
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(d.weights, c.weights, "{}: weights", c.name);
        assert_eq!(d.state, c.state, "{}: state", c.name);
        assert_eq!(d.requeue_after, c.requeue, "{}: requeue", c.name);
        assert_eq!(
            d.memory.primary_ready_since,
            c.since_after.map(secs),
            "{}: memory",
            c.name
        );
    }
}

/// Primary down, back, flapping, and back for good, fed through memory as a caller would.
#[test]
fn failback_damping_sequence() {
    let split = |weights: [u32; 2]| annotate(workshop(weights), FAILBACK_DELAY_ANNOTATION, "30s");
    let both = ["emoji-svc", "emoji-svc-west"];
    let west = ["emoji-svc-west"];
    // (now, ready, want weights)
    let steps: &[(u64, &[&str], [u32; 2])] = &[
        (0, &both, [1, 0]),
        (10, &west, [0, 1]),
        (20, &both, [0, 1]),
        (35, &west, [0, 1]),
        (40, &both, [0, 1]),
        (69, &both, [0, 1]),
        (70, &both, [1, 0]),
        (80, &both, [1, 0]),
    ];
    let mut weights = [1, 0];
    let mut memory = Memory::default();
    for (now, ready, want) in steps {
        let d = decide(
            &split(weights),
            DOMAIN,
            &ready_set(ready),
            &memory,
            secs(*now),
        )
        .unwrap();
        assert_eq!(d.weights, want, "at {now}s");
        memory = d.memory;
        weights = [d.weights[0], d.weights[1]];
    }
}

// === current_state ===

#[test]
fn current_state_from_weights() {
    #[rustfmt::skip]
    let cases: Vec<(&str, Split, Option<State>)> = vec![
        ("workshop primary", workshop([1, 0]), Some(State::Primary)),
        ("workshop failover", workshop([0, 1]), Some(State::Failover)),
        ("primary with any weight", mk_split(NS, &[("a", 100), ("b", 0)]), Some(State::Primary)),
        ("several fallbacks", mk_split(NS, &[("a", 0), ("b", 1), ("c", 1)]), Some(State::Failover)),
        ("primary from annotation", annotate(mk_split(NS, &[("a", 1), ("b", 0)]), PRIMARY_SERVICE_ANNOTATION, "b"), Some(State::Failover)),
        ("all zero", mk_split(NS, &[("a", 0), ("b", 0)]), None),
        ("mixed", mk_split(NS, &[("a", 1), ("b", 1)]), None),
        ("no backends", mk_split(NS, &[]), None),
        ("unknown primary", annotate(mk_split(NS, &[("a", 1)]), PRIMARY_SERVICE_ANNOTATION, "z"), None),
        ("duplicate", mk_split(NS, &[("a", 1), ("a", 0)]), None),
        ("bad name", mk_split(NS, &[("a", 1), ("B", 0)]), None),
    ];
    for (name, split, want) in cases {
        assert_eq!(current_state(&split, DOMAIN), want, "{name}");
    }
}

#[test]
fn state_strings() {
    for (state, s) in [
        (State::Primary, "primary"),
        (State::Failover, "failover"),
        (State::NoReadyBackends, "no-ready-backends"),
    ] {
        assert_eq!(state.as_str(), s);
        assert_eq!(state.to_string(), s);
    }
}

#[test]
fn delay_annotation_is_trimmed() {
    let split = annotate(workshop([0, 1]), FAILBACK_DELAY_ANNOTATION, " 30s ");
    let d = decide_now(&split, &["emoji-svc", "emoji-svc-west"]).unwrap();
    assert_eq!(d.requeue_after, Some(secs(30)));
}

/// The messages go into Kubernetes Events, so they are pinned here.
#[test]
fn messages() {
    let abc = || mk_split(NS, &[("a", 1), ("b", 0), ("c", 0)]);
    #[rustfmt::skip]
    let cases = [
        (mk_split(NS, &[]), "the split has no backends"),
        (annotate(abc(), PRIMARY_SERVICE_ANNOTATION, "d"),
            r#"primary service "d" (annotation failover.linkerd.io/primary-service) is not one of the backends"#),
        (mk_split(NS, &[("a", 1), ("a.emojivoto.svc.cluster.local", 0)]),
            "two backends name the same service emojivoto/a"),
        (mk_split(NS, &[("a", 1), ("e.ns.svc.cluster.example", 0)]),
            r#"backend "e.ns.svc.cluster.example" is not a valid service name: the domain "cluster.example" is not the cluster domain "cluster.local""#),
        (annotate(abc(), PRIORITY_ANNOTATION, "c,d"),
            r#"annotation failover.tandem.io/priority "c,d" is invalid: "d" is not one of the backends"#),
        (annotate(abc(), FAILBACK_DELAY_ANNOTATION, "1x"),
            r#"annotation failover.tandem.io/failback-delay "1x" is invalid: unknown unit "x" (use ns, us, ms, s, m or h, as in 500ms, 30s or 1h30m)"#),
    ];
    for (split, want) in cases {
        assert_eq!(decide_now(&split, &[]).unwrap_err().to_string(), want);
    }
}

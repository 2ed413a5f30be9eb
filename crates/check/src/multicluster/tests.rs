use std::collections::BTreeSet;

use tandem_api::multicluster::{Link, LinkStatus};

use super::{Facts, LinkFacts, judge::*};
use crate::Outcome;

fn link(edit: impl FnOnce(&mut serde_json::Value)) -> Link {
    let mut v = serde_json::json!({
        "apiVersion": "multicluster.tandem.io/v1alpha1",
        "kind": "Link",
        "metadata": { "name": "west", "namespace": "tandem-multicluster" },
        "spec": {
            "targetClusterName": "west",
            "targetClusterDomain": "cluster.local",
            "clusterCredentialsSecret": "cluster-credentials-west",
            "gatewayAddress": "198.18.65.1",
            "gatewayPort": 4143,
            "gatewayIdentity": "tandem-gateway.tandem-multicluster.serviceaccount.identity.tandem.cluster.local",
            "probeSpec": { "path": "/ready", "port": 4191, "period": "3s", "timeout": "1s", "failureThreshold": 3 },
        },
    });
    edit(&mut v);
    serde_json::from_value(v).expect("a Link")
}

#[test]
fn failing_services_are_a_warning_that_names_the_first_ones() {
    use tandem_api::multicluster::{MirrorFailure, RemoteRef};
    let failure = |name: &str| MirrorFailure {
        remote_ref: RemoteRef {
            namespace: "ns".into(),
            name: name.into(),
        },
        reason: "MissingNamespace".into(),
        message: "the namespace ns does not exist".into(),
    };
    // (status, outcome, phrases the error must hold)
    let cases = [
        (
            LinkStatus {
                mirrored_services: 4,
                ..Default::default()
            },
            Outcome::Success,
            vec![],
        ),
        (
            LinkStatus {
                mirrored_services: 4,
                failed_services: 1,
                failures: vec![failure("a")],
                ..Default::default()
            },
            Outcome::Warning,
            vec!["1 of 5 cannot be mirrored", "ns/a (MissingNamespace"],
        ),
        (
            LinkStatus {
                failed_services: 30,
                failures: (0..20).map(|i| failure(&format!("s{i}"))).collect(),
                more_failures: 10,
                ..Default::default()
            },
            Outcome::Warning,
            vec!["30 of 30", "ns/s0", "ns/s2", "and 27 more"],
        ),
    ];
    for (status, outcome, phrases) in cases {
        let r = mirror_failures("ns/west", &status);
        assert_eq!(r.outcome, outcome, "{status:?}");
        let error = r.error.unwrap_or_default();
        for p in phrases {
            assert!(error.contains(p), "{p}: {error}");
        }
        assert!(!error.contains("ns/s3"), "at most three are named: {error}");
    }
}

#[test]
fn check_judges_a_link_as_the_mirror_does() {
    assert_eq!(link_validity(&link(|_| {})).outcome, Outcome::Success);
    // Each of these passed the old, shorter list in `check`, while the
    // mirror refused the Link.
    for (edit, needle) in [
        (
            Box::new(|v: &mut serde_json::Value| v["spec"]["probeSpec"]["path"] = "ready".into())
                as Box<dyn FnOnce(&mut serde_json::Value)>,
            "probeSpec.path",
        ),
        (
            Box::new(|v| v["spec"]["gatewayPort"] = 0.into()),
            "gatewayPort is 0",
        ),
        (
            Box::new(|v| v["spec"]["targetClusterName"] = "West_1".into()),
            "not a DNS label",
        ),
        (
            Box::new(|v| v["spec"]["probeSpec"]["period"] = "0s".into()),
            "is zero",
        ),
    ] {
        let r = link_validity(&link(edit));
        assert_eq!(r.outcome, Outcome::Error, "{needle}");
        assert!(
            r.error.as_deref().unwrap().contains(needle),
            "{needle}: {r:?}"
        );
    }
}

fn at(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_mirror_runs_while_its_heartbeat_is_fresh() {
    let now = at("2026-12-01T12:00:00Z");
    // (heartbeat, outcome, phrase of the error)
    let cases = [
        (Some("2026-12-01T11:59:30Z"), Outcome::Success, ""),
        (Some("2026-12-01T11:58:00Z"), Outcome::Success, ""),
        (Some("2026-12-01T11:57:59Z"), Outcome::Error, "121 s ago"),
        (Some("yesterday"), Outcome::Error, "not an RFC 3339 time"),
        (None, Outcome::Error, "no mirror has picked it up"),
    ];
    for (heartbeat, outcome, phrase) in cases {
        let status = LinkStatus {
            last_heartbeat_time: heartbeat.map(String::from),
            ..Default::default()
        };
        let r = mirror_running(&link(|_| {}), &status, now);
        assert_eq!(r.outcome, outcome, "{heartbeat:?}");
        assert!(
            r.error.unwrap_or_default().contains(phrase),
            "{heartbeat:?}"
        );
        if outcome != Outcome::Success {
            assert!(r.retryable, "a mirror may still be starting");
            assert!(r.hint.unwrap_or_default().contains("--link west"));
        }
    }
}

#[test]
fn the_mirror_has_a_leader_while_its_lease_is_held_and_renewed() {
    use k8s_openapi::{
        api::coordination::v1::{Lease, LeaseSpec},
        apimachinery::pkg::apis::meta::v1::MicroTime,
    };
    let now = at("2026-12-01T12:00:00Z");
    let lease = |holder: Option<&str>, renewed: Option<&str>| {
        Ok(Some(Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                renew_time: renewed.map(|t| MicroTime(t.parse().unwrap())),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        }))
    };
    // (lease, outcome, phrase of the error)
    let cases = [
        (
            lease(Some("pod-a"), Some("2026-12-01T11:59:58Z")),
            Outcome::Success,
            "",
        ),
        (
            lease(Some("pod-a"), Some("2026-12-01T11:59:45Z")),
            Outcome::Success,
            "",
        ),
        (
            lease(Some("pod-a"), Some("2026-12-01T11:59:44Z")),
            Outcome::Error,
            "pod-a last renewed the Lease service-mirror-write-west 16 s ago, and it ran out after 15 s",
        ),
        (
            lease(None, None),
            Outcome::Error,
            "no replica holds the Lease service-mirror-write-west",
        ),
        (lease(Some(""), None), Outcome::Error, "no replica holds"),
        (
            lease(Some("pod-a"), None),
            Outcome::Error,
            "has no renew time",
        ),
        (
            Ok(None),
            Outcome::Warning,
            "no Lease service-mirror-write-west",
        ),
        (
            Err("reading Lease service-mirror-write-west: forbidden".into()),
            Outcome::Warning,
            "forbidden",
        ),
    ];
    for (lease, outcome, phrase) in cases {
        let r = mirror_leader(&link(|_| {}), &lease, now);
        assert_eq!(r.outcome, outcome, "{lease:?}");
        assert!(
            r.error.clone().unwrap_or_default().contains(phrase),
            "{r:?}"
        );
        if outcome == Outcome::Error {
            assert!(r.retryable, "a standby may be taking over");
            assert!(
                r.hint.unwrap_or_default().contains(
                    "kubectl -n tandem-multicluster get pods -l mirror.linkerd.io/cluster-name=west"
                ),
                "{lease:?}"
            );
        }
    }
}

#[test]
fn the_clusters_must_share_an_anchor() {
    let ok = |s: &[&str]| Ok::<_, String>(set(s));
    let err = || Err::<BTreeSet<String>, _>("ConfigMap missing".to_string());
    // (local, remote, outcome, phrase)
    let cases = [
        (ok(&["a"]), Some(ok(&["a"])), Outcome::Success, ""),
        (
            ok(&["a", "b"]),
            Some(ok(&["b", "c"])),
            Outcome::Warning,
            "overlap but differ",
        ),
        (
            ok(&["a"]),
            Some(ok(&["b", "c"])),
            Outcome::Error,
            "1 certificate(s), west trusts 2",
        ),
        (
            err(),
            Some(ok(&["a"])),
            Outcome::Error,
            "this cluster: ConfigMap missing",
        ),
        (ok(&["a"]), None, Outcome::Error, "cannot be read"),
        (
            ok(&["a"]),
            Some(err()),
            Outcome::Error,
            "cluster west: ConfigMap missing",
        ),
    ];
    for (local, remote, outcome, phrase) in cases {
        let r = shared_anchor("ns/west", "west", &local, remote.as_ref());
        assert_eq!(r.outcome, outcome, "{local:?} {remote:?}");
        assert!(r.error.unwrap_or_default().contains(phrase), "{phrase}");
    }
}

#[test]
fn the_gateway_must_pass_its_probe() {
    use tandem_api::multicluster::GatewayStatus;
    for (alive, outcome, phrase) in [
        (Some(true), Outcome::Success, ""),
        (
            Some(false),
            Outcome::Error,
            "the probe of 198.18.65.1 fails",
        ),
        (None, Outcome::Error, "not probed yet"),
    ] {
        let status = LinkStatus {
            gateway: Some(GatewayStatus {
                alive,
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = gateway_alive(&link(|_| {}), &status);
        assert_eq!(r.outcome, outcome, "{alive:?}");
        assert!(r.error.unwrap_or_default().contains(phrase));
    }
    let r = gateway_alive(&link(|_| {}), &LinkStatus::default());
    assert_eq!(r.outcome, Outcome::Error, "no gateway status yet");
}

fn facts(link: Link, credentials: Result<(), String>) -> LinkFacts {
    LinkFacts {
        link,
        credentials,
        remote_anchors: Some(Ok(set(&["a"]))),
        lease: Ok(None),
    }
}

#[test]
fn every_mirror_belongs_to_a_link() {
    let links = [facts(link(|_| {}), Ok(()))];
    let mirrors = |list: &[(&str, Option<&str>)]| {
        Ok::<_, String>(
            list.iter()
                .map(|(n, c)| (n.to_string(), c.map(String::from)))
                .collect::<Vec<_>>(),
        )
    };
    let r = orphan_mirrors(&mirrors(&[("app/emoji-west", Some("west"))]), &links);
    assert_eq!(r.outcome, Outcome::Success);
    let r = orphan_mirrors(
        &mirrors(&[
            ("app/emoji-west", Some("west")),
            ("app/emoji-north", Some("north")),
            ("app/unlabelled", None),
        ]),
        &links,
    );
    assert_eq!(r.outcome, Outcome::Error);
    assert_eq!(
        r.error.as_deref(),
        Some("mirrors without a Link: app/emoji-north, app/unlabelled")
    );
    let r = orphan_mirrors(&Err("forbidden".into()), &links);
    assert_eq!(r.outcome, Outcome::Error);
}

#[test]
fn the_whole_category_is_judged_from_the_facts() {
    let now = at("2026-12-01T12:00:00Z");
    // The Links cannot be listed: one verdict, which says why.
    let unreadable = Facts {
        links: Err("the server could not find the requested resource".into()),
        local_anchors: Ok(set(&["a"])),
        mirrors: Ok(vec![]),
    };
    let out = judge(&unreadable, now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].description, "Links are readable");
    assert_eq!(out[0].outcome, Outcome::Error);

    // No Link: a warning, and the orphan check still runs.
    let none = Facts {
        links: Ok(vec![]),
        local_anchors: Ok(set(&["a"])),
        mirrors: Ok(vec![]),
    };
    let out = judge(&none, now);
    assert_eq!(
        out.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        [Outcome::Warning, Outcome::Success]
    );

    // One Link with broken credentials: seven verdicts for it (and the
    // orphan check), and the credentials' error is named.
    let broken = Facts {
        links: Ok(vec![LinkFacts {
            remote_anchors: None,
            ..facts(link(|_| {}), Err("Secret missing".into()))
        }]),
        local_anchors: Ok(set(&["a"])),
        mirrors: Ok(vec![]),
    };
    let out = judge(&broken, now);
    assert_eq!(out.len(), 8, "{out:#?}");
    let creds = out
        .iter()
        .find(|r| r.description.contains("credentials"))
        .unwrap();
    assert_eq!(creds.outcome, Outcome::Error);
    assert_eq!(creds.error.as_deref(), Some("Secret missing"));
}

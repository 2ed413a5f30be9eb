use super::*;
use crate::query::{StatRequest, build};

fn sample(labels: &[(&str, &str)], value: f64) -> Sample {
    Sample {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
    }
}

fn key(ns: &str, name: &str) -> Key {
    Key {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn svc_queries() -> Queries {
    build(&StatRequest {
        namespace: Some("emojivoto".into()),
        ..StatRequest::new(Kind::Service)
    })
}

#[test]
fn answers_join_by_the_row_labels() {
    let q = svc_queries();
    let svc = |name: &'static str| [("dst_namespace", "emojivoto"), ("dst_service", name)];
    let with = |name: &'static str, class: &'static str, tls: &'static str| {
        let mut l = svc(name).to_vec();
        l.extend([("classification", class), ("tls", tls)]);
        l
    };
    let a = Answers {
        requests: vec![
            sample(&with("emoji-svc-west", "success", "true"), 100.0),
            sample(&with("emoji-svc-west", "success", "no_identity"), 20.0),
            sample(&with("emoji-svc-west", "failure", "true"), 30.0),
            sample(&with("voting-svc", "success", "true"), 5.0),
            // No service: traffic to an address, dropped.
            sample(&[("classification", "success")], 9.0),
            sample(&with("web-svc", "success", "true"), f64::NAN),
        ],
        latency: [
            vec![
                sample(&svc("emoji-svc-west"), 2.5),
                sample(&svc("voting-svc"), f64::NAN),
            ],
            vec![
                sample(&svc("emoji-svc-west"), 9.0),
                sample(&svc("nobody"), 1.0),
            ],
            vec![],
        ],
        tcp_connections: vec![
            sample(&svc("emoji-svc-west"), 3.0),
            sample(&svc("tcp-only"), 1.0),
        ],
        tcp_read: vec![sample(&svc("emoji-svc-west"), 10.0)],
        tcp_write: vec![sample(&svc("emoji-svc-west"), 20.0)],
    };
    let t = traffic(&q, &a);
    let west = &t[&key("emojivoto", "emoji-svc-west")];
    assert_eq!((west.success, west.failure), (120.0, 30.0));
    assert_eq!(west.success_rate(), Some(0.8));
    assert_eq!(west.latency_ms, [Some(2.5), Some(9.0), None]);
    assert_eq!(west.tcp_connections, Some(3.0));
    assert_eq!(
        (west.read_bytes_per_sec, west.write_bytes_per_sec),
        (Some(10.0), Some(20.0))
    );
    assert_eq!(t[&key("emojivoto", "voting-svc")].latency_ms[0], None);
    assert!(
        !t.contains_key(&key("emojivoto", "nobody")),
        "latency alone makes no row"
    );
    assert_eq!(t[&key("emojivoto", "tcp-only")].success_rate(), None);
    // web-svc's only answer was NaN: no row.
    assert_eq!(t.len(), 3, "{t:?}");
}

fn pod(ns: &str, name: &str, app: &str, meshed: bool, live: bool) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        meshed,
        live,
    }
}

fn deploy(ns: &str, name: &str) -> Owner {
    Owner {
        key: key(ns, name),
        selector: BTreeMap::from([("app".to_string(), name.to_string())]),
    }
}

#[test]
fn meshed_counts_live_pods_of_each_resource() {
    let pods = [
        pod("a", "web-1", "web", true, true),
        pod("a", "web-2", "web", false, true),
        pod("a", "web-3", "web", true, false),
        pod("b", "web-1", "web", true, true),
        pod("a", "db-1", "db", false, true),
    ];
    let owners = [
        deploy("a", "web"),
        deploy("a", "db"),
        deploy("a", "empty"),
        Owner {
            key: key("a", "all"),
            selector: BTreeMap::new(),
        },
    ];
    let m = meshed_counts(Kind::Deployment, &owners, &pods);
    assert_eq!(
        m[&key("a", "web")],
        Meshed {
            meshed: 1,
            total: 2
        }
    );
    assert_eq!(
        m[&key("a", "db")],
        Meshed {
            meshed: 0,
            total: 1
        }
    );
    assert_eq!(m[&key("a", "empty")], Meshed::default());
    assert_eq!(
        m[&key("a", "all")],
        Meshed::default(),
        "an empty selector selects nothing here"
    );

    let m = meshed_counts(Kind::Namespace, &[], &pods);
    assert_eq!(
        m[&key("a", "a")],
        Meshed {
            meshed: 1,
            total: 3
        }
    );
    assert_eq!(
        m[&key("b", "b")],
        Meshed {
            meshed: 1,
            total: 1
        }
    );
    let m = meshed_counts(Kind::Pod, &[], &pods);
    assert_eq!(m.len(), 4);
    assert_eq!(
        m[&key("a", "web-2")],
        Meshed {
            meshed: 0,
            total: 1
        }
    );
    assert!(meshed_counts(Kind::Service, &owners, &pods).is_empty());
}

#[test]
fn rows_are_listed_resources_and_resources_with_traffic() {
    let meshed = BTreeMap::from([
        (
            key("a", "web"),
            Meshed {
                meshed: 1,
                total: 1,
            },
        ),
        (
            key("a", "db"),
            Meshed {
                meshed: 0,
                total: 1,
            },
        ),
        (
            key("a", "gone"),
            Meshed {
                meshed: 0,
                total: 0,
            },
        ),
    ]);
    let listed = [key("a", "web"), key("a", "db"), key("a", "idle")];
    let traffic = BTreeMap::from([(
        key("a", "gone"),
        Traffic {
            success: 1.0,
            ..Default::default()
        },
    )]);
    let all = rows(Kind::Deployment, &listed, &meshed, traffic.clone(), true);
    let names: Vec<&str> = all.iter().map(|r| r.key.name.as_str()).collect();
    // --unmeshed keeps them all.
    assert_eq!(names, ["db", "gone", "idle", "web"]);
    let rows = rows(Kind::Deployment, &listed, &meshed, traffic, false);
    let names: Vec<&str> = rows.iter().map(|r| r.key.name.as_str()).collect();
    // db and idle have no meshed pod and no traffic: hidden.
    assert_eq!(names, ["gone", "web"]);
    assert!(rows[0].traffic.is_some() && rows[1].traffic.is_none());
    assert_eq!(
        rows[1].meshed,
        Some(Meshed {
            meshed: 1,
            total: 1
        })
    );

    // Services have no MESHED; every listed one shows.
    let svc = super::rows(
        Kind::Service,
        &[key("a", "web-svc"), key("a", "web-svc-east")],
        &BTreeMap::new(),
        BTreeMap::new(),
        false,
    );
    assert_eq!(svc.len(), 2);
    assert!(
        svc.iter()
            .all(|r| r.meshed.is_none() && r.traffic.is_none())
    );
    assert!(super::rows(Kind::Service, &[], &BTreeMap::new(), BTreeMap::new(), false).is_empty());
}

/// A pod from its status in JSON, as the API server writes it.
fn pod_with(status: serde_json::Value, deleting: bool) -> Pod {
    let mut meta = serde_json::json!({"name": "p", "namespace": "n"});
    if deleting {
        meta["deletionTimestamp"] = "2026-12-03T00:00:00Z".into();
    }
    serde_json::from_value(serde_json::json!({"metadata": meta, "status": status})).expect("a pod")
}

#[test]
fn pod_status_reads_as_kubectl_shows_it() {
    let running = serde_json::json!({
        "phase": "Running",
        "initContainerStatuses": [{"name": "tandem-init", "ready": true, "restartCount": 0,
            "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "i",
            "imageID": "", "state": {"running": {}}}],
    });
    let crashing = serde_json::json!({
        "phase": "Running",
        "containerStatuses": [
            {"name": "tandem-proxy", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
             "state": {"running": {}}},
            {"name": "app", "ready": false, "restartCount": 3, "image": "i", "imageID": "",
             "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
    });
    let initializing = serde_json::json!({
        "phase": "Pending",
        "initContainerStatuses": [{"name": "tandem-init", "ready": false, "restartCount": 0,
            "image": "i", "imageID": "", "state": {"waiting": {"reason": "PodInitializing"}}}],
    });
    let init_failed = serde_json::json!({
        "phase": "Pending",
        "initContainerStatuses": [{"name": "tandem-init", "ready": false, "restartCount": 1,
            "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 2}}}],
    });
    let killed = serde_json::json!({
        "phase": "Failed",
        "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0, "image": "i",
            "imageID": "", "state": {"terminated": {"exitCode": 137, "signal": 9}}}],
    });
    let evicted = serde_json::json!({"phase": "Failed", "reason": "Evicted"});
    let cases = [
        (running.clone(), false, "Running"),
        (running, true, "Terminating"),
        (crashing, false, "CrashLoopBackOff"),
        (initializing, false, "Init:0/1"),
        (init_failed, false, "Init:ExitCode:2"),
        (killed, false, "Signal:9"),
        (evicted, false, "Evicted"),
        (serde_json::json!({}), false, "Unknown"),
    ];
    for (status, deleting, want) in cases {
        assert_eq!(
            pod_status(&pod_with(status.clone(), deleting)),
            want,
            "{status}"
        );
    }
}

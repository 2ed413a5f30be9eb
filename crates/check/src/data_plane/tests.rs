use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::{Gathered, ProxyPod, ServiceMeta, judge, judge::*, proxy_pod};
use crate::{Category, Outcome};

fn pod(status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "emoji-1", "namespace": "emojivoto",
            "labels": { "app": "emoji", "linkerd.io/inject": "enabled" },
            "annotations": { "linkerd.io/proxy-version": "1.2.3" },
        },
        "spec": { "containers": [
            { "name": "tandem-proxy", "env": [
                { "name": "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
                  "value": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" },
            ] },
            { "name": "emoji-svc" },
        ] },
        "status": status,
    }))
    .unwrap()
}

#[test]
fn a_pod_is_read_for_its_proxy() {
    let running = |ready: bool| {
        json!({ "phase": "Running", "containerStatuses": [
            { "name": "tandem-proxy", "ready": ready, "restartCount": 2, "image": "i", "imageID": "",
              "state": { "running": {} } },
            { "name": "emoji-svc", "ready": true, "restartCount": 0, "image": "i", "imageID": "" },
        ] })
    };
    let p = proxy_pod(&pod(running(true))).expect("a pod with a proxy");
    assert_eq!(p.name, "emojivoto/emoji-1");
    assert_eq!(p.not_ready, None);
    assert_eq!(p.version.as_deref(), Some("1.2.3"));
    assert_eq!(p.anchors, Some(BTreeSet::from(["AAAA".to_string()])));
    assert!(p.labels.contains(&"linkerd.io/inject".to_string()));

    let cases = [
        (running(false), "running, not ready, 2 restart(s)"),
        (
            json!({ "phase": "Running", "containerStatuses": [
                { "name": "tandem-proxy", "ready": false, "restartCount": 5, "image": "i", "imageID": "",
                  "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 40s" } } },
            ] }),
            "CrashLoopBackOff: back-off 40s",
        ),
        (
            json!({ "phase": "Running", "containerStatuses": [
                { "name": "tandem-proxy", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                  "state": { "terminated": { "reason": "Error", "exitCode": 1 } } },
            ] }),
            "terminated (Error, exit code 1)",
        ),
        (
            json!({ "phase": "Pending" }),
            "pod Pending, the proxy not started",
        ),
        (json!(null), "pod Pending, the proxy not started"),
    ];
    for (status, why) in cases {
        let p = proxy_pod(&pod(status.clone())).expect("a pod with a proxy");
        assert_eq!(p.not_ready.as_deref(), Some(why), "{status}");
    }

    // Pods with no proxy, finished ones and terminating ones are not the data plane's.
    let mut plain = pod(running(true));
    plain.spec.as_mut().unwrap().containers.remove(0);
    assert_eq!(proxy_pod(&plain), None);
    for phase in ["Succeeded", "Failed"] {
        assert_eq!(proxy_pod(&pod(json!({ "phase": phase }))), None, "{phase}");
    }
    let mut going = serde_json::to_value(pod(running(true))).unwrap();
    going["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
    assert_eq!(proxy_pod(&serde_json::from_value(going).unwrap()), None);

    // A native sidecar (an init container that keeps running) counts, and
    // anchors taken from elsewhere than the pod spec are not compared.
    let mut native: Pod = serde_json::from_value(json!({
        "metadata": { "name": "web-1", "namespace": "emojivoto" },
        "spec": {
            "initContainers": [{ "name": "linkerd-proxy", "restartPolicy": "Always", "env": [
                { "name": "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
                  "valueFrom": { "configMapKeyRef": { "name": "roots", "key": "ca" } } },
            ] }],
            "containers": [{ "name": "web" }],
        },
        "status": { "phase": "Running", "initContainerStatuses": [
            { "name": "linkerd-proxy", "ready": true, "restartCount": 0, "image": "i", "imageID": "" },
        ] },
    }))
    .unwrap();
    let p = proxy_pod(&native).expect("a native sidecar is a proxy");
    assert_eq!((p.not_ready, p.version, p.anchors), (None, None, None));
    native.spec.as_mut().unwrap().init_containers = None;
    assert_eq!(proxy_pod(&native), None);
}

fn ready_pod(name: &str) -> ProxyPod {
    ProxyPod {
        name: format!("emojivoto/{name}"),
        not_ready: None,
        version: Some("1.2.3".into()),
        anchors: Some(BTreeSet::from(["AAAA".to_string()])),
        labels: vec!["app".into()],
    }
}

fn service(name: &str, labels: &[&str], annotations: &[&str]) -> ServiceMeta {
    ServiceMeta {
        name: format!("emojivoto/{name}"),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        annotations: annotations.iter().map(|s| s.to_string()).collect(),
    }
}

fn healthy() -> Gathered {
    Gathered {
        namespace: Some(("emojivoto".into(), Ok(true))),
        pods: Ok(vec![ready_pod("emoji-1"), ready_pod("web-1")]),
        services: Ok(vec![service(
            "emoji-svc",
            &["app", "mirror.linkerd.io/exported"],
            &["config.linkerd.io/opaque-ports"],
        )]),
        anchors: Ok(BTreeSet::from(["AAAA".to_string()])),
    }
}

/// Each category's checks as (description, outcome), and every error text.
type Shape<'a> = Vec<(String, Vec<(&'a str, Outcome)>)>;

fn verdicts(categories: &[Category]) -> (Shape<'_>, String) {
    let shape = categories
        .iter()
        .map(|c| {
            let checks = c
                .checks
                .iter()
                .map(|r| (r.description.as_str(), r.outcome))
                .collect();
            (c.name.clone(), checks)
        })
        .collect();
    let errors = categories
        .iter()
        .flat_map(|c| &c.checks)
        .filter_map(|c| c.error.clone())
        .collect::<Vec<_>>()
        .join("\n");
    (shape, errors)
}

#[test]
fn a_healthy_data_plane_passes_every_check() {
    let categories = judge(&healthy(), "1.2.3");
    let (shape, errors) = verdicts(&categories);
    use Outcome::Success as S;
    assert_eq!(
        shape,
        [
            (IDENTITY_CATEGORY.to_string(), vec![(CERTIFICATES, S)]),
            (
                CATEGORY.to_string(),
                vec![
                    (NAMESPACE_EXISTS, S),
                    (READY, S),
                    (VERSIONS, S),
                    (POD_LABELS, S),
                    (SERVICE_LABELS, S),
                    (SERVICE_ANNOTATIONS, S)
                ]
            ),
        ]
    );
    assert_eq!(errors, "");
}

#[test]
fn each_problem_is_its_own_verdict() {
    use Outcome::{Error as E, Success as S, Warning as W};
    type Case = (
        &'static str,
        fn(&mut Gathered),
        &'static str,
        Outcome,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "no namespace",
            |g| g.namespace.as_mut().unwrap().1 = Ok(false),
            NAMESPACE_EXISTS,
            E,
            "The \"emojivoto\" namespace does not exist",
        ),
        (
            "no pods listed",
            |g| g.pods = Err("listing pods: forbidden".into()),
            READY,
            E,
            "listing pods: forbidden",
        ),
        (
            "no proxies",
            |g| g.pods = Ok(vec![]),
            READY,
            E,
            "No \"tandem-proxy\" containers found in namespace emojivoto",
        ),
        (
            "a proxy starting",
            |g| {
                g.pods.as_mut().unwrap()[1].not_ready = Some("ContainerCreating".into());
            },
            READY,
            E,
            "1 of 2 proxies are not ready:\n* emojivoto/web-1: ContainerCreating",
        ),
        (
            "an old proxy",
            |g| g.pods.as_mut().unwrap()[0].version = Some("1.0.0".into()),
            VERSIONS,
            W,
            "1 of 2 proxies are not at the CLI's version 1.2.3:\n* emojivoto/emoji-1: running version 1.0.0",
        ),
        (
            "a proxy of unknown version",
            |g| g.pods.as_mut().unwrap()[0].version = None,
            VERSIONS,
            W,
            "emojivoto/emoji-1: no linkerd.io/proxy-version annotation",
        ),
        (
            "inject as a label",
            |g| {
                g.pods.as_mut().unwrap()[0]
                    .labels
                    .push("config.linkerd.io/skip-inbound-ports".into());
            },
            POD_LABELS,
            W,
            "should be annotations:\n* emojivoto/emoji-1\n    config.linkerd.io/skip-inbound-ports",
        ),
        (
            "a service setting as a label",
            |g| {
                g.services = Ok(vec![service(
                    "voting-svc",
                    &["config.alpha.linkerd.io/x"],
                    &[],
                )]);
            },
            SERVICE_LABELS,
            W,
            "* emojivoto/voting-svc\n    config.alpha.linkerd.io/x",
        ),
        (
            "exported as an annotation",
            |g| {
                g.services = Ok(vec![service(
                    "emoji-svc",
                    &[],
                    &["mirror.linkerd.io/exported"],
                )]);
            },
            SERVICE_ANNOTATIONS,
            W,
            "should be labels:\n* emojivoto/emoji-svc\n    mirror.linkerd.io/exported",
        ),
        (
            "no services listed",
            |g| g.services = Err("listing services: forbidden".into()),
            SERVICE_LABELS,
            E,
            "listing services: forbidden",
        ),
        (
            "rotated anchors",
            |g| {
                g.anchors = Ok(BTreeSet::from(["AAAA".to_string(), "BBBB".to_string()]));
            },
            CERTIFICATES,
            W,
            "must be restarted:\n* emojivoto/emoji-1\n* emojivoto/web-1",
        ),
        (
            "unreadable anchors",
            |g| g.anchors = Err("ConfigMap tandem/x is missing".into()),
            CERTIFICATES,
            E,
            "the control plane's trust anchors: ConfigMap tandem/x is missing",
        ),
        (
            "all namespaces",
            |g| {
                g.namespace = None;
                g.pods = Ok(vec![]);
            },
            READY,
            E,
            "found in any namespace",
        ),
    ];
    for (name, change, check, outcome, says) in cases {
        let mut g = healthy();
        change(&mut g);
        let categories = judge(&g, "1.2.3");
        let (shape, errors) = verdicts(&categories);
        let got: Vec<(&str, Outcome)> = shape.iter().flat_map(|(_, c)| c.clone()).collect();
        assert!(got.contains(&(check, outcome)), "{name}: {got:?}");
        // The problem is the only one reported.
        let others: Vec<_> = got.iter().filter(|(c, o)| *c != check && *o != S).collect();
        assert!(others.is_empty(), "{name}: {others:?}");
        assert!(
            errors.contains(says),
            "{name}: {errors:?} should say {says:?}"
        );
        // Waiting may fix pods that are starting, not settings.
        let retryable = categories
            .iter()
            .flat_map(|c| &c.checks)
            .any(|c| c.retryable);
        let expected = matches!(
            name,
            "no pods listed" | "a proxy starting" | "no services listed"
        );
        assert_eq!(retryable, expected, "{name}");
    }
}

#[test]
fn long_lists_are_cut_and_counted() {
    let mut g = healthy();
    let pods: Vec<ProxyPod> = (0..25)
        .map(|i| ProxyPod {
            not_ready: Some("ContainerCreating".into()),
            ..ready_pod(&format!("p{i}"))
        })
        .collect();
    g.pods = Ok(pods);
    let categories = judge(&g, "1.2.3");
    let (_, errors) = verdicts(&categories);
    assert!(
        errors.starts_with("25 of 25 proxies are not ready:\n"),
        "{errors}"
    );
    assert_eq!(errors.matches("* emojivoto/p").count(), 10, "{errors}");
    assert!(errors.ends_with("... and 15 more"), "{errors}");
}

//! The writer against an in-process API (`tandem_runtime::mock`), which
//! records every request: a Service of a mirror's name that is not this
//! Link's is never written, and deletes hit exactly the objects written.

use std::sync::{Arc, Mutex};

use http::Method;
use kube::runtime::events::Reporter;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tandem_api::multicluster::{CLUSTER_NAME_LABEL, MIRRORED_SERVICE_LABEL};
use tandem_runtime::mock::{self, Reply, status};

use super::*;
use crate::{
    mirror::{link_label, mirror_service},
    state::tests::mk_link as link,
};

const SERVICES: &str = "/api/v1/namespaces/ns/services";
const MIRROR: &str = "/api/v1/namespaces/ns/services/web-west";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/tandem-multicluster/events";

/// One request the API got.
#[derive(Clone, Debug)]
struct Sent {
    method: Method,
    path: String,
    body: Option<Value>,
}

type Log = Arc<Mutex<Vec<Sent>>>;

/// A client over `answer`, recording every request in the log.
fn recording(answer: impl Fn(&Sent) -> Reply + Send + Sync + 'static) -> (Client, Log) {
    let log = Log::default();
    let seen = log.clone();
    let client = mock::client(move |method, path, body| {
        let sent = Sent {
            method: method.clone(),
            path: path.to_string(),
            body,
        };
        seen.lock().unwrap().push(sent.clone());
        answer(&sent)
    });
    (client, log)
}

/// What every other request gets: its own body back (a write "succeeds",
/// so that one the writer must not make shows in its result too).
fn echo(sent: &Sent) -> Reply {
    match &sent.body {
        Some(body) => Reply::json(200, body.clone()),
        None => Reply::json(404, status(404, "NotFound")),
    }
}

/// The mirror `ns/web-west` of the remote Service `ns/web`.
fn desired() -> Service {
    let remote: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap();
    mirror_service(&remote, &link()).unwrap()
}

fn writer(client: Client) -> Arc<Writer> {
    Arc::new(Writer {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: None,
            },
        ),
        local: client,
        metrics: Metrics::register(&mut Registry::default()),
        create_namespaces: false,
        label: link_label(&link()),
    })
}

/// A new mirror (no uid known) to write, with its endpoints.
fn new_mirror() -> Job {
    Job {
        key: Key::new("ns", "web"),
        stale: vec![],
        work: Work::Mirror(Box::new(MirrorWork {
            link: link(),
            desired: desired(),
            write_service: true,
            uid: None,
            written_uid: None,
            written_slice: None,
            endpoints: Some(Endpoints {
                ips: vec!["127.20.0.1".parse().unwrap()],
                alive: true,
                remote_ready: true,
            }),
            previous: Outcome::Pending,
        })),
    }
}

/// The local Service `ns/web-west` with these labels.
fn existing(uid: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web-west", "namespace": "ns", "uid": uid, "labels": labels},
        "spec": {"ports": [{"port": 8080}]},
    })
}

/// The create finds the name taken (409); the fresh read finds `found`.
fn name_taken(found: Value) -> impl Fn(&Sent) -> Reply + Send + Sync + 'static {
    move |sent| match (&sent.method, sent.path.as_str()) {
        (&Method::POST, SERVICES) => Reply::json(409, status(409, "AlreadyExists")),
        (&Method::GET, MIRROR) => Reply::json(200, found.clone()),
        _ => echo(sent),
    }
}

#[tokio::test]
async fn a_service_of_the_mirrors_name_that_is_not_this_links_is_never_written() {
    let cases = [
        ("a user's Service", json!({"app": "web"})),
        (
            "another Link's mirror",
            json!({
                MIRRORED_SERVICE_LABEL: "true",
                CLUSTER_NAME_LABEL: "west",
                LINK_LABEL: "elsewhere.west",
            }),
        ),
    ];
    for (what, labels) in cases {
        let (client, log) = recording(name_taken(existing("their-uid", labels)));
        let report = writer(client).run(new_mirror()).await;

        assert!(
            matches!(&report.end, End::Failed { outcome: Outcome::NameTaken(_), at_least }
                if *at_least == Duration::from_secs(30)),
            "{what}: {:?}",
            report.end
        );
        assert!(report.service.is_none() && report.slice.is_none() && report.forget);
        let sent = log.lock().unwrap().clone();
        let calls: Vec<(&Method, &str)> =
            sent.iter().map(|s| (&s.method, s.path.as_str())).collect();
        assert_eq!(
            calls,
            [
                (&Method::POST, SERVICES),
                (&Method::GET, MIRROR),
                (&Method::POST, EVENTS)
            ],
            "{what}: a create, a fresh read, the Event; no PATCH, PUT or DELETE"
        );
        let created = sent[0].body.as_ref().unwrap();
        assert_eq!(created["metadata"]["name"], "web-west", "{what}");
        assert_eq!(sent[2].body.as_ref().unwrap()["reason"], "MirrorNameTaken");
    }
}

#[tokio::test]
async fn a_taken_name_that_is_this_links_mirror_is_written_exactly_that_object() {
    let ours = desired().metadata.labels.unwrap();
    let (client, log) = recording(name_taken(existing("our-uid", json!(ours))));
    let report = writer(client).run(new_mirror()).await;

    assert_eq!(report.end, End::Mirrored);
    let written = report.service.expect("the mirror is written");
    assert_eq!(written.uid.as_deref(), Some("our-uid"));
    let sent = log.lock().unwrap().clone();
    let patches: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.method == Method::PATCH && s.path == MIRROR)
        .collect();
    assert_eq!(patches.len(), 1, "{sent:#?}");
    assert_eq!(
        patches[0].body.as_ref().unwrap()["metadata"]["uid"],
        "our-uid",
        "applied with the uid it read as a precondition"
    );
}

/// A delete's `preconditions.uid`.
fn precondition(sent: &Sent) -> Option<&str> {
    sent.body.as_ref()?["preconditions"]["uid"].as_str()
}

fn target(name: &str, uid: &str, slice_uid: Option<&str>) -> Target {
    Target {
        mirror: Key::new("ns", name),
        uid: uid.into(),
        slice_uid: slice_uid.map(Into::into),
    }
}

fn deleted(sent: &Sent) -> Reply {
    match sent.method {
        Method::DELETE => Reply::json(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
        ),
        _ => echo(sent),
    }
}

#[tokio::test]
async fn deletes_carry_the_uid_the_writer_recorded() {
    let (client, log) = recording(deleted);
    let job = Job {
        key: Key::new("ns", "web"),
        stale: vec![target("web-east", "stale-uid", None)],
        work: Work::Gone(Some(target("web-west", "svc-uid", Some("slice-uid")))),
    };
    let report = writer(client).run(job).await;

    assert_eq!(report.end, End::Gone);
    assert!(report.forget && !report.delete_failed);
    let sent = log.lock().unwrap().clone();
    let deletes: Vec<(&str, Option<&str>)> = sent
        .iter()
        .filter(|s| s.method == Method::DELETE)
        .map(|s| (s.path.as_str(), precondition(s)))
        .collect();
    assert_eq!(
        deletes,
        [
            ("/api/v1/namespaces/ns/services/web-east", Some("stale-uid")),
            (
                "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices/web-west-gateway",
                Some("slice-uid")
            ),
            (MIRROR, Some("svc-uid")),
        ]
    );
    assert_eq!(sent.len(), deletes.len(), "nothing but deletes: {sent:#?}");
}

#[tokio::test]
async fn a_delete_refused_for_its_uid_leaves_the_object_alone() {
    // The Service was deleted and made again by someone else: the uid
    // precondition fails (409), and that object is not the mirror's.
    let (client, log) = recording(|sent| match sent.method {
        Method::DELETE => Reply::json(409, status(409, "Conflict")),
        _ => echo(sent),
    });
    let job = Job {
        key: Key::new("ns", "web"),
        stale: vec![],
        work: Work::Invalid {
            why: "no ports".into(),
            mirror: Some(target("web-west", "svc-uid", None)),
        },
    };
    let report = writer(client).run(job).await;

    assert!(report.forget && !report.delete_failed, "{report:?}");
    let sent = log.lock().unwrap().clone();
    assert_eq!(
        sent.len(),
        1,
        "never deleted again without the uid: {sent:#?}"
    );
    assert_eq!(sent[0].method, Method::DELETE);
    assert_eq!(precondition(&sent[0]), Some("svc-uid"));
}

//! The testbed agent (`tandem testbed agent`) against a real kube-apiserver:
//! LoadBalancer addresses from a pool, and image hints.
//!
//! A private one-cluster testbed of fake nodes, since the agent watches every
//! namespace and would hand addresses to other tests' Services; the agent
//! only talks to the API, so kwok's node is enough.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, process::Command, time::Duration};

use k8s_openapi::api::{
    core::v1::{Container, Pod, PodSpec, Service, ServicePort, ServiceSpec},
    events::v1::Event,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use tandem_harness::{Env, PrivateTestbed, Process, eventually, free_port};

/// Ports of this file's private testbed (one cluster: 19440-19449).
const BASE_PORT: u16 = 19440;
const CLUSTER: &str = "east";
const POOL: &str = "198.18.64.0/24";
/// A deadline for what the agent does "within a few seconds".
const SOON: Duration = Duration::from_secs(10);

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// A `tandem testbed agent` process, started with the harness's launcher:
/// its log is printed if the test fails; it is killed, by pid, when dropped.
struct Agent(Process);

impl Agent {
    /// Starts the agent and waits until /healthz answers 200.
    fn start(env: &Env) -> Agent {
        let port = free_port();
        let mut cmd = Command::new(tandem_bin());
        cmd.args(["testbed", "agent", "--kubeconfig"])
            .arg(&env.kubeconfig)
            .args(["--context", CLUSTER, "--lb-pool", POOL, "--health-port"])
            .arg(port.to_string());
        let mut agent = Process::spawn("the testbed agent", cmd, port);
        agent.wait_http_ok("/healthz", Duration::from_secs(60));
        Agent(agent)
    }

    /// The value of the metric line that starts with `name ` (no labels).
    fn metric(&self, name: &str) -> Option<f64> {
        self.0.metric(&format!("{name} "))
    }

    /// SIGKILL, as a crash would end it.
    fn kill(&mut self) {
        self.0.kill();
    }
}

// === objects ===

fn service(name: &str, type_: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
            ports: Some(vec![ServicePort {
                port: 80,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn lb(name: &str) -> Service {
    service(name, "LoadBalancer")
}

fn lb_requesting(name: &str, ip: &str) -> Service {
    let mut s = lb(name);
    s.spec.as_mut().unwrap().load_balancer_ip = Some(ip.into());
    s
}

/// A pod nobody schedules, so that nothing but the test writes its status.
fn unscheduled_pod(name: &str, image: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            scheduler_name: Some("tandem-test-nobody".into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some(image.into()),
                image_pull_policy: Some("Never".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

// === reads ===

/// The ingress of a Service: (ip, ipMode) of each entry.
async fn ingress(api: &Api<Service>, name: &str) -> Vec<(Option<String>, Option<String>)> {
    let svc = api.get(name).await.expect("the Service exists");
    svc.status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i.ip, i.ip_mode))
        .collect()
}

/// Waits until the Service shows exactly one address, in VIP mode.
async fn wait_ip(api: &Api<Service>, name: &str) -> Ipv4Addr {
    eventually(
        &format!("Service {name} gets an address"),
        SOON,
        || async move {
            match ingress(api, name).await.as_slice() {
                [(Some(ip), Some(mode))] if mode == "VIP" => {
                    ip.parse().map_err(|e| format!("{ip}: {e}"))
                }
                other => Err(format!("ingress {other:?}")),
            }
        },
    )
    .await
}

async fn assert_no_ip(api: &Api<Service>, name: &str) {
    let shown = ingress(api, name).await;
    assert!(
        shown.is_empty(),
        "Service {name} got no address, but shows {shown:?}"
    );
}

/// Events about `name` with `reason`, in the namespace.
async fn events(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("events list")
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect()
}

/// Waits for exactly the first Event about `name` with `reason`; returns its note.
async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str) -> Event {
    eventually(&format!("Event {reason} on {name}"), SOON, || async move {
        events(client, ns, name, reason)
            .await
            .into_iter()
            .next()
            .ok_or_else(|| "none yet".to_string())
    })
    .await
}

fn pool_usable(ip: Ipv4Addr) -> bool {
    let [a, b, c, d] = ip.octets();
    (a, b, c) == (198, 18, 64) && d != 0 && d != 255
}

// === the test ===

#[tokio::test]
async fn the_agent_hands_out_addresses_keeps_them_across_a_restart_and_hints_images() {
    let tb = PrivateTestbed::start(tandem_bin(), &[CLUSTER], BASE_PORT);
    let env = tb.env.clone();
    let client = env.client(CLUSTER).await;
    let ns = env.namespace("agent", &[CLUSTER]);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pp = PostParams::default();
    let create = |svc: Service| {
        let svcs = svcs.clone();
        let pp = pp.clone();
        async move {
            svcs.create(&pp, &svc)
                .await
                .unwrap_or_else(|e| panic!("creating a Service: {e}"))
        }
    };

    let mut agent = Agent::start(&env);

    // Two LoadBalancer Services get distinct addresses of the pool. A
    // ClusterIP Service and one of another class, created before them, get
    // none: the agent sees events in order, so by the time the later ones
    // have addresses, the earlier ones were decided.
    create(service("plain", "ClusterIP")).await;
    let mut classed = lb("classed");
    classed.spec.as_mut().unwrap().load_balancer_class = Some("example.com/other".into());
    create(classed).await;
    create(lb("one")).await;
    create(lb("two")).await;
    let one = wait_ip(&svcs, "one").await;
    let two = wait_ip(&svcs, "two").await;
    assert_ne!(one, two, "two Services, two addresses");
    assert!(
        pool_usable(one) && pool_usable(two),
        "{one} and {two} are usable addresses of {POOL}"
    );
    assert_no_ip(&svcs, "plain").await;
    assert_no_ip(&svcs, "classed").await;
    let allocated = wait_event(&client, &ns.name, "one", "IPAllocated").await;
    assert_eq!(allocated.type_.as_deref(), Some("Normal"));
    assert_eq!(
        allocated.note.as_deref(),
        Some(format!("assigned {one} from pool {POOL}").as_str())
    );

    // A requested address of the pool is given exactly.
    create(lb_requesting("wanted", "198.18.64.200")).await;
    assert_eq!(
        wait_ip(&svcs, "wanted").await,
        Ipv4Addr::new(198, 18, 64, 200)
    );

    // One outside the pool is refused, with the reason in an Event.
    create(lb_requesting("far", "198.18.65.10")).await;
    let failed = wait_event(&client, &ns.name, "far", "AllocationFailed").await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    let note = failed.note.unwrap_or_default();
    assert!(
        note.contains("198.18.65.10") && note.contains("outside") && note.contains(POOL),
        "the Event says why: {note}"
    );
    assert_no_ip(&svcs, "far").await;

    // Deleting a Service frees its address for the next one (the lowest
    // free address is the freed one).
    assert!(one < two, "the first Service got the lower address");
    svcs.delete("one", &DeleteParams::default())
        .await
        .expect("delete one");
    create(lb("three")).await;
    assert_eq!(
        wait_ip(&svcs, "three").await,
        one,
        "three gets one's address"
    );
    assert_no_ip(&svcs, "far").await;
    // The refused Service was not written, nor was it announced twice.
    assert_eq!(
        events(&client, &ns.name, "far", "AllocationFailed")
            .await
            .len(),
        1
    );

    // A restart keeps every address, without rewriting any status.
    let held = ["two", "wanted", "three"];
    let mut before = BTreeMap::new();
    for name in held {
        let svc = svcs.get(name).await.expect("get");
        before.insert(
            name,
            (wait_ip(&svcs, name).await, svc.metadata.resource_version),
        );
    }
    agent.kill();
    let agent = Agent::start(&env);
    create(lb("four")).await;
    let four = wait_ip(&svcs, "four").await;
    assert!(
        before.values().all(|(ip, _)| *ip != four),
        "four ({four}) got an address nobody held: {before:?}"
    );
    for name in held {
        let svc = svcs.get(name).await.expect("get");
        let now = (wait_ip(&svcs, name).await, svc.metadata.resource_version);
        assert_eq!(before[name], now, "{name} kept its address, untouched");
    }
    assert_no_ip(&svcs, "far").await;
    assert_eq!(
        agent.metric("tandem_testbed_agent_lb_assigned_addresses"),
        Some(4.0),
        "two, wanted, three and four hold addresses"
    );

    // Image hints: kwok never reports a missing image, so the test writes
    // the kubelet's status itself, on a pod no scheduler (and so no kwok)
    // touches.
    let image = "tandem.local/not-loaded:1";
    pods.create(&pp, &unscheduled_pod("needs-image", image))
        .await
        .expect("create the pod");
    let waiting = |message: &str| {
        serde_json::json!({
            "status": {
                "phase": "Pending",
                "containerStatuses": [{
                    "name": "app",
                    "image": image,
                    "imageID": "",
                    "ready": false,
                    "restartCount": 0,
                    "state": { "waiting": { "reason": "ErrImageNeverPull", "message": message } }
                }]
            }
        })
    };
    pods.patch_status(
        "needs-image",
        &PatchParams::default(),
        &Patch::Merge(waiting(
            "Container image is not present with pull policy of Never",
        )),
    )
    .await
    .expect("the status subresource takes the kubelet's status");
    let hint = wait_event(&client, &ns.name, "needs-image", "ImageNotLoaded").await;
    assert_eq!(hint.type_.as_deref(), Some("Warning"));
    assert_eq!(
        hint.note.as_deref(),
        Some(format!(
            "image {image} is not loaded on the testbed's nodes (they never pull): build an archive and run `tandem testbed load ARCHIVE`, or `tandem testbed load --binary PATH --as {image}`"
        ).as_str())
    );
    // The kubelet reports again: no second hint. A second pod, hinted after,
    // shows that the agent has seen the update.
    pods.patch_status(
        "needs-image",
        &PatchParams::default(),
        &Patch::Merge(waiting("still not present")),
    )
    .await
    .expect("patch the status again");
    pods.create(&pp, &unscheduled_pod("needs-other", "tandem.local/other:2"))
        .await
        .expect("create the second pod");
    let mut other = waiting("not present");
    other["status"]["containerStatuses"][0]["image"] = "tandem.local/other:2".into();
    pods.patch_status("needs-other", &PatchParams::default(), &Patch::Merge(other))
        .await
        .expect("patch the second pod's status");
    let second = wait_event(&client, &ns.name, "needs-other", "ImageNotLoaded").await;
    assert!(
        second
            .note
            .unwrap_or_default()
            .contains("tandem.local/other:2"),
        "the second hint names its image"
    );
    let first = events(&client, &ns.name, "needs-image", "ImageNotLoaded").await;
    assert_eq!(first.len(), 1, "one hint per pod and image");
    assert!(first[0].series.is_none(), "and not repeated as a series");
    assert_eq!(
        agent.metric("tandem_testbed_agent_image_hints_total"),
        Some(2.0)
    );
}

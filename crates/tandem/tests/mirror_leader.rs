//! The service mirror among replicas, against real kube-apiservers: only the
//! holder of the Link's Lease (`service-mirror-write-<link>`, Linkerd's
//! name) mirrors; a standby writes nothing, and takes over when the leader
//! goes: after the lease when it vanishes, at once when it stops cleanly.

use std::{net::SocketAddr, path::Path, time::Duration};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Service};
use kube::Api;
use tandem_api::multicluster::mirror_lease_name;
use tandem_harness::{Env, eventually, http, mirror::*};
use tandem_lease::LeaseParams;
use tandem_multicluster::{FIELD_MANAGER, MirrorSettings};

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// A replica: its mirror and its admin address.
struct Replica {
    mirror: Mirror,
    admin: SocketAddr,
}

async fn replica(env: &Env, ns: &str, link: &str, identity: &str) -> Replica {
    let admin = http::free_addr().unwrap();
    let lease = LeaseParams {
        // Short, so that the takeover after a vanished leader is quick;
        // renewed often enough that a busy machine does not lose it.
        lease_duration: Duration::from_secs(6),
        renew_period: Duration::from_secs(1),
        field_manager: FIELD_MANAGER.into(),
        ..LeaseParams::new(ns, mirror_lease_name(link), identity)
    };
    let settings = MirrorSettings {
        admin_addr: Some(admin),
        lease: Some(lease),
        ..Mirror::settings(ns, link)
    };
    Replica {
        mirror: Mirror::start_settings(env, settings).await,
        admin,
    }
}

/// One sample of a replica's metrics, by its name without labels.
async fn metric(admin: SocketAddr, name: &str) -> Result<f64, String> {
    let answer = http::get(admin, "/metrics")
        .await
        .map_err(|e| e.to_string())?;
    answer
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .ok_or(format!("no {name} in /metrics"))?
        .trim()
        .parse()
        .map_err(|e| format!("{name}: {e}"))
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .expect("reading the Lease")
        .and_then(|l| l.spec?.holder_identity)
}

/// Waits until `who` holds the Lease.
async fn held_by(leases: &Api<Lease>, name: &str, who: &str) {
    eventually(&format!("{who} takes the Lease"), SETTLE, || async {
        let h = holder(leases, name).await;
        (h.as_deref() == Some(who))
            .then_some(())
            .ok_or(format!("{h:?}"))
    })
    .await;
}

/// The line of `multicluster check` about this Link's leader.
async fn check_leader_line(env: &Env, n: &str, link: &str) -> String {
    let mut cmd = env.tandem();
    cmd.args(["--context", "east", "multicluster", "check", "--wait", "0s"]);
    let out = tokio::task::spawn_blocking(move || tandem_harness::run(&mut cmd))
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let what = format!("Link {n}/{link}: the service mirror has a leader");
    let mut lines = text.lines().skip_while(|l| !l.contains(&what));
    match (lines.next(), lines.next()) {
        (Some(line), next) => format!("{line}\n{}", next.unwrap_or_default()),
        (None, _) => panic!("no check of {what}:\n{text}"),
    }
}

/// Waits until a replica stands by: ready, not leading, with no writes.
async fn standing_by(r: &Replica, who: &str) {
    eventually(&format!("{who} stands by"), SETTLE, || async {
        let leader = metric(r.admin, "tandem_mirror_leader").await?;
        let ready = http::get(r.admin, "/ready")
            .await
            .map_err(|e| e.to_string())?;
        (leader == 0.0 && ready.status == 200)
            .then_some(())
            .ok_or(format!("leader {leader}, /ready {}", ready.status))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_mirrors_and_a_standby_takes_over() {
    init_logs();
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("mirror-leader", &["east", "west"]);
    let n = ns.name.as_str();
    let east = env.client("east").await;
    let west = env.client("west").await;
    let link = "lead-west";
    let _pair = link_pair(&env, &east, &west, n, link, "127.20.19.9").await;
    let services: Api<Service> = Api::namespaced(east.clone(), n);
    let leases: Api<Lease> = Api::namespaced(east.clone(), n);
    let lease = mirror_lease_name(link);

    // The first replica takes the Lease and mirrors.
    let a = replica(&env, n, link, "a").await;
    export(&west, n, "emoji", n, 1).await;
    appears(&services, "emoji-west").await;
    assert_eq!(holder(&leases, &lease).await.as_deref(), Some("a"));
    assert_eq!(metric(a.admin, "tandem_mirror_leader").await, Ok(1.0));
    let line = check_leader_line(&env, n, link).await;
    assert!(line.starts_with('√'), "{line}");

    // A second one stands by: ready, and it writes nothing while the
    // leader mirrors one more Service.
    let b = replica(&env, n, link, "b").await;
    standing_by(&b, "b").await;
    export(&west, n, "voting", n, 1).await;
    appears(&services, "voting-west").await;
    wait_ready(
        &east,
        n,
        "voting-west",
        true,
        SETTLE,
        "voting-west is ready",
    )
    .await;
    assert_eq!(
        metric(b.admin, "tandem_mirror_mirror_writes_total").await,
        Ok(0.0),
        "a standby never writes"
    );
    assert_eq!(metric(b.admin, "tandem_mirror_leader").await, Ok(0.0));
    assert_eq!(holder(&leases, &lease).await.as_deref(), Some("a"));

    // The leader vanishes without releasing the Lease (its task is
    // aborted, as a killed pod's process would be): the standby takes over
    // once the lease has run out, and mirrors what is exported next.
    drop(a);
    held_by(&leases, &lease, "b").await;
    export(&west, n, "web", n, 1).await;
    appears(&services, "web-west").await;
    wait_ready(&east, n, "web-west", true, SETTLE, "web-west is ready").await;
    assert_eq!(metric(b.admin, "tandem_mirror_leader").await, Ok(1.0));
    let writes = metric(b.admin, "tandem_mirror_mirror_writes_total").await;
    assert!(writes.as_ref().is_ok_and(|w| *w > 0.0), "{writes:?}");

    // A leader that stops cleanly releases the Lease on its way out, so
    // that a standby need not wait for it to run out.
    let c = replica(&env, n, link, "c").await;
    standing_by(&c, "c").await;
    b.mirror.shutdown().await;
    let after = holder(&leases, &lease).await;
    assert_ne!(after.as_deref(), Some("b"), "b released the Lease");
    held_by(&leases, &lease, "c").await;
    export(&west, n, "vote-bot", n, 1).await;
    appears(&services, "vote-bot-west").await;
    let transitions = leases
        .get(&lease)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.lease_transitions);
    assert_eq!(transitions, Some(2), "a → b → c");
    c.mirror.shutdown().await;
    // With no replica left, `check` says that none leads.
    let line = check_leader_line(&env, n, link).await;
    assert!(
        line.starts_with('×') && line.contains("no replica holds the Lease"),
        "{line}"
    );
}

/// A replica whose role has no rights on Leases (a new image applied with
/// the role of an older release) goes on as the only writer, as mirrors
/// did before leader election, and says how to turn it on: an upgrade must
/// not stop the mirroring.
#[test]
fn a_replica_without_lease_rights_runs_alone_and_says_why() {
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("mirror-no-lease", &["east"]);
    let n = ns.name.as_str();
    tandem_harness::run_ok(env.kubectl("east").args([
        "-n",
        n,
        "create",
        "serviceaccount",
        "no-lease",
    ]));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("no-lease.kubeconfig");
    env.service_account_kubeconfig("east", n, "no-lease", &kubeconfig);
    let port = tandem_harness::free_port();
    let mut cmd = std::process::Command::new(tandem_bin());
    cmd.args(["multicluster", "mirror", "--link", "west", "--namespace", n])
        .args(["--admin-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", &kubeconfig);
    let mirror = tandem_harness::Process::spawn("service mirror", cmd, port);
    // A deadline for what it says, not a speed bound.
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let leader = mirror.metric("tandem_mirror_leader ");
        let said = mirror.log_text();
        let hint = [
            format!("get of Lease {n}/service-mirror-write-west is forbidden"),
            "running as the only writer".into(),
            "apply `tandem multicluster link | kubectl apply -f -` again".into(),
        ]
        .iter()
        .all(|p| said.contains(p));
        if leader == Some(1.0) && hint {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror does not run alone: leader {leader:?}; log:\n{said}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

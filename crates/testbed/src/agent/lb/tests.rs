use k8s_openapi::{
    api::core::v1::{LoadBalancerStatus, ServiceSpec, ServiceStatus},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

use super::*;

fn pool() -> Pool {
    "198.18.64.0/24".parse().unwrap()
}

fn ip(s: &str) -> std::net::Ipv4Addr {
    s.parse().unwrap()
}

fn k(name: &str) -> ServiceKey {
    ServiceKey::new("ns", name)
}

fn mk_svc(name: &str, created: i64) -> Service {
    let mut svc = Service {
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    svc.metadata.name = Some(name.into());
    svc.metadata.namespace = Some("ns".into());
    svc.metadata.uid = Some(format!("uid-{name}"));
    svc.metadata.creation_timestamp = Some(Time(
        Timestamp::from_second(1_750_000_000 + created).unwrap(),
    ));
    svc
}

fn showing(mut svc: Service, ip: &str) -> Service {
    svc.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some(ip.into()),
                ip_mode: Some("VIP".into()),
                ..LoadBalancerIngress::default()
            }]),
        }),
        ..ServiceStatus::default()
    });
    svc
}

fn of_type(mut svc: Service, type_: &str) -> Service {
    svc.spec.as_mut().unwrap().type_ = Some(type_.into());
    svc
}

fn requesting(mut svc: Service, ip: &str) -> Service {
    svc.spec.as_mut().unwrap().load_balancer_ip = Some(ip.into());
    svc
}

/// (service, op) of every status write; `None` for a cancel.
fn writes(commands: &[Command]) -> Vec<(String, Option<StatusOp>)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Status { service, op, .. } => Some((service.name.clone(), Some(*op))),
            Command::Cancel { service } => Some((service.name.clone(), None)),
            Command::Event { .. } => None,
        })
        .collect()
}

/// (object, reason, text) of every Event, those after a write included.
fn events(commands: &[Command]) -> Vec<(String, &'static str, String)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Status {
                reference,
                then: Some(n),
                ..
            }
            | Command::Event {
                reference, note: n, ..
            } => Some((
                reference.name.clone().unwrap_or_default(),
                n.reason,
                n.text.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn set(name: &str, addr: &str) -> (String, Option<StatusOp>) {
    (name.into(), Some(StatusOp::Set(ip(addr))))
}

fn cancel(name: &str) -> (String, Option<StatusOp>) {
    (name.into(), None)
}

#[test]
fn services_are_read_as_the_allocator_needs() {
    let mut svc = requesting(showing(mk_svc("a", 0), "198.18.64.3"), "198.18.64.3");
    svc.spec.as_mut().unwrap().load_balancer_class = Some("example.com/x".into());
    let v = view(&svc);
    assert_eq!(v.key, k("a"));
    assert!(v.load_balancer);
    assert_eq!(v.class.as_deref(), Some("example.com/x"));
    assert_eq!(v.requested.as_deref(), Some("198.18.64.3"));
    assert_eq!(v.status_ips, vec!["198.18.64.3".to_string()]);
    assert!(!view(&of_type(mk_svc("b", 0), "ClusterIP")).load_balancer);
    assert!(!view(&Service::default()).load_balancer);
}

#[test]
fn nothing_is_decided_before_the_first_list() {
    let mut state = LbState::new(pool());
    assert!(state.apply(&mk_svc("a", 0)).is_empty());
    assert!(state.delete(&mk_svc("a", 0)).is_empty());
    assert_eq!(state.assigned(), 0);
}

#[test]
fn first_list_keeps_existing_addresses_then_assigns_the_rest() {
    let mut state = LbState::new(pool());
    let listed = [
        mk_svc("new", 30),
        showing(mk_svc("young", 20), "198.18.64.1"),
        showing(mk_svc("old", 10), "198.18.64.1"),
        showing(mk_svc("other", 15), "198.18.64.2"),
        of_type(mk_svc("plain", 0), "ClusterIP"),
    ];
    let (commands, conflicts) = state.reset(&listed);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        (conflicts[0].kept.clone(), conflicts[0].lost.clone()),
        (k("old"), k("young"))
    );
    // Oldest first: plain (nothing to do), old and other (already right),
    // then young (lost its address) and new get the lowest free ones.
    assert_eq!(
        writes(&commands),
        vec![
            cancel("plain"),
            cancel("old"),
            cancel("other"),
            set("young", "198.18.64.3"),
            set("new", "198.18.64.4"),
        ]
    );
    assert_eq!(
        events(&commands),
        vec![
            (
                "young".into(),
                ALLOCATED,
                "assigned 198.18.64.3 from pool 198.18.64.0/24".into()
            ),
            (
                "new".into(),
                ALLOCATED,
                "assigned 198.18.64.4 from pool 198.18.64.0/24".into()
            ),
        ]
    );
    assert_eq!(state.assigned(), 4);
}

#[test]
fn a_status_that_drifted_is_written_again_without_an_event() {
    let mut state = LbState::new(pool());
    state.reset(&[showing(mk_svc("a", 0), "198.18.64.1")]);
    // Someone overwrote the status.
    let commands = state.apply(&showing(mk_svc("a", 0), "198.18.64.99"));
    assert_eq!(writes(&commands), vec![set("a", "198.18.64.1")]);
    assert!(events(&commands).is_empty());
    // A status without ipMode is not what this agent writes.
    let mut no_mode = showing(mk_svc("a", 0), "198.18.64.1");
    no_mode
        .status
        .as_mut()
        .unwrap()
        .load_balancer
        .as_mut()
        .unwrap()
        .ingress
        .as_mut()
        .unwrap()[0]
        .ip_mode = None;
    assert_eq!(
        writes(&state.apply(&no_mode)),
        vec![set("a", "198.18.64.1")]
    );
}

#[test]
fn refusals_are_reported_once_and_retried_when_an_address_frees() {
    let tiny: Pool = "198.18.64.0/30".parse().unwrap();
    let mut state = LbState::new(tiny);
    state.reset(&[]);
    state.apply(&mk_svc("a", 1));
    state.apply(&mk_svc("b", 2));
    let c = mk_svc("c", 3);
    let commands = state.apply(&c);
    assert_eq!(writes(&commands), vec![cancel("c")]);
    assert_eq!(
        events(&commands),
        vec![(
            "c".into(),
            FAILED,
            "pool 198.18.64.0/30 is exhausted: all 2 addresses are assigned".into()
        )]
    );
    assert_eq!(state.refused(), 1);
    // The same refusal again: no second Event.
    assert!(events(&state.apply(&c)).is_empty());
    // a is deleted: its address goes to c, which waited.
    let commands = state.delete(&mk_svc("a", 1));
    assert_eq!(
        writes(&commands),
        vec![cancel("a"), set("c", "198.18.64.1")]
    );
    assert_eq!(events(&commands)[0].1, ALLOCATED);
    assert_eq!(state.refused(), 0);
}

#[test]
fn requests_outside_the_pool_or_taken_are_refused_with_the_reason() {
    let mut state = LbState::new(pool());
    state.reset(&[]);
    let commands = state.apply(&requesting(mk_svc("far", 0), "10.9.9.9"));
    assert_eq!(writes(&commands), vec![cancel("far")]);
    assert_eq!(
        events(&commands),
        vec![(
            "far".into(),
            FAILED,
            "spec.loadBalancerIP 10.9.9.9 is outside the testbed's pool 198.18.64.0/24".into()
        )]
    );
    let commands = state.apply(&requesting(mk_svc("first", 1), "198.18.64.7"));
    assert_eq!(writes(&commands), vec![set("first", "198.18.64.7")]);
    let second = requesting(mk_svc("second", 2), "198.18.64.7");
    let commands = state.apply(&second);
    assert_eq!(events(&commands)[0].1, FAILED);
    assert!(events(&commands)[0].2.contains("ns/first"));
    // When the holder lets go, the requester gets exactly its address.
    let commands = state.apply(&of_type(
        showing(mk_svc("first", 1), "198.18.64.7"),
        "ClusterIP",
    ));
    assert_eq!(
        writes(&commands),
        vec![
            (String::from("first"), Some(StatusOp::Clear)),
            // Both refused Services are decided again, oldest first.
            cancel("far"),
            set("second", "198.18.64.7")
        ]
    );
}

#[test]
fn a_refused_service_that_showed_an_address_is_cleared() {
    let mut state = LbState::new(pool());
    state.reset(&[showing(mk_svc("a", 0), "198.18.64.1")]);
    let commands = state.apply(&requesting(
        showing(mk_svc("a", 0), "198.18.64.1"),
        "192.0.2.1",
    ));
    assert_eq!(
        writes(&commands),
        vec![(String::from("a"), Some(StatusOp::Clear))]
    );
    assert_eq!(state.assigned(), 0);
}

#[test]
fn other_classes_and_other_addresses_are_left_alone() {
    let mut state = LbState::new(pool());
    let mut classed = showing(mk_svc("classed", 0), "198.18.64.1");
    classed.spec.as_mut().unwrap().load_balancer_class = Some("example.com/x".into());
    // A ClusterIP Service showing an address this agent never hands out.
    let foreign = of_type(showing(mk_svc("foreign", 0), "203.0.113.5"), "ClusterIP");
    // Released before a restart, never cleared: cleared now.
    let stale = of_type(showing(mk_svc("stale", 0), "198.18.64.9"), "ClusterIP");
    let (commands, _) = state.reset(&[classed, foreign, stale]);
    assert_eq!(
        writes(&commands),
        vec![
            cancel("classed"),
            cancel("foreign"),
            (String::from("stale"), Some(StatusOp::Clear))
        ]
    );
    assert!(events(&commands).is_empty());
    // The classed Service's address is not held: the next one may get it.
    let commands = state.apply(&mk_svc("next", 1));
    assert_eq!(writes(&commands), vec![set("next", "198.18.64.1")]);
}

#[test]
fn a_relist_releases_services_deleted_meanwhile() {
    let mut state = LbState::new(pool());
    state.reset(&[mk_svc("a", 0), mk_svc("b", 1)]);
    assert_eq!(state.assigned(), 2);
    // The watch restarted; a was deleted while it was down.
    let (commands, conflicts) = state.reset(&[showing(mk_svc("b", 1), "198.18.64.2")]);
    assert!(conflicts.is_empty(), "a relist rebuilds nothing");
    assert_eq!(writes(&commands), vec![cancel("a"), cancel("b")]);
    assert_eq!(state.assigned(), 1);
    let commands = state.apply(&mk_svc("c", 2));
    assert_eq!(writes(&commands), vec![set("c", "198.18.64.1")]);
}

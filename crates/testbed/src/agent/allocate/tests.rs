use super::*;

fn pool(s: &str) -> Pool {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("ns", name)
}

/// Seconds after an arbitrary instant.
fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + secs).unwrap()
}

/// A `type: LoadBalancer` Service of this allocator, created at `created`.
fn mk_lb(name: &str, created: i64) -> ServiceView {
    ServiceView {
        key: key(name),
        created: Some(at(created)),
        load_balancer: true,
        ..ServiceView::default()
    }
}

fn requesting(mut s: ServiceView, requested: &str) -> ServiceView {
    s.requested = Some(requested.into());
    s
}

fn showing(mut s: ServiceView, ips: &[&str]) -> ServiceView {
    s.status_ips = ips.iter().map(|i| i.to_string()).collect();
    s
}

fn held(pool: &Pool, pairs: &[(&str, &str)]) -> Assignments {
    let mut a = Assignments::default();
    for (name, addr) in pairs {
        let ip = ip(addr);
        assert!(pool.is_usable(ip), "test setup: {addr} is usable in {pool}");
        a.commit(&key(name), &Decision::Assign(ip));
    }
    a
}

#[test]
fn pools_parse_and_bound() {
    let p = pool("198.18.64.0/24");
    assert_eq!(p.to_string(), "198.18.64.0/24");
    assert_eq!(p.network(), ip("198.18.64.0"));
    assert_eq!(p.broadcast(), ip("198.18.64.255"));
    assert_eq!(p.size(), 254);
    assert!(p.contains(ip("198.18.64.0")) && p.contains(ip("198.18.64.255")));
    assert!(!p.contains(ip("198.18.65.0")) && !p.contains(ip("198.18.63.255")));
    assert!(p.is_usable(ip("198.18.64.1")) && p.is_usable(ip("198.18.64.254")));
    assert!(!p.is_usable(ip("198.18.64.0")) && !p.is_usable(ip("198.18.64.255")));
    assert_eq!(pool("198.18.0.0/15").size(), 131_070);
    assert_eq!(pool("10.0.0.0/30").size(), 2);
    assert_eq!(pool("0.0.0.0/0").size(), u64::from(u32::MAX) - 1);

    let cases: &[(&str, PoolError)] = &[
        ("198.18.64.0", PoolError::Syntax("198.18.64.0".into())),
        ("198.18.64.0/33", PoolError::Syntax("198.18.64.0/33".into())),
        ("198.18.64/24", PoolError::Syntax("198.18.64/24".into())),
        ("fd00::/64", PoolError::Syntax("fd00::/64".into())),
        ("198.18.64.0/x", PoolError::Syntax("198.18.64.0/x".into())),
        (
            "198.18.64.7/24",
            PoolError::HostBits {
                given: "198.18.64.7/24".into(),
                network: ip("198.18.64.0"),
                prefix: 24,
            },
        ),
        ("198.18.64.0/31", PoolError::TooSmall { prefix: 31 }),
        ("198.18.64.1/32", PoolError::TooSmall { prefix: 32 }),
    ];
    for (text, want) in cases {
        assert_eq!(text.parse::<Pool>().as_ref(), Err(want), "{text}");
    }
    assert!(
        "198.18.64.7/24"
            .parse::<Pool>()
            .unwrap_err()
            .to_string()
            .contains("198.18.64.0/24"),
        "the error names the network to write"
    );
}

/// (case, pool, held before as (name, address), the Service (None: deleted), decision)
type Case = (
    &'static str,
    Pool,
    Vec<(&'static str, &'static str)>,
    Option<ServiceView>,
    Decision,
);

#[test]
fn decisions() {
    let p = pool("198.18.64.0/24");
    let tiny = pool("198.18.64.0/30"); // .1 and .2 only
    let mut other_class = mk_lb("a", 0);
    other_class.class = Some("example.com/other".into());
    let mut cluster_ip = showing(mk_lb("a", 0), &["198.18.64.1"]);
    cluster_ip.load_balancer = false;

    let cases: Vec<Case> = vec![
        (
            "new Service in an empty pool: the first address, never the network",
            p,
            vec![],
            Some(mk_lb("a", 0)),
            Decision::Assign(ip("198.18.64.1")),
        ),
        (
            "second Service: the next address",
            p,
            vec![("a", "198.18.64.1")],
            Some(mk_lb("b", 1)),
            Decision::Assign(ip("198.18.64.2")),
        ),
        (
            "lowest free address, filling a gap",
            p,
            vec![("a", "198.18.64.1"), ("c", "198.18.64.3")],
            Some(mk_lb("b", 1)),
            Decision::Assign(ip("198.18.64.2")),
        ),
        (
            "holder keeps its address",
            p,
            vec![("a", "198.18.64.7")],
            Some(showing(mk_lb("a", 0), &["198.18.64.7"])),
            Decision::Keep(ip("198.18.64.7")),
        ),
        (
            "holder keeps its address even when its status lost it",
            p,
            vec![("a", "198.18.64.7")],
            Some(mk_lb("a", 0)),
            Decision::Keep(ip("198.18.64.7")),
        ),
        (
            "unheld address in the status is claimed",
            p,
            vec![],
            Some(showing(mk_lb("a", 0), &["198.18.64.9"])),
            Decision::Keep(ip("198.18.64.9")),
        ),
        (
            "status address held by another: the lowest free instead",
            p,
            vec![("b", "198.18.64.9")],
            Some(showing(mk_lb("a", 0), &["198.18.64.9"])),
            Decision::Assign(ip("198.18.64.1")),
        ),
        (
            "status address outside the pool is not claimed",
            p,
            vec![],
            Some(showing(mk_lb("a", 0), &["10.0.0.1", "198.18.64.255"])),
            Decision::Assign(ip("198.18.64.1")),
        ),
        (
            "requested address in the pool, free",
            p,
            vec![("b", "198.18.64.1")],
            Some(requesting(mk_lb("a", 0), "198.18.64.40")),
            Decision::Assign(ip("198.18.64.40")),
        ),
        (
            "requested address already held by itself",
            p,
            vec![("a", "198.18.64.40")],
            Some(requesting(mk_lb("a", 0), "198.18.64.40")),
            Decision::Keep(ip("198.18.64.40")),
        ),
        (
            "requested address changed: moves to it",
            p,
            vec![("a", "198.18.64.1")],
            Some(requesting(
                showing(mk_lb("a", 0), &["198.18.64.1"]),
                "198.18.64.50",
            )),
            Decision::Assign(ip("198.18.64.50")),
        ),
        (
            "requested address shown in the status, unheld: kept",
            p,
            vec![],
            Some(requesting(
                showing(mk_lb("a", 0), &["198.18.64.50"]),
                "198.18.64.50",
            )),
            Decision::Keep(ip("198.18.64.50")),
        ),
        (
            "requested address held by another",
            p,
            vec![("b", "198.18.64.40")],
            Some(requesting(mk_lb("a", 0), "198.18.64.40")),
            Decision::Refuse(Refusal::Taken {
                requested: ip("198.18.64.40"),
                holder: key("b"),
            }),
        ),
        (
            "requested address outside the pool",
            p,
            vec![],
            Some(requesting(mk_lb("a", 0), "198.18.65.10")),
            Decision::Refuse(Refusal::OutsidePool {
                requested: ip("198.18.65.10"),
                pool: p,
            }),
        ),
        (
            "requested address outside the pool, while holding one: refused",
            p,
            vec![("a", "198.18.64.1")],
            Some(requesting(mk_lb("a", 0), "192.0.2.1")),
            Decision::Refuse(Refusal::OutsidePool {
                requested: ip("192.0.2.1"),
                pool: p,
            }),
        ),
        (
            "requested network address",
            p,
            vec![],
            Some(requesting(mk_lb("a", 0), "198.18.64.0")),
            Decision::Refuse(Refusal::Reserved {
                requested: ip("198.18.64.0"),
                pool: p,
            }),
        ),
        (
            "requested broadcast address",
            p,
            vec![],
            Some(requesting(mk_lb("a", 0), "198.18.64.255")),
            Decision::Refuse(Refusal::Reserved {
                requested: ip("198.18.64.255"),
                pool: p,
            }),
        ),
        (
            "requested IPv6 address",
            p,
            vec![],
            Some(requesting(mk_lb("a", 0), "fd00::1")),
            Decision::Refuse(Refusal::InvalidRequest {
                value: "fd00::1".into(),
            }),
        ),
        (
            "empty loadBalancerIP counts as unset",
            p,
            vec![],
            Some(requesting(mk_lb("a", 0), "")),
            Decision::Assign(ip("198.18.64.1")),
        ),
        (
            "full pool",
            tiny,
            vec![("b", "198.18.64.1"), ("c", "198.18.64.2")],
            Some(mk_lb("a", 0)),
            Decision::Refuse(Refusal::Exhausted { pool: tiny }),
        ),
        (
            "full pool, but the Service already holds one",
            tiny,
            vec![("a", "198.18.64.1"), ("c", "198.18.64.2")],
            Some(mk_lb("a", 0)),
            Decision::Keep(ip("198.18.64.1")),
        ),
        (
            "last address of a small pool, never its broadcast",
            tiny,
            vec![("b", "198.18.64.1")],
            Some(mk_lb("a", 0)),
            Decision::Assign(ip("198.18.64.2")),
        ),
        (
            "deleted while holding",
            p,
            vec![("a", "198.18.64.3")],
            None,
            Decision::Release(ip("198.18.64.3")),
        ),
        (
            "deleted, holding nothing",
            p,
            vec![],
            None,
            Decision::Ignore(Ignored::Deleted),
        ),
        (
            "no longer a LoadBalancer",
            p,
            vec![("a", "198.18.64.1")],
            Some(cluster_ip.clone()),
            Decision::Release(ip("198.18.64.1")),
        ),
        (
            "never a LoadBalancer",
            p,
            vec![],
            Some(cluster_ip),
            Decision::Ignore(Ignored::NotLoadBalancer),
        ),
        (
            "another class",
            p,
            vec![],
            Some(other_class.clone()),
            Decision::Ignore(Ignored::OtherClass("example.com/other".into())),
        ),
        (
            "another class, holding an address from before",
            p,
            vec![("a", "198.18.64.1")],
            Some(other_class),
            Decision::Release(ip("198.18.64.1")),
        ),
    ];
    for (case, pool, before, svc, want) in cases {
        let assignments = held(&pool, &before);
        let k = svc.as_ref().map_or_else(|| key("a"), |s| s.key.clone());
        let got = decide(&pool, &assignments, &k, svc.as_ref());
        assert_eq!(got, want, "{case}");
        if let Decision::Assign(ip) | Decision::Keep(ip) = got {
            assert!(pool.is_usable(ip), "{case}: {ip} is usable");
        }
    }
}

#[test]
fn commit_moves_frees_and_keeps_both_maps_in_step() {
    let p = pool("198.18.64.0/24");
    let mut a = Assignments::default();
    a.commit(&key("a"), &Decision::Assign(ip("198.18.64.1")));
    a.commit(&key("b"), &Decision::Assign(ip("198.18.64.2")));
    assert_eq!(a.len(), 2);
    // a moves to a requested address: .1 is free again.
    a.commit(&key("a"), &Decision::Assign(ip("198.18.64.9")));
    assert_eq!(a.get(&key("a")), Some(ip("198.18.64.9")));
    assert_eq!(a.holder(ip("198.18.64.1")), None);
    assert_eq!(a.lowest_free(&p), Some(ip("198.18.64.1")));
    // A refusal frees what was held.
    a.commit(&key("b"), &Decision::Refuse(Refusal::Exhausted { pool: p }));
    assert_eq!(a.get(&key("b")), None);
    a.commit(&key("a"), &Decision::Release(ip("198.18.64.9")));
    assert!(a.is_empty());
    assert_eq!(a.iter().count(), 0);
}

/// Two Services, a deletion, and the freed address going to the next one.
#[test]
fn a_deleted_service_frees_its_address_for_the_next() {
    let p = pool("198.18.64.0/24");
    let mut a = Assignments::default();
    let mut step = |name: &str, svc: Option<&ServiceView>| {
        let d = decide(&p, &a, &key(name), svc);
        a.commit(&key(name), &d);
        d
    };
    let (one, two, three) = (mk_lb("one", 0), mk_lb("two", 1), mk_lb("three", 2));
    assert_eq!(step("one", Some(&one)), Decision::Assign(ip("198.18.64.1")));
    assert_eq!(step("two", Some(&two)), Decision::Assign(ip("198.18.64.2")));
    assert_eq!(step("one", None), Decision::Release(ip("198.18.64.1")));
    assert_eq!(
        step("three", Some(&three)),
        Decision::Assign(ip("198.18.64.1"))
    );
    // Deciding again changes nothing.
    assert_eq!(step("two", Some(&two)), Decision::Keep(ip("198.18.64.2")));
}

#[test]
fn full_pool_then_a_release() {
    let p = pool("198.18.64.0/30");
    let mut a = Assignments::default();
    for (name, want) in [("a", "198.18.64.1"), ("b", "198.18.64.2")] {
        let d = decide(&p, &a, &key(name), Some(&mk_lb(name, 0)));
        assert_eq!(d, Decision::Assign(ip(want)));
        a.commit(&key(name), &d);
    }
    let c = mk_lb("c", 3);
    let refused = decide(&p, &a, &key("c"), Some(&c));
    assert_eq!(refused, Decision::Refuse(Refusal::Exhausted { pool: p }));
    assert_eq!(
        refused_text(&refused),
        "pool 198.18.64.0/30 is exhausted: all 2 addresses are assigned"
    );
    a.commit(&key("c"), &refused);
    let d = decide(&p, &a, &key("a"), None);
    a.commit(&key("a"), &d);
    assert_eq!(
        decide(&p, &a, &key("c"), Some(&c)),
        Decision::Assign(ip("198.18.64.1"))
    );
}

fn refused_text(d: &Decision) -> String {
    match d {
        Decision::Refuse(r) => r.to_string(),
        other => panic!("not a refusal: {other:?}"),
    }
}

#[test]
fn refusals_read_well() {
    let p = pool("198.18.64.0/24");
    let cases = [
        (
            Refusal::OutsidePool {
                requested: ip("198.18.65.10"),
                pool: p,
            },
            "spec.loadBalancerIP 198.18.65.10 is outside the testbed's pool 198.18.64.0/24",
        ),
        (
            Refusal::Taken {
                requested: ip("198.18.64.4"),
                holder: ServiceKey::new("shop", "web"),
            },
            "spec.loadBalancerIP 198.18.64.4 is already assigned to Service shop/web",
        ),
        (
            Refusal::InvalidRequest {
                value: "nope".into(),
            },
            "spec.loadBalancerIP \"nope\" is not an IPv4 address",
        ),
    ];
    for (r, want) in cases {
        assert_eq!(r.to_string(), want);
    }
}

#[test]
fn rebuild_recovers_statuses_and_the_older_keeps_a_shared_address() {
    let p = pool("198.18.64.0/24");
    let mut not_lb = showing(mk_lb("not-lb", 0), &["198.18.64.20"]);
    not_lb.load_balancer = false;
    let mut classed = showing(mk_lb("classed", 0), &["198.18.64.21"]);
    classed.class = Some("example.com/other".into());
    let services = [
        // Listed newest first: the order of the list must not matter.
        showing(mk_lb("young", 20), &["198.18.64.5"]),
        showing(mk_lb("old", 10), &["198.18.64.5"]),
        showing(mk_lb("b-same-age", 30), &["198.18.64.6"]),
        showing(mk_lb("a-same-age", 30), &["198.18.64.6"]),
        showing(mk_lb("kept", 40), &["198.18.64.7"]),
        showing(mk_lb("outside", 40), &["10.1.2.3", "198.18.64.0"]),
        // Requests another address than it shows: decided afresh.
        requesting(
            showing(mk_lb("moving", 40), &["198.18.64.8"]),
            "198.18.64.30",
        ),
        // Shows two: claims the first usable one.
        showing(mk_lb("two-ips", 50), &["198.18.64.255", "198.18.64.9"]),
        not_lb,
        classed,
    ];
    let (a, conflicts) = Assignments::rebuild(&p, &services);
    let held: Vec<(String, String)> = a
        .iter()
        .map(|(k, ip)| (k.name.clone(), ip.to_string()))
        .collect();
    let want: Vec<(String, String)> = [
        ("old", "198.18.64.5"),
        ("a-same-age", "198.18.64.6"),
        ("kept", "198.18.64.7"),
        ("two-ips", "198.18.64.9"),
    ]
    .iter()
    .map(|(k, ip)| (k.to_string(), ip.to_string()))
    .collect();
    assert_eq!(held, want);
    assert_eq!(
        conflicts,
        vec![
            Conflict {
                ip: ip("198.18.64.5"),
                kept: key("old"),
                lost: key("young"),
            },
            Conflict {
                ip: ip("198.18.64.6"),
                kept: key("a-same-age"),
                lost: key("b-same-age"),
            },
        ]
    );

    // The losers are then decided afresh, and get the lowest free addresses.
    let young = &services[0];
    assert_eq!(
        decide(&p, &a, &young.key, Some(young)),
        Decision::Assign(ip("198.18.64.1"))
    );
    let moving = &services[6];
    assert_eq!(
        decide(&p, &a, &moving.key, Some(moving)),
        Decision::Assign(ip("198.18.64.30"))
    );
    // A loser that requested the contested address is refused, naming the holder.
    let contested = requesting(showing(mk_lb("young", 20), &["198.18.64.5"]), "198.18.64.5");
    let (a, _) = Assignments::rebuild(&p, [&contested, &services[1]]);
    assert_eq!(
        decide(&p, &a, &contested.key, Some(&contested)),
        Decision::Refuse(Refusal::Taken {
            requested: ip("198.18.64.5"),
            holder: key("old"),
        })
    );
}

//! Reading splits and building their patches.

use super::*;

fn obj(res: &Resource, data: Value) -> DynamicObject {
    let mut o = DynamicObject::new("s", &res.api).within("ns").data(data);
    o.metadata.resource_version = Some("42".into());
    o
}

#[test]
fn the_workshop_split_reads_under_both_versions() {
    for (version, weights) in [
        ("v1alpha2", json!([1, 0])),
        ("v1alpha1", json!(["1", "0"])),
        ("v1alpha1", json!([1, "0m"])),
    ] {
        let res = Resource::traffic_split(version);
        let e = read(
            &res,
            obj(
                &res,
                json!({"spec": {"service": "emoji-svc", "backends": [
                    {"service": "emoji-svc", "weight": weights[0]},
                    {"service": "emoji-svc-west", "weight": weights[1]},
                ]}}),
            ),
        );
        assert_eq!(e.unreadable, None, "{version}");
        let ws: Vec<u32> = e.groups[0].backends.iter().map(|b| b.weight).collect();
        assert_eq!(ws, [1, 0], "{version} {weights}");
    }
}

/// v1alpha1 is the storage version and `conversion: None`, so a split
/// written as v1alpha1 with quantities reads as quantities through
/// v1alpha2 too: every version takes int-or-string weights.
#[test]
fn quantity_weights_read_under_every_version() {
    for version in ["v1alpha2", "v1alpha1"] {
        for (weights, want) in [
            (json!(["500m", "500m"]), [500, 500]),
            (json!(["1", "0"]), [1, 0]),
            (json!([1, "0m"]), [1, 0]),
            (json!(["1000m", 0]), [1, 0]),
            (json!(["2", "250m"]), [2, 250]),
            (json!([3, 0]), [3, 0]),
        ] {
            let res = Resource::traffic_split(version);
            let e = read(
                &res,
                obj(
                    &res,
                    json!({"spec": {"service": "p", "backends": [
                        {"service": "p", "weight": weights[0]},
                        {"service": "f", "weight": weights[1]},
                    ]}}),
                ),
            );
            assert_eq!(e.unreadable, None, "{version} {weights}");
            let ws: Vec<u32> = e.groups[0].backends.iter().map(|b| b.weight).collect();
            assert_eq!(ws, want, "{version} {weights}");

            // Written back as integers: what v1alpha2 requires, and a
            // valid quantity for v1alpha1.
            let p = patch(&res, &e, Some(&[vec![0, 1]]), State::Failover, None);
            assert_eq!(
                p["spec"]["backends"],
                json!([{"service": "p", "weight": 0}, {"service": "f", "weight": 1}]),
                "{version} {weights}"
            );
        }
    }
}

#[test]
fn malformed_specs_are_unreadable_not_errors() {
    let res = Resource::traffic_split("v1alpha2");
    for data in [
        json!({"spec": {}}),
        json!({"spec": {"backends": [{"weight": 1}]}}),
        json!({"spec": {"backends": [{"service": "a", "weight": "x"}]}}),
        json!({"spec": {"backends": [{"service": "a", "weight": -1}]}}),
    ] {
        let e = read(&res, obj(&res, data.clone()));
        assert!(e.unreadable.is_some(), "{data}");
        assert!(e.groups.is_empty());
    }
}

#[test]
fn http_routes_split_per_rule_with_default_weights() {
    let res = Resource::http_route("v1");
    let e = read(
        &res,
        obj(
            &res,
            json!({"spec": {"rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "backendRefs": [{"name": "a", "port": 80}, {"name": "b", "namespace": "other", "port": 80, "weight": 0}]},
                {"backendRefs": [{"name": "c", "port": 80, "weight": 5}]},
            ]}}),
        ),
    );
    assert_eq!(e.groups.len(), 2);
    let g0: Vec<(&str, u32)> = e.groups[0]
        .backends
        .iter()
        .map(|b| (b.service.as_str(), b.weight))
        .collect();
    assert_eq!(g0, [("a", 1), ("b.other", 0)]);

    let p = patch(
        &res,
        &e,
        Some(&[vec![0, 1], vec![1]]),
        State::Failover,
        Some("t"),
    );
    assert_eq!(p["metadata"]["resourceVersion"], "42");
    assert_eq!(p["spec"]["rules"][0]["backendRefs"][1]["weight"], 1);
    assert_eq!(p["spec"]["rules"][0]["backendRefs"][0]["weight"], 0);
    assert_eq!(
        p["spec"]["rules"][0]["matches"][0]["path"]["value"], "/",
        "the rest of each rule is kept"
    );
    assert_eq!(p["metadata"]["annotations"][STATE_ANNOTATION], "failover");
}

/// A rule with no backendRefs (a redirect, say) sends no traffic to
/// fail over: it is skipped, and the route's other rules are controlled;
/// weights are written back to the rules they were read from.
#[test]
fn http_route_rules_without_backends_are_skipped() {
    let redirect = json!({"filters": [{"type": "RequestRedirect",
        "requestRedirect": {"scheme": "https", "statusCode": 301}}]});
    let empty = json!({"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
        "backendRefs": []});
    let ab =
        json!({"backendRefs": [{"name": "a", "port": 80}, {"name": "b", "port": 80, "weight": 0}]});
    let c = json!({"backendRefs": [{"name": "c", "port": 80, "weight": 3}]});
    // (rules, the rules that are groups, the weights to write, each rule's weights after)
    type Case = (
        Vec<Value>,
        Vec<Vec<(&'static str, u32)>>,
        Vec<Vec<u32>>,
        Vec<Value>,
    );
    let cases: Vec<Case> = vec![
        (
            vec![redirect.clone(), ab.clone()],
            vec![vec![("a", 1), ("b", 0)]],
            vec![vec![0, 1]],
            vec![Value::Null, json!([0, 1])],
        ),
        (
            vec![ab.clone(), empty.clone(), c.clone()],
            vec![vec![("a", 1), ("b", 0)], vec![("c", 3)]],
            vec![vec![0, 1], vec![1]],
            vec![json!([0, 1]), json!([]), json!([1])],
        ),
        (
            vec![redirect.clone(), empty.clone()],
            vec![],
            vec![],
            vec![Value::Null, json!([])],
        ),
    ];
    let res = Resource::http_route("v1");
    for (rules, want, write, after) in cases {
        let e = read(&res, obj(&res, json!({"spec": {"rules": rules}})));
        assert_eq!(e.unreadable, None, "{rules:?}");
        let groups: Vec<Vec<(&str, u32)>> = e
            .groups
            .iter()
            .map(|g| {
                g.backends
                    .iter()
                    .map(|b| (b.service.as_str(), b.weight))
                    .collect()
            })
            .collect();
        assert_eq!(groups, want, "{rules:?}");

        let p = patch(&res, &e, Some(&write), State::Failover, None);
        let written = p["spec"]["rules"].as_array().unwrap();
        assert_eq!(written.len(), rules.len(), "every rule is written back");
        for (i, (rule, want)) in written.iter().zip(&after).enumerate() {
            let weights: Value = match rule.get("backendRefs") {
                None => Value::Null,
                Some(refs) => refs
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b["weight"].clone())
                    .collect(),
            };
            assert_eq!(&weights, want, "rule {i} of {rules:?}");
            let mut rest = rule.clone();
            let mut orig = rules[i].clone();
            if let (Some(r), Some(o)) = (rest.as_object_mut(), orig.as_object_mut()) {
                r.remove("backendRefs");
                o.remove("backendRefs");
            }
            assert_eq!(rest, orig, "the rest of rule {i} is kept");
        }
    }
}

#[test]
fn non_service_backend_refs_are_unreadable() {
    let res = Resource::http_route("v1");
    let e = read(
        &res,
        obj(
            &res,
            json!({"spec": {"rules": [{"backendRefs": [{"kind": "Bucket", "group": "s3", "name": "x"}]}]}}),
        ),
    );
    assert!(e.unreadable.unwrap().contains("not a Service"));
}

/// Only what the rules read is kept per group, and the controller's own
/// annotations once per object: most splits keep no map at all.
#[test]
fn only_the_annotations_in_use_are_kept() {
    let res = Resource::traffic_split("v1alpha2");
    let mut o = obj(
        &res,
        json!({"spec": {"backends": [{"service": "a", "weight": 1}, {"service": "b", "weight": 0}]}}),
    );
    o.metadata.annotations = Some(BTreeMap::from([
        (STATE_ANNOTATION.to_string(), "failover".to_string()),
        (LAST_TRANSITION_TIME_ANNOTATION.to_string(), "t".to_string()),
        (
            "failover.tandem.io/failback-delay".to_string(),
            "5s".to_string(),
        ),
        (
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            "{}".to_string(),
        ),
        ("failover.example.com/other".to_string(), "x".to_string()),
    ]));
    let e = read(&res, o);
    assert_eq!(e.recorded_state(), Some("failover"));
    assert_eq!(e.last_transition_time.as_deref(), Some("t"));
    let kept: Vec<&str> = e.groups[0].annotations.keys().map(String::as_str).collect();
    assert_eq!(kept, ["failover.tandem.io/failback-delay"]);

    let plain = read(
        &res,
        obj(
            &res,
            json!({"spec": {"backends": [{"service": "a", "weight": 1}]}}),
        ),
    );
    assert!(plain.groups[0].annotations.is_empty());
    assert_eq!(plain.recorded_state(), None);
}

#[test]
fn a_state_only_patch_leaves_the_spec_alone() {
    let res = Resource::traffic_split("v1alpha2");
    let e = read(
        &res,
        obj(
            &res,
            json!({"spec": {"service": "a", "backends": [{"service": "a", "weight": 1}]}}),
        ),
    );
    let p = patch(
        &res,
        &e,
        None,
        State::NoReadyBackends,
        Some("2026-01-01T00:00:00Z"),
    );
    assert!(p.get("spec").is_none());
    assert_eq!(
        p["metadata"]["annotations"][LAST_TRANSITION_TIME_ANNOTATION],
        "2026-01-01T00:00:00Z"
    );
}

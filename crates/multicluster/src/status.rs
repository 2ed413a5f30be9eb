//! The Link's status, decided from what the mirror knows: pure, with the
//! time passed in. Writing it is the runtime's job.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use serde_json::Value;
use tandem_api::multicluster::{
    GatewayAddressStatus, GatewayStatus, LinkStatus, MirrorServiceStatus, RemoteRef,
};

use crate::{gateway::GatewayState, index::Key};

pub const READY: &str = "Ready";
pub const REMOTE_REACHABLE: &str = "RemoteReachable";
pub const GATEWAY_RESOLVED: &str = "GatewayResolved";
pub const MIRRORED: &str = "Mirrored";

/// What the remote API server did last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    /// Not known yet (no answer, no error).
    Unknown,
    Reachable,
    /// `reason` is `Unauthorized` or `Unreachable`.
    Unreachable {
        reason: String,
        message: String,
    },
}

/// How the mirror of one remote Service stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not written yet.
    Pending,
    Mirrored,
    Invalid(String),
    MissingNamespace(String),
    /// A Service of the mirror's name exists and is not this Link's: it is
    /// left alone.
    NameTaken(String),
    Error(String),
}

/// Everything the status is decided from.
#[derive(Clone, Debug)]
pub struct Health<'a> {
    pub cluster: &'a str,
    /// The spec's problems, if any.
    pub spec: Result<(), &'a str>,
    /// `None` until the credentials were read once.
    pub credentials: Option<Result<(), &'a str>>,
    pub remote: &'a Remote,
    /// The remote Services and slices were listed once.
    pub synced: bool,
    pub gateway: Option<&'a GatewayState>,
    pub generation: Option<i64>,
}

/// The Link's status (without the heartbeat, which the writer stamps).
/// `previous` keeps the transition times of conditions that did not change.
pub fn link_status(
    h: &Health<'_>,
    services: &[(Key, Outcome)],
    previous: Option<&LinkStatus>,
    now: Timestamp,
) -> LinkStatus {
    let prev = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let mk = |type_: &str, status: &str, reason: &str, message: String| {
        condition(type_, status, reason, message, h.generation, prev, now)
    };
    let cluster = h.cluster;

    let reachable = match (&h.spec, &h.credentials, h.remote) {
        (Err(_), _, _) => mk(
            REMOTE_REACHABLE,
            "Unknown",
            "InvalidLink",
            "the Link's spec is invalid".into(),
        ),
        (_, Some(Err(e)), _) => mk(
            REMOTE_REACHABLE,
            "False",
            "InvalidCredentials",
            e.to_string(),
        ),
        (_, _, Remote::Unreachable { reason, message }) => {
            mk(REMOTE_REACHABLE, "False", reason, message.clone())
        }
        (_, _, Remote::Reachable) => mk(
            REMOTE_REACHABLE,
            "True",
            "Reachable",
            format!("the API server of cluster {cluster} answers"),
        ),
        _ => mk(
            REMOTE_REACHABLE,
            "Unknown",
            "Connecting",
            format!("connecting to the API server of cluster {cluster}"),
        ),
    };

    let mirrored = services
        .iter()
        .filter(|(_, o)| *o == Outcome::Mirrored)
        .count();
    let gateway_ips = h
        .gateway
        .filter(|g| g.resolved)
        .map(|g| g.ips.clone())
        .unwrap_or_default();
    let ready = match (&h.spec, &h.credentials, h.remote) {
        (Err(e), _, _) => mk(READY, "False", "InvalidLink", e.to_string()),
        (_, Some(Err(e)), _) => mk(READY, "False", "InvalidCredentials", e.to_string()),
        (_, _, Remote::Unreachable { message, .. }) => mk(
            READY,
            "False",
            "RemoteUnreachable",
            format!("{message}; the mirrors are left as they were"),
        ),
        _ if !h.synced => mk(
            READY,
            "False",
            "Syncing",
            format!("waiting for the first list of cluster {cluster}'s services"),
        ),
        _ if gateway_ips.is_empty() => mk(
            READY,
            "False",
            "GatewayUnresolved",
            match h.gateway {
                Some(g) if g.resolved => format!(
                    "the gateway has no IPv4 address: {}",
                    g.unresolved.join("; ")
                ),
                _ => "resolving the gateway's addresses".into(),
            },
        ),
        _ => mk(
            READY,
            "True",
            "Mirroring",
            format!(
                "mirroring {mirrored} of {} services from cluster {cluster}",
                services.len()
            ),
        ),
    };

    let mut conditions = vec![ready, reachable];
    if let (Ok(()), Some(g)) = (&h.spec, h.gateway.filter(|g| g.resolved)) {
        conditions.push(if g.unresolved.is_empty() {
            mk(
                GATEWAY_RESOLVED,
                "True",
                "Resolved",
                format!(
                    "the gateway is at {}",
                    g.ips
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        } else {
            mk(
                GATEWAY_RESOLVED,
                "False",
                "Unresolvable",
                g.unresolved.join("; "),
            )
        });
    }

    let prev_services = previous
        .map(|p| p.mirror_services.as_slice())
        .unwrap_or_default();
    let mirror_services = services
        .iter()
        .map(|(key, outcome)| {
            let remote_ref = RemoteRef {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            };
            let prev = prev_services
                .iter()
                .find(|s| s.remote_ref == remote_ref)
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            let (status, reason, message) = match outcome {
                Outcome::Pending => ("Unknown", "Pending", "not written yet".to_string()),
                Outcome::Mirrored => (
                    "True",
                    "Mirrored",
                    format!(
                        "mirrored as {}",
                        crate::mirror::mirror_name(&key.name, cluster)
                    ),
                ),
                Outcome::Invalid(m) => ("False", "InvalidService", m.clone()),
                Outcome::MissingNamespace(m) => ("False", "MissingNamespace", m.clone()),
                Outcome::NameTaken(m) => ("False", "NameTaken", m.clone()),
                Outcome::Error(m) => ("False", "Error", m.clone()),
            };
            MirrorServiceStatus {
                remote_ref,
                conditions: vec![condition(
                    MIRRORED, status, reason, message, None, prev, now,
                )],
            }
        })
        .collect();

    LinkStatus {
        conditions,
        mirror_services,
        mirrored_services: mirrored as u32,
        gateway: h.gateway.filter(|g| g.resolved).map(|g| GatewayStatus {
            alive: g.liveness.known(),
            addresses: g.ips.iter().map(|i| i.to_string()).collect(),
            probes: g
                .addresses
                .iter()
                .map(|a| GatewayAddressStatus {
                    address: a.ip.to_string(),
                    alive: a.liveness.known(),
                    last_error: a
                        .last_error
                        .as_deref()
                        .map(|e| tandem_util::truncate(e, 256)),
                })
                .collect(),
            latency_ms_p50: g.latency_ms[0],
            latency_ms_p95: g.latency_ms[1],
            latency_ms_p99: g.latency_ms[2],
        }),
        last_heartbeat_time: None,
    }
}

/// A condition; its transition time is kept from `previous` when its status
/// did not change.
fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: tandem_util::truncate(&message, 1024),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The merge patch that sets `status` to exactly this: fields it leaves out
/// are removed (a plain serialization would skip empty lists, and a merge
/// patch would keep the old ones).
pub fn status_patch(status: &LinkStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        for key in [
            "conditions",
            "mirrorServices",
            "gateway",
            "lastHeartbeatTime",
        ] {
            m.entry(key).or_insert(Value::Null);
        }
    }
    serde_json::json!({ "status": v })
}

pub use tandem_util::time::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn gw(ips: &[&str], unresolved: &[&str]) -> GatewayState {
        GatewayState {
            resolved: true,
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            unresolved: unresolved.iter().map(|u| u.to_string()).collect(),
            liveness: crate::probe::Liveness::Alive,
            addresses: vec![],
            latency_ms: [Some(1), Some(2), Some(3)],
        }
    }

    fn healthy<'a>(remote: &'a Remote, g: Option<&'a GatewayState>) -> Health<'a> {
        Health {
            cluster: "west",
            spec: Ok(()),
            credentials: Some(Ok(())),
            remote,
            synced: true,
            gateway: g,
            generation: Some(3),
        }
    }

    fn cond<'a>(s: &'a LinkStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn conditions_follow_the_first_problem() {
        let up = Remote::Reachable;
        let down = Remote::Unreachable {
            reason: "Unreachable".into(),
            message: "connection refused".into(),
        };
        let g = gw(&["127.20.0.1"], &[]);
        let none = gw(&[], &["gw.example: no answer"]);
        let bad_period = "probeSpec.period \"3 s\": unknown unit";
        // (health, Ready status/reason, RemoteReachable status/reason)
        type Case<'a> = (Health<'a>, (&'a str, &'a str), (&'a str, &'a str));
        let cases: Vec<Case<'_>> = vec![
            (
                healthy(&up, Some(&g)),
                ("True", "Mirroring"),
                ("True", "Reachable"),
            ),
            (
                Health {
                    spec: Err(bad_period),
                    ..healthy(&up, Some(&g))
                },
                ("False", "InvalidLink"),
                ("Unknown", "InvalidLink"),
            ),
            (
                Health {
                    credentials: Some(Err("broken kubeconfig")),
                    ..healthy(&Remote::Unknown, None)
                },
                ("False", "InvalidCredentials"),
                ("False", "InvalidCredentials"),
            ),
            (
                healthy(&down, Some(&g)),
                ("False", "RemoteUnreachable"),
                ("False", "Unreachable"),
            ),
            (
                Health {
                    synced: false,
                    ..healthy(&Remote::Unknown, Some(&g))
                },
                ("False", "Syncing"),
                ("Unknown", "Connecting"),
            ),
            (
                healthy(&up, Some(&none)),
                ("False", "GatewayUnresolved"),
                ("True", "Reachable"),
            ),
            (
                healthy(&up, None),
                ("False", "GatewayUnresolved"),
                ("True", "Reachable"),
            ),
        ];
        for (h, ready, reachable) in cases {
            let s = link_status(&h, &[], None, ts(0));
            let r = cond(&s, READY);
            assert_eq!((r.status.as_str(), r.reason.as_str()), ready, "{h:?}");
            let r = cond(&s, REMOTE_REACHABLE);
            assert_eq!((r.status.as_str(), r.reason.as_str()), reachable, "{h:?}");
            assert_eq!(cond(&s, READY).observed_generation, Some(3));
        }
        // The spec's problem is the Ready message, for `kubectl describe`.
        let s = link_status(
            &Health {
                spec: Err(bad_period),
                ..healthy(&up, Some(&g))
            },
            &[],
            None,
            ts(0),
        );
        assert_eq!(cond(&s, READY).message, bad_period);
        assert!(
            !s.conditions.iter().any(|c| c.type_ == GATEWAY_RESOLVED),
            "nothing is resolved for an invalid spec"
        );
    }

    #[test]
    fn a_bad_link_spec_becomes_an_invalid_link_condition() {
        use crate::mirror::LinkConfig;
        let link: tandem_api::multicluster::Link = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.tandem.io/v1alpha1", "kind": "Link",
            "metadata": {"name": "west", "namespace": "ns"},
            "spec": {"targetClusterName": "west", "clusterCredentialsSecret": "c",
                     "gatewayAddress": "127.20.0.1", "probeSpec": {"period": "soon"}}
        }))
        .unwrap();
        let err = LinkConfig::from_link(&link).unwrap_err();
        let s = link_status(
            &Health {
                spec: Err(&err),
                ..healthy(&Remote::Unknown, None)
            },
            &[],
            None,
            ts(0),
        );
        let r = cond(&s, READY);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "InvalidLink")
        );
        assert!(
            r.message.contains("probeSpec.period \"soon\""),
            "{}",
            r.message
        );
    }

    #[test]
    fn transition_times_move_only_with_the_status() {
        let up = Remote::Reachable;
        let g = gw(&["127.20.0.1"], &[]);
        let first = link_status(&healthy(&up, Some(&g)), &[], None, ts(0));
        let same = link_status(&healthy(&up, Some(&g)), &[], Some(&first), ts(60));
        assert_eq!(first, same, "nothing changed, nothing moves");
        let down = Remote::Unreachable {
            reason: "Unreachable".into(),
            message: "refused".into(),
        };
        let later = link_status(&healthy(&down, Some(&g)), &[], Some(&same), ts(90));
        assert_eq!(cond(&later, READY).last_transition_time, Time(ts(90)));
        assert_eq!(
            cond(&later, GATEWAY_RESOLVED).last_transition_time,
            Time(ts(0))
        );
    }

    #[test]
    fn services_gateway_and_counts() {
        let up = Remote::Reachable;
        let mut g = gw(&["127.20.0.1", "127.20.0.2"], &["gw.example: no answer"]);
        g.addresses = vec![
            crate::gateway::AddressState {
                ip: "127.20.0.1".parse().unwrap(),
                liveness: crate::probe::Liveness::Alive,
                last_error: None,
            },
            crate::gateway::AddressState {
                ip: "127.20.0.2".parse().unwrap(),
                liveness: crate::probe::Liveness::Unknown,
                last_error: Some("connecting: refused".into()),
            },
        ];
        let services = vec![
            (Key::new("ns", "emoji"), Outcome::Mirrored),
            (
                Key::new("ns", "web"),
                Outcome::MissingNamespace("namespace ns is missing".into()),
            ),
            (
                Key::new("ns", "ext"),
                Outcome::Invalid("an ExternalName Service".into()),
            ),
            (Key::new("ns", "x"), Outcome::Error("timed out".into())),
            (Key::new("ns", "y"), Outcome::Pending),
            (
                Key::new("ns", "foo"),
                Outcome::NameTaken("a Service ns/foo-west exists".into()),
            ),
        ];
        let s = link_status(&healthy(&up, Some(&g)), &services, None, ts(0));
        assert_eq!(s.mirrored_services, 1);
        let reasons: Vec<(&str, &str)> = s
            .mirror_services
            .iter()
            .map(|m| {
                (
                    m.conditions[0].status.as_str(),
                    m.conditions[0].reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            reasons,
            [
                ("True", "Mirrored"),
                ("False", "MissingNamespace"),
                ("False", "InvalidService"),
                ("False", "Error"),
                ("Unknown", "Pending"),
                ("False", "NameTaken"),
            ]
        );
        assert_eq!(s.mirror_services[0].remote_ref.name, "emoji");
        let gs = s.gateway.as_ref().unwrap();
        assert_eq!(gs.addresses, ["127.20.0.1", "127.20.0.2"]);
        assert_eq!(gs.alive, Some(true));
        let probes: Vec<(&str, Option<bool>, Option<&str>)> = gs
            .probes
            .iter()
            .map(|p| (p.address.as_str(), p.alive, p.last_error.as_deref()))
            .collect();
        assert_eq!(
            probes,
            [
                ("127.20.0.1", Some(true), None),
                ("127.20.0.2", None, Some("connecting: refused")),
            ],
            "each address's probe result is kept"
        );
        assert_eq!(
            (gs.latency_ms_p50, gs.latency_ms_p95, gs.latency_ms_p99),
            (Some(1), Some(2), Some(3))
        );
        let r = cond(&s, GATEWAY_RESOLVED);
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "Unresolvable")
        );
        assert_eq!(
            cond(&s, READY).message,
            "mirroring 1 of 6 services from cluster west"
        );
    }

    #[test]
    fn an_unknown_gateway_is_written_as_null_so_that_an_old_verdict_goes() {
        let up = Remote::Reachable;
        let mut g = gw(&["127.20.0.1"], &[]);
        g.liveness = crate::probe::Liveness::Unknown;
        let s = link_status(&healthy(&up, Some(&g)), &[], None, ts(0));
        assert_eq!(s.gateway.as_ref().unwrap().alive, None);
        let p = status_patch(&s);
        let gateway = p["status"]["gateway"].as_object().unwrap();
        assert_eq!(gateway.get("alive"), Some(&Value::Null));
    }

    #[test]
    fn the_patch_clears_what_is_gone() {
        let p = status_patch(&LinkStatus::default());
        assert_eq!(p["status"]["mirrorServices"], Value::Null);
        assert!(
            p["status"]
                .as_object()
                .unwrap()
                .contains_key("mirrorServices")
        );
        assert!(p["status"].as_object().unwrap().contains_key("gateway"));
        assert_eq!(p["status"]["mirroredServices"], 0);
        assert_eq!(
            rfc3339(Timestamp::from_second(0).unwrap()),
            "1970-01-01T00:00:00Z"
        );
    }
}

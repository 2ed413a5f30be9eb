use std::time::Duration;

use tandem_meshtls::gateway::Refusal;

use super::{
    Reason,
    backends::destination_answered,
    config::{ConfigError, GatewayArgs},
    http::status_of,
};
use crate::discover::ResolveError;

#[test]
fn refusals_map_to_reasons_and_statuses() {
    let name: tandem_meshtls::Name = "x.svc.cluster.local".parse().unwrap();
    let cases = [
        (Refusal::NoClientIdentity, Reason::NoClientCert, 403),
        (Refusal::NoName, Reason::NoTarget, 400),
        (
            Refusal::BadAuthority {
                authority: "[::1]".into(),
                reason: "ip",
            },
            Reason::NoTarget,
            400,
        ),
        (
            Refusal::NotInSuffixes {
                name: name.clone(),
                suffixes: "svc.cluster.local".into(),
            },
            Reason::NotInSuffixes,
            403,
        ),
        (
            Refusal::NotAService {
                name: name.clone(),
                suffix: "svc.cluster.local".into(),
            },
            Reason::NotAService,
            403,
        ),
        (
            Refusal::NotExported {
                namespace: "ns".into(),
                service: "svc".into(),
            },
            Reason::NotExported,
            403,
        ),
        (Refusal::Loop { gateway: name }, Reason::Loop, 502),
    ];
    for (refusal, reason, status) in cases {
        assert_eq!(Reason::of_refusal(&refusal), reason, "{refusal}");
        assert_eq!(status_of(&refusal).as_u16(), status, "{refusal}");
    }
}

#[test]
fn handshake_errors_map_to_reasons() {
    use tandem_meshtls::{HandshakeError, Peer};
    assert_eq!(
        Reason::of_handshake(&HandshakeError::ClientCertRequired),
        Reason::NoClientCert
    );
    assert_eq!(
        Reason::of_handshake(&HandshakeError::Untrusted { peer: Peer::Client }),
        Reason::Untrusted
    );
    assert_eq!(
        Reason::of_handshake(&HandshakeError::Expired {
            peer: Peer::Client,
            ago: Some(3)
        }),
        Reason::Tls
    );
}

#[test]
fn the_destination_answers_unless_unavailable_or_silent() {
    let refused = |code| -> Result<(), ResolveError> {
        Err(ResolveError::Refused {
            path: "p".into(),
            status: tonic::Status::new(code, "x"),
        })
    };
    assert!(destination_answered(&Ok::<(), ResolveError>(())));
    assert!(destination_answered(&refused(tonic::Code::InvalidArgument)));
    assert!(destination_answered(&refused(tonic::Code::NotFound)));
    assert!(!destination_answered(&refused(tonic::Code::Unavailable)));
    assert!(!destination_answered(&refused(
        tonic::Code::DeadlineExceeded
    )));
    assert!(!destination_answered(&Err::<(), _>(
        ResolveError::Timeout {
            path: "p".into(),
            timeout: Duration::from_secs(3),
        }
    )));
}

fn args() -> GatewayArgs {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        gw: GatewayArgs,
    }
    let pem = tandem_meshtls::testing::Pki::new("cfg")
        .root_pem()
        .to_string();
    Cli::try_parse_from([
        "gateway",
        "--destination-svc-addr=tandem-destination.tandem.svc.cluster.local.:8086",
        "--identity-local-name=tandem-gateway.tandem-multicluster.serviceaccount.identity.tandem.cluster.local",
        "--identity-token-file=/var/run/secrets/tokens/tandem-identity-token",
        "--identity-svc-addr=tandem-identity.tandem.svc.cluster.local.:8080",
        "--identity-svc-name=tandem-identity.tandem.serviceaccount.identity.tandem.cluster.local",
        &format!("--identity-trust-anchors={pem}"),
    ])
    .unwrap()
    .gw
}

#[test]
fn config_validates_and_says_what_is_wrong() {
    let c = args().validate().unwrap();
    assert_eq!(c.listen_addr.port(), 4143);
    assert_eq!(c.admin_addr.port(), 4191);
    assert_eq!(c.suffixes.to_string(), "svc.cluster.local");
    assert_eq!(
        c.probe_authority(),
        "tandem-destination.tandem.svc.cluster.local:8086"
    );
    let bad = |f: fn(&mut GatewayArgs)| {
        let mut a = args();
        f(&mut a);
        a.validate().unwrap_err()
    };
    assert!(matches!(
        bad(|a| a.destination_svc_addr = Some("nohost".into())),
        ConfigError::HostPort { .. }
    ));
    assert!(matches!(
        bad(|a| a.identity_local_name = Some("Not A Name".into())),
        ConfigError::Name {
            flag: "--identity-local-name",
            ..
        }
    ));
    assert!(matches!(
        bad(|a| a.identity_trust_anchors = Some("not pem".into())),
        ConfigError::Anchors(_)
    ));
    assert!(matches!(
        bad(|a| a.identity_svc_addr = None),
        ConfigError::Missing("--identity-svc-addr")
    ));
    assert!(matches!(
        bad(|a| a.identity_trust_anchors = None),
        ConfigError::NoAnchors
    ));
    assert!(matches!(
        bad(|a| a.gateway_suffixes = "a..b".into()),
        ConfigError::Suffixes(_)
    ));
    assert!(matches!(
        bad(|a| a.listen_addr = "4143".into()),
        ConfigError::Addr { .. }
    ));
}

#[test]
fn idle_targets_go_unless_held() {
    use super::backends::{IDLE, keep};
    let t0 = tokio::time::Instant::now();
    let later = |d| t0 + d;
    // (held, asked for at, now, kept)
    let cases = [
        (false, t0, later(Duration::ZERO), true),
        (false, t0, later(IDLE - Duration::from_millis(1)), true),
        (false, t0, later(IDLE), false),
        (true, t0, later(IDLE * 10), true),
        // A clock read before `used` (another thread): not idle.
        (false, later(IDLE), t0, true),
    ];
    for (i, (held, used, now, kept)) in cases.into_iter().enumerate() {
        assert_eq!(keep(held, used, now, IDLE), kept, "case {i}");
    }
}

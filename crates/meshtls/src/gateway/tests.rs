use super::*;
use crate::transport_header::SessionProtocol;

const GW: &str =
    "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.tandem.cluster.local";
const OTHER_GW: &str = "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.tandem.west";
const WEB: &str = "web.emojivoto.serviceaccount.identity.tandem.cluster.local";
const SVC: &str = "emoji-svc.emojivoto.svc.cluster.local";

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

fn gateway(suffixes: &str) -> Gateway {
    Gateway {
        identity: name(GW),
        suffixes: Suffixes::parse(suffixes).unwrap(),
    }
}

/// Only emojivoto/emoji-svc is exported.
fn exported(ns: &str, svc: &str) -> bool {
    (ns, svc) == ("emojivoto", "emoji-svc")
}

fn target(authority: &str) -> Target {
    Target::from_authority(authority, 80).unwrap()
}

fn forward(authority: &str) -> Result<Forward, Refusal> {
    Ok(Forward {
        service: "emoji-svc".into(),
        namespace: "emojivoto".into(),
        authority: authority.into(),
        forwarded: format!("by={GW};for={WEB};host={authority};proto=https"),
    })
}

#[test]
fn decide() {
    let web = name(WEB);
    let svc_8080 = format!("{SVC}:8080");
    let not_a_service = |n: &str| {
        Err(Refusal::NotAService {
            name: name(n),
            suffix: "svc.cluster.local".into(),
        })
    };
    let lp = Err(Refusal::Loop { gateway: name(GW) });

    // (what, suffixes, authority, client id, Forwarded values, decision)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        &str,
        String,
        Option<&Name>,
        Vec<String>,
        Result<Forward, Refusal>,
    )> = vec![
        (
            "exported service",
            DEFAULT_SUFFIX,
            svc_8080.clone(),
            Some(&web),
            vec![],
            forward(&svc_8080),
        ),
        (
            "suffix without its dot",
            "svc.cluster.local",
            svc_8080.clone(),
            Some(&web),
            vec![],
            forward(&svc_8080),
        ),
        (
            "name with a trailing dot and capitals",
            DEFAULT_SUFFIX,
            "Emoji-Svc.emojivoto.svc.cluster.local.:8080".to_string(),
            Some(&web),
            vec![],
            forward(&svc_8080),
        ),
        (
            "no port: the default",
            DEFAULT_SUFFIX,
            SVC.into(),
            Some(&web),
            vec![],
            forward(&format!("{SVC}:80")),
        ),
        (
            "second of two suffixes",
            "svc.other.local,svc.cluster.local",
            svc_8080.clone(),
            Some(&web),
            vec![],
            forward(&svc_8080),
        ),
        (
            "no client identity",
            DEFAULT_SUFFIX,
            svc_8080.clone(),
            None,
            vec![],
            Err(Refusal::NoClientIdentity),
        ),
        (
            "another domain",
            DEFAULT_SUFFIX,
            "emoji-svc.emojivoto.svc.west.local:8080".into(),
            Some(&web),
            vec![],
            Err(Refusal::NotInSuffixes {
                name: name("emoji-svc.emojivoto.svc.west.local"),
                suffixes: "svc.cluster.local".into(),
            }),
        ),
        (
            "the suffix inside a label",
            DEFAULT_SUFFIX,
            "emoji.emojivotosvc.cluster.local:8080".into(),
            Some(&web),
            vec![],
            Err(Refusal::NotInSuffixes {
                name: name("emoji.emojivotosvc.cluster.local"),
                suffixes: "svc.cluster.local".into(),
            }),
        ),
        (
            "no suffixes configured",
            "",
            svc_8080.clone(),
            Some(&web),
            vec![],
            Err(Refusal::NotInSuffixes {
                name: name(SVC),
                suffixes: "none configured".into(),
            }),
        ),
        (
            "a pod under a headless service",
            DEFAULT_SUFFIX,
            format!("pod-0.{svc_8080}"),
            Some(&web),
            vec![],
            not_a_service(&format!("pod-0.{SVC}")),
        ),
        (
            "a namespace only",
            DEFAULT_SUFFIX,
            "emojivoto.svc.cluster.local:8080".into(),
            Some(&web),
            vec![],
            not_a_service("emojivoto.svc.cluster.local"),
        ),
        (
            "the suffix itself",
            DEFAULT_SUFFIX,
            "svc.cluster.local:8080".into(),
            Some(&web),
            vec![],
            not_a_service("svc.cluster.local"),
        ),
        (
            "not exported",
            DEFAULT_SUFFIX,
            "voting-svc.emojivoto.svc.cluster.local:8080".into(),
            Some(&web),
            vec![],
            Err(Refusal::NotExported {
                namespace: "emojivoto".into(),
                service: "voting-svc".into(),
            }),
        ),
        (
            "same service name, other namespace",
            DEFAULT_SUFFIX,
            "emoji-svc.default.svc.cluster.local:8080".into(),
            Some(&web),
            vec![],
            Err(Refusal::NotExported {
                namespace: "default".into(),
                service: "emoji-svc".into(),
            }),
        ),
        (
            "forwarded by us: a loop",
            DEFAULT_SUFFIX,
            svc_8080.clone(),
            Some(&web),
            vec![format!("by={GW};for={WEB}")],
            lp.clone(),
        ),
        (
            "forwarded by us, quoted, upper-case key",
            DEFAULT_SUFFIX,
            svc_8080.clone(),
            Some(&web),
            vec![format!("for=x;BY=\"{GW}\"")],
            lp.clone(),
        ),
        (
            "forwarded by us in a later element",
            DEFAULT_SUFFIX,
            svc_8080.clone(),
            Some(&web),
            vec![format!("by={OTHER_GW};for={WEB}, by={GW}.")],
            lp.clone(),
        ),
        (
            "forwarded by us in a later header",
            DEFAULT_SUFFIX,
            svc_8080.clone(),
            Some(&web),
            vec!["for=1.2.3.4".into(), format!("by={GW}")],
            lp,
        ),
        (
            "forwarded by another gateway",
            DEFAULT_SUFFIX,
            svc_8080.clone(),
            Some(&web),
            vec![format!(
                "by={OTHER_GW};for={WEB};host={svc_8080};proto=https"
            )],
            forward(&svc_8080),
        ),
        (
            "our name as for=, not by=",
            DEFAULT_SUFFIX,
            svc_8080.clone(),
            Some(&web),
            vec![format!("for={GW}")],
            forward(&svc_8080),
        ),
    ];
    for (what, suffixes, authority, client_id, forwarded, want) in cases {
        let forwarded: Vec<&str> = forwarded.iter().map(String::as_str).collect();
        let ask = Ask {
            target: target(&authority),
            client_id,
            forwarded: &forwarded,
        };
        assert_eq!(gateway(suffixes).decide(&ask, exported), want, "{what}");
    }
}

#[test]
fn targets() {
    let header = Header {
        port: 8080,
        name: Some(name(SVC)),
        protocol: Some(SessionProtocol::Http2),
    };
    assert_eq!(
        Target::from_header(&header),
        Ok(Target {
            name: name(SVC),
            port: 8080
        })
    );
    let nameless = Header {
        name: None,
        ..header
    };
    assert_eq!(Target::from_header(&nameless), Err(Refusal::NoName));

    for (authority, reason) in [
        (
            "emoji-svc.emojivoto.svc.cluster.local:http",
            "the port is not a number in 1-65535",
        ),
        (
            "emoji-svc.emojivoto.svc.cluster.local:0",
            "the port is not a number in 1-65535",
        ),
        (
            "emoji-svc.emojivoto.svc.cluster.local:99999",
            "the port is not a number in 1-65535",
        ),
        (":8080", "the host is not a DNS name"),
        ("emoji_svc.emojivoto:8080", "the host is not a DNS name"),
        ("[::1]:8080", "an IP address names no Service"),
    ] {
        assert_eq!(
            Target::from_authority(authority, 80),
            Err(Refusal::BadAuthority {
                authority: authority.into(),
                reason
            }),
            "{authority}"
        );
    }
}

#[test]
fn suffixes() {
    assert_eq!(
        Suffixes::default(),
        Suffixes::parse(DEFAULT_SUFFIX).unwrap()
    );
    assert_eq!(
        Suffixes::parse(" svc.cluster.local. , SVC.cluster.local,,svc.west.").unwrap(),
        Suffixes(vec!["svc.cluster.local".into(), "svc.west".into()])
    );
    assert_eq!(Suffixes::parse("").unwrap().to_string(), "none configured");
    for bad in [".", "svc..local", "svc.cluster_local"] {
        let err = Suffixes::parse(bad).unwrap_err();
        assert_eq!(err.suffix, bad);
    }
}

#[test]
fn refusals_read_well() {
    let cases = [
        (
            Refusal::NotInSuffixes {
                name: name("emoji-svc.emojivoto.svc.west.local"),
                suffixes: "svc.cluster.local".into(),
            },
            "emoji-svc.emojivoto.svc.west.local does not end with a gateway suffix (svc.cluster.local)",
        ),
        (
            Refusal::NotAService {
                name: name(&format!("pod-0.{SVC}")),
                suffix: "svc.cluster.local".into(),
            },
            "pod-0.emoji-svc.emojivoto.svc.cluster.local does not name a Service: expected <service>.<namespace>.svc.cluster.local",
        ),
        (
            Refusal::NotExported {
                namespace: "emojivoto".into(),
                service: "voting-svc".into(),
            },
            "Service emojivoto/voting-svc is not exported",
        ),
    ];
    for (refusal, text) in cases {
        assert_eq!(refusal.to_string(), text);
    }
}

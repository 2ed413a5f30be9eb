//! The rule list, table-tested; `crates/tandem/tests/proxy_init.rs` runs it
//! with iptables in a network namespace.

use crate::{
    parse_ports,
    ports::PortRange,
    proxy_init::{self, Redirect},
};

fn redirect() -> Redirect {
    Redirect {
        incoming_proxy_port: 4143,
        outgoing_proxy_port: 4140,
        proxy_uid: 2102,
        inbound_ports_to_ignore: parse_ports("4190,4191").unwrap(),
        outbound_ports_to_ignore: parse_ports("4567,4568").unwrap(),
        subnets_to_ignore: vec!["10.1.0.0/16".into()],
    }
}

#[test]
fn proxy_init_rules_are_linkerds_in_order() {
    let rules: Vec<String> = proxy_init::rules(&redirect(), 1700000000)
        .iter()
        .map(|r| r.join(" "))
        .collect();
    let c = |name: &str| format!("-m comment --comment proxy-init/{name}/1700000000");
    let want = [
        "-t nat -N PROXY_INIT_REDIRECT".to_string(),
        format!(
            "-t nat -A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191 -j RETURN {}",
            c("ignore-port")
        ),
        format!(
            "-t nat -A PROXY_INIT_REDIRECT -p all -j RETURN -s 10.1.0.0/16 {}",
            c("ignore-subnet")
        ),
        format!(
            "-t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143 {}",
            c("redirect-all-incoming-to-proxy-port")
        ),
        format!(
            "-t nat -A PREROUTING -j PROXY_INIT_REDIRECT {}",
            c("install-proxy-init-prerouting")
        ),
        "-t nat -N PROXY_INIT_OUTPUT".to_string(),
        format!(
            "-t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN {}",
            c("ignore-proxy-user-id")
        ),
        format!(
            "-t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN {}",
            c("ignore-loopback")
        ),
        format!(
            "-t nat -A PROXY_INIT_OUTPUT -p tcp -m multiport --dports 4567,4568 -j RETURN {}",
            c("ignore-port")
        ),
        format!(
            "-t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-port 4140 {}",
            c("redirect-all-outgoing-to-proxy-port")
        ),
        format!(
            "-t nat -A OUTPUT -j PROXY_INIT_OUTPUT {}",
            c("install-proxy-init-output")
        ),
    ];
    assert_eq!(rules, want);

    // No ignored ports or subnets: no RETURN rules for them.
    let bare = Redirect {
        inbound_ports_to_ignore: vec![],
        outbound_ports_to_ignore: vec![],
        subnets_to_ignore: vec![],
        ..redirect()
    };
    let rules = proxy_init::rules(&bare, 1);
    assert_eq!(rules.len(), 8);
    assert!(!rules.iter().any(|r| r.contains(&"multiport".to_string())));
}

#[test]
fn multiport_lists_hold_at_most_fifteen_slots() {
    let ports: Vec<PortRange> = (1..=31).map(PortRange::port).collect();
    let chunks = proxy_init::multiport_chunks(&ports);
    let sizes: Vec<usize> = chunks.iter().map(|c| c.split(',').count()).collect();
    assert_eq!(sizes, [15, 15, 1]);
    // A range takes two slots: 14 ports and a range do not fit in one.
    let mut ports: Vec<PortRange> = (1..=14).map(PortRange::port).collect();
    ports.push(PortRange {
        first: 100,
        last: 200,
    });
    let chunks = proxy_init::multiport_chunks(&ports);
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[1], "100:200");
    assert!(proxy_init::multiport_chunks(&[]).is_empty());
}

/// `iptables-save -t nat` after a complete install, as iptables-nft 1.8.9
/// prints it.
const SAVED: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:PROXY_INIT_OUTPUT - [0:0]
:PROXY_INIT_REDIRECT - [0:0]
-A PREROUTING -m comment --comment "proxy-init/install-proxy-init-prerouting/1" -j PROXY_INIT_REDIRECT
-A OUTPUT -m comment --comment "proxy-init/install-proxy-init-output/1" -j PROXY_INIT_OUTPUT
-A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -m comment --comment "proxy-init/ignore-proxy-user-id/1" -j RETURN
-A PROXY_INIT_OUTPUT -p tcp -m comment --comment "proxy-init/redirect-all-outgoing-to-proxy-port/1" -j REDIRECT --to-ports 4140
-A PROXY_INIT_REDIRECT -p tcp -m comment --comment "proxy-init/redirect-all-incoming-to-proxy-port/1" -j REDIRECT --to-ports 4143
COMMIT
"#;

/// `SAVED` without the lines that contain `needle`.
fn without(needle: &str) -> String {
    SAVED
        .lines()
        .filter(|l| !l.contains(needle))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn installed_tells_all_from_part_from_nothing() {
    use proxy_init::Installed;
    let fresh = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    assert_eq!(proxy_init::installed(fresh), Installed::No);
    assert_eq!(proxy_init::installed(""), Installed::No);
    assert_eq!(proxy_init::installed(SAVED), Installed::Yes);
    // What Linkerd's proxy-init accepts as done: one chain created and
    // filled, the run cut off before the other.
    let cases = [
        (
            without("OUTPUT"),
            vec![
                "PROXY_INIT_OUTPUT's redirect to the outbound port",
                "the jump from OUTPUT",
            ],
        ),
        (without("-A PREROUTING"), vec!["the jump from PREROUTING"]),
        (
            without("--to-ports 4143"),
            vec!["PROXY_INIT_REDIRECT's redirect to the inbound port"],
        ),
        // An empty chain, left by a run cut off after `-N`.
        (
            ":PROXY_INIT_OUTPUT - [0:0]\n".to_string(),
            vec![
                "PROXY_INIT_REDIRECT's redirect to the inbound port",
                "the jump from PREROUTING",
                "PROXY_INIT_OUTPUT's redirect to the outbound port",
                "the jump from OUTPUT",
            ],
        ),
    ];
    for (save, missing) in cases {
        assert_eq!(
            proxy_init::installed(&save),
            Installed::Partly { missing },
            "{save}"
        );
    }
}

#[test]
fn the_rules_go_in_as_one_restore_transaction() {
    let rules = proxy_init::rules(&redirect(), 1700000000);
    let input = proxy_init::restore_input(&rules, "");
    let lines: Vec<&str> = input.lines().collect();
    // The table, both chains declared (which empties them if they exist),
    // then every -A rule in rules()' order, then COMMIT.
    assert_eq!(lines[0], "*nat");
    assert_eq!(lines[1], ":PROXY_INIT_REDIRECT - [0:0]");
    assert_eq!(lines[2], ":PROXY_INIT_OUTPUT - [0:0]");
    assert_eq!(lines.last(), Some(&"COMMIT"));
    let appends: Vec<String> = rules
        .iter()
        .filter(|r| r[2] == "-A")
        .map(|r| r[2..].join(" "))
        .collect();
    assert_eq!(lines[3..lines.len() - 1], appends);
    assert_eq!(appends.len(), rules.len() - 2);
}

#[test]
fn a_jump_already_there_is_not_added_again() {
    let rules = proxy_init::rules(&redirect(), 1700000000);
    let jumps = |input: &str| -> Vec<String> {
        input
            .lines()
            .filter(|l| l.starts_with("-A PREROUTING ") || l.starts_with("-A OUTPUT "))
            .map(|l| l.split(" -m comment").next().unwrap().to_string())
            .collect()
    };
    // The OUTPUT chain's rules and jump gone, PREROUTING's jump still
    // there: only OUTPUT's jump is added; both chains are refilled whole.
    let input = proxy_init::restore_input(&rules, &without("OUTPUT"));
    assert_eq!(jumps(&input), ["-A OUTPUT -j PROXY_INIT_OUTPUT"]);
    assert!(input.contains("--to-port 4143") && input.contains("--to-port 4140"));
    assert!(jumps(&proxy_init::restore_input(&rules, SAVED)).is_empty());
}

#[test]
fn restore_arguments_are_quoted_only_when_they_must_be() {
    let rule = |comment: &str| -> Vec<String> {
        [
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-m",
            "comment",
            "--comment",
            comment,
        ]
        .map(String::from)
        .to_vec()
    };
    for (comment, written) in [
        ("proxy-init/x/1", "proxy-init/x/1"),
        ("two words", r#""two words""#),
        (r#"say "hi""#, r#""say \"hi\"""#),
        (r"back\slash", r#""back\\slash""#),
        ("", r#""""#),
    ] {
        let input = proxy_init::restore_input(&[rule(comment)], "");
        assert!(
            input.contains(&format!("-A OUTPUT -m comment --comment {written}\n")),
            "{comment:?}:\n{input}"
        );
    }
}

#[test]
fn subnets_are_checked_before_iptables_sees_them() {
    for ok in ["10.0.0.0/8", "0.0.0.0/0", "fd00::/8"] {
        assert!(proxy_init::check_subnet(ok).is_ok(), "{ok}");
    }
    for bad in ["10.0.0.0", "10.0.0.0/33", "ten/8", "fd00::/129", "/8"] {
        assert!(proxy_init::check_subnet(bad).is_err(), "{bad}");
    }
}

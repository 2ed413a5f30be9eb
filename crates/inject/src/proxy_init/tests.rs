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

#[test]
fn installed_rules_are_recognized_in_iptables_save_output() {
    let fresh = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    let done = "*nat\n:PROXY_INIT_OUTPUT - [0:0]\n-A OUTPUT -j PROXY_INIT_OUTPUT\n-A PROXY_INIT_OUTPUT -o lo -j RETURN\nCOMMIT\n";
    assert!(!proxy_init::installed(fresh));
    assert!(!proxy_init::installed(":PROXY_INIT_OUTPUT - [0:0]\n"));
    assert!(proxy_init::installed(done));
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

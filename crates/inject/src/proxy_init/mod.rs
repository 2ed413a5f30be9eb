//! The nat rules `tandem proxy-init` installs in a pod's network namespace,
//! as linkerd2-proxy-init v2.0.0 writes them: every TCP connection coming
//! in goes to the proxy's inbound port, every one going out (but the
//! proxy's own and loopback's) to its outbound port.
//!
//! Inbound (`PREROUTING` → `PROXY_INIT_REDIRECT`):
//! 1. ignored inbound ports `RETURN` (multiport, at most 15 slots a rule);
//! 2. ignored subnets `RETURN`;
//! 3. everything else TCP `REDIRECT --to-port <incoming>`.
//!
//! Outbound (`OUTPUT` → `PROXY_INIT_OUTPUT`):
//! 1. the proxy's uid `RETURN`;
//! 2. `-o lo` `RETURN`;
//! 3. ignored outbound ports `RETURN`;
//! 4. everything else TCP `REDIRECT --to-port <outgoing>`.
//!
//! Each rule carries the comment `proxy-init/<rule>/<unix time>`.

use crate::ports::PortRange;

#[cfg(test)]
mod tests;

/// The chains, and what `iptables-save` shows once they are installed.
pub const REDIRECT_CHAIN: &str = "PROXY_INIT_REDIRECT";
pub const OUTPUT_CHAIN: &str = "PROXY_INIT_OUTPUT";
/// `iptables-save -t nat` output containing this means "already done".
pub const INSTALLED_MARKER: &str = "-A PROXY_INIT_";
/// iptables' limit of ports in one `-m multiport` match.
pub const MULTIPORT_SLOTS: usize = 15;

/// What to redirect where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub incoming_proxy_port: u16,
    pub outgoing_proxy_port: u16,
    pub proxy_uid: u32,
    pub inbound_ports_to_ignore: Vec<PortRange>,
    pub outbound_ports_to_ignore: Vec<PortRange>,
    /// CIDRs whose inbound connections are not redirected, as given.
    pub subnets_to_ignore: Vec<String>,
}

/// One `iptables` invocation: its arguments after the program name.
pub type Rule = Vec<String>;

/// Whether `iptables-save -t nat` output shows proxy-init's rules.
pub fn installed(save_output: &str) -> bool {
    save_output
        .lines()
        .any(|l| l.trim_start().starts_with(INSTALLED_MARKER))
}

/// Splits ports into multiport lists of at most [`MULTIPORT_SLOTS`] slots.
pub fn multiport_chunks(ports: &[PortRange]) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut used = 0;
    for p in ports {
        if used + p.slots() > MULTIPORT_SLOTS {
            chunks.push(current.join(","));
            current.clear();
            used = 0;
        }
        current.push(p.to_iptables());
        used += p.slots();
    }
    if !current.is_empty() {
        chunks.push(current.join(","));
    }
    chunks
}

/// The commands, in order, with `now` (unix seconds) in the comments.
pub fn rules(r: &Redirect, now: u64) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::new();
    let mut add = |args: &[&str], comment: Option<&str>| {
        let mut rule: Rule = ["-t", "nat"].iter().map(|s| s.to_string()).collect();
        rule.extend(args.iter().map(|s| s.to_string()));
        if let Some(c) = comment {
            rule.extend([
                "-m".into(),
                "comment".into(),
                "--comment".into(),
                format!("proxy-init/{c}/{now}"),
            ]);
        }
        out.push(rule);
    };
    let incoming = r.incoming_proxy_port.to_string();
    let outgoing = r.outgoing_proxy_port.to_string();
    let uid = r.proxy_uid.to_string();

    // === inbound ===
    add(&["-N", REDIRECT_CHAIN], None);
    for chunk in multiport_chunks(&r.inbound_ports_to_ignore) {
        add(
            &[
                "-A",
                REDIRECT_CHAIN,
                "-p",
                "tcp",
                "-m",
                "multiport",
                "--dports",
                &chunk,
                "-j",
                "RETURN",
            ],
            Some("ignore-port"),
        );
    }
    for subnet in &r.subnets_to_ignore {
        add(
            &[
                "-A",
                REDIRECT_CHAIN,
                "-p",
                "all",
                "-j",
                "RETURN",
                "-s",
                subnet,
            ],
            Some("ignore-subnet"),
        );
    }
    add(
        &[
            "-A",
            REDIRECT_CHAIN,
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-port",
            &incoming,
        ],
        Some("redirect-all-incoming-to-proxy-port"),
    );
    add(
        &["-A", "PREROUTING", "-j", REDIRECT_CHAIN],
        Some("install-proxy-init-prerouting"),
    );

    // === outbound ===
    add(&["-N", OUTPUT_CHAIN], None);
    add(
        &[
            "-A",
            OUTPUT_CHAIN,
            "-m",
            "owner",
            "--uid-owner",
            &uid,
            "-j",
            "RETURN",
        ],
        Some("ignore-proxy-user-id"),
    );
    add(
        &["-A", OUTPUT_CHAIN, "-o", "lo", "-j", "RETURN"],
        Some("ignore-loopback"),
    );
    for chunk in multiport_chunks(&r.outbound_ports_to_ignore) {
        add(
            &[
                "-A",
                OUTPUT_CHAIN,
                "-p",
                "tcp",
                "-m",
                "multiport",
                "--dports",
                &chunk,
                "-j",
                "RETURN",
            ],
            Some("ignore-port"),
        );
    }
    add(
        &[
            "-A",
            OUTPUT_CHAIN,
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-port",
            &outgoing,
        ],
        Some("redirect-all-outgoing-to-proxy-port"),
    );
    add(
        &["-A", "OUTPUT", "-j", OUTPUT_CHAIN],
        Some("install-proxy-init-output"),
    );
    out
}

/// Which iptables mode to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Nft,
    Legacy,
}

/// The programs to run for `mode`: (iptables, iptables-save), the
/// mode's own names first, then plain `iptables`/`iptables-save` (which
/// may be either mode: the caller says which it found).
pub fn program_candidates(mode: Mode) -> [(&'static str, &'static str); 2] {
    match mode {
        Mode::Nft => [
            ("iptables-nft", "iptables-nft-save"),
            ("iptables", "iptables-save"),
        ],
        Mode::Legacy => [
            ("iptables-legacy", "iptables-legacy-save"),
            ("iptables", "iptables-save"),
        ],
    }
}

/// Checks a CIDR's shape (`a.b.c.d/n`, or IPv6 `x::/n`) before iptables
/// sees it, for a clear message.
pub fn check_subnet(s: &str) -> Result<(), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR (address/prefix length)"))?;
    let max = match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return Err(format!("{s:?}: {addr:?} is not an IP address")),
    };
    match len.parse::<u8>() {
        Ok(n) if n <= max => Ok(()),
        _ => Err(format!("{s:?}: the prefix length must be 0 to {max}")),
    }
}

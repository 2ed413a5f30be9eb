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
//!
//! Linkerd's proxy-init runs these as `iptables` commands one by one, so a
//! run cut off half-way leaves some of them, and its "already installed"
//! check (any `-A PROXY_INIT_` rule) then accepts the half as done. Here
//! they go in as one `iptables-restore --noflush` transaction
//! ([`restore_input`]): all or none. [`installed`] tells all from part, and
//! a part (left by an older proxy-init) is installed again whole.

use crate::ports::PortRange;

#[cfg(test)]
mod tests;

/// The chains, and what `iptables-save` shows once they are installed.
pub const REDIRECT_CHAIN: &str = "PROXY_INIT_REDIRECT";
pub const OUTPUT_CHAIN: &str = "PROXY_INIT_OUTPUT";
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

/// What `iptables-save -t nat` shows of proxy-init's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Installed {
    /// Nothing of them.
    No,
    /// Both chains end in their redirect, and `PREROUTING` and `OUTPUT`
    /// jump to them.
    Yes,
    /// Some of them: what is missing, in words.
    Partly { missing: Vec<&'static str> },
}

/// The pieces without which the redirection does not work, each with the
/// test on an `iptables-save` line that finds it.
const PIECES: [(&str, &str, &str); 4] = [
    (
        "PROXY_INIT_REDIRECT's redirect to the inbound port",
        "-A PROXY_INIT_REDIRECT ",
        " -j REDIRECT",
    ),
    (
        "the jump from PREROUTING",
        "-A PREROUTING ",
        " -j PROXY_INIT_REDIRECT",
    ),
    (
        "PROXY_INIT_OUTPUT's redirect to the outbound port",
        "-A PROXY_INIT_OUTPUT ",
        " -j REDIRECT",
    ),
    (
        "the jump from OUTPUT",
        "-A OUTPUT ",
        " -j PROXY_INIT_OUTPUT",
    ),
];

/// Whether a piece of [`PIECES`] is on one of the lines.
fn has(save_output: &str, (_, prefix, target): (&str, &str, &str)) -> bool {
    save_output.lines().any(|l| {
        let l = l.trim();
        l.starts_with(prefix) && (l.ends_with(target) || l.contains(&format!("{target} ")))
    })
}

/// Reads `iptables-save -t nat` output.
pub fn installed(save_output: &str) -> Installed {
    let missing: Vec<&'static str> = PIECES
        .into_iter()
        .filter(|&piece| !has(save_output, piece))
        .map(|(what, _, _)| what)
        .collect();
    if missing.is_empty() {
        Installed::Yes
    } else if save_output.contains("PROXY_INIT_") {
        Installed::Partly { missing }
    } else {
        Installed::No
    }
}

/// The `iptables-restore --noflush` input that installs `rules` (from
/// [`rules`]) in one transaction. Declaring the two chains empties them if
/// they exist, so a part left before is replaced, not doubled; a jump from
/// `PREROUTING` or `OUTPUT` that `save_output` (the table as it is) already
/// shows is not added again.
pub fn restore_input(rules: &[Rule], save_output: &str) -> String {
    let mut chains = String::new();
    let mut appends = String::new();
    for rule in rules {
        let args: Vec<&str> = rule.iter().map(String::as_str).collect();
        let args = args.strip_prefix(&["-t", "nat"][..]).unwrap_or(&args);
        if let ["-N", chain] = args {
            chains.push_str(&format!(":{chain} - [0:0]\n"));
            continue;
        }
        // PREROUTING's and OUTPUT's jumps go in once only.
        if let ["-A", chain @ ("PREROUTING" | "OUTPUT"), ..] = args
            && let Some(jump) = PIECES
                .into_iter()
                .find(|(_, prefix, _)| *prefix == format!("-A {chain} "))
            && has(save_output, jump)
        {
            continue;
        }
        let line: Vec<String> = args.iter().map(|a| restore_quote(a)).collect();
        appends.push_str(&line.join(" "));
        appends.push('\n');
    }
    format!("*nat\n{chains}{appends}COMMIT\n")
}

/// An argument as iptables-restore reads it: in double quotes (with `\"`
/// and `\\` escaped) when it holds a space or a quote.
fn restore_quote(arg: &str) -> String {
    if arg.is_empty() || arg.contains([' ', '\t', '"', '\'', '\\']) {
        format!("\"{}\"", arg.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        arg.to_string()
    }
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

/// The programs to run for `mode`: (iptables-restore, iptables-save), the
/// mode's own names first, then plain `iptables-restore`/`iptables-save`
/// (which may be either mode: the caller says which it found).
pub fn program_candidates(mode: Mode) -> [(&'static str, &'static str); 2] {
    match mode {
        Mode::Nft => [
            ("iptables-nft-restore", "iptables-nft-save"),
            ("iptables-restore", "iptables-save"),
        ],
        Mode::Legacy => [
            ("iptables-legacy-restore", "iptables-legacy-save"),
            ("iptables-restore", "iptables-save"),
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

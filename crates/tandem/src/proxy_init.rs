//! `tandem proxy-init`: the injected init container. Installs the nat rules
//! of [`tandem_inject::proxy_init`] in the pod's network namespace with
//! `iptables`, once: if `iptables-save -t nat` already shows them (a
//! restarted init container), it does nothing and says so.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use tandem_inject::{
    PortRange, parse_ports,
    proxy_init::{self, Mode, Redirect},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IptablesMode {
    /// iptables-nft (the nf_tables kernel API); Debian's default.
    Nft,
    /// iptables-legacy (the x_tables kernel API).
    Legacy,
}

#[derive(Debug, Args)]
pub struct ProxyInitArgs {
    /// The proxy's inbound port: every incoming TCP connection goes there.
    #[arg(long, default_value_t = tandem_inject::INBOUND_PORT)]
    incoming_proxy_port: u16,
    /// The proxy's outbound port: every outgoing TCP connection goes there.
    #[arg(long, default_value_t = tandem_inject::OUTBOUND_PORT)]
    outgoing_proxy_port: u16,
    /// The proxy's uid, whose own connections leave unredirected.
    #[arg(long, default_value_t = tandem_inject::PROXY_UID)]
    proxy_uid: u32,
    /// Inbound ports not redirected: `4190,4191,9000-9010`.
    #[arg(long, default_value = "", value_parser = ports)]
    inbound_ports_to_ignore: Ports,
    /// Outbound ports not redirected.
    #[arg(long, default_value = "", value_parser = ports)]
    outbound_ports_to_ignore: Ports,
    /// Source subnets (CIDRs, comma-separated) whose incoming connections
    /// are not redirected.
    #[arg(long, default_value = "", value_parser = subnets)]
    subnets_to_ignore: Subnets,
    /// Which iptables to use.
    #[arg(long, value_enum, default_value = "nft")]
    iptables_mode: IptablesMode,
    /// Print the commands instead of running them.
    #[arg(long)]
    simulate: bool,
}

/// A comma-separated list given as one flag value (clap would take a `Vec`
/// field as repeated flags).
#[derive(Clone, Debug)]
struct Ports(Vec<PortRange>);

#[derive(Clone, Debug)]
struct Subnets(Vec<String>);

fn ports(s: &str) -> Result<Ports, String> {
    parse_ports(s).map(Ports).map_err(|e| e.to_string())
}

fn subnets(s: &str) -> Result<Subnets, String> {
    let list: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect();
    for subnet in &list {
        proxy_init::check_subnet(subnet)?;
    }
    Ok(Subnets(list))
}

impl ProxyInitArgs {
    fn redirect(&self) -> Redirect {
        Redirect {
            incoming_proxy_port: self.incoming_proxy_port,
            outgoing_proxy_port: self.outgoing_proxy_port,
            proxy_uid: self.proxy_uid,
            inbound_ports_to_ignore: self.inbound_ports_to_ignore.0.clone(),
            outbound_ports_to_ignore: self.outbound_ports_to_ignore.0.clone(),
            subnets_to_ignore: self.subnets_to_ignore.0.clone(),
        }
    }
}

/// The iptables and iptables-save programs found on PATH.
struct Programs {
    iptables: PathBuf,
    save: PathBuf,
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn programs(mode: Mode) -> Result<Programs> {
    let candidates = proxy_init::program_candidates(mode);
    for (iptables, save) in candidates {
        if let (Some(iptables), Some(save)) = (find_on_path(iptables), find_on_path(save)) {
            return Ok(Programs { iptables, save });
        }
    }
    let names: Vec<_> = candidates.iter().map(|(i, _)| *i).collect();
    bail!(
        "none of {} (with its -save) is on PATH; install iptables (Debian package iptables)",
        names.join(", ")
    )
}

fn run_ok(program: &Path, args: &[String]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "`{} {}` failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run(args: ProxyInitArgs) -> Result<ExitCode> {
    let mode = match args.iptables_mode {
        IptablesMode::Nft => Mode::Nft,
        IptablesMode::Legacy => Mode::Legacy,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let rules = proxy_init::rules(&args.redirect(), now);
    if args.simulate {
        let (iptables, _) = proxy_init::program_candidates(mode)[0];
        for rule in &rules {
            println!("{iptables} {}", rule.join(" "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let p = programs(mode)?;
    let save_args = ["-t".to_string(), "nat".to_string()];
    let before = run_ok(&p.save, &save_args)?;
    if proxy_init::installed(&before) {
        println!(
            "proxy-init: the {} and {} rules are already installed; nothing to do",
            proxy_init::REDIRECT_CHAIN,
            proxy_init::OUTPUT_CHAIN
        );
        return Ok(ExitCode::SUCCESS);
    }
    for rule in &rules {
        run_ok(&p.iptables, rule)?;
    }
    let after = run_ok(&p.save, &save_args)?;
    println!(
        "proxy-init: {} rules installed with {}:\n{after}",
        rules.len(),
        p.iptables.display()
    );
    Ok(ExitCode::SUCCESS)
}

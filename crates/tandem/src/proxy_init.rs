//! `tandem proxy-init`: the injected init container. Installs the nat rules
//! of [`tandem_inject::proxy_init`] in the pod's network namespace in one
//! `iptables-restore --noflush` transaction (all or none), once: if
//! `iptables-save -t nat` already shows them all (a restarted init
//! container), it does nothing and says so; if it shows a part, it says
//! what is missing and installs them whole.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use tandem_inject::{
    PortRange, parse_ports,
    proxy_init::{self, Installed, Mode, Redirect},
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
    /// Print the iptables-restore input instead of applying it.
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
    fn mode(&self) -> Mode {
        match self.iptables_mode {
            IptablesMode::Nft => Mode::Nft,
            IptablesMode::Legacy => Mode::Legacy,
        }
    }

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

/// The iptables-restore and iptables-save programs found on PATH.
struct Programs {
    restore: PathBuf,
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
    for (restore, save) in candidates {
        if let (Some(restore), Some(save)) = (find_on_path(restore), find_on_path(save)) {
            return Ok(Programs { restore, save });
        }
    }
    let names: Vec<_> = candidates.iter().map(|(r, _)| *r).collect();
    bail!(
        "none of {} (with its -save) is on PATH; install iptables (Debian package iptables)",
        names.join(", ")
    )
}

/// Runs `program` with `args` and `input` on its stdin; its stdout, or an
/// error with the command and its stderr.
fn run_ok(program: &Path, args: &[&str], input: Option<&str>) -> Result<String> {
    let command = || format!("`{} {}`", program.display(), args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("writing the rules to {}", command()))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {}", command()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            command(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run(args: ProxyInitArgs) -> Result<ExitCode> {
    if args.simulate {
        let rules = proxy_init::rules(&args.redirect(), now());
        let (restore, _) = proxy_init::program_candidates(args.mode())[0];
        print!(
            "{restore} --noflush <<'EOF'\n{}EOF\n",
            proxy_init::restore_input(&rules, "")
        );
        return Ok(ExitCode::SUCCESS);
    }
    install(&args, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The iptables programs of the node (or image), or an error that says
/// what to install.
pub fn find_iptables() -> Result<impl Sized> {
    programs(Mode::Nft).or_else(|_| programs(Mode::Legacy))
}

/// What of the rules is missing in the calling thread's network namespace:
/// `None` if they are all there.
pub fn missing(args: &ProxyInitArgs) -> Result<Option<String>> {
    let p = programs(args.mode())?;
    let saved = run_ok(&p.save, &["-t", "nat"], None)?;
    Ok(missing_in(&saved))
}

fn missing_in(saved: &str) -> Option<String> {
    match proxy_init::installed(saved) {
        Installed::Yes => None,
        Installed::Partly { missing } => Some(missing.join(", ")),
        Installed::No => Some("all of them".to_string()),
    }
}

/// Installs the rules in the network namespace of the calling thread,
/// saying what it did on `log` (the init container's stdout; the CNI
/// plugin's stderr, as its stdout is its result).
pub fn install(args: &ProxyInitArgs, log: &mut dyn Write) -> Result<()> {
    let rules = proxy_init::rules(&args.redirect(), now());
    let p = programs(args.mode())?;
    let save = || run_ok(&p.save, &["-t", "nat"], None);
    let before = save()?;
    match proxy_init::installed(&before) {
        Installed::Yes => {
            writeln!(
                log,
                "proxy-init: the {} and {} rules are already installed; nothing to do",
                proxy_init::REDIRECT_CHAIN,
                proxy_init::OUTPUT_CHAIN
            )?;
            return Ok(());
        }
        Installed::Partly { missing } => writeln!(
            log,
            "proxy-init: only part of the rules is installed (missing: {}); installing them whole",
            missing.join(", ")
        )?,
        Installed::No => {}
    }
    let input = proxy_init::restore_input(&rules, &before);
    run_ok(&p.restore, &["--noflush"], Some(&input))?;
    let after = save()?;
    if let Some(missing) = missing_in(&after) {
        bail!(
            "{} accepted the rules, but `iptables-save -t nat` does not show {missing}:\n{after}",
            p.restore.display()
        );
    }
    writeln!(
        log,
        "proxy-init: {} rules installed in one transaction with {}:\n{after}",
        rules.len(),
        p.restore.display()
    )?;
    Ok(())
}

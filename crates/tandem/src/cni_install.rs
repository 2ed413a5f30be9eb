//! `tandem cni-install`: what the `tandem-cni` DaemonSet (`tandem
//! install-cni`) runs on every node, as linkerd-cni's install-cni.
//!
//! It copies this executable into the node's CNI bin dir as `tandem-cni`,
//! then adds the plugin's entry to the CNI config containerd uses (what
//! to write is decided in `tandem_install::cni`), and puts both back every
//! `--interval`, since the cluster's network may rewrite its config at any
//! time. The binary goes in before the entry, and on SIGTERM the entry
//! comes out before the binary: a config never names a plugin that is not
//! there, which would stop every pod of the node from starting.
//!
//! Every write is a temporary file in the same dir and a rename, so that
//! containerd (which reloads the dir when it changes) never reads half a
//! file. The temporary names end in `.tmp`, which containerd does not read.

use std::{
    fs::{self, File, Permissions},
    io::{self, Read},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    pin::pin,
    process::ExitCode,
};

use anyhow::{Context, Result, bail};
use clap::Args;
use tandem_api::Duration;
use tandem_install::cni::{self, Edit};

#[derive(Debug, Args)]
pub struct CniInstallArgs {
    /// The node's CNI bin dir (as mounted): the plugin is copied here as
    /// `tandem-cni`.
    #[arg(long, value_name = "DIR", env = "TANDEM_CNI_BIN_DIR")]
    bin_dir: PathBuf,
    /// The node's CNI config dir (as mounted): the plugin's entry goes into
    /// the config containerd uses, the first `.conf`, `.conflist` or
    /// `.json` file by name.
    #[arg(long, value_name = "DIR", env = "TANDEM_CNI_NET_DIR")]
    net_dir: PathBuf,
    /// Only check (the DaemonSet's readiness probe): exit 0 if the plugin
    /// and its entry are in place, 1 with what is missing otherwise.
    #[arg(long)]
    check: bool,
    /// How often to look again and put back what the cluster's network
    /// took out (above zero).
    #[arg(long, default_value = "2s", value_parser = Duration::parse_period)]
    interval: Duration,
}

pub async fn run(args: CniInstallArgs) -> Result<ExitCode> {
    if args.check {
        return check(&args.bin_dir, &args.net_dir);
    }
    let exe = std::env::current_exe().context("finding this executable, to install it")?;
    let mut stop = pin!(tandem::signal::shutdown_signal());
    // One poll installs the signal handlers: before that, SIGTERM would end
    // the process without taking the plugin out.
    if futures::poll!(stop.as_mut()).is_ready() {
        return Ok(ExitCode::SUCCESS);
    }
    tracing::info!(
        bin_dir = %args.bin_dir.display(),
        net_dir = %args.net_dir.display(),
        interval = %args.interval,
        "installing the tandem-cni plugin"
    );
    let mut node = Node::new(exe, args.bin_dir, args.net_dir);
    let mut ticks = tokio::time::interval(args.interval.as_std());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A pass is never cut short: the stop is seen between passes, so
        // the removal below cannot race a write.
        tokio::select! {
            biased;
            _ = stop.as_mut() => break,
            _ = ticks.tick() => {}
        }
        node = tokio::task::spawn_blocking(move || {
            node.pass();
            node
        })
        .await?;
    }
    tracing::info!("stopping: taking the plugin out");
    tokio::task::spawn_blocking(move || node.uninstall()).await??;
    tracing::info!("the tandem-cni plugin and its config entry are removed");
    Ok(ExitCode::SUCCESS)
}

// === impl Node ===

/// The node's two dirs, and what was last said about them, so that each
/// state is logged once rather than at every pass.
struct Node {
    exe: PathBuf,
    bin_dir: PathBuf,
    net_dir: PathBuf,
    /// The installed plugin as last found equal to `exe`; not compared
    /// again while its stamp is the same.
    verified: Option<Stamp>,
    waiting: bool,
    binary_error: Option<String>,
    config_error: Option<String>,
}

/// What tells a file apart from its next version without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> io::Result<Self> {
        let m = fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

/// What a pass did to the config.
enum ConfigOutcome {
    /// No config file yet.
    Waiting,
    Unchanged,
    Patched {
        file: PathBuf,
        replaced: Option<PathBuf>,
    },
    /// The file changed between the read and the write: again next pass.
    Raced(PathBuf),
}

impl Node {
    fn new(exe: PathBuf, bin_dir: PathBuf, net_dir: PathBuf) -> Self {
        Node {
            exe,
            bin_dir,
            net_dir,
            verified: None,
            waiting: false,
            binary_error: None,
            config_error: None,
        }
    }

    fn plugin(&self) -> PathBuf {
        self.bin_dir.join(cni::PLUGIN_TYPE)
    }

    /// Puts the plugin and then its entry in place, logging what changed.
    fn pass(&mut self) {
        match self.install_binary() {
            Ok(false) => {}
            Ok(true) => tracing::info!(path = %self.plugin().display(), "installed the plugin"),
            Err(e) => {
                report(&mut self.binary_error, &e, "cannot install the plugin");
                // No entry for a plugin that is not there.
                return;
            }
        }
        self.binary_error = None;
        match self.patch_config() {
            Ok(ConfigOutcome::Waiting) => {
                if !self.waiting {
                    tracing::info!(
                        dir = %self.net_dir.display(),
                        "waiting for the cluster's CNI config"
                    );
                }
                self.waiting = true;
            }
            Ok(outcome) => {
                self.waiting = false;
                match outcome {
                    ConfigOutcome::Patched {
                        file,
                        replaced: None,
                    } => {
                        tracing::info!(file = %file.display(), "added the plugin to the CNI config")
                    }
                    ConfigOutcome::Patched {
                        file,
                        replaced: Some(old),
                    } => tracing::info!(
                        file = %file.display(),
                        replaced = %old.display(),
                        "added the plugin to the CNI config, as a list in place of the single plugin"
                    ),
                    ConfigOutcome::Raced(file) => {
                        tracing::debug!(file = %file.display(), "the config changed while it was patched; again at the next pass")
                    }
                    ConfigOutcome::Waiting | ConfigOutcome::Unchanged => {}
                }
            }
            Err(e) => {
                report(
                    &mut self.config_error,
                    &e,
                    "cannot add the plugin to the CNI config",
                );
                return;
            }
        }
        self.config_error = None;
    }

    /// Copies `exe` to the plugin's path unless the same bytes are there.
    /// True if it copied.
    fn install_binary(&mut self) -> Result<bool> {
        let dest = self.plugin();
        let stamp = match Stamp::of(&dest) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dest.display())),
        };
        if stamp.is_some() && stamp == self.verified {
            return Ok(false);
        }
        if stamp.is_some() && same_bytes(&self.exe, &dest)? {
            self.verified = stamp;
            return Ok(false);
        }
        write_atomically(&dest, 0o755, |tmp| fs::copy(&self.exe, tmp).map(drop))
            .with_context(|| format!("copying {} to {}", self.exe.display(), dest.display()))?;
        self.verified =
            Some(Stamp::of(&dest).with_context(|| format!("reading {}", dest.display()))?);
        Ok(true)
    }

    /// Adds the entry to the config containerd uses.
    fn patch_config(&self) -> Result<ConfigOutcome> {
        let Some(path) = chosen_config(&self.net_dir)? else {
            return Ok(ConfigOutcome::Waiting);
        };
        let text = read(&path)?;
        match cni::patch(&path, &text)? {
            Edit::Unchanged => Ok(ConfigOutcome::Unchanged),
            Edit::Write { file, text: new } => {
                // The network's installer may have written it since: its
                // version is not to be lost to a patch of the one before.
                if read(&path)? != text {
                    return Ok(ConfigOutcome::Raced(path));
                }
                let mode = fs::metadata(&path)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .with_context(|| format!("reading {}", path.display()))?;
                write_atomically(&file, mode, |tmp| fs::write(tmp, &new))
                    .with_context(|| format!("writing {}", file.display()))?;
                let replaced = (file != path).then_some(path);
                if let Some(old) = &replaced {
                    remove(old)?;
                }
                Ok(ConfigOutcome::Patched { file, replaced })
            }
        }
    }

    /// Takes the entry out of every config file that has it, then the
    /// plugin out of the bin dir.
    fn uninstall(self) -> Result<()> {
        let mut failed = vec![];
        for path in config_files(&self.net_dir)? {
            let text = match read(&path) {
                Ok(text) => text,
                Err(e) => {
                    failed.push(tandem_util::error_chain(e.as_ref()));
                    continue;
                }
            };
            match cni::unpatch(&path, &text) {
                Ok(Edit::Unchanged) => {}
                Ok(Edit::Write { file, text }) => {
                    let mode = fs::metadata(&path)
                        .map(|m| m.permissions().mode() & 0o7777)
                        .unwrap_or(0o644);
                    match write_atomically(&file, mode, |tmp| fs::write(tmp, &text)) {
                        Ok(()) => {
                            tracing::info!(file = %file.display(), "took the plugin out of the CNI config")
                        }
                        Err(e) => failed.push(format!("writing {}: {e}", file.display())),
                    }
                }
                // Not a config it could have patched.
                Err(e) => tracing::debug!(error = %e, "skipped"),
            }
        }
        if !failed.is_empty() {
            // The plugin stays while a config may still name it.
            bail!("{}", failed.join("; "));
        }
        remove(&self.plugin())?;
        Ok(())
    }
}

/// Logs an error once, until it is another one or gone.
fn report(last: &mut Option<String>, e: &anyhow::Error, what: &str) {
    let text = tandem_util::error_chain(e.as_ref());
    if last.as_deref() != Some(text.as_str()) {
        tracing::warn!(error = %text, "{what}");
        *last = Some(text);
    }
}

// === --check ===

fn check(bin_dir: &Path, net_dir: &Path) -> Result<ExitCode> {
    let plugin = bin_dir.join(cni::PLUGIN_TYPE);
    let mut missing = vec![];
    if !plugin.is_file() {
        missing.push(format!("no plugin at {}", plugin.display()));
    }
    match chosen_config(net_dir)? {
        None => missing.push(format!("no CNI config in {}", net_dir.display())),
        Some(path) => {
            if !cni::has_entry(&path, &read(&path)?)? {
                missing.push(format!(
                    "no {} entry in {}",
                    cni::PLUGIN_TYPE,
                    path.display()
                ));
            }
        }
    }
    if !missing.is_empty() {
        bail!("{}", missing.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

// === files ===

/// The config files of `dir` (none if it does not exist yet), by name.
fn config_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut names = vec![];
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        // As containerd's loader: directories out, anything else in.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Ok(name) = entry.file_name().into_string()
            && cni::is_config_file(&name)
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// The config file containerd uses.
fn chosen_config(dir: &Path) -> Result<Option<PathBuf>> {
    let files = config_files(dir)?;
    let names = files
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()));
    Ok(cni::choose_config(names).map(|n| dir.join(n)))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Makes `path` with `fill` through a temporary file beside it and a rename:
/// readers see the old file or the new one, never a part.
fn write_atomically(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        fill(&tmp)?;
        fs::set_permissions(&tmp, Permissions::from_mode(mode))?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Whether two files hold the same bytes, read a block at a time.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| File::open(p).with_context(|| format!("reading {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let len = |f: &File, p: &Path| {
        f.metadata()
            .map(|m| m.len())
            .with_context(|| format!("reading {}", p.display()))
    };
    if len(&fa, a)? != len(&fb, b)? {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0; 1 << 16], vec![0; 1 << 16]);
    loop {
        let na = fill(&mut fa, &mut ba).with_context(|| format!("reading {}", a.display()))?;
        let nb = fill(&mut fb, &mut bb).with_context(|| format!("reading {}", b.display()))?;
        if ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn fill(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(dir: &Path) -> Node {
        let exe = dir.join("exe");
        fs::write(&exe, b"plugin v1").unwrap();
        let (bin, net) = (dir.join("bin"), dir.join("net"));
        fs::create_dir_all(&bin).unwrap();
        Node::new(exe, bin, net)
    }

    #[test]
    fn the_binary_is_copied_once_and_again_when_it_differs() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = node(dir.path());
        assert!(n.install_binary().unwrap(), "copied");
        let plugin = n.plugin();
        assert_eq!(fs::read(&plugin).unwrap(), b"plugin v1");
        assert_eq!(
            fs::metadata(&plugin).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(!n.install_binary().unwrap(), "the same bytes stay");
        // Another node's process (or a person) changed it: compared, copied.
        fs::write(&plugin, b"plugin v0").unwrap();
        assert!(n.install_binary().unwrap());
        assert_eq!(fs::read(&plugin).unwrap(), b"plugin v1");
        // Equal bytes found by comparing, not by the stamp: not copied.
        n.verified = None;
        assert!(!n.install_binary().unwrap());
        assert_eq!(
            fs::read_dir(&n.bin_dir).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn a_config_is_awaited_patched_converted_and_unpatched() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        assert!(
            matches!(n.patch_config().unwrap(), ConfigOutcome::Waiting),
            "no dir yet"
        );
        fs::create_dir_all(&n.net_dir).unwrap();
        fs::write(n.net_dir.join("README"), "not a config").unwrap();
        assert!(matches!(n.patch_config().unwrap(), ConfigOutcome::Waiting));

        let conf = n.net_dir.join("10-net.conf");
        fs::write(
            &conf,
            r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#,
        )
        .unwrap();
        fs::set_permissions(&conf, Permissions::from_mode(0o600)).unwrap();
        let ConfigOutcome::Patched { file, replaced } = n.patch_config().unwrap() else {
            panic!("patched")
        };
        assert_eq!(file, n.net_dir.join("10-net.conflist"));
        assert_eq!(replaced.as_deref(), Some(conf.as_path()));
        assert!(!conf.exists(), "the .conf is gone");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(cni::has_entry(&file, &read(&file).unwrap()).unwrap());
        assert!(matches!(
            n.patch_config().unwrap(),
            ConfigOutcome::Unchanged
        ));

        fs::write(n.plugin(), "x").unwrap();
        n.uninstall().unwrap();
        assert!(!cni::has_entry(&file, &read(&file).unwrap()).unwrap());
        assert!(!dir.path().join("bin/tandem-cni").exists());
        let mut left: Vec<_> = fs::read_dir(dir.path().join("net"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["10-net.conflist", "README"]);
    }

    #[test]
    fn a_bad_config_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        fs::create_dir_all(&n.net_dir).unwrap();
        fs::write(n.net_dir.join("10-net.conflist"), "{").unwrap();
        let err = format!("{:#}", n.patch_config().err().unwrap());
        assert!(err.contains("net/10-net.conflist: not valid JSON"), "{err}");
        let err = check(&n.bin_dir, &n.net_dir).unwrap_err().to_string();
        assert!(err.contains("10-net.conflist: not valid JSON"), "{err}");
    }

    #[test]
    fn check_says_what_is_missing_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let err = check(&n.bin_dir, &n.net_dir).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "no plugin at {}; no CNI config in {}",
                n.plugin().display(),
                n.net_dir.display()
            )
        );
        fs::create_dir_all(&n.net_dir).unwrap();
        let conf = n.net_dir.join("10-net.conflist");
        fs::write(&conf, r#"{"plugins":[{"type":"bridge"}]}"#).unwrap();
        fs::write(n.plugin(), "x").unwrap();
        let err = check(&n.bin_dir, &n.net_dir).unwrap_err().to_string();
        assert_eq!(err, format!("no tandem-cni entry in {}", conf.display()));
        n.patch_config().unwrap();
        assert_eq!(check(&n.bin_dir, &n.net_dir).unwrap(), ExitCode::SUCCESS);
    }
}

//! `tandem testbed` and `tandem demo` run the development tools
//! `tandem-testbed` and `tandem-demo`, which sit beside `tandem` (cargo
//! builds them into the same directory), or else on PATH.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};

/// The tool's binary: beside this executable first, then on PATH.
pub fn find(tool: &str) -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(tool)));
    beside.filter(|p| p.is_file()).or_else(|| {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

/// Replaces this process with `tool ARGS...`; returns only on failure.
pub fn exec(tool: &str, args: &[OsString]) -> Result<std::convert::Infallible> {
    let Some(path) = find(tool) else {
        bail!(
            "{tool} is not installed: it is a development tool of tandem, built with `cargo build -p tandem` beside the tandem binary (the tandem image does not carry it)"
        );
    };
    exec_path(&path, args)
}

fn exec_path(path: &Path, args: &[OsString]) -> Result<std::convert::Infallible> {
    use std::os::unix::process::CommandExt;
    let err = Command::new(path).args(args).exec();
    bail!("cannot run {}: {err}", path.display())
}

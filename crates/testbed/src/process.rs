//! Detached processes with pid files.
//!
//! A testbed outlives the command that starts it, so each component runs in
//! its own process group (Ctrl-C in the terminal does not reach it), with its
//! output in a log file. The pid file also records the process's start time,
//! so that a reused pid is never taken for ours.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};

use crate::Error;

/// What a pid file records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    /// Clock ticks since boot at which the process started (/proc/PID/stat).
    pub start_time: u64,
}

/// How to start one detached process.
#[derive(Clone, Debug)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub pid_file: PathBuf,
}

impl Spec {
    /// Starts the process and writes its pid file.
    pub fn spawn(&self) -> Result<ProcessId, Error> {
        for dir in [self.log.parent(), self.pid_file.parent()]
            .into_iter()
            .flatten()
        {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::io(&self.log, e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(&self.log, e))?;
        let mut child = {
            use std::os::unix::process::CommandExt;
            Command::new(&self.program)
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .process_group(0)
                .spawn()
                .map_err(|e| Error::io(&self.program, e))?
        };
        let pid = child.id();
        // Reap the child if it exits while this process still runs, so that it
        // never lingers as a zombie; once this process exits, init adopts it.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let id = ProcessId {
            pid,
            start_time: start_time(pid).unwrap_or(0),
        };
        fs::write(&self.pid_file, format!("{} {}\n", id.pid, id.start_time))
            .map_err(|e| Error::io(&self.pid_file, e))?;
        Ok(id)
    }
}

/// Reads a pid file; `None` when there is none or it is unreadable.
pub fn read_pid_file(path: &Path) -> Option<ProcessId> {
    let text = fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let pid = parts.next()?.parse().ok()?;
    let start_time = parts.next()?.parse().ok()?;
    Some(ProcessId { pid, start_time })
}

/// The process's start time in clock ticks since boot, if it exists and is
/// not a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields from "state" (field 3 of the whole line) on; starttime is field 22.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl ProcessId {
    /// True while this very process runs (not a zombie, not a reused pid).
    pub fn is_alive(&self) -> bool {
        match start_time(self.pid) {
            Some(t) => self.start_time == 0 || t == self.start_time,
            None => false,
        }
    }

    /// Resident memory in bytes, from /proc/PID/status.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
    pub fn stop(&self, grace: Duration) -> Result<(), Error> {
        if !self.is_alive() {
            return Ok(());
        }
        let pid = Pid::from_raw(self.pid as i32);
        let _ = signal::kill(pid, signal::Signal::SIGTERM);
        if wait_gone(self, grace) {
            return Ok(());
        }
        let _ = signal::kill(pid, signal::Signal::SIGKILL);
        if wait_gone(self, Duration::from_secs(5)) {
            return Ok(());
        }
        Err(Error::StopFailed { pid: self.pid })
    }
}

fn wait_gone(id: &ProcessId, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !id.is_alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !id.is_alive()
}

/// Pids of live processes whose command line mentions `needle`: used to
/// prove that nothing of a testbed directory is left running.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .filter(|pid| start_time(*pid).is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_tracked_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            program: "sleep".into(),
            args: vec!["30".into()],
            log: dir.path().join("logs/sleep.log"),
            pid_file: dir.path().join("run/sleep.pid"),
        };
        let id = spec.spawn().unwrap();
        assert!(id.is_alive());
        assert_eq!(read_pid_file(&spec.pid_file), Some(id));
        assert!(id.rss_bytes().is_some());
        id.stop(Duration::from_secs(5)).unwrap();
        assert!(!id.is_alive());
    }

    #[test]
    fn a_reused_pid_is_not_ours() {
        let me = std::process::id();
        let real = start_time(me).unwrap();
        let stale = ProcessId {
            pid: me,
            start_time: real + 1,
        };
        assert!(!stale.is_alive());
        assert!(
            ProcessId {
                pid: me,
                start_time: real
            }
            .is_alive()
        );
    }

    #[test]
    fn garbage_pid_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        fs::write(&p, "not a pid").unwrap();
        assert_eq!(read_pid_file(&p), None);
        assert_eq!(read_pid_file(&dir.path().join("missing.pid")), None);
    }
}

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

/// Pids of live processes with a command-line argument that names `dir` or
/// a path under it (see [`cmdline_names_dir`]): used to find, and to prove
/// that nothing is left of, the processes of one testbed directory, and
/// never those of another directory whose path merely starts the same.
pub fn processes_mentioning(dir: &str) -> Vec<u32> {
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
                .map(|c| cmdline_names_dir(&c, dir))
                .unwrap_or(false)
        })
        .filter(|pid| start_time(*pid).is_some())
        .collect()
}

/// True when one of the arguments of `cmdline` (as in /proc/PID/cmdline:
/// NUL-separated) names `dir` or a path under it. An argument names it when
/// it is `dir` or starts with `dir/` (`--data-dir DIR/etcd`, containerd's
/// shims' `-address DIR/containerd.sock`), or when it is a flag whose value
/// after the first `=` does (`--data-dir=DIR/etcd`, `--kubeconfig=DIR/…`),
/// which is how the testbed starts its own processes. A trailing `/` on
/// `dir` is ignored; an empty `dir` names nothing.
pub fn cmdline_names_dir(cmdline: &[u8], dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        return false;
    }
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg_names_dir(&String::from_utf8_lossy(arg), dir))
}

fn arg_names_dir(arg: &str, dir: &str) -> bool {
    let is_dir_or_under = |path: &str| {
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if is_dir_or_under(arg) {
        return true;
    }
    arg.starts_with('-')
        && arg
            .split_once('=')
            .is_some_and(|(_, value)| is_dir_or_under(value))
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
    fn only_arguments_naming_the_directory_match() {
        let dir = "/tmp/tb";
        let names =
            |args: &[&str]| cmdline_names_dir(format!("{}\0", args.join("\0")).as_bytes(), dir);
        // The directory itself, a path under it, as a value or a flag's value.
        assert!(names(&["tandem", "demo", "--dir", "/tmp/tb"]));
        assert!(names(&["tandem", "demo", "--dir", "/tmp/tb/"]));
        assert!(names(&["etcd", "--name=east", "--data-dir=/tmp/tb/etcd"]));
        assert!(names(&[
            "kubelet",
            "--root-dir=/tmp/tb/sub/kubelet",
            "--v=1"
        ]));
        assert!(names(&[
            "shim",
            "-id",
            "x",
            "-address",
            "/tmp/tb/sub/containerd.sock"
        ]));
        assert!(names(&["tandem", "--dir=/tmp/tb"]));
        // A trailing separator on the directory changes nothing.
        assert!(cmdline_names_dir(
            b"etcd\0--data-dir=/tmp/tb/etcd\0",
            "/tmp/tb/"
        ));
        // Another directory whose path starts the same, or contains it.
        assert!(!names(&["etcd", "--data-dir=/tmp/tb2/etcd"]));
        assert!(!names(&["tandem", "--dir", "/tmp/tb2"]));
        assert!(!names(&["etcd", "--data-dir=/x/tmp/tb/etcd"]));
        assert!(!names(&["shim", "-address", "/var/tmp/tb/containerd.sock"]));
        // A relative path that reads the same is another directory.
        assert!(!names(&["etcd", "--data-dir=tmp/tb/etcd"]));
        assert!(!names(&["etcd", "--data-dir", "./tmp/tb"]));
        // Only a flag's value counts, and only after the first `=`.
        assert!(!names(&["sh", "-c", "rm -rf /tmp/tb/etcd"]));
        assert!(!names(&["env", "X=/tmp/tb/etcd"]));
        assert!(!names(&["kubelet", "--node-labels=zone=/tmp/tb"]));
        // Nothing names an empty directory.
        assert!(!cmdline_names_dir(b"ls\0/\0", ""));
        assert!(!cmdline_names_dir(b"ls\0/\0", "/"));
    }

    #[test]
    fn a_process_is_found_by_its_directory_only() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("tb");
        let other = parent.path().join("tb2");
        // A shell that waits on a child (so it cannot exec it away) and
        // carries the flag as an ignored argument, as etcd carries its own.
        let start = |d: &Path| {
            Spec {
                program: "sh".into(),
                args: vec![
                    "-c".into(),
                    "sleep 30; :".into(),
                    "sh".into(),
                    format!("--data-dir={}", d.join("etcd").display()),
                ],
                log: d.join("sh.log"),
                pid_file: d.join("sh.pid"),
            }
            .spawn()
            .unwrap()
        };
        let mine = start(&dir);
        let theirs = start(&other);
        let found = processes_mentioning(&dir.display().to_string());
        for id in [mine, theirs] {
            // The whole group: the shell and its sleep.
            let _ = signal::killpg(Pid::from_raw(id.pid as i32), signal::Signal::SIGKILL);
            assert!(wait_gone(&id, Duration::from_secs(5)));
        }
        assert!(found.contains(&mine.pid), "{found:?}");
        assert!(!found.contains(&theirs.pid), "{found:?}");
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

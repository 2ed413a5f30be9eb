//! The app's servers stop gracefully: after SIGTERM they go on answering
//! for `--shutdown-drain-seconds` (while Kubernetes removes the pod's
//! endpoints, so that no caller's request is cut off), then exit cleanly.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tandem_harness::{free_port, http_get};

fn web(port: u16, drain: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_emojivoto"))
        .args(["web", "--listen-addr", "127.0.0.1", "--web-port"])
        .arg(port.to_string())
        .args(["--shutdown-drain-seconds", drain])
        // Nothing behind web: the page is served without them.
        .args([
            "--emojisvc-host",
            "127.0.0.1:1",
            "--votingsvc-host",
            "127.0.0.1:1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("emojivoto starts")
}

/// Waits (bounded) until `port` serves the page.
fn serving(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(port, "/").map(|(s, _)| s) != Some(200) {
        assert!(Instant::now() < deadline, "web never served on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) for the exit; its status.
fn exited(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("emojivoto did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
}

#[test]
fn web_answers_through_its_drain_then_exits_cleanly() {
    let port = free_port();
    let mut child = web(port, "3");
    serving(port);
    sigterm(&child);
    // Well inside the drain: still answering, and still running.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        http_get(port, "/").map(|(s, _)| s),
        Some(200),
        "web stopped answering at SIGTERM, before its drain"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "web exited during its drain"
    );
    let status = exited(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert_eq!(http_get(port, "/"), None, "nothing answers after the exit");
}

#[test]
fn with_no_drain_web_exits_at_sigterm() {
    let port = free_port();
    let mut child = web(port, "0");
    serving(port);
    sigterm(&child);
    let status = exited(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

//! `tandem proxy` with a real `SO_ORIGINAL_DST`: in a network namespace
//! whose iptables redirect TCP for 198.18.255.0/24 to the proxy's 4140, as
//! proxy-init does, a client's connection to 198.18.255.1:8080 is served
//! through the proxy, which runs as uid 2102 and is exempt from the redirect.
//!
//! Needs root (netns, iptables, setpriv); fails with a clear message if not.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::{MetadataExt, PermissionsExt},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const PROXY_UID: &str = "2102";
const SERVICE: &str = "198.18.255.1:8080";

/// The namespace and the proxy in it, removed on drop (also on failure).
struct NetNs {
    name: String,
    proxy: Option<Child>,
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e}");
        });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTP/1.1 exchange by hand (Connection: close); the whole response.
fn http_get(addr: &str, host: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A one-line HTTP server: answers every request with `backend`.
fn serve_backend(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nbackend");
    }
}

#[test]
fn original_destination_through_iptables_redirect() {
    let euid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert_eq!(
        euid, 0,
        "this test needs root (ip netns, iptables, setpriv); run the suite as root"
    );
    let name = format!("tandem-t-proxy-{}", std::process::id());
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    run(&["ip", "netns", "add", &name]);
    let mut ns = NetNs {
        name: name.clone(),
        proxy: None,
    };
    run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
    // The service address sits on lo (this kernel has no dummy interfaces).
    run(&[
        "ip",
        "-n",
        &name,
        "addr",
        "add",
        "198.18.255.1/24",
        "dev",
        "lo",
    ]);
    let ipt = |rule: &[&str]| {
        let mut cmd = vec!["ip", "netns", "exec", &name, "iptables", "-t", "nat"];
        cmd.extend_from_slice(rule);
        run(&cmd);
    };
    ipt(&[
        "-A",
        "OUTPUT",
        "-m",
        "owner",
        "--uid-owner",
        PROXY_UID,
        "-j",
        "RETURN",
    ]);
    ipt(&[
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "198.18.255.0/24",
        "-j",
        "REDIRECT",
        "--to-port",
        "4140",
    ]);

    // uid 2102 cannot read the build directory under /root: run a copy.
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("tandem");
    fs::copy(env!("CARGO_BIN_EXE_tandem"), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("proxy.log");
    let proxy = Command::new("ip")
        .args([
            "netns", "exec", &name, "setpriv", "--reuid", PROXY_UID, "--regid", PROXY_UID,
        ])
        .args(["--clear-groups"])
        .arg(&bin)
        .arg("proxy")
        .env("LINKERD2_PROXY_IDENTITY_DISABLED", "disabled")
        .env("LINKERD2_PROXY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the proxy in the namespace");
    ns.proxy = Some(proxy);

    // The client, the backend and the scrape run in the namespace.
    let netns_file = fs::File::open(format!("/run/netns/{name}")).unwrap();
    let result = std::thread::spawn(move || -> Result<(String, String), String> {
        nix::sched::setns(&netns_file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns: {e}"))?;
        let listener = TcpListener::bind(SERVICE).map_err(|e| format!("bind {SERVICE}: {e}"))?;
        std::thread::spawn(move || serve_backend(listener));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match http_get("127.0.0.1:4191", "127.0.0.1:4191", "/ready") {
                Ok(r) if r.starts_with("HTTP/1.1 200") => break,
                _ if Instant::now() > deadline => return Err("the proxy never got ready".into()),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let answer = http_get(SERVICE, SERVICE, "/").map_err(|e| format!("GET {SERVICE}: {e}"))?;
        let metrics = http_get("127.0.0.1:4191", "127.0.0.1:4191", "/metrics")
            .map_err(|e| format!("metrics: {e}"))?;
        Ok((answer, metrics))
    })
    .join()
    .unwrap();
    let (answer, metrics) = result.unwrap_or_else(|e| {
        panic!(
            "{e}\nproxy log:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("backend"), "{answer}");
    // The proxy served it: it counted the request for the original destination.
    let target: SocketAddr = SERVICE.parse().unwrap();
    let want = format!(
        "request_total{{direction=\"outbound\",authority=\"{SERVICE}\",target_addr=\"{target}\""
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(&want) && l.ends_with(" 1")),
        "no `{want}` = 1 in\n{metrics}\nproxy log:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    drop(ns);
}

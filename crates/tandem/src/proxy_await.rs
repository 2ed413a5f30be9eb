//! `tandem proxy-await`: the injected proxy's postStart hook (Linkerd's
//! `linkerd-await`). Kubelet starts a pod's containers in order and runs a
//! container's postStart hook before it starts the next one, so with the
//! proxy first and this hook, the application starts once the proxy's
//! `/ready` answers 200, and its first connections find the proxy serving.

use std::{net::SocketAddr, process::ExitCode};

use anyhow::{Result, bail};
use clap::Args;
use tandem_api::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, sleep, timeout},
};

#[derive(Debug, Args)]
pub struct ProxyAwaitArgs {
    /// The proxy's admin port on 127.0.0.1.
    #[arg(long, default_value_t = tandem_inject::ADMIN_PORT)]
    port: u16,
    /// How long to wait for the proxy before failing (kubelet then restarts
    /// the proxy's container).
    #[arg(long, default_value = "2m", value_parser = Duration::parse_period)]
    timeout: Duration,
    /// The pause between two checks. Short: the application's start (and
    /// so the pod's readiness, e.g. at a failback) waits on this hook, and
    /// a check is one local request.
    #[arg(long, default_value = "100ms", value_parser = Duration::parse_period)]
    backoff: Duration,
}

/// How long one check may take.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The status code of an HTTP/1 response head (`HTTP/1.1 200 OK`).
fn status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// One `GET /ready`: the status, or why there is none.
async fn check(addr: SocketAddr, limit: std::time::Duration) -> Result<u16, String> {
    let attempt = async {
        let mut conn = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        conn.write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        conn.read_to_end(&mut head)
            .await
            .map_err(|e| e.to_string())?;
        status(&head).ok_or_else(|| "not an HTTP response".to_string())
    };
    timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err("no answer".into()))
}

pub async fn run(args: ProxyAwaitArgs) -> Result<ExitCode> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let deadline = Instant::now() + args.timeout.as_std();
    loop {
        let last = match check(addr, CHECK_TIMEOUT).await {
            Ok(200) => return Ok(ExitCode::SUCCESS),
            Ok(code) => format!("/ready answered {code}"),
            Err(e) => e,
        };
        if Instant::now() + args.backoff.as_std() > deadline {
            bail!(
                "the proxy at {addr} was not ready within {} (last: {last})",
                args.timeout
            );
        }
        sleep(args.backoff.as_std()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::status;

    #[test]
    fn status_lines() {
        let cases: [(&[u8], Option<u16>); 6] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n",
                Some(200),
            ),
            (b"HTTP/1.0 503 Service Unavailable\r\n\r\n", Some(503)),
            (b"HTTP/1.1 200\r\n", Some(200)),
            (b"", None),
            (b"SSH-2.0-OpenSSH\r\n", None),
            (b"HTTP/1.1 abc\r\n", None),
        ];
        for (head, want) in cases {
            assert_eq!(status(head), want, "{:?}", String::from_utf8_lossy(head));
        }
    }
}

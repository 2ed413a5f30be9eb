//! The gateway probe: one HTTP GET over a plain TCP connection, the
//! consecutive-failures breaker that turns results into alive or dead, and
//! the window of recent latencies the Link's status reports.

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// How many recent probe latencies the percentiles cover.
pub const LATENCY_WINDOW: usize = 100;

/// What the probes say of a gateway address, or of the whole gateway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Liveness {
    /// No verdict yet: no probe passed, and fewer than the threshold failed.
    #[default]
    Unknown,
    Alive,
    Dead,
}

impl Liveness {
    /// `Some(alive)` once known.
    pub fn known(self) -> Option<bool> {
        match self {
            Self::Unknown => None,
            Self::Alive => Some(true),
            Self::Dead => Some(false),
        }
    }

    /// The gateway's: alive while any address is alive, dead when every
    /// address is dead, unknown otherwise (no address, or some not probed
    /// enough yet).
    pub fn any_alive(addresses: impl IntoIterator<Item = Liveness>) -> Liveness {
        let mut seen = false;
        let mut unknown = false;
        for l in addresses {
            seen = true;
            match l {
                Self::Alive => return Self::Alive,
                Self::Unknown => unknown = true,
                Self::Dead => {}
            }
        }
        if !seen || unknown {
            Self::Unknown
        } else {
            Self::Dead
        }
    }
}

/// The breaker of one gateway address. It starts unknown: a restarted
/// mirror neither flips every mirror to ready with a dead gateway nor to
/// not-ready with a live one before it knows (linkerd2#8590). One success
/// makes it alive; `threshold` consecutive failures make it dead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeState {
    liveness: Liveness,
    failures: u32,
    threshold: u32,
}

impl ProbeState {
    pub fn new(threshold: u32) -> Self {
        Self {
            liveness: Liveness::Unknown,
            failures: 0,
            threshold: threshold.max(1),
        }
    }

    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Records one probe; true when that changed the liveness.
    pub fn record(&mut self, success: bool) -> bool {
        let before = self.liveness;
        if success {
            self.failures = 0;
            self.liveness = Liveness::Alive;
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.threshold {
                self.liveness = Liveness::Dead;
            }
        }
        before != self.liveness
    }
}

/// The latencies of the last [`LATENCY_WINDOW`] successful probes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Latencies(VecDeque<Duration>);

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        if self.0.len() == LATENCY_WINDOW {
            self.0.pop_front();
        }
        self.0.push_back(d);
    }

    /// The `p`th percentile (nearest rank), in whole milliseconds.
    pub fn percentile_ms(&self, p: u32) -> Option<u64> {
        if self.0.is_empty() {
            return None;
        }
        let mut sorted: Vec<Duration> = self.0.iter().copied().collect();
        sorted.sort();
        let n = sorted.len();
        let rank = (n * p.min(100) as usize).div_ceil(100).clamp(1, n);
        Some(sorted[rank - 1].as_millis() as u64)
    }
}

/// Why a probe failed, in a phrase for logs and conditions.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("sending the request: {0}")]
    Send(String),
    #[error("reading the response: {0}")]
    Read(String),
    #[error("the response is not HTTP: {0:?}")]
    NotHttp(String),
    #[error("answered {0}, not 200")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// `GET http://ADDR/PATH`: the latency on a 200, else why not. Only the
/// status line is read.
pub async fn http_probe(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let start = Instant::now();
    match tokio::time::timeout(timeout, get_status(addr, path)).await {
        Ok(Ok(200)) => Ok(start.elapsed()),
        Ok(Ok(code)) => Err(ProbeError::Status(code)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

async fn get_status(addr: SocketAddr, path: &str) -> Result<u16, ProbeError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeError::Connect(e.to_string()))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tandem-service-mirror\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| ProbeError::Send(e.to_string()))?;
    // The status line fits in the first bytes; read until its end.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| ProbeError::Read(e.to_string()))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 4096 {
            break;
        }
    }
    parse_status_line(&head)
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status_line(head: &[u8]) -> Result<u16, ProbeError> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(code) if version.starts_with("HTTP/") => Ok(code),
        _ => Err(ProbeError::NotHttp(line.chars().take(80).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn the_breaker_starts_unknown_trips_at_the_threshold_and_recovers_at_once() {
        use Liveness::{Alive as A, Dead as D, Unknown as U};
        // (threshold, results, liveness after each)
        let cases: &[(u32, &[bool], &[Liveness])] = &[
            (3, &[], &[]),
            // Failures under the threshold say nothing yet.
            (3, &[false, false], &[U, U]),
            (3, &[false, false, false], &[U, U, D]),
            (3, &[true], &[A]),
            (3, &[false, false, true, false, false], &[U, U, A, A, A]),
            (3, &[true, false, false, false], &[A, A, A, D]),
            (2, &[false, false, false, true, false], &[U, D, D, A, A]),
            (1, &[false, true], &[D, A]),
            // A threshold of 0 behaves as 1.
            (0, &[false], &[D]),
        ];
        for (threshold, results, want) in cases {
            let mut s = ProbeState::new(*threshold);
            assert_eq!(s.liveness(), U, "a new address is unknown");
            let seen: Vec<Liveness> = results
                .iter()
                .map(|r| {
                    s.record(*r);
                    s.liveness()
                })
                .collect();
            assert_eq!(&seen, want, "threshold {threshold}, results {results:?}");
        }
        let mut s = ProbeState::new(2);
        assert!(!s.record(false), "still unknown");
        assert!(s.record(false), "the change is reported");
        assert!(!s.record(false));
        assert!(s.record(true));
        assert_eq!(s.consecutive_failures(), 0);
    }

    #[test]
    fn the_gateway_is_alive_if_any_address_is_and_dead_only_if_all_are() {
        use Liveness::{Alive as A, Dead as D, Unknown as U};
        let cases: &[(&[Liveness], Liveness)] = &[
            (&[], U),
            (&[U], U),
            (&[D], D),
            (&[A], A),
            (&[D, D], D),
            (&[D, U], U),
            (&[D, A], A),
            (&[U, A], A),
        ];
        for (addresses, want) in cases {
            assert_eq!(
                Liveness::any_alive(addresses.iter().copied()),
                *want,
                "{addresses:?}"
            );
        }
        assert_eq!(U.known(), None);
        assert_eq!(A.known(), Some(true));
        assert_eq!(D.known(), Some(false));
    }

    #[test]
    fn percentiles_use_the_last_hundred_probes() {
        let mut l = Latencies::default();
        assert_eq!(l.percentile_ms(50), None);
        l.record(Duration::from_millis(7));
        assert_eq!(l.percentile_ms(99), Some(7));
        let mut l = Latencies::default();
        for ms in 1..=200u64 {
            l.record(Duration::from_millis(ms));
        }
        // Only 101..=200 remain.
        assert_eq!(l.percentile_ms(50), Some(150));
        assert_eq!(l.percentile_ms(95), Some(195));
        assert_eq!(l.percentile_ms(99), Some(199));
        assert_eq!(l.percentile_ms(100), Some(200));
        assert_eq!(l.percentile_ms(0), Some(101));
    }

    #[test]
    fn status_lines_parse() {
        let cases: &[(&[u8], Result<u16, ()>)] = &[
            (b"HTTP/1.1 200 OK\r\n", Ok(200)),
            (b"HTTP/1.0 503 Service Unavailable\r\n\r\n", Ok(503)),
            (b"HTTP/1.1 200", Ok(200)),
            (b"", Err(())),
            (b"SSH-2.0-OpenSSH\r\n", Err(())),
            (b"HTTP/1.1 abc\r\n", Err(())),
        ];
        for (head, want) in cases {
            let got = parse_status_line(head).map_err(|_| ());
            assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(head));
        }
    }

    /// A one-shot HTTP server answering `status` to every request.
    async fn serve(status: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn only_a_200_passes() {
        let t = Duration::from_secs(2);
        let ok = serve("200 OK").await;
        assert!(http_probe(ok, "/ready", t).await.is_ok());
        let bad = serve("500 Internal Server Error").await;
        assert_eq!(
            http_probe(bad, "/ready", t).await,
            Err(ProbeError::Status(500))
        );
        let moved = serve("301 Moved Permanently").await;
        assert_eq!(
            http_probe(moved, "/ready", t).await,
            Err(ProbeError::Status(301))
        );
        // Nothing listens there any more.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        assert!(matches!(
            http_probe(closed, "/ready", t).await,
            Err(ProbeError::Connect(_))
        ));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let keep = tokio::spawn(async move {
            let mut held = vec![];
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let t = Duration::from_millis(200);
        assert_eq!(
            http_probe(addr, "/ready", t).await,
            Err(ProbeError::Timeout(t))
        );
        keep.abort();
    }
}

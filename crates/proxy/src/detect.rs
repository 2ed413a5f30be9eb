//! Protocol detection: read a bounded number of bytes, with a timeout, and
//! decide between HTTP/2 (the client preface), HTTP/1 (a request line) and
//! opaque TCP. The bytes read are replayed through [`PrefixedIo`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::io::PrefixedIo;

/// The most bytes read before giving up on finding a request line.
pub const MAX_DETECT_BYTES: usize = 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    H2,
    Opaque,
}

/// Decides from the bytes so far; `None` means "read more".
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Detected::H2);
    }
    // An HTTP/1 request line: `METHOD SP target SP HTTP/1.x CRLF`.
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method_len == 0 || (method_len < buf.len() && buf[method_len] != b' ') {
        return Some(Detected::Opaque);
    }
    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
        return (buf.len() >= MAX_DETECT_BYTES).then_some(Detected::Opaque);
    };
    let line = buf[..eol].strip_suffix(b"\r").unwrap_or(&buf[..eol]);
    let is_http = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
    Some(if is_http {
        Detected::Http1
    } else {
        Detected::Opaque
    })
}

/// Reads until [`classify`] decides, the peer stops sending, or `timeout`
/// passes (then: opaque). Returns the io with the bytes read put back.
pub async fn detect<I: AsyncRead + Unpin>(
    mut io: I,
    timeout: Duration,
) -> std::io::Result<(Detected, PrefixedIo<I>)> {
    let mut buf = BytesMut::with_capacity(MAX_DETECT_BYTES);
    let deadline = tokio::time::Instant::now() + timeout;
    let detected = loop {
        if let Some(d) = classify(&buf) {
            break d;
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) => break Detected::Opaque,
            Ok(Ok(0)) => break Detected::Opaque,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    };
    Ok((detected, PrefixedIo::new(Bytes::from(buf), io)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classify_table() {
        let cases: &[(&[u8], Option<Detected>)] = &[
            (b"", None),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Detected::H2)),
            (b"PRI * HTTP/2.0\r\n", None),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Some(Detected::Http1)),
            (b"POST /x HTTP/1.0\n", Some(Detected::Http1)),
            (b"GET /still-reading", None),
            (b"GET / SMTP\r\n", Some(Detected::Opaque)),
            (b"ping\n", Some(Detected::Opaque)),
            (b"\x16\x03\x01", Some(Detected::Opaque)),
            (b"GETX", None),
            (b"GET\t/", Some(Detected::Opaque)),
        ];
        for (buf, want) in cases {
            assert_eq!(classify(buf), *want, "{:?}", String::from_utf8_lossy(buf));
        }
        let long = [b"GET /".as_slice(), &[b'a'; MAX_DETECT_BYTES]].concat();
        assert_eq!(classify(&long), Some(Detected::Opaque));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let (a, _b) = tokio::io::duplex(64);
        let start = tokio::time::Instant::now();
        let (d, _) = detect(a, Duration::from_secs(10)).await.unwrap();
        assert_eq!(d, Detected::Opaque);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn bytes_split_across_reads_are_detected_and_replayed() {
        let (a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            b.write_all(b"GET / HT").await.unwrap();
            tokio::task::yield_now().await;
            b.write_all(b"TP/1.1\r\n\r\n").await.unwrap();
            b
        });
        let (d, mut io) = detect(a, Duration::from_secs(10)).await.unwrap();
        assert_eq!(d, Detected::Http1);
        drop(writer.await.unwrap());
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\n\r\n");
    }
}

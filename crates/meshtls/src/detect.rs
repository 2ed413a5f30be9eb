//! Is a new connection TLS, and for which name?
//!
//! [`detect`] peeks at the first bytes of a connection: a TLS ClientHello
//! (record type 22, handshake type 1) is read by hand for its server_name,
//! anything else is plain. The bytes read are replayed by the returned
//! [`PrefixedIo`], so the caller can then terminate TLS (its own SNI),
//! forward the bytes opaquely (another SNI), or speak plaintext.
//!
//! The peek is bounded: at most [`MAX_PEEK`] bytes and a timeout the caller
//! passes in (running out of time is an error, as Linkerd's "TLS detection
//! timed out"). A ClientHello that does not parse is not TLS, as in Linkerd.
//! Linkerd also treats a ClientHello without a server_name as no TLS
//! (`no_tls_reason="no_tls_from_remote"`); here it is
//! `Detected::Tls { sni: None }`, and the caller decides.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{Name, PrefixedIo};

/// How many bytes [`detect`] reads at most before it gives up on TLS.
pub const MAX_PEEK: usize = 16 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const SNI_HOST_NAME: u8 = 0;
/// A TLS record's plaintext is at most 2^14 bytes.
const MAX_RECORD: usize = 1 << 14;

/// What the first bytes of a connection are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detected {
    /// A TLS ClientHello, with its server_name when it has a valid one.
    Tls { sni: Option<Name> },
    /// Anything else.
    Plain,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(
        "the peer sent {read} bytes that start a TLS ClientHello, but not all of it within {timeout:?}"
    )]
    Timeout { timeout: Duration, read: usize },
    #[error("the peer sent nothing within {timeout:?}")]
    Silent { timeout: Duration },
    #[error("reading the first bytes of the connection failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads the first bytes of `io` until they are known to be TLS or not (see
/// the module docs). A connection that closes before that is plain.
pub async fn detect<I>(
    mut io: I,
    timeout: Duration,
) -> Result<(Detected, PrefixedIo<I>), DetectError>
where
    I: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let peek = async {
        loop {
            match parse(&buf) {
                Parse::ClientHello { sni } => return Ok(Detected::Tls { sni }),
                Parse::NotTls => return Ok(Detected::Plain),
                Parse::Incomplete if buf.len() >= MAX_PEEK => return Ok(Detected::Plain),
                Parse::Incomplete => {}
            }
            buf.reserve(MAX_PEEK - buf.len());
            let mut limited = (&mut io).take((MAX_PEEK - buf.len()) as u64);
            if limited.read_buf(&mut buf).await? == 0 {
                return Ok(Detected::Plain);
            }
        }
    };
    match tokio::time::timeout(timeout, peek).await {
        Ok(Ok(detected)) => Ok((detected, PrefixedIo::new(buf, io))),
        Ok(Err(e)) => Err(DetectError::Io(e)),
        Err(_) if buf.is_empty() => Err(DetectError::Silent { timeout }),
        Err(_) => Err(DetectError::Timeout {
            timeout,
            read: buf.len(),
        }),
    }
}

// === parsing ===

/// What a buffer's bytes say so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parse {
    /// They could still be a ClientHello: read more.
    Incomplete,
    NotTls,
    ClientHello {
        sni: Option<Name>,
    },
}

/// Reads the handshake bytes out of the TLS records at the start of `buf`
/// (a ClientHello may span records), then the ClientHello in them.
pub(crate) fn parse(buf: &[u8]) -> Parse {
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        // The record header: type, version (3.x), length.
        match rest {
            [] => return Parse::Incomplete,
            [t, ..] if *t != CONTENT_HANDSHAKE => return Parse::NotTls,
            [_, major, ..] if *major != 3 => return Parse::NotTls,
            [_, _, _, hi, lo, ..] => {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                if len == 0 || len > MAX_RECORD {
                    return Parse::NotTls;
                }
                let Some(fragment) = rest.get(5..5 + len) else {
                    return Parse::Incomplete;
                };
                handshake.extend_from_slice(fragment);
                rest = &rest[5 + len..];
            }
            _ => return Parse::Incomplete,
        }

        // The handshake header: type, 24-bit length.
        if handshake[0] != HANDSHAKE_CLIENT_HELLO {
            return Parse::NotTls;
        }
        let [_, a, b, c, ..] = handshake[..] else {
            continue;
        };
        let len = u32::from_be_bytes([0, a, b, c]) as usize;
        if len > MAX_PEEK {
            return Parse::NotTls;
        }
        if let Some(body) = handshake.get(4..4 + len) {
            return match client_hello_sni(body) {
                Some(sni) => Parse::ClientHello { sni },
                None => Parse::NotTls,
            };
        }
    }
}

/// The server_name of a ClientHello body: `None` if the body is malformed,
/// `Some(None)` if it names no valid host.
fn client_hello_sni(body: &[u8]) -> Option<Option<Name>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    let session_id = r.u8()?;
    r.take(usize::from(session_id))?;
    let suites = r.u16()?;
    r.take(usize::from(suites))?;
    let compression = r.u8()?;
    r.take(usize::from(compression))?;
    if r.0.is_empty() {
        return Some(None); // No extensions at all.
    }
    let len = r.u16()?;
    let mut exts = Reader(r.take(usize::from(len))?);
    let mut sni = None;
    while !exts.0.is_empty() {
        let typ = exts.u16()?;
        let len = exts.u16()?;
        let data = exts.take(usize::from(len))?;
        if typ == EXT_SERVER_NAME {
            sni = server_name(data)?;
        }
    }
    Some(sni)
}

/// The host_name entry of a server_name extension.
fn server_name(data: &[u8]) -> Option<Option<Name>> {
    let mut r = Reader(data);
    let len = r.u16()?;
    let mut list = Reader(r.take(usize::from(len))?);
    while !list.0.is_empty() {
        let typ = list.u8()?;
        let len = list.u16()?;
        let host = list.take(usize::from(len))?;
        if typ == SNI_HOST_NAME {
            let name = std::str::from_utf8(host)
                .ok()
                .and_then(|h| h.to_ascii_lowercase().parse().ok());
            return Some(name);
        }
    }
    Some(None)
}

/// Big-endian reads off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests;

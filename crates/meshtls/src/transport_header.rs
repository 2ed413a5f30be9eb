//! Linkerd's transport header: what a client proxy writes first on a
//! connection whose TLS handshake agreed on ALPN `transport.l5d.io/v1`, to
//! tell the server proxy (or a gateway) where the connection goes.
//!
//! On the wire: the preface `transport.l5d.io/v1\r\n\r\n`, a big-endian u32
//! length, then a protobuf `transport.l5d.io.Header`:
//!
//! ```text
//! message Header {
//!   int32 port = 1;                         // the target port
//!   string name = 2;                        // the target's name, for gateways
//!   SessionProtocol session_protocol = 3;   // unset: opaque TCP
//! }
//! message SessionProtocol {
//!   message Http1 {}
//!   message Http2 {}
//!   oneof kind { Http1 http1 = 1; Http2 http2 = 2; }
//! }
//! ```

use std::io;
use std::time::Duration;

use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{InvalidName, Name, PrefixedIo};

pub const PREFACE: &[u8] = b"transport.l5d.io/v1\r\n\r\n";
/// The largest header [`read`] accepts.
pub const MAX_LEN: usize = 64 * 1024;

const HEAD: usize = PREFACE.len() + 4;

/// Where a connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub port: u16,
    /// The target's DNS name (through a gateway: the Service's FQDN).
    pub name: Option<Name>,
    /// The protocol the client speaks on the connection; `None` is opaque.
    pub protocol: Option<SessionProtocol>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionProtocol {
    Http1,
    Http2,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the transport header was cut off: {got} of {want} bytes arrived")]
    Truncated { want: usize, got: usize },
    #[error("the transport header claims {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("the transport header is not a valid message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the transport header's port {0} is not in 1-65535")]
    InvalidPort(i32),
    #[error("the transport header's name is invalid: {0}")]
    InvalidName(#[from] InvalidName),
    #[error("the transport header did not arrive within {timeout:?} ({read} bytes read)")]
    Timeout { timeout: Duration, read: usize },
    #[error("reading the transport header failed: {0}")]
    Io(#[from] io::Error),
}

// === the protobuf messages ===

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoHeader {
    #[prost(int32, tag = "1")]
    port: i32,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, optional, tag = "3")]
    session_protocol: Option<ProtoSessionProtocol>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoSessionProtocol {
    #[prost(oneof = "Kind", tags = "1, 2")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "1")]
    Http1(Empty),
    #[prost(message, tag = "2")]
    Http2(Empty),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

// === encode and write ===

/// The header's bytes on the wire, preface and length included.
pub fn encode(header: &Header) -> Vec<u8> {
    let proto = ProtoHeader {
        port: i32::from(header.port),
        name: header
            .name
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_default(),
        session_protocol: header.protocol.map(|p| ProtoSessionProtocol {
            kind: Some(match p {
                SessionProtocol::Http1 => Kind::Http1(Empty {}),
                SessionProtocol::Http2 => Kind::Http2(Empty {}),
            }),
        }),
    };
    let len = proto.encoded_len();
    let mut out = Vec::with_capacity(HEAD + len);
    out.extend_from_slice(PREFACE);
    // A name is at most 253 bytes, so the length always fits.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    proto.encode_raw(&mut out);
    out
}

/// Writes the header to `io` (without flushing it).
pub async fn write<I: AsyncWrite + Unpin>(io: &mut I, header: &Header) -> io::Result<()> {
    io.write_all(&encode(header)).await
}

// === read ===

/// Reads a header from the start of `io`. `None` when the connection does
/// not start with the preface; either way the returned stream replays every
/// byte read past the header.
pub async fn read<I: AsyncRead + Unpin>(
    mut io: I,
    timeout: Duration,
) -> Result<(Option<Header>, PrefixedIo<I>), ReadError> {
    let mut buf = Vec::with_capacity(512);
    let result = tokio::time::timeout(timeout, read_into(&mut io, &mut buf)).await;
    match result {
        Err(_) => Err(ReadError::Timeout {
            timeout,
            read: buf.len(),
        }),
        Ok(Err(e)) => Err(e),
        Ok(Ok(None)) => Ok((None, PrefixedIo::new(buf, io))),
        Ok(Ok(Some((header, used)))) => {
            buf.drain(..used);
            Ok((Some(header), PrefixedIo::new(buf, io)))
        }
    }
}

/// Reads until the header is complete; returns it and the bytes it took.
async fn read_into<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut Vec<u8>,
) -> Result<Option<(Header, usize)>, ReadError> {
    while buf.len() < HEAD {
        let seen = buf.len().min(PREFACE.len());
        if buf[..seen] != PREFACE[..seen] {
            return Ok(None);
        }
        if io.read_buf(buf).await? == 0 {
            // What arrived so far matches the preface: a cut-off header.
            return match buf.len() {
                0 => Ok(None),
                got => Err(ReadError::Truncated { want: HEAD, got }),
            };
        }
    }
    if &buf[..PREFACE.len()] != PREFACE {
        return Ok(None);
    }
    let len_bytes = [buf[HEAD - 4], buf[HEAD - 3], buf[HEAD - 2], buf[HEAD - 1]];
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_LEN {
        return Err(ReadError::TooLarge { len, max: MAX_LEN });
    }
    while buf.len() < HEAD + len {
        if io.read_buf(buf).await? == 0 {
            return Err(ReadError::Truncated {
                want: HEAD + len,
                got: buf.len(),
            });
        }
    }
    let header = decode(&buf[HEAD..HEAD + len])?;
    Ok(Some((header, HEAD + len)))
}

fn decode(bytes: &[u8]) -> Result<Header, ReadError> {
    let proto = ProtoHeader::decode(bytes)?;
    let port = u16::try_from(proto.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(ReadError::InvalidPort(proto.port))?;
    let name = match proto.name.as_str() {
        "" => None,
        name => Some(name.to_ascii_lowercase().parse()?),
    };
    let protocol = proto
        .session_protocol
        .and_then(|p| p.kind)
        .map(|k| match k {
            Kind::Http1(_) => SessionProtocol::Http1,
            Kind::Http2(_) => SessionProtocol::Http2,
        });
    Ok(Header {
        port,
        name,
        protocol,
    })
}

#[cfg(test)]
mod tests;

//! I/O wrappers: replaying the bytes read for protocol detection, and
//! counting bytes for the `tcp_*_bytes_total` metrics.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
};

use crate::metrics::TcpGuard;

/// `io`, with `prefix` read first.
pub struct PrefixedIo<I> {
    prefix: Bytes,
    io: I,
}

impl<I> PrefixedIo<I> {
    pub fn new(prefix: Bytes, io: I) -> Self {
        PrefixedIo { prefix, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for PrefixedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// `io`, counting the bytes read from and written to it.
pub struct Counted<I> {
    io: I,
    read: Counter,
    write: Counter,
    _open: Option<TcpGuard>,
    /// Dropped with the io: its receivers see the connection closed.
    life: Option<watch::Sender<()>>,
}

/// Closes (its `changed()` fails) when a client connection's io is
/// dropped: hyper-util hands it out as the connection's extra (see
/// [`crate::http::EndpointClient`]).
#[derive(Clone, Debug)]
pub struct ConnLife(pub watch::Receiver<()>);

impl<I> Counted<I> {
    pub fn new(io: I, read: Counter, write: Counter) -> Self {
        Counted {
            io,
            read,
            write,
            _open: None,
            life: None,
        }
    }

    /// Lets the connection's users (through [`ConnLife`]) see when it
    /// closes.
    pub fn with_life(mut self) -> Self {
        self.life = Some(watch::channel(()).0);
        self
    }

    /// Keeps the connection counted as open while this io lives.
    pub fn with_guard(mut self, guard: TcpGuard) -> Self {
        self._open = Some(guard);
        self
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.inc_by(n as u64);
        }
        res
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.write.inc_by(n as u64);
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for Counted<tokio::net::TcpStream> {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl hyper_util::client::legacy::connect::Connection for Counted<crate::connect::Conn> {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        let connected = hyper_util::client::legacy::connect::Connected::new();
        match &self.life {
            Some(life) => connected.extra(ConnLife(life.subscribe())),
            None => connected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_is_replayed_then_the_stream_and_bytes_are_counted() {
        let (a, mut b) = tokio::io::duplex(64);
        let (read, write) = (Counter::default(), Counter::default());
        let mut io = Counted::new(
            PrefixedIo::new(Bytes::from_static(b"GET "), a),
            read.clone(),
            write.clone(),
        );
        b.write_all(b"/ HTTP/1.1\r\n").await.unwrap();
        drop(b.shutdown().await);
        let mut got = vec![0u8; 0];
        let mut buf = [0u8; 64];
        loop {
            let n = io.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() == 16 {
                break;
            }
        }
        assert_eq!(got, b"GET / HTTP/1.1\r\n");
        io.write_all(b"ok").await.unwrap();
        assert_eq!(read.get(), 16);
        assert_eq!(write.get(), 2);
        let mut back = [0u8; 2];
        b.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ok");
    }
}

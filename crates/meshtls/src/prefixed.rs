//! An I/O stream that first replays bytes already read from it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io`, with `prefix` (bytes peeked from it) read again first. Writes go
/// straight to `io`.
#[derive(Debug)]
pub struct PrefixedIo<I> {
    prefix: Vec<u8>,
    pos: usize,
    io: I,
}

impl<I> PrefixedIo<I> {
    pub fn new(prefix: Vec<u8>, io: I) -> Self {
        PrefixedIo { prefix, pos: 0, io }
    }

    /// The bytes still to be replayed.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix[self.pos..]
    }

    pub fn get_ref(&self) -> &I {
        &self.io
    }

    /// The inner stream and the bytes it has not replayed yet.
    pub fn into_parts(mut self) -> (Vec<u8>, I) {
        self.prefix.drain(..self.pos);
        (self.prefix, self.io)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for PrefixedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.prefix[this.pos..];
        if !rest.is_empty() {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                // Free the buffer once it is replayed.
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replays_then_reads_and_writes_through() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b" world").await.unwrap();
        drop(b);
        let mut io = PrefixedIo::new(b"hello".to_vec(), a);
        let mut small = [0u8; 3];
        io.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        assert_eq!(io.prefix(), b"lo");
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"lo world");
    }

    #[tokio::test]
    async fn writes_reach_the_inner_stream() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = PrefixedIo::new(b"x".to_vec(), a);
        io.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        let (prefix, _) = io.into_parts();
        assert_eq!(prefix, b"x");
    }
}

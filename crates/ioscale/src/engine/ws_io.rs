//! The upgraded connection as the WebSocket layer sees it, built so an idle connection keeps
//! no buffers: reads go through a stack buffer (tungstenite's own read buffer can then stay
//! tiny), and outgoing frames are formatted into a buffer that lives only for one write.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::protocol::engineio::Frame;

/// Bytes read from the socket at once (on the stack, so no per-connection cost).
const READ_CHUNK: usize = 4096;
/// A write batch is sent in pieces of about this size (bounds the transient buffer).
const WRITE_CHUNK: usize = 64 * 1024;

/// Wraps the connection for tungstenite: each read takes up to [`READ_CHUNK`] bytes from the
/// socket; what tungstenite's (small) buffer does not take waits in `spill`, which holds
/// memory only until it is read.
#[derive(Debug)]
pub(crate) struct ReadStash<S> {
    inner: S,
    spill: Vec<u8>,
    taken: usize,
}

impl<S> ReadStash<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadStash {
            inner,
            spill: Vec::new(),
            taken: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadStash<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(rest) = this.spill.get(this.taken..).filter(|rest| !rest.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.taken += n;
            if this.taken == this.spill.len() {
                this.spill = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= READ_CHUNK {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut chunk = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
        let read = chunk.filled();
        let n = read.len().min(buf.remaining());
        buf.put_slice(&read[..n]);
        if n < read.len() {
            this.spill = read[n..].to_vec();
            this.taken = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadStash<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Writes frames as WebSocket messages (formatted by tungstenite) straight to the stream,
/// through a buffer that is freed afterwards: tungstenite's own write buffer would keep the
/// capacity of the largest batch for the life of the connection. The caller first flushes
/// what tungstenite queued itself (pongs, a close), and never writes after a close.
pub(crate) async fn write_frames<S: AsyncWrite + Unpin>(
    stream: &mut S,
    frames: impl IntoIterator<Item = Frame>,
    size_hint: usize,
) -> Result<(), WsError> {
    let mut buffer = Vec::with_capacity(size_hint.min(WRITE_CHUNK) + 16);
    for frame in frames {
        let (data, opcode): (Bytes, _) = match frame {
            Frame::Text(text) => (text.into(), OpCode::Data(Data::Text)),
            Frame::Binary(data) => (data, OpCode::Data(Data::Binary)),
        };
        WsFrame::message(data, opcode, true).format(&mut buffer)?;
        if buffer.len() >= WRITE_CHUNK {
            stream.write_all(&buffer).await?;
            buffer.clear();
        }
    }
    stream.write_all(&buffer).await?;
    stream.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn small_reads_get_every_byte_in_order_and_the_spill_is_freed() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut stash = ReadStash::new(&data[..]);
        let mut out = Vec::new();
        let mut small = [0u8; 100];
        loop {
            let n = stash.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&small[..n]);
        }
        assert_eq!(out, data);
        assert_eq!(stash.spill.capacity(), 0);
    }

    #[tokio::test]
    async fn frames_are_unmasked_websocket_messages() {
        let mut out = Vec::new();
        let frames = [
            Frame::Text("4hello".into()),
            Frame::Binary(Bytes::from_static(&[1, 2, 3])),
        ];
        write_frames(&mut out, frames, 9).await.unwrap();
        assert_eq!(
            out,
            [&[0x81, 6][..], b"4hello", &[0x82, 3, 1, 2, 3]].concat()
        );
    }
}

//! A WebSocket as a byte stream, so that a protocol served over TCP is
//! served over WebSocket unchanged ([`super::Stream::Boxed`]).
//!
//! Binary messages carry the bytes (MQTT 5 §6.0: control packets travel in
//! binary frames, one packet may span several and a frame may hold
//! several); a text message is a protocol error (the read fails, so the
//! connection closes); pings are answered by the WebSocket layer; a close
//! message is the end of the stream. Each write is sent as one binary
//! message.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use warp::ws::{Message, WebSocket};

/// See the module docs.
pub struct WsStream {
    ws: WebSocket,
    /// What is left of the last binary message read.
    pending: Bytes,
}

impl WsStream {
    pub fn new(ws: WebSocket) -> WsStream {
        WsStream {
            ws,
            pending: Bytes::new(),
        }
    }
}

/// Reads a WebSocket's data messages as bytes: what is left of the last
/// one (`pending`) first, then the next data message as `data` turns it
/// into bytes (or refuses it); pings and pongs are the WebSocket layer's,
/// a close message or the end is the end of the stream. Shared by every
/// protocol served over WebSocket.
pub fn poll_read_messages(
    ws: &mut WebSocket,
    pending: &mut Bytes,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    data: impl Fn(Message) -> io::Result<Bytes>,
) -> Poll<io::Result<()>> {
    loop {
        if !pending.is_empty() {
            let n = pending.len().min(buf.remaining());
            buf.put_slice(&pending[..n]);
            pending.advance(n);
            return Poll::Ready(Ok(()));
        }
        match std::task::ready!(Pin::new(&mut *ws).poll_next(cx)) {
            None => return Poll::Ready(Ok(())),
            Some(Ok(m)) if m.is_close() => return Poll::Ready(Ok(())),
            Some(Ok(m)) if m.is_ping() || m.is_pong() => {}
            Some(Ok(m)) => *pending = data(m)?,
            Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
        }
    }
}

impl AsyncRead for WsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        poll_read_messages(&mut me.ws, &mut me.pending, cx, buf, |m| {
            if m.is_binary() {
                Ok(m.into_bytes())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a text message where binary ones are required",
                ))
            }
        })
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let ws = Pin::new(&mut self.ws);
        std::task::ready!(Sink::<Message>::poll_ready(ws, cx)).map_err(io::Error::other)?;
        Pin::new(&mut self.ws)
            .start_send(Message::binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Message>::poll_flush(Pin::new(&mut self.ws), cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Message>::poll_close(Pin::new(&mut self.ws), cx).map_err(io::Error::other)
    }
}

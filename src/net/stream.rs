//! [`Stream`]: a connection's byte stream — plain TCP, TLS, or any other
//! transport — shaped so that an idle connection holds no buffer.
//!
//! Reading waits for readiness, then reads into a per-thread scratch buffer
//! and hands only the bytes that arrived to the caller (appended to its
//! `BytesMut`, or fed to a parser), so a connection owns no read buffer
//! between bursts. Plain TCP writes go straight from the caller's buffer with
//! `try_write`, without waiting when the socket takes everything. TLS keeps
//! its own buffers inside rustls; STARTTLS turns a TCP stream into a TLS one
//! in place. [`Stream::Boxed`] carries any other byte stream (WebSocket).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read at most per readiness event.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Any byte stream a listener can serve.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connection's byte stream. See the module docs.
pub enum Stream {
    Tcp(TcpStream),
    /// Boxed: a TLS session is large and most connections of a fleet are
    /// plain (or the box is paid once per TLS connection anyway).
    Tls(Box<TlsStream<TcpStream>>),
    /// Any other transport (a WebSocket's message stream).
    Boxed(Box<dyn Io>),
    /// Only while STARTTLS swaps the TCP stream for the TLS one.
    Gone,
}

impl Stream {
    /// The stream of a freshly accepted connection: the TLS handshake first
    /// when `tls` is set (bounded by [`HANDSHAKE_TIMEOUT`]); `None` when it
    /// failed (logged at debug level).
    pub async fn accept(tcp: TcpStream, tls: Option<&TlsAcceptor>) -> Option<Stream> {
        let Some(acceptor) = tls else {
            return Some(Stream::Tcp(tcp));
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Some(Stream::Tls(Box::new(s))),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }

    /// STARTTLS: runs the TLS handshake on this plain TCP stream (bounded by
    /// [`HANDSHAKE_TIMEOUT`]) and goes on as TLS. The caller must have read
    /// nothing past the STARTTLS request (no plaintext may be injected).
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        let Stream::Tcp(tcp) = std::mem::replace(self, Stream::Gone) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                *self = Stream::Tls(Box::new(tls));
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// RFC 9266 `tls-exporter` channel-binding data: 32 bytes of keying
    /// material exported under `EXPORTER-Channel-Binding`. TLS 1.3 only
    /// (in TLS 1.2 it is safe only with the extended master secret, which
    /// cannot be checked here); `None` otherwise.
    pub fn channel_binding_exporter(&self) -> Option<Vec<u8>> {
        let Stream::Tls(t) = self else {
            return None;
        };
        let (_, conn) = t.get_ref();
        if conn.protocol_version() != Some(tokio_rustls::rustls::ProtocolVersion::TLSv1_3) {
            return None;
        }
        let mut out = vec![0u8; 32];
        conn.export_keying_material(&mut out[..], b"EXPORTER-Channel-Binding", None)
            .ok()?;
        Some(out)
    }

    /// Waits for bytes and hands what arrived to `f` (a borrow of the
    /// per-thread scratch buffer, valid only during the call). `Ready(Ok(0))`
    /// is end of stream. Spends tokio's cooperative budget, so a client whose
    /// socket never runs dry still lets the tasks it wakes run.
    pub fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        match self {
            Stream::Tcp(s) => {
                let mut f = Some(f);
                loop {
                    std::task::ready!(s.poll_read_ready(cx))?;
                    let r: io::Result<usize> = SCRATCH_BUF.with(|scratch| {
                        let mut scratch = scratch.borrow_mut();
                        let n = s.try_read(&mut scratch)?;
                        if let Some(f) = f.take() {
                            f(&scratch[..n]);
                        }
                        Ok(n)
                    });
                    match r {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        r => return Poll::Ready(r),
                    }
                }
            }
            Stream::Tls(_) | Stream::Boxed(_) | Stream::Gone => SCRATCH_BUF.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut rb = ReadBuf::new(&mut scratch);
                std::task::ready!(Pin::new(&mut *self).poll_read(cx, &mut rb))?;
                f(rb.filled());
                Poll::Ready(Ok(rb.filled().len()))
            }),
        }
    }

    /// [`Stream::poll_read_with`] appending to `buf`.
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        self.poll_read_with(cx, |b| buf.extend_from_slice(b))
    }

    /// Waits for bytes and appends them to `buf`; `Ok(0)` is end of stream.
    /// Cancel-safe: nothing is lost if the future is dropped while waiting.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let n = std::future::poll_fn(|cx| self.poll_read_into(cx, buf)).await?;
        if n > 0 && matches!(self, Stream::Tcp(_)) {
            // readable()/try_read spend little of tokio's cooperative budget,
            // so a client whose socket never runs dry would keep its worker
            // and starve the tasks it wakes (its subscribers). Yielding after
            // each read gives them a turn per batch a publisher brings in.
            tokio::task::yield_now().await;
        }
        Ok(n)
    }

    /// Writes what the socket takes now, without waiting, and drops it from
    /// `out`. True when `out` is empty afterwards. Only plain TCP writes
    /// here; other streams always go through [`Stream::write_all`].
    pub fn write_now(&mut self, out: &mut BytesMut) -> io::Result<bool> {
        if let Stream::Tcp(s) = self {
            while !out.is_empty() {
                match s.try_write(out) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => bytes::Buf::advance(out, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out.is_empty())
    }

    /// Writes all of `data` and flushes it.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                while !data.is_empty() {
                    match s.try_write(data) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            data = &data[n..];
                            tokio::task::consume_budget().await;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.writable().await?,
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            other => {
                AsyncWriteExt::write_all(other, data).await?;
                AsyncWriteExt::flush(other).await
            }
        }
    }

    /// Closes the writing side (TLS: close_notify), ignoring errors.
    pub async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(self).await;
    }

    /// A lingering close: the writing side is shut, then what the peer
    /// still sends is read and dropped until it closes too — for at most
    /// `within` and [`LINGER_BYTES`]. Closing a socket with unread input
    /// resets the connection, and a reset can destroy our last bytes (an
    /// MQTT DISCONNECT with its reason, a stream error) before the peer
    /// reads them; a peer still busy sending (a burst of publishes) would
    /// never learn why it was cut off.
    pub async fn close(&mut self, within: std::time::Duration) {
        let _ = tokio::time::timeout(within, async {
            if AsyncWriteExt::shutdown(self).await.is_err() {
                return;
            }
            // Read into the per-thread scratch buffer, dropped at once.
            let mut left = LINGER_BYTES;
            while left > 0 {
                match std::future::poll_fn(|cx| self.poll_read_with(cx, |_| {})).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

/// Bytes a closing connection may still send us, read and dropped.
pub const LINGER_BYTES: usize = 256 * 1024;

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Boxed(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Boxed(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Boxed(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Boxed(s) => s.is_write_vectored(),
            Stream::Gone => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Boxed(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Boxed(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn tcp_reads_into_and_writes_without_waiting() {
        let (mut client, server) = pair().await;
        let mut s = Stream::Tcp(server);
        client.write_all(b"hello").await.unwrap();
        let mut buf = BytesMut::new();
        while buf.len() < 5 {
            assert!(s.read_into(&mut buf).await.unwrap() > 0);
        }
        assert_eq!(&buf[..], b"hello");
        let mut out = BytesMut::from(&b"world"[..]);
        assert!(s.write_now(&mut out).unwrap());
        assert!(out.is_empty());
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"world");
        s.shutdown().await;
        assert_eq!(client.read(&mut got).await.unwrap(), 0, "end of stream");
    }

    /// Any AsyncRead + AsyncWrite fits (a WebSocket's message stream will).
    #[tokio::test]
    async fn boxed_streams_read_and_write_alike() {
        let (a, b) = tokio::io::duplex(64);
        let mut s = Stream::Boxed(Box::new(b));
        let mut peer = a;
        peer.write_all(b"ping").await.unwrap();
        let mut fed = Vec::new();
        let n =
            std::future::poll_fn(|cx| s.poll_read_with(cx, |bytes| fed.extend_from_slice(bytes)))
                .await
                .unwrap();
        assert_eq!((n, &fed[..]), (4, &b"ping"[..]));
        let mut out = BytesMut::from(&b"pong"[..]);
        assert!(
            !s.write_now(&mut out).unwrap(),
            "only plain TCP writes without waiting"
        );
        s.write_all(&out).await.unwrap();
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        assert!(!s.is_tls());
    }
}

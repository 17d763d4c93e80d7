//! A connection's byte stream, shaped so that an idle connection holds no
//! buffer.
//!
//! Plain TCP waits for readiness (`readable()`), then reads into a per-thread
//! scratch buffer and copies only the bytes that arrived into the caller's
//! `BytesMut` — which is empty, and owns no memory, between bursts. Writes go
//! straight from the caller's buffer with `writable()`/`try_write`, so no
//! split halves or locks are needed. TLS streams (rustls keeps its own buffers
//! anyway) are read and written through split halves.

use std::cell::RefCell;
use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::server::Io;

/// Bytes read at most per readiness event.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

pub enum Wire {
    Tcp(TcpStream),
    Tls {
        rd: ReadHalf<Box<dyn Io>>,
        wr: WriteHalf<Box<dyn Io>>,
    },
}

impl Wire {
    pub fn tls(io: Box<dyn Io>) -> Wire {
        let (rd, wr) = tokio::io::split(io);
        Wire::Tls { rd, wr }
    }

    /// Waits for bytes and appends them to `buf`; `Ok(0)` is end of stream.
    /// Cancel-safe: nothing is lost if the future is dropped while waiting.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Wire::Tcp(s) => loop {
                s.readable().await?;
                let r = SCRATCH_BUF.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    match s.try_read(&mut scratch) {
                        Ok(n) => {
                            buf.extend_from_slice(&scratch[..n]);
                            Ok(n)
                        }
                        Err(e) => Err(e),
                    }
                });
                match r {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Ok(n) => {
                        // readable()/try_read spend none of tokio's cooperative
                        // budget, so a client whose socket never runs dry would
                        // keep its worker and starve the tasks it wakes (its
                        // subscribers). Yielding after each read gives them a
                        // turn per batch a publisher brings in.
                        tokio::task::yield_now().await;
                        return Ok(n);
                    }
                    Err(e) => return Err(e),
                }
            },
            Wire::Tls { rd, .. } => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096);
                }
                rd.read_buf(buf).await
            }
        }
    }

    /// [`Wire::read_into`] as a poll function, for a task that waits on its
    /// socket and something else at once without storing a future: plain TCP
    /// registers with the reactor through `poll_read_ready`, TLS reads its
    /// half directly. `Ready(Ok(0))` is end of stream.
    pub fn poll_read_into(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &mut BytesMut,
    ) -> std::task::Poll<io::Result<usize>> {
        use std::task::Poll;
        match self {
            Wire::Tcp(s) => loop {
                // Spends tokio's cooperative budget, so a publisher whose
                // socket never runs dry still yields to the tasks it wakes.
                std::task::ready!(s.poll_read_ready(cx))?;
                let r: io::Result<usize> = SCRATCH_BUF.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    let n = s.try_read(&mut scratch)?;
                    buf.extend_from_slice(&scratch[..n]);
                    Ok(n)
                });
                match r {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            },
            Wire::Tls { rd, .. } => SCRATCH_BUF.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut rb = tokio::io::ReadBuf::new(&mut scratch);
                std::task::ready!(std::pin::Pin::new(rd).poll_read(cx, &mut rb))?;
                buf.extend_from_slice(rb.filled());
                Poll::Ready(Ok(rb.filled().len()))
            }),
        }
    }

    /// Writes what the socket takes now, without waiting, and drops it from
    /// `out`. True when `out` is empty afterwards. TLS writes always go
    /// through [`Wire::write_all`].
    pub fn write_now(&mut self, out: &mut BytesMut) -> io::Result<bool> {
        if let Wire::Tcp(s) = self {
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

    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        match self {
            Wire::Tcp(s) => {
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
            Wire::Tls { wr, .. } => {
                wr.write_all(data).await?;
                wr.flush().await
            }
        }
    }

    pub async fn shutdown(&mut self) {
        match self {
            Wire::Tcp(s) => {
                let _ = s.shutdown().await;
            }
            Wire::Tls { wr, .. } => {
                let _ = wr.shutdown().await;
            }
        }
    }
}

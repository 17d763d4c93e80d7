//! The accept loop of one listener, after tokio's mini-redis `Listener`: a
//! semaphore bounds the connections served at once, an optional cap bounds
//! those of one address, accept errors back off, and every connection's
//! task holds a [`ConnPermit`] that gives its place back (and lets the
//! shutdown's drain finish) when the task ends.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What an accept loop needs to know about its listener.
#[derive(Clone)]
pub struct Acceptor {
    /// The listener's module name, for logs.
    pub name: &'static str,
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections from one address at once (0: no cap); further ones are
    /// closed as they come.
    pub max_per_ip: usize,
    /// Every listener's open connections, which the shutdown drains.
    pub open: Arc<OpenConns>,
    /// This listener's open connections (the connections metric).
    pub here: Arc<AtomicUsize>,
    /// Stops accepting when cancelled.
    pub shutdown: CancellationToken,
}

/// Accepts connections under the listener's connection limit, backing off on
/// errors (e.g. out of file descriptors), and hands each to `handle` in a task
/// the shutdown waits for. The handler's future holds the connection's permit
/// (so it is spawned as is: wrapping it in another async block would store the
/// whole future twice in every task).
pub async fn accept_loop<F, Fut>(tcp: TcpListener, acceptor: Acceptor, handle: F)
where
    F: Fn(TcpStream, SocketAddr, ConnPermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Limit {
        slots: Semaphore::new(acceptor.max_connections),
        open: acceptor.open.clone(),
        here: acceptor.here.clone(),
        max_per_ip: acceptor.max_per_ip,
        by_ip: DashMap::new(),
    });
    // Without a per-address cap every connection shares one entry.
    let everyone = Arc::new(Peer {
        ip: None,
        count: AtomicUsize::new(0),
        limit: limit.clone(),
    });
    let shutdown = &acceptor.shutdown;
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = limit.slots.acquire() => p.expect("semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = tcp.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                let entry = if limit.max_per_ip == 0 {
                    everyone.clone()
                } else {
                    match limit.admit(peer.ip()) {
                        Some(e) => e,
                        None => {
                            tracing::info!(%peer, module = acceptor.name, "too many connections from one address");
                            drop(stream);
                            continue;
                        }
                    }
                };
                entry
                    .count
                    .fetch_add(usize::from(entry.ip.is_none()), Ordering::AcqRel);
                let _ = stream.set_nodelay(true);
                permit.forget();
                limit.open.count.fetch_add(1, Ordering::AcqRel);
                limit.here.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(handle(stream, peer, ConnPermit(entry)));
            }
            Err(e) => {
                tracing::warn!(error = %e, module = acceptor.name, "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// How many connections are open on all listeners.
#[derive(Default)]
pub struct OpenConns {
    count: AtomicUsize,
    none_left: tokio::sync::Notify,
}

impl OpenConns {
    /// Waits until no connection is open.
    pub async fn drained(&self) {
        loop {
            let notified = self.none_left.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One listener's `max_connections`, its per-address cap, and the count of
/// all open ones.
struct Limit {
    slots: Semaphore,
    open: Arc<OpenConns>,
    here: Arc<AtomicUsize>,
    max_per_ip: usize,
    /// The addresses with connections open, while the cap applies.
    by_ip: DashMap<IpAddr, Arc<Peer>>,
}

impl Limit {
    /// The entry of `ip` with its count taken, or `None` at the cap.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Arc<Peer>> {
        // Counted under the map entry's lock, as the last release removes
        // the entry under it: a count is never taken on an entry that is
        // leaving the map.
        let entry = self.by_ip.entry(ip).or_insert_with(|| {
            Arc::new(Peer {
                ip: Some(ip),
                count: AtomicUsize::new(0),
                limit: self.clone(),
            })
        });
        if entry.count.load(Ordering::Acquire) >= self.max_per_ip {
            return None;
        }
        entry.count.fetch_add(1, Ordering::AcqRel);
        Some(entry.clone())
    }
}

/// The connections of one address (or of everyone, without a cap).
struct Peer {
    ip: Option<IpAddr>,
    count: AtomicUsize,
    limit: Arc<Limit>,
}

impl Peer {
    fn release(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(ip) = self.ip {
                // Gone with its last connection (unless one came meanwhile).
                self.limit.by_ip.remove_if(&ip, |_, p| {
                    std::ptr::eq(&**p, self) && p.count.load(Ordering::Acquire) == 0
                });
            }
        }
    }
}

/// A connection's place under its listener's `max_connections` and
/// per-address cap (and in the count the shutdown drains), given back when
/// dropped. One pointer: it lives in every connection's task.
pub struct ConnPermit(Arc<Peer>);

impl ConnPermit {
    /// A permit of a listener of its own, for tests that build a
    /// connection's task without an accept loop.
    pub fn detached() -> ConnPermit {
        let open = Arc::new(OpenConns::default());
        open.count.fetch_add(1, Ordering::AcqRel);
        let limit = Arc::new(Limit {
            slots: Semaphore::new(0),
            open,
            here: Arc::new(AtomicUsize::new(1)),
            max_per_ip: 0,
            by_ip: DashMap::new(),
        });
        ConnPermit(Arc::new(Peer {
            ip: None,
            count: AtomicUsize::new(1),
            limit,
        }))
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let limit = &self.0.limit;
        limit.slots.add_permits(1);
        limit.here.fetch_sub(1, Ordering::Relaxed);
        self.0.release();
        if limit.open.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            limit.open.none_left.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With room for one connection, the second is served only once the
    /// first one's permit is given back; the drain waits for the last.
    #[tokio::test]
    async fn serves_within_the_limit_and_drains() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let open = Arc::new(OpenConns::default());
        let shutdown = CancellationToken::new();
        let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
        let acceptor = Acceptor {
            name: "test",
            max_connections: 1,
            max_per_ip: 0,
            open: open.clone(),
            here: Default::default(),
            shutdown: shutdown.clone(),
        };
        let task = tokio::spawn(accept_loop(tcp, acceptor, move |_s, _p, permit| {
            let (done, wait) = tokio::sync::oneshot::channel::<()>();
            started.send(done).unwrap();
            async move {
                let _ = wait.await;
                drop(permit);
            }
        }));
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let first = starts.recv().await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(100), starts.recv()).await;
        assert!(
            early.is_err(),
            "a second connection was served over the limit"
        );
        assert_eq!(open.len(), 1);
        first.send(()).unwrap();
        let second = starts.recv().await.unwrap();
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(open.len(), 1);
        second.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), open.drained())
            .await
            .expect("drained");
        assert!(open.is_empty());
    }
}

#[cfg(test)]
mod per_ip_tests {
    use super::*;

    /// Past the per-address cap a connection is closed at once; a place
    /// given back is free again.
    #[tokio::test]
    async fn one_address_gets_at_most_its_cap() {
        use tokio::io::AsyncReadExt;
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let acceptor = Acceptor {
            name: "test",
            max_connections: 100,
            max_per_ip: 2,
            open: Arc::new(OpenConns::default()),
            here: Default::default(),
            shutdown: shutdown.clone(),
        };
        let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(accept_loop(tcp, acceptor, move |stream, _p, permit| {
            let (done, wait) = tokio::sync::oneshot::channel::<()>();
            started.send(done).unwrap();
            async move {
                let _ = wait.await;
                drop((stream, permit));
            }
        }));
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let first = starts.recv().await.unwrap();
        let _second = starts.recv().await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut byte))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0, "the third connection is closed");
        first.send(()).unwrap();
        // Its place is free again (the release may take a moment).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let _d = TcpStream::connect(addr).await.unwrap();
            if tokio::time::timeout(Duration::from_millis(200), starts.recv())
                .await
                .is_ok()
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no place freed");
        }
        shutdown.cancel();
        task.await.unwrap();
    }
}

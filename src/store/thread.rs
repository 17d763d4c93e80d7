//! The store thread: the only place a backend runs.
//!
//! Requests are carried out in the order they were made. Writes are gathered
//! into batches (applied before any read that follows them, so reads see
//! them); barriers waiting at the same time share one commit. A backend that
//! awaits (a networked one) runs on this thread's own current-thread
//! runtime, never on the server's workers.
//!
//! The thread also times every operation (the store latency histogram) and
//! keeps the record counts of the [`COUNTED`] trees: counted once when the
//! store opens (a scan of those trees), then kept by looking up each key
//! written to them before the write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::backend::{Backend, Reader, Write};
use super::{Op, StoreError, Tree};
use crate::metrics::{metrics, StoreOp};

/// Trees whose records are counted (gauges of offline and archived
/// messages).
pub const COUNTED: [Tree; 2] = [Tree::Offline, Tree::Archive];

/// The record counts of [`COUNTED`], in that order.
pub type Counts = Arc<[AtomicU64; 2]>;

fn counted(t: Tree) -> Option<usize> {
    COUNTED.iter().position(|c| *c == t)
}

/// Requests handled per turn before pending writes are applied and waiting
/// barriers answered (bounds a batch and the latency of a barrier).
const TURN: usize = 1024;

/// Runs a read on the backend's concurrent reader and answers it.
async fn read_aside(r: &dyn Reader, op: Op) -> StoreOp {
    match op {
        Op::Get(t, k, tx) => {
            let _ = tx.send(r.get(t, &k).await);
            StoreOp::Read
        }
        Op::ScanPrefix(t, p, tx) => {
            let _ = tx.send(r.scan_prefix(t, &p).await);
            StoreOp::Scan
        }
        Op::ScanBelow(t, end, limit, tx) => {
            let _ = tx.send(r.scan_below(t, &end, limit).await);
            StoreOp::Scan
        }
        Op::ScanRange(t, range, tx) => {
            let _ = tx.send(r.scan_range(t, &range).await);
            StoreOp::Scan
        }
        Op::CountPrefix(t, p, limit, tx) => {
            let _ = tx.send(r.count_prefix(t, &p, limit).await);
            StoreOp::Scan
        }
        _ => unreachable!("only reads run aside"),
    }
}

pub(super) fn run(backend: Box<dyn Backend>, rx: mpsc::UnboundedReceiver<Op>, counts: Counts) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the store thread's runtime starts");
    // Reads a backend runs beside its own requests are local tasks.
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, Worker::new(backend, counts).serve(rx));
}

struct Worker {
    backend: Box<dyn Backend>,
    /// The backend's concurrent reads, once it offers them.
    reader: Option<std::rc::Rc<dyn Reader>>,
    pending: Vec<Write>,
    barriers: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// The first write that failed. Sticky: once the backend lost a write,
    /// every later barrier fails too (nothing may be acknowledged as
    /// durable after a lost write, whoever's barrier came first).
    failed: Option<StoreError>,
    counts: Counts,
}

impl Worker {
    fn new(backend: Box<dyn Backend>, counts: Counts) -> Worker {
        Worker {
            reader: None,
            backend,
            pending: Vec::new(),
            barriers: Vec::new(),
            failed: None,
            counts,
        }
    }

    async fn serve(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        for (i, t) in COUNTED.into_iter().enumerate() {
            match self.backend.len(t).await {
                Ok(n) => self.counts[i].store(n as u64, Ordering::Relaxed),
                Err(e) => tracing::warn!(tree = t.name(), error = %e, "store: records not counted"),
            }
        }
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            let mut handled = 0;
            while let Some(op) = next {
                self.handle(op).await;
                handled += 1;
                next = if handled < TURN {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            self.apply().await;
            self.commit_if_asked().await;
        }
        // Every handle is gone: make what was written durable, then close.
        self.apply().await;
        if let Err(e) = self.backend.commit().await {
            tracing::error!(error = %e, "final store commit failed");
        }
    }

    async fn handle(&mut self, op: Op) {
        if !matches!(op, Op::Write(_) | Op::Barrier(_)) {
            // Reads see every write made before them.
            self.apply().await;
        }
        let kind = match op {
            Op::Get(..) | Op::Take(..) => Some(StoreOp::Read),
            Op::Write(_) | Op::Barrier(_) => None,
            _ => Some(StoreOp::Scan),
        };
        // Writes and barriers are timed where they are carried out.
        let started = kind.map(|_| Instant::now());
        if self.reader.is_none() && self.counts_reads_aside(&op) {
            // Offered once the backend is ready for it (connected, schema
            // migrated).
            self.reader = self.backend.reader();
        }
        let op = match (&self.reader, op) {
            // The writes before it are applied: the read may run beside
            // what follows.
            (Some(r), op) if self.counts_reads_aside(&op) => {
                let r = r.clone();
                tokio::task::spawn_local(async move {
                    let started = Instant::now();
                    let kind = read_aside(r.as_ref(), op).await;
                    metrics().store_op(kind, started.elapsed());
                });
                return;
            }
            (_, op) => op,
        };
        let counts = &self.counts;
        let b = &mut self.backend;
        match op {
            Op::Write(w) => self.pending.push(w),
            Op::Barrier(tx) => self.barriers.push(tx),
            Op::Get(t, k, tx) => {
                let _ = tx.send(b.get(t, &k).await);
            }
            Op::Take(t, k, tx) => {
                let old = b.get(t, &k).await;
                let r = match old {
                    Ok(Some(v)) => {
                        let r = b.write(&[Write::Delete(t, k)]).await.map(|()| Some(v));
                        if let (Ok(_), Some(i)) = (&r, counted(t)) {
                            let _ =
                                counts[i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                    Some(n.saturating_sub(1))
                                });
                        }
                        r
                    }
                    other => other,
                };
                let _ = tx.send(r);
            }
            Op::ScanPrefix(t, p, tx) => {
                let _ = tx.send(b.scan_prefix(t, &p).await);
            }
            Op::ScanBelow(t, end, limit, tx) => {
                let _ = tx.send(b.scan_below(t, &end, limit).await);
            }
            Op::ScanRange(t, r, tx) => {
                let _ = tx.send(b.scan_range(t, &r).await);
            }
            Op::CountPrefix(t, p, limit, tx) => {
                let _ = tx.send(b.count_prefix(t, &p, limit).await);
            }
            Op::Len(t, tx) => {
                let _ = tx.send(b.len(t).await);
            }
        }
        if let (Some(k), Some(t)) = (kind, started) {
            metrics().store_op(k, t.elapsed());
        }
    }

    /// Whether `op` may run on the backend's concurrent reader.
    fn counts_reads_aside(&self, op: &Op) -> bool {
        matches!(
            op,
            Op::Get(..)
                | Op::ScanPrefix(..)
                | Op::ScanBelow(..)
                | Op::ScanRange(..)
                | Op::CountPrefix(..)
        )
    }

    async fn apply(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        // A prefix deletion in a counted tree is counted against what is
        // stored: what comes before it is written first.
        let mut rest = &batch[..];
        while let Some(cut) = rest
            .iter()
            .position(|w| matches!(w, Write::DeletePrefix(t, _) if counted(*t).is_some()))
        {
            self.write(&rest[..cut]).await;
            if let Write::DeletePrefix(t, p) = &rest[cut] {
                let gone = self.backend.count_prefix(*t, p, usize::MAX).await;
                if self.write(&rest[cut..=cut]).await {
                    if let (Ok(n), Some(i)) = (gone, counted(*t)) {
                        self.sub(i, n as u64);
                    }
                }
            }
            rest = &rest[cut + 1..];
        }
        self.write(rest).await;
    }

    fn sub(&self, i: usize, n: u64) {
        let _ = self.counts[i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            Some(c.saturating_sub(n))
        });
    }

    /// Writes a batch (no prefix deletions in counted trees), keeping the
    /// counts; false when the backend failed.
    async fn write(&mut self, batch: &[Write]) -> bool {
        if batch.is_empty() {
            return true;
        }
        // Whether each counted key exists, as of the batch so far.
        let mut exists: HashMap<(usize, &[u8]), bool> = HashMap::new();
        let mut delta = [0i64; 2];
        for w in batch {
            let (i, key, put) = match w {
                Write::Put(t, k, _) => match counted(*t) {
                    Some(i) => (i, k.as_slice(), true),
                    None => continue,
                },
                Write::Delete(t, k) => match counted(*t) {
                    Some(i) => (i, k.as_slice(), false),
                    None => continue,
                },
                Write::DeletePrefix(..) => continue,
            };
            let was = match exists.get(&(i, key)) {
                Some(e) => *e,
                None => matches!(self.backend.get(COUNTED[i], key).await, Ok(Some(_))),
            };
            delta[i] += i64::from(put) - i64::from(was);
            exists.insert((i, key), put);
        }
        let started = Instant::now();
        let r = self.backend.write(batch).await;
        metrics().store_op(StoreOp::Write, started.elapsed());
        match r {
            Ok(()) => {
                for (i, d) in delta.into_iter().enumerate() {
                    if d >= 0 {
                        self.counts[i].fetch_add(d as u64, Ordering::Relaxed);
                    } else {
                        self.sub(i, d.unsigned_abs());
                    }
                }
                true
            }
            Err(e) => {
                if self.failed.is_none() {
                    tracing::error!(error = %e, writes = batch.len(), "store write failed; nothing more is acknowledged as durable");
                }
                self.failed.get_or_insert(e);
                false
            }
        }
    }

    async fn commit_if_asked(&mut self) {
        if self.barriers.is_empty() {
            return;
        }
        let started = Instant::now();
        let committed = self.backend.commit().await;
        metrics().store_op(StoreOp::Commit, started.elapsed());
        let r = match &self.failed {
            Some(e) => Err(e.clone()),
            None => committed,
        };
        if let Err(e) = &r {
            tracing::error!(error = %e, "store commit failed");
        }
        for tx in self.barriers.drain(..) {
            let _ = tx.send(r.clone());
        }
    }
}

//! The store thread: the only place a backend runs.
//!
//! Requests are carried out in the order they were made. Writes are gathered
//! into batches (applied before any read that follows them, so reads see
//! them); barriers waiting at the same time share one commit. A backend that
//! awaits (a networked one) runs on this thread's own current-thread
//! runtime, never on the server's workers.

use tokio::sync::{mpsc, oneshot};

use super::backend::{Backend, Write};
use super::{Op, StoreError};

/// Requests handled per turn before pending writes are applied and waiting
/// barriers answered (bounds a batch and the latency of a barrier).
const TURN: usize = 1024;

pub(super) fn run(backend: Box<dyn Backend>, rx: mpsc::UnboundedReceiver<Op>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the store thread's runtime starts");
    rt.block_on(Worker::new(backend).serve(rx));
}

struct Worker {
    backend: Box<dyn Backend>,
    pending: Vec<Write>,
    barriers: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// The first write that failed. Sticky: once the backend lost a write,
    /// every later barrier fails too (nothing may be acknowledged as
    /// durable after a lost write, whoever's barrier came first).
    failed: Option<StoreError>,
}

impl Worker {
    fn new(backend: Box<dyn Backend>) -> Worker {
        Worker {
            backend,
            pending: Vec::new(),
            barriers: Vec::new(),
            failed: None,
        }
    }

    async fn serve(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
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
                    Ok(Some(v)) => b.write(&[Write::Delete(t, k)]).await.map(|()| Some(v)),
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
    }

    async fn apply(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        if let Err(e) = self.backend.write(&batch).await {
            if self.failed.is_none() {
                tracing::error!(error = %e, writes = batch.len(), "store write failed; nothing more is acknowledged as durable");
            }
            self.failed.get_or_insert(e);
        }
    }

    async fn commit_if_asked(&mut self) {
        if self.barriers.is_empty() {
            return;
        }
        let committed = self.backend.commit().await;
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

//! What a storage engine must do for the store thread.

use std::future::Future;
use std::pin::Pin;

use super::{KeyRange, KeyValue, StoreError, Tree};

/// A future a backend returns; it runs on the store thread only, so it need
/// not be `Send`.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + 'a>>;

/// One queued write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Tree, Vec<u8>, Vec<u8>),
    Delete(Tree, Vec<u8>),
    DeletePrefix(Tree, Vec<u8>),
}

/// A storage engine, driven by the store thread alone (so `&mut self`, and no
/// locking of its own). Async, so that a networked engine (a SQL pool)
/// fits: the store thread runs it on a runtime of its own.
///
/// Contract: [`Backend::write`] applies a batch in order, and reads see
/// every write applied before them; [`Backend::commit`] makes everything
/// written so far durable (sled: flush; SQL: COMMIT of the open transaction).
pub trait Backend: Send + 'static {
    fn write<'a>(&'a mut self, batch: &'a [Write]) -> BackendFuture<'a, ()>;
    fn commit(&mut self) -> BackendFuture<'_, ()>;
    fn get<'a>(&'a mut self, tree: Tree, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>>;
    fn scan_prefix<'a>(
        &'a mut self,
        tree: Tree,
        prefix: &'a [u8],
    ) -> BackendFuture<'a, Vec<KeyValue>>;
    /// Entries with keys `< end`, in key order, at most `limit`.
    fn scan_below<'a>(
        &'a mut self,
        tree: Tree,
        end: &'a [u8],
        limit: usize,
    ) -> BackendFuture<'a, Vec<KeyValue>>;
    /// Entries with `from <= key < to`, in key order (or reverse order),
    /// at most `limit`.
    fn scan_range<'a>(
        &'a mut self,
        tree: Tree,
        range: &'a KeyRange,
    ) -> BackendFuture<'a, Vec<KeyValue>>;
    /// How many keys start with `prefix`, counting at most `limit`.
    fn count_prefix<'a>(
        &'a mut self,
        tree: Tree,
        prefix: &'a [u8],
        limit: usize,
    ) -> BackendFuture<'a, usize>;
    fn len(&mut self, tree: Tree) -> BackendFuture<'_, usize>;
    /// Reads that may run beside this backend's own requests (a pool of
    /// connections), once it has them ready; asked on the store thread
    /// before a read until it answers.
    fn reader(&mut self) -> Option<std::rc::Rc<dyn Reader>> {
        None
    }
}

/// Reads that run concurrently on the store thread's runtime. A read is
/// started only after every write requested before it was applied
/// (committed), so it sees them, as a [`Backend`] read would.
pub trait Reader {
    fn get<'a>(&'a self, tree: Tree, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>>;
    fn scan_prefix<'a>(&'a self, tree: Tree, prefix: &'a [u8]) -> BackendFuture<'a, Vec<KeyValue>>;
    fn scan_below<'a>(
        &'a self,
        tree: Tree,
        end: &'a [u8],
        limit: usize,
    ) -> BackendFuture<'a, Vec<KeyValue>>;
    fn scan_range<'a>(
        &'a self,
        tree: Tree,
        range: &'a KeyRange,
    ) -> BackendFuture<'a, Vec<KeyValue>>;
    fn count_prefix<'a>(
        &'a self,
        tree: Tree,
        prefix: &'a [u8],
        limit: usize,
    ) -> BackendFuture<'a, usize>;
}

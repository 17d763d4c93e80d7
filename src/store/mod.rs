//! Durable state behind one seam: the [`Store`] handle over a [`Backend`].
//!
//! Each kind of record lives in its own [`Tree`] (a table in a networked
//! backend). Values are versioned records (see [`records`]): one version
//! byte, then postcard; pure index entries (token expiry, MQTT QoS 2 packet-id
//! markers) carry no value.
//!
//! **No store call runs on an async worker thread.** One store thread owns
//! the backend and carries out requests in the order they were made:
//! - writes ([`Store::put`], [`Store::delete`], [`Store::delete_prefix`])
//!   never wait — they are queued, applied in batches, and reads made after
//!   them see them;
//! - [`Store::barrier`] is the durability barrier: it resolves once every
//!   write queued before it is durable (sled: flushed to disk; a SQL backend:
//!   its transaction committed). Concurrent barriers share one flush (group
//!   commit). A write that failed makes the next barrier fail. Whatever a
//!   protocol acknowledges (a token returned, a QoS 1 PUBACK, a retained
//!   message, a roster change) waits for a barrier first;
//! - reads are async ([`Store::get`], [`Store::scan_prefix`], …) for async
//!   code, with `*_blocking` twins for code already on a blocking thread (the
//!   auth core's password work, admin commands). The blocking twins panic if
//!   called on an async worker thread, so a misplaced call fails every test.
//!
//! Backends, chosen by the `store` config key ([`StoreKind`]): [`sled_backend`]
//! (the embedded default), [`memory`] (tests; nothing survives the process).
//! The [`Backend`] trait is async, batched and has a commit, so a networked
//! backend (PostgreSQL, for the cluster) fits behind the same thread.

pub mod backend;
pub mod memory;
pub(crate) mod migrate;
pub mod postgres;
pub mod records;
pub mod sled_backend;
mod thread;

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

pub use backend::{Backend, Write};

/// The kinds of record, one tree each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    /// bare JID -> `UserRecord`
    Users,
    /// client id -> `ClientRecord`
    Clients,
    /// SHA-256(token) -> `TokenRecord`
    Tokens,
    /// expires-at (u64 BE) ++ SHA-256(token) -> nothing: the expiry index.
    TokenExpiry,
    /// Server-wide values (the layout version, the key that signs anti-CSRF values).
    Meta,
    /// MQTT retained messages: `domain NUL topic` -> `StoredFrame`.
    Retained,
    /// MQTT persistent sessions: `domain NUL session-key` -> `SessionRecord`.
    Sessions,
    /// MQTT messages queued for persistent sessions, and their incoming
    /// QoS 2 packet ids: `domain NUL session-key NUL …`.
    MqttQueue,
    /// XMPP offline messages: `bare JID NUL time seq` -> `OfflineRecord`.
    Offline,
    /// XMPP rosters: `owner NUL contact` -> `RosterItem`.
    Roster,
    /// XMPP block lists (XEP-0191): `owner NUL jid` -> nothing.
    Blocklist,
    /// XMPP message archives (XEP-0313): `owner NUL id (u64 BE)` ->
    /// `ArchivedMessage`.
    Archive,
    /// XMPP archiving preferences: `owner` -> `Prefs`.
    MamPrefs,
    /// XMPP account data kept as XML (XEP-0049 private storage, XEP-0054
    /// vCard): `owner NUL kind NUL key` -> `StoredXml`.
    AccountXml,
    /// XEP-0045 rooms that persist: `room JID` -> the room's record.
    MucRooms,
    /// XEP-0163 PEP nodes of accounts: `owner NUL node` -> the node's record.
    Pep,
    /// The XEP-0060 service: `m NUL host NUL node` -> the node's record,
    /// `i NUL host NUL node NUL seq` -> one item.
    Pubsub,
}

impl Tree {
    pub const ALL: [Tree; 17] = [
        Tree::Users,
        Tree::Clients,
        Tree::Tokens,
        Tree::TokenExpiry,
        Tree::Meta,
        Tree::Retained,
        Tree::Sessions,
        Tree::MqttQueue,
        Tree::Offline,
        Tree::Roster,
        Tree::Blocklist,
        Tree::Archive,
        Tree::MamPrefs,
        Tree::AccountXml,
        Tree::MucRooms,
        Tree::Pep,
        Tree::Pubsub,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tree::Users => "users",
            Tree::Clients => "clients",
            Tree::Tokens => "tokens",
            Tree::TokenExpiry => "token_expiry",
            Tree::Meta => "meta",
            Tree::Retained => "retained",
            Tree::Sessions => "sessions",
            Tree::MqttQueue => "mqtt_queue",
            Tree::Offline => "offline",
            Tree::Roster => "roster",
            Tree::Blocklist => "blocklist",
            Tree::Archive => "archive",
            Tree::MamPrefs => "mam_prefs",
            Tree::AccountXml => "account_xml",
            Tree::MucRooms => "muc_rooms",
            Tree::Pep => "pep",
            Tree::Pubsub => "pubsub",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O: {0}")]
    Backend(String),
    #[error("store record in tree {tree} is corrupt or of an unknown version")]
    Corrupt { tree: &'static str },
    #[error("the store at {path} is in use by another process (is a server running?)")]
    Locked { path: String },
    #[error("the store is closed")]
    Closed,
    #[error("store: {0}")]
    Unsupported(String),
}

pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Keys `from <= key < to`, at most `limit`, ascending or (`reverse`)
/// descending: one page of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub from: Vec<u8>,
    pub to: Vec<u8>,
    pub limit: usize,
    pub reverse: bool,
}

/// Which backend the `store` config key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// sled in `data_dir/store` (the default).
    Sled,
    /// In memory only: for tests and throw-away runs.
    Memory,
    /// PostgreSQL at this URL (which may hold a password: never shown).
    Postgres(PgUrl),
}

/// A PostgreSQL connection string; its `Debug` hides it (it may carry a
/// password, and configs are printed). With it, how many connections may
/// read beside the one that writes (`store_readers`).
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(pub String, pub usize);

/// `store_readers` when the config does not say.
pub const DEFAULT_READERS: usize = 4;

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgUrl(…)")
    }
}

impl StoreKind {
    /// Parses the config value; `Err` is the problem, phrased for an operator.
    pub fn parse(s: &str) -> Result<StoreKind, String> {
        match s {
            "sled" => Ok(StoreKind::Sled),
            "memory" => Ok(StoreKind::Memory),
            p if p.starts_with("postgres://") || p.starts_with("postgresql://") => {
                p.parse::<tokio_postgres::Config>()
                    .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
                Ok(StoreKind::Postgres(PgUrl(p.to_string(), DEFAULT_READERS)))
            }
            _ => Err("unknown store; use \"sled\", \"memory\" or a postgres:// URL".to_string()),
        }
    }
}

/// A request to the store thread.
pub(crate) enum Op {
    Write(Write),
    Get(
        Tree,
        Vec<u8>,
        oneshot::Sender<Result<Option<Vec<u8>>, StoreError>>,
    ),
    /// Remove, returning the old value.
    Take(
        Tree,
        Vec<u8>,
        oneshot::Sender<Result<Option<Vec<u8>>, StoreError>>,
    ),
    ScanPrefix(
        Tree,
        Vec<u8>,
        oneshot::Sender<Result<Vec<KeyValue>, StoreError>>,
    ),
    ScanBelow(
        Tree,
        Vec<u8>,
        usize,
        oneshot::Sender<Result<Vec<KeyValue>, StoreError>>,
    ),
    ScanRange(
        Tree,
        KeyRange,
        oneshot::Sender<Result<Vec<KeyValue>, StoreError>>,
    ),
    CountPrefix(
        Tree,
        Vec<u8>,
        usize,
        oneshot::Sender<Result<usize, StoreError>>,
    ),
    Len(Tree, oneshot::Sender<Result<usize, StoreError>>),
    Barrier(oneshot::Sender<Result<(), StoreError>>),
}

/// The handle every part of the server holds (cheap to clone). See the
/// module docs.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::UnboundedSender<Op>,
    /// Joined when the last handle goes, so the backend is closed (sled's
    /// lock released, everything flushed) before, say, a reopen.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Records in the counted trees, kept by the store thread.
    counts: thread::Counts,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The sender goes with `self`, but only after this body: close the
        // channel by swapping in a dead one, then wait for the thread.
        let (dead, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, dead));
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Store {
    /// Opens the configured backend (in `data_dir` for sled) on its own
    /// thread, bringing an older layout up to date. Blocking: call it from
    /// `spawn_blocking` or outside a runtime.
    pub fn open(kind: &StoreKind, data_dir: &Path) -> Result<Store, StoreError> {
        let backend: Box<dyn Backend> = match kind {
            StoreKind::Sled => Box::new(sled_backend::SledBackend::open(data_dir)?),
            StoreKind::Memory => Box::new(memory::MemoryBackend::default()),
            StoreKind::Postgres(url) => Box::new(postgres::PgBackend::with_readers(&url.0, url.1)),
        };
        let store = Store::with_backend(backend);
        migrate::to_current(&store)?;
        Ok(store)
    }

    /// A store over a fresh in-memory backend (unit tests).
    pub fn memory() -> Store {
        Store::with_backend(Box::new(memory::MemoryBackend::default()))
    }

    /// Starts the store thread over `backend`.
    pub fn with_backend(backend: Box<dyn Backend>) -> Store {
        let (tx, rx) = mpsc::unbounded_channel();
        let counts = thread::Counts::default();
        let c = counts.clone();
        let thread = std::thread::Builder::new()
            .name("petrel-store".into())
            .spawn(move || thread::run(backend, rx, c))
            .expect("the store thread starts");
        Store {
            inner: Arc::new(Inner {
                tx,
                thread: Mutex::new(Some(thread)),
                counts,
            }),
        }
    }

    /// Records held in the counted trees (offline and archived messages),
    /// by tree name.
    pub fn records(&self) -> Vec<(&'static str, u64)> {
        thread::COUNTED
            .iter()
            .zip(self.inner.counts.iter())
            .map(|(t, n)| (t.name(), n.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }

    fn send(&self, op: Op) {
        // The thread only stops once every handle is gone.
        let _ = self.inner.tx.send(op);
    }

    /// Writes `value` under `key` (queued; never waits).
    pub fn put(&self, tree: Tree, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.send(Op::Write(Write::Put(tree, key.into(), value.into())));
    }

    /// Deletes `key` (queued; never waits).
    pub fn delete(&self, tree: Tree, key: impl Into<Vec<u8>>) {
        self.send(Op::Write(Write::Delete(tree, key.into())));
    }

    /// Deletes every key starting with `prefix` (queued; never waits).
    pub fn delete_prefix(&self, tree: Tree, prefix: impl Into<Vec<u8>>) {
        self.send(Op::Write(Write::DeletePrefix(tree, prefix.into())));
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx));
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    fn ask_blocking<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx));
        // Panics on an async worker thread: blocking there is a bug.
        rx.blocking_recv().unwrap_or(Err(StoreError::Closed))
    }

    /// Resolves once every write queued before it is durable.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        self.ask(Op::Barrier).await
    }

    pub async fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.ask(|tx| Op::Get(tree, key.to_vec(), tx)).await
    }

    /// Removes `key`, returning what it held.
    pub async fn take(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.ask(|tx| Op::Take(tree, key.to_vec(), tx)).await
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub async fn scan_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.ask(|tx| Op::ScanPrefix(tree, prefix.to_vec(), tx))
            .await
    }

    /// Entries with keys `< end`, in key order, at most `limit` of them.
    pub async fn scan_below(
        &self,
        tree: Tree,
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.ask(|tx| Op::ScanBelow(tree, end.to_vec(), limit, tx))
            .await
    }

    /// One page of a key range (see [`KeyRange`]).
    pub async fn scan_range(
        &self,
        tree: Tree,
        range: KeyRange,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.ask(|tx| Op::ScanRange(tree, range, tx)).await
    }

    /// How many keys start with `prefix`, counting at most `limit`.
    pub async fn count_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.ask(|tx| Op::CountPrefix(tree, prefix.to_vec(), limit, tx))
            .await
    }

    pub async fn len(&self, tree: Tree) -> Result<usize, StoreError> {
        self.ask(|tx| Op::Len(tree, tx)).await
    }

    /// [`Store::barrier`] on a blocking thread.
    pub fn barrier_blocking(&self) -> Result<(), StoreError> {
        self.ask_blocking(Op::Barrier)
    }

    /// [`Store::get`] on a blocking thread.
    pub fn get_blocking(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.ask_blocking(|tx| Op::Get(tree, key.to_vec(), tx))
    }

    /// [`Store::take`] on a blocking thread.
    pub fn take_blocking(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.ask_blocking(|tx| Op::Take(tree, key.to_vec(), tx))
    }

    /// [`Store::scan_prefix`] on a blocking thread.
    pub fn scan_prefix_blocking(
        &self,
        tree: Tree,
        prefix: &[u8],
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.ask_blocking(|tx| Op::ScanPrefix(tree, prefix.to_vec(), tx))
    }

    /// [`Store::scan_range`] on a blocking thread.
    pub fn scan_range_blocking(
        &self,
        tree: Tree,
        range: KeyRange,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.ask_blocking(|tx| Op::ScanRange(tree, range, tx))
    }

    /// [`Store::scan_below`] on a blocking thread.
    pub fn scan_below_blocking(
        &self,
        tree: Tree,
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.ask_blocking(|tx| Op::ScanBelow(tree, end.to_vec(), limit, tx))
    }

    /// [`Store::len`] on a blocking thread.
    pub fn len_blocking(&self, tree: Tree) -> Result<usize, StoreError> {
        self.ask_blocking(|tx| Op::Len(tree, tx))
    }
}

#[cfg(test)]
mod tests;

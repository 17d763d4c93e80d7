//! Per-account values from the store (a block list, archive preferences)
//! kept in memory while the account has a session online, so the routing
//! path reads no disk for online users.
//!
//! A load from the store and a change of the same account are serialized
//! by a striped lock, and a change replaces the value in memory under it,
//! so memory never holds a value older than the store's. When the
//! account's last session closes the value leaves memory (unless a session
//! came back meanwhile).

use std::future::Future;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{Mutex, MutexGuard};

use crate::store::StoreError;

pub struct AccountCache<T> {
    locks: Vec<Mutex<()>>,
    values: DashMap<String, Arc<T>>,
}

impl<T: Send + Sync + 'static> Default for AccountCache<T> {
    fn default() -> Self {
        AccountCache {
            locks: (0..64).map(|_| Mutex::new(())).collect(),
            values: DashMap::new(),
        }
    }
}

impl<T: Send + Sync + 'static> AccountCache<T> {
    /// The account's update lock: hold it across a read-modify-write.
    pub async fn lock(&self, owner: &str) -> MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        owner.hash(&mut h);
        self.locks[(h.finish() as usize) % self.locks.len()]
            .lock()
            .await
    }

    /// The value in memory, if there is one.
    pub fn cached(&self, owner: &str) -> Option<Arc<T>> {
        self.values.get(owner).map(|v| v.clone())
    }

    /// The account's value: from memory, or from `load` — kept in memory
    /// when `online` says the account has a session.
    pub async fn get<F, Fut>(
        &self,
        owner: &str,
        load: F,
        online: impl Fn() -> bool,
    ) -> Result<Arc<T>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        if let Some(v) = self.cached(owner) {
            return Ok(v);
        }
        let _g = self.lock(owner).await;
        if let Some(v) = self.cached(owner) {
            return Ok(v);
        }
        let v = Arc::new(load().await?);
        if online() {
            self.values.insert(owner.to_owned(), v.clone());
        }
        Ok(v)
    }

    /// After a change stored under [`AccountCache::lock`]: memory follows,
    /// if it holds the account.
    pub fn changed(&self, owner: &str, value: Arc<T>) {
        if let Some(mut e) = self.values.get_mut(owner) {
            *e = value;
        }
    }

    /// The account's last session closed: its value leaves memory unless
    /// `online` says a session came back.
    pub async fn forget(&self, owner: &str, online: impl Fn() -> bool) {
        if !self.values.contains_key(owner) {
            return;
        }
        let _g = self.lock(owner).await;
        if !online() {
            self.values.remove(owner);
        }
    }

    /// Accounts held in memory.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

//! Tokens in a store shared by several nodes (a cluster on PostgreSQL):
//! each node keeps the live tokens in memory, loaded at start; a token
//! issued on another node since is read from the store the first time it
//! is presented, and what another node revoked or changed is applied when
//! the cluster says so ([`crate::cluster`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::tokens::{hash_token, LiveToken, ID_BYTES};
use super::{AuthCore, BareJid};
use crate::store::records;
use crate::store::Tree;

impl AuthCore {
    /// The store is shared with other nodes: unknown tokens are looked up.
    pub fn set_shared_store(&self) {
        self.shared_store.store(true, Ordering::Relaxed);
    }

    fn shared(&self) -> bool {
        self.shared_store.load(Ordering::Relaxed)
    }

    fn adopt(&self, hash: [u8; 32], value: &[u8]) {
        if self.tokens.contains_key(&hash) {
            return;
        }
        let Ok(rec) = records::decode_token(value) else {
            return;
        };
        if let Some(live) = LiveToken::new(hash, rec) {
            self.track_expiry(live.record.expires_at, hash);
            let live = Arc::new(live);
            self.index_fast(&live);
            self.tokens.insert(hash, live);
        }
    }

    /// Before a login: a token this node does not know may have been
    /// issued on another one.
    pub(super) async fn fetch_token(&self, text: &str) {
        if !self.shared() {
            return;
        }
        let hash = hash_token(text.trim());
        if self.tokens.contains_key(&hash) {
            return;
        }
        match self.store.get(Tree::Tokens, &hash).await {
            Ok(Some(v)) => self.adopt(hash, &v),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "could not look a token up in the store"),
        }
    }

    /// [`Self::fetch_token`] for a token given by text or id, on a blocking
    /// thread (revocation by `ctl` or the revocation endpoint).
    pub(super) fn fetch_token_blocking(&self, token_or_id: &str) {
        if !self.shared() {
            return;
        }
        let found = if token_or_id.len() == ID_BYTES * 2 {
            match hex::decode(token_or_id) {
                Ok(prefix) => self.store.scan_prefix_blocking(Tree::Tokens, &prefix),
                Err(_) => Ok(Vec::new()),
            }
        } else {
            Ok(Vec::new())
        };
        let by_text = hash_token(token_or_id);
        let found = found.and_then(|mut v| {
            if let Some(x) = self.store.get_blocking(Tree::Tokens, &by_text)? {
                v.push((by_text.to_vec(), x));
            }
            Ok(v)
        });
        match found {
            Ok(list) => {
                for (k, v) in list {
                    if let Ok(hash) = <[u8; 32]>::try_from(k.as_slice()) {
                        self.adopt(hash, &v);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "could not look a token up in the store"),
        }
    }

    /// Another node revoked the token with this key.
    pub fn token_revoked_elsewhere(&self, key: u64) {
        for e in self.tokens.iter() {
            if e.value().key() == key {
                e.value().revoked.store(true, Ordering::Release);
            }
        }
    }

    /// Another node deleted the account or changed its password: its
    /// tokens are read again from the store when next presented.
    pub fn account_changed_elsewhere(&self, account: &BareJid) {
        self.tokens.retain(|_, t| t.owner != *account);
    }
}

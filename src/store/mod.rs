//! Durable state behind one small trait.
//!
//! Each kind of record lives in its own [`Tree`]. Values are versioned binary
//! encodings (see [`records`]): one version byte, then postcard. The rest of the
//! code sees only [`Store`], so a shared backend can serve a cluster later; today
//! [`SledStore`] keeps everything in a sled database in the data directory.
//!
//! Durability: `insert`/`remove` reach sled's log in memory; callers that are about
//! to acknowledge a write to a client (a token issued, a user registered, a QoS 1
//! PUBACK) call [`Store::flush`] first, which returns once the log is on disk.

pub mod records;

use std::path::Path;

/// The kinds of record, one tree each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    /// bare JID -> `UserRecord`
    Users,
    /// client id -> `ClientRecord`
    Clients,
    /// SHA-256(token) -> `TokenRecord`
    Tokens,
    /// expires-at (u64 BE) ++ SHA-256(token) -> empty; what the sweeper walks.
    TokenExpiry,
    /// Server-wide values (e.g. the key that signs anti-CSRF values).
    Meta,
    /// MQTT retained messages.
    Retained,
    /// MQTT persistent sessions.
    Sessions,
    /// Messages waiting for an offline recipient.
    Offline,
    /// XMPP rosters.
    Roster,
}

impl Tree {
    pub const ALL: [Tree; 9] = [
        Tree::Users,
        Tree::Clients,
        Tree::Tokens,
        Tree::TokenExpiry,
        Tree::Meta,
        Tree::Retained,
        Tree::Sessions,
        Tree::Offline,
        Tree::Roster,
    ];

    fn name(self) -> &'static str {
        match self {
            Tree::Users => "users",
            Tree::Clients => "clients",
            Tree::Tokens => "tokens",
            Tree::TokenExpiry => "token_expiry",
            Tree::Meta => "meta",
            Tree::Retained => "retained",
            Tree::Sessions => "sessions",
            Tree::Offline => "offline",
            Tree::Roster => "roster",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O: {0}")]
    Backend(String),
    #[error("store record in tree {tree} is corrupt or of an unknown version")]
    Corrupt { tree: &'static str },
    #[error("the store at {path} is in use by another process (is a server running?)")]
    Locked { path: String },
}

pub type KeyValue = (Vec<u8>, Vec<u8>);

/// What the server needs from a key-value backend.
pub trait Store: Send + Sync + 'static {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Returns the old value, if there was one.
    fn remove(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError>;
    /// Entries with keys `< end`, in key order, at most `limit` of them.
    fn scan_below(&self, tree: Tree, end: &[u8], limit: usize)
        -> Result<Vec<KeyValue>, StoreError>;
    fn len(&self, tree: Tree) -> Result<usize, StoreError>;
    /// Returns once everything written so far is durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// sled, one sled tree per [`Tree`].
pub struct SledStore {
    db: sled::Db,
    trees: Vec<sled::Tree>,
}

impl SledStore {
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let path = dir.join("store");
        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.raw_os_error() == Some(11) =>
                {
                    StoreError::Locked {
                        path: path.display().to_string(),
                    }
                }
                other => {
                    let text = other.to_string();
                    if text.contains("lock") {
                        StoreError::Locked {
                            path: path.display().to_string(),
                        }
                    } else {
                        StoreError::Backend(text)
                    }
                }
            })?;
        let trees = Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()).map_err(backend))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SledStore { db, trees })
    }

    fn tree(&self, t: Tree) -> &sled::Tree {
        let i = Tree::ALL
            .iter()
            .position(|x| *x == t)
            .expect("every tree is opened");
        &self.trees[i]
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(tree)
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree(tree).insert(key, value).map_err(backend)?;
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(tree)
            .remove(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        self.tree(tree)
            .scan_prefix(prefix)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn scan_below(
        &self,
        tree: Tree,
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.tree(tree)
            .range(..end)
            .take(limit)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn len(&self, tree: Tree) -> Result<usize, StoreError> {
        Ok(self.tree(tree).len())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_scans_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.insert(Tree::TokenExpiry, &[0, 2], b"").unwrap();
            s.insert(Tree::TokenExpiry, &[0, 1], b"").unwrap();
            s.insert(Tree::TokenExpiry, &[0, 9], b"").unwrap();
            s.insert(Tree::Users, b"a@x", b"1").unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            s.get(Tree::Users, b"a@x").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        let below: Vec<_> = s
            .scan_below(Tree::TokenExpiry, &[0, 5], 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(below, vec![vec![0, 1], vec![0, 2]]);
        assert_eq!(s.len(Tree::TokenExpiry).unwrap(), 3);
        assert_eq!(
            s.remove(Tree::Users, b"a@x").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(s.get(Tree::Users, b"a@x").unwrap(), None);
    }

    #[test]
    fn second_open_is_refused_while_first_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let _a = SledStore::open(dir.path()).unwrap();
        match SledStore::open(dir.path()) {
            Err(StoreError::Locked { .. }) => {}
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("second open succeeded"),
        }
    }
}

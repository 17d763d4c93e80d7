//! The embedded default: sled in `data_dir/store`, one sled tree per
//! [`Tree`]. Writes reach sled's log in memory; [`Backend::commit`] flushes
//! it to disk.

use std::path::Path;

use super::backend::{Backend, BackendFuture, Write};
use super::{KeyRange, KeyValue, StoreError, Tree};

pub struct SledBackend {
    db: sled::Db,
    trees: Vec<sled::Tree>,
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn done<'a, T: 'a>(v: Result<T, StoreError>) -> BackendFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl SledBackend {
    /// Opens (or creates) the database; refuses one another process holds.
    /// sled lets go of its file lock a moment after its last handle is
    /// dropped (its flusher thread ends on its own), so a lock held at the
    /// first try is tried again for a short while (a restart in-process).
    pub fn open(dir: &Path) -> Result<SledBackend, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        loop {
            match SledBackend::try_open(dir) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                other => return other,
            }
        }
    }

    fn try_open(dir: &Path) -> Result<SledBackend, StoreError> {
        let path = dir.join("store");
        let locked = || StoreError::Locked {
            path: path.display().to_string(),
        };
        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.raw_os_error() == Some(11) =>
                {
                    locked()
                }
                other => {
                    let text = other.to_string();
                    if text.contains("lock") {
                        locked()
                    } else {
                        StoreError::Backend(text)
                    }
                }
            })?;
        let trees = Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()).map_err(backend))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SledBackend { db, trees })
    }

    fn tree(&self, t: Tree) -> &sled::Tree {
        &self.trees[t.index()]
    }

    fn apply(&self, batch: &[Write]) -> Result<(), StoreError> {
        for w in batch {
            match w {
                Write::Put(t, k, v) => {
                    self.tree(*t)
                        .insert(k.as_slice(), v.as_slice())
                        .map_err(backend)?;
                }
                Write::Delete(t, k) => {
                    self.tree(*t).remove(k.as_slice()).map_err(backend)?;
                }
                Write::DeletePrefix(t, p) => {
                    let tree = self.tree(*t);
                    for k in tree.scan_prefix(p).keys() {
                        tree.remove(k.map_err(backend)?).map_err(backend)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn collect(
        iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    ) -> Result<Vec<KeyValue>, StoreError> {
        iter.map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }
}

impl Backend for SledBackend {
    fn write<'a>(&'a mut self, batch: &'a [Write]) -> BackendFuture<'a, ()> {
        done(self.apply(batch))
    }

    fn commit(&mut self) -> BackendFuture<'_, ()> {
        done(self.db.flush().map(|_| ()).map_err(backend))
    }

    fn get<'a>(&'a mut self, tree: Tree, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
        done(
            self.tree(tree)
                .get(key)
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(backend),
        )
    }

    fn scan_prefix<'a>(
        &'a mut self,
        tree: Tree,
        prefix: &'a [u8],
    ) -> BackendFuture<'a, Vec<KeyValue>> {
        done(Self::collect(self.tree(tree).scan_prefix(prefix)))
    }

    fn scan_below<'a>(
        &'a mut self,
        tree: Tree,
        end: &'a [u8],
        limit: usize,
    ) -> BackendFuture<'a, Vec<KeyValue>> {
        done(Self::collect(self.tree(tree).range(..end).take(limit)))
    }

    fn scan_range<'a>(
        &'a mut self,
        tree: Tree,
        r: &'a KeyRange,
    ) -> BackendFuture<'a, Vec<KeyValue>> {
        let range = self.tree(tree).range(r.from.as_slice()..r.to.as_slice());
        done(if r.reverse {
            Self::collect(range.rev().take(r.limit))
        } else {
            Self::collect(range.take(r.limit))
        })
    }

    fn count_prefix<'a>(
        &'a mut self,
        tree: Tree,
        prefix: &'a [u8],
        limit: usize,
    ) -> BackendFuture<'a, usize> {
        let mut n = 0;
        for k in self.tree(tree).scan_prefix(prefix).keys().take(limit) {
            if let Err(e) = k {
                return done(Err(backend(e)));
            }
            n += 1;
        }
        done(Ok(n))
    }

    fn len(&mut self, tree: Tree) -> BackendFuture<'_, usize> {
        done(Ok(self.tree(tree).len()))
    }
}

//! The in-memory backend: one ordered map per tree. For unit tests and
//! throw-away runs (`store = "memory"`); nothing survives the process.

use std::collections::BTreeMap;

use super::backend::{Backend, BackendFuture, Write};
use super::{KeyRange, KeyValue, Tree};

#[derive(Default)]
pub struct MemoryBackend {
    trees: [BTreeMap<Vec<u8>, Vec<u8>>; Tree::ALL.len()],
}

fn ready<'a, T: 'a>(v: T) -> BackendFuture<'a, T> {
    Box::pin(std::future::ready(Ok(v)))
}

impl MemoryBackend {
    fn tree(&mut self, t: Tree) -> &mut BTreeMap<Vec<u8>, Vec<u8>> {
        &mut self.trees[t.index()]
    }
}

impl Backend for MemoryBackend {
    fn write<'a>(&'a mut self, batch: &'a [Write]) -> BackendFuture<'a, ()> {
        for w in batch {
            match w {
                Write::Put(t, k, v) => {
                    self.tree(*t).insert(k.clone(), v.clone());
                }
                Write::Delete(t, k) => {
                    self.tree(*t).remove(k);
                }
                Write::DeletePrefix(t, p) => self.tree(*t).retain(|k, _| !k.starts_with(p)),
            }
        }
        ready(())
    }

    fn commit(&mut self) -> BackendFuture<'_, ()> {
        ready(())
    }

    fn get<'a>(&'a mut self, tree: Tree, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
        ready(self.tree(tree).get(key).cloned())
    }

    fn scan_prefix<'a>(
        &'a mut self,
        tree: Tree,
        prefix: &'a [u8],
    ) -> BackendFuture<'a, Vec<KeyValue>> {
        let v = self
            .tree(tree)
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ready(v)
    }

    fn scan_below<'a>(
        &'a mut self,
        tree: Tree,
        end: &'a [u8],
        limit: usize,
    ) -> BackendFuture<'a, Vec<KeyValue>> {
        let v = self
            .tree(tree)
            .range(..end.to_vec())
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ready(v)
    }

    fn scan_range<'a>(
        &'a mut self,
        tree: Tree,
        r: &'a KeyRange,
    ) -> BackendFuture<'a, Vec<KeyValue>> {
        let range = self.tree(tree).range(r.from.clone()..r.to.clone());
        let pick = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        let v = if r.reverse {
            range.rev().take(r.limit).map(pick).collect()
        } else {
            range.take(r.limit).map(pick).collect()
        };
        ready(v)
    }

    fn count_prefix<'a>(
        &'a mut self,
        tree: Tree,
        prefix: &'a [u8],
        limit: usize,
    ) -> BackendFuture<'a, usize> {
        let n = self
            .tree(tree)
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .count();
        ready(n)
    }

    fn len(&mut self, tree: Tree) -> BackendFuture<'_, usize> {
        ready(self.tree(tree).len())
    }
}

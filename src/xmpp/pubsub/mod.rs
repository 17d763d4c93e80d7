//! The XEP-0060 publish-subscribe service on `pubsub.<host>` (see
//! [`super::services`]): nodes any account of the hosts may create, with
//! explicit subscriptions, affiliations (owner, publisher, member, outcast),
//! the node config form, XEP-0059 paging of items, and notifications to the
//! subscribed JIDs.
//!
//! Nodes live in memory (`DashMap`, one async lock per node for its
//! read-modify-write) and in the store's `pubsub` tree: `m NUL host NUL
//! node` → the node's record (config, affiliations, subscriptions),
//! `i NUL host NUL node NUL seq` → one item, so a publish writes one item
//! and a page reads a key range. All nodes are loaded at start; items stay
//! in the store. A publish is acknowledged after the store barrier.
//!
//! Limits (`[pubsub]`): `max_nodes` per host, `max_items` per node,
//! `max_subscriptions` per node, `max_page` items per page.

pub mod bridged;
mod disco;
mod iq;
pub mod state;

use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use self::state::{NodeRecord, ServiceNode};
use super::pep::node::Item;
use crate::store::{records, Store, StoreError, Tree};

pub use iq::FEATURES;

/// The `[pubsub]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PubsubConfig {
    /// Whether `pubsub.<host>` is served.
    pub enabled: bool,
    /// Nodes one host's service may hold.
    pub max_nodes: usize,
    /// Items one node may keep (`pubsub#max_items` at most this).
    pub max_items: usize,
    /// Subscriptions one node may have.
    pub max_subscriptions: usize,
    /// Items in one page of an items request.
    pub max_page: usize,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        PubsubConfig {
            enabled: true,
            max_nodes: 10_000,
            max_items: 1000,
            max_subscriptions: 10_000,
            max_page: 100,
        }
    }
}

impl PubsubConfig {
    /// Checks the ranges; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, v) in [
            ("max_nodes", self.max_nodes),
            ("max_items", self.max_items),
            ("max_subscriptions", self.max_subscriptions),
            ("max_page", self.max_page),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

/// An item as stored: the PEP item plus who published it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredItem {
    pub item: Item,
    pub publisher: String,
}

type NodeCell = Arc<tokio::sync::Mutex<ServiceNode>>;

/// The service's nodes, for every host.
pub struct Pubsub {
    store: Store,
    pub config: PubsubConfig,
    /// `host NUL node` → the node.
    nodes: DashMap<String, NodeCell>,
}

fn node_key(host: &str, node: &str) -> String {
    format!("{host}\0{node}")
}

fn meta_key(host: &str, node: &str) -> Vec<u8> {
    format!("m\0{host}\0{node}").into_bytes()
}

fn items_prefix(host: &str, node: &str) -> Vec<u8> {
    format!("i\0{host}\0{node}\0").into_bytes()
}

fn item_key(host: &str, node: &str, seq: u64) -> Vec<u8> {
    let mut k = items_prefix(host, node);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Pubsub {
    pub fn new(store: Store, config: PubsubConfig) -> Pubsub {
        Pubsub {
            store,
            config,
            nodes: DashMap::new(),
        }
    }

    /// Loads every node (records and item ids) from the store.
    pub async fn load(&self) -> Result<usize, StoreError> {
        for (k, v) in self.store.scan_prefix(Tree::Pubsub, b"m\0").await? {
            let text = String::from_utf8_lossy(&k[2..]).into_owned();
            let Some((host, node)) = text.split_once('\0') else {
                continue;
            };
            let rec: NodeRecord = match records::decode("pubsub", &v) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, host, node, "a pubsub node record is unreadable; skipped");
                    continue;
                }
            };
            let prefix = items_prefix(host, node);
            let mut items = Vec::new();
            for (ik, iv) in self.store.scan_prefix(Tree::Pubsub, &prefix).await? {
                let Some(seq) = ik[prefix.len()..].try_into().ok().map(u64::from_be_bytes) else {
                    continue;
                };
                if let Ok(s) = records::decode::<StoredItem>("pubsub", &iv) {
                    items.push((seq, s.item.id));
                }
            }
            let n = ServiceNode::from_record(rec, items);
            self.nodes
                .insert(node_key(host, node), Arc::new(tokio::sync::Mutex::new(n)));
        }
        Ok(self.nodes.len())
    }

    pub(crate) fn node(&self, host: &str, node: &str) -> Option<NodeCell> {
        self.nodes.get(&node_key(host, node)).map(|c| c.clone())
    }

    /// The names of a host's nodes.
    pub(crate) fn names(&self, host: &str) -> Vec<String> {
        let prefix = format!("{host}\0");
        let mut v: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|e| e.key().strip_prefix(&prefix).map(str::to_string))
            .collect();
        v.sort();
        v
    }

    fn count(&self, host: &str) -> usize {
        let prefix = format!("{host}\0");
        self.nodes
            .iter()
            .filter(|e| e.key().starts_with(&prefix))
            .count()
    }

    /// Adds a node unless the name is taken or the host is full.
    pub(crate) fn insert(&self, host: &str, node: &str, n: ServiceNode) -> Result<(), bool> {
        if self.count(host) >= self.config.max_nodes {
            return Err(false);
        }
        match self.nodes.entry(node_key(host, node)) {
            dashmap::Entry::Occupied(_) => Err(true),
            dashmap::Entry::Vacant(v) => {
                self.store.put(
                    Tree::Pubsub,
                    meta_key(host, node),
                    records::encode(&n.record()),
                );
                v.insert(Arc::new(tokio::sync::Mutex::new(n)));
                Ok(())
            }
        }
    }

    pub(crate) fn save_meta(&self, host: &str, node: &str, n: &ServiceNode) {
        self.store.put(
            Tree::Pubsub,
            meta_key(host, node),
            records::encode(&n.record()),
        );
    }

    pub(crate) fn put_item(&self, host: &str, node: &str, seq: u64, item: &StoredItem) {
        self.store.put(
            Tree::Pubsub,
            item_key(host, node, seq),
            records::encode(item),
        );
    }

    pub(crate) fn delete_items(&self, host: &str, node: &str, seqs: &[u64]) {
        for s in seqs {
            self.store.delete(Tree::Pubsub, item_key(host, node, *s));
        }
    }

    pub(crate) async fn get_item(
        &self,
        host: &str,
        node: &str,
        seq: u64,
    ) -> Result<Option<StoredItem>, StoreError> {
        match self
            .store
            .get(Tree::Pubsub, &item_key(host, node, seq))
            .await?
        {
            Some(v) => Ok(records::decode("pubsub", &v).ok()),
            None => Ok(None),
        }
    }

    /// Removes a node with its items.
    pub(crate) fn remove(&self, host: &str, node: &str) {
        self.nodes.remove(&node_key(host, node));
        self.store.delete(Tree::Pubsub, meta_key(host, node));
        self.store
            .delete_prefix(Tree::Pubsub, items_prefix(host, node));
    }

    pub(crate) async fn barrier(&self) -> Result<(), StoreError> {
        self.store.barrier().await
    }
}

//! Wills that outlive their node (a cluster): a connection's will is
//! written to the shared store when it connects (`Sessions` tree, key
//! `\x01will NUL node NUL session-key NUL generation`: outside the domain
//! keys that session records use) and deleted when its connection ends —
//! published then or suppressed, as on one node. A will still stored
//! belonged to a node that died with its connections open: the node that
//! adopts the dead node's sessions publishes them, and a node that
//! restarts publishes the ones its previous life left.
//!
//! The Will Delay Interval is not waited for then: the connection is
//! known gone, and its session now lives on a node that did not see it go.

use std::sync::Arc;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::broker::{session_key, Broker, Domain, Routed, Slot};
use super::codec::{self, LastWill, Packet, Publish, QoS, Version};
use crate::store::{records, StoreError, Tree};

const PREFIX: &[u8] = b"\x01will\x00";

/// A will to publish (its store key, its domain, the message).
pub type Orphan = (Vec<u8>, Arc<Domain>, Arc<Routed>);

/// Whether a `Sessions` key is a will's (not a session record).
pub fn is_will_key(k: &[u8]) -> bool {
    k.starts_with(PREFIX)
}

#[derive(Serialize, Deserialize)]
struct WillRecord {
    /// The PUBLISH the will becomes (v5 frame).
    frame: Vec<u8>,
}

fn node_prefix(node: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(node.as_bytes());
    k.push(0);
    k
}

fn will_key(node: &str, slot: &Slot, generation: u64) -> Vec<u8> {
    let mut k = node_prefix(node);
    k.extend_from_slice(slot.address().domain().as_bytes());
    k.push(0);
    k.extend_from_slice(session_key(slot).as_bytes());
    k.push(0);
    k.extend_from_slice(&generation.to_be_bytes());
    k
}

/// The PUBLISH a will becomes, and its delay.
pub fn will_publish(w: LastWill) -> (Publish, u32) {
    let delay = w.properties.will_delay_interval.unwrap_or(0);
    let mut props = w.properties;
    props.will_delay_interval = None;
    let p = Publish {
        dup: false,
        qos: w.qos,
        retain: w.retain,
        topic: w.topic,
        packet_id: 0,
        properties: props,
        payload: w.payload,
    };
    (p, delay)
}

impl Broker {
    /// Keeps a connection's will in the store (cluster nodes only).
    pub fn store_will(&self, slot: &Slot, generation: u64, will: &LastWill) {
        let Some(node) = &self.node else { return };
        let (mut p, _) = will_publish(will.clone());
        p.packet_id = u16::from(p.qos != QoS::AtMostOnce);
        let mut buf = BytesMut::new();
        if codec::encode(&Packet::Publish(p), Version::V5, &mut buf).is_ok() {
            let rec = WillRecord {
                frame: buf.to_vec(),
            };
            self.store().put(
                Tree::Sessions,
                will_key(node, slot, generation),
                records::encode(&rec),
            );
        }
    }

    /// The connection ended here: its will is this node's business now.
    pub fn forget_will(&self, slot: &Slot, generation: u64) {
        if let Some(node) = &self.node {
            self.store()
                .delete(Tree::Sessions, will_key(node, slot, generation));
        }
    }

    /// Takes the wills `node` left in the store (deleted from it): its
    /// connections died with it. Blocking (store reads).
    pub fn orphaned_wills(&self, node: &str) -> Result<Vec<Orphan>, StoreError> {
        let prefix = node_prefix(node);
        let mut out = Vec::new();
        for (k, v) in self.store().scan_prefix_blocking(Tree::Sessions, &prefix)? {
            let domain = k[prefix.len()..]
                .split(|b| *b == 0)
                .next()
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| self.domain(d).cloned());
            let Some(domain) = domain else {
                self.store().delete(Tree::Sessions, k);
                continue;
            };
            let Ok(rec) = records::decode::<WillRecord>("sessions", &v) else {
                self.store().delete(Tree::Sessions, k);
                continue;
            };
            let mut buf = BytesMut::from(&rec.frame[..]);
            if let Ok(Some(Packet::Publish(p))) =
                codec::decode(&mut buf, Some(Version::V5), usize::MAX)
            {
                out.push((k, domain, Arc::new(self.routed(p, 0))));
            }
        }
        Ok(out)
    }

    /// Publishes wills a dead node left (see [`Broker::orphaned_wills`]),
    /// here and on the other nodes; true once all are stored and taken.
    pub async fn publish_orphaned(self: &Arc<Self>, node: &str) -> bool {
        let b = self.clone();
        let n = node.to_string();
        let wills = match tokio::task::spawn_blocking(move || b.orphaned_wills(&n)).await {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                tracing::error!(node, error = %e, "could not read the wills a node left");
                return false;
            }
            Err(_) => return false,
        };
        let mut ok = true;
        for (key, domain, will) in &wills {
            if will.publish.retain {
                self.retain(domain, will);
            }
            self.publish(domain, will);
            if let Some(peers) = self.peers.get() {
                ok &= !peers.forward(&domain.name, will, true).await.failed;
            }
            // Published: not again (deleted after the publish, so a crash
            // in between publishes it twice rather than never).
            self.store().delete(Tree::Sessions, key.clone());
        }
        ok &= self.store().barrier().await.is_ok();
        if !wills.is_empty() {
            tracing::info!(node, wills = wills.len(), "published the wills a node left");
        }
        ok
    }
}

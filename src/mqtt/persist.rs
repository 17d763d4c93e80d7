//! What of MQTT survives a crash or restart: persistent sessions (their
//! subscriptions and expiry) and the QoS 1/2 messages queued for them.
//!
//! A session whose Session Expiry Interval is above zero has a record in the
//! `Sessions` tree (key `domain NUL client-id`). Each QoS 1/2 message routed to
//! such a session is written to the `Offline` tree (key `session-key NUL seq`) as
//! a PUBLISH frame before the publisher's PUBACK/PUBREC goes out, and deleted
//! when the subscriber acknowledges it. At start the broker rebuilds the
//! sessions, their subscriptions and their queues from both trees.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::broker::{Broker, InFlight, Queued, Routed, Slot, Stage};
use super::codec::{self, Packet, QoS, RetainHandling, SubscriptionOptions, Version};
use crate::store::{records, StoreError, Tree};

#[derive(Debug, Serialize, Deserialize)]
struct StoredSub {
    filter: String,
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
    id: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionRecord {
    expiry: u32,
    /// When the last connection ended (0 while connected).
    disconnected_at: u64,
    subscriptions: Vec<StoredSub>,
}

fn session_key(domain: &str, client_id: &str) -> Vec<u8> {
    let mut k = domain.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(client_id.as_bytes());
    k
}

fn offline_key(slot: &Slot, seq: u64) -> Vec<u8> {
    let mut k = session_key(&slot.domain, &slot.client_id);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Key of an incoming QoS 2 packet id held by a persistent session
/// (`session-key NUL 'q' id`: three bytes after the prefix, so the message
/// records' eight-byte sequence numbers never collide with it).
fn incoming_key(slot: &Slot, packet_id: u16) -> Vec<u8> {
    let mut k = session_key(&slot.domain, &slot.client_id);
    k.push(0);
    k.push(b'q');
    k.extend_from_slice(&packet_id.to_be_bytes());
    k
}

/// A queued message as its record stores it: the PUBLISH this session
/// receives (its QoS, retain flag and subscription identifiers), with DUP
/// and the packet id it was sent with once it was (1 before).
fn stored_frame(item: &Queued, dup: bool, packet_id: u16) -> Packet {
    let mut p = item.msg.publish.clone();
    p.qos = item.qos;
    p.retain = item.retain;
    p.dup = dup;
    p.packet_id = packet_id;
    p.properties.subscription_identifiers = item.sub_ids.clone();
    Packet::Publish(p)
}

fn qos_of(v: u8) -> QoS {
    QoS::from_u8(v).unwrap_or(QoS::AtMostOnce)
}

impl Broker {
    /// Writes (or, for an expiry of 0, deletes) the session's record. The caller
    /// flushes before acknowledging anything that depends on it.
    pub fn save_session(&self, slot: &Slot, connected: bool) -> Result<(), StoreError> {
        let key = session_key(&slot.domain, &slot.client_id);
        let st = slot.lock();
        if st.expiry == 0 {
            drop(st);
            // Most sessions never were persistent: don't write a tombstone for them.
            if self.store().get(Tree::Sessions, &key)?.is_some() {
                self.store().remove(Tree::Sessions, &key)?;
            }
            return Ok(());
        }
        let subscriptions = st
            .subscriptions
            .iter()
            .map(|(f, (o, id))| StoredSub {
                filter: f.clone(),
                qos: o.qos as u8,
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                retain_handling: o.retain_handling as u8,
                id: *id,
            })
            .collect();
        let rec = SessionRecord {
            expiry: st.expiry,
            disconnected_at: if connected { 0 } else { crate::auth::now() },
            subscriptions,
        };
        drop(st);
        self.store()
            .insert(Tree::Sessions, &key, &records::encode(&rec))
    }

    /// Deletes a session's record and its stored messages.
    pub fn forget_session(&self, slot: &Slot) -> Result<(), StoreError> {
        let key = session_key(&slot.domain, &slot.client_id);
        self.store().remove(Tree::Sessions, &key)?;
        let mut prefix = key;
        prefix.push(0);
        for (k, _) in self.store().scan_prefix(Tree::Offline, &prefix)? {
            self.store().remove(Tree::Offline, &k)?;
        }
        Ok(())
    }

    /// Stores a QoS 1/2 message queued for a persistent session; returns its
    /// sequence number (the key to delete on acknowledgement).
    pub fn store_queued(&self, slot: &Slot, item: &Queued) -> Result<u64, StoreError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.write_queued(slot, seq, &stored_frame(item, false, 1))?;
        Ok(seq)
    }

    /// A stored QoS 2 message was sent with `packet_id`: its record says so
    /// (DUP set, the real id), so that after a restart it is resent with the
    /// same id and the client can tell it from a new message (4.3.3).
    pub fn mark_sent(&self, slot: &Slot, seq: u64, packet_id: u16, item: &Queued) {
        self.rewrite_queued(slot, seq, &stored_frame(item, true, packet_id));
    }

    /// The client received a stored QoS 2 message (PUBREC): the record now
    /// holds only the PUBREL still owed, so a restart resends that, never the
    /// message again.
    pub fn mark_released(&self, slot: &Slot, seq: u64, packet_id: u16) {
        let rel = Packet::PubRel(codec::Ack {
            packet_id,
            reason_code: 0,
            properties: codec::Properties::default(),
        });
        self.rewrite_queued(slot, seq, &rel);
    }

    fn rewrite_queued(&self, slot: &Slot, seq: u64, p: &Packet) {
        if let Err(e) = self.write_queued(slot, seq, p) {
            tracing::error!(error = %e, "updating a stored message failed");
        }
    }

    /// Writes the record of queued message `seq` (a frame that cannot be
    /// encoded is not written).
    fn write_queued(&self, slot: &Slot, seq: u64, p: &Packet) -> Result<(), StoreError> {
        let mut buf = BytesMut::new();
        if codec::encode(p, Version::V5, &mut buf).is_ok() {
            self.store()
                .insert(Tree::Offline, &offline_key(slot, seq), &buf)?;
        }
        Ok(())
    }

    /// Remembers an incoming QoS 2 packet id of a persistent session until
    /// its PUBREL, so that a PUBLISH the client re-sends after a restart is
    /// acknowledged, not routed a second time (4.3.3). The caller flushes
    /// before the PUBREC.
    pub fn store_incoming_qos2(&self, slot: &Slot, packet_id: u16) -> Result<(), StoreError> {
        self.store()
            .insert(Tree::Offline, &incoming_key(slot, packet_id), &[])
    }

    /// Forgets it at PUBREL (flushed before the PUBCOMP: a stale id would
    /// make the client's next message with that id look like a duplicate).
    pub fn unstore_incoming_qos2(&self, slot: &Slot, packet_id: u16) {
        if let Err(e) = self
            .store()
            .remove(Tree::Offline, &incoming_key(slot, packet_id))
        {
            tracing::error!(error = %e, "deleting a QoS 2 packet id failed");
        }
    }

    /// Deletes a stored message once its recipient acknowledged it.
    pub fn unstore_queued(&self, slot: &Slot, seq: u64) {
        if let Err(e) = self.store().remove(Tree::Offline, &offline_key(slot, seq)) {
            tracing::error!(error = %e, "deleting a delivered message failed");
        }
    }

    /// Rebuilds persistent sessions from the store, each as disconnected since
    /// the time it went away (the sweep ends it when its interval has passed),
    /// and returns how many it restored.
    pub fn restore_sessions(&self) -> Result<usize, StoreError> {
        let mut out = 0;
        let now = crate::auth::now();
        for (k, v) in self.store().scan_prefix(Tree::Sessions, b"")? {
            let Some(sep) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let (Ok(domain), Ok(client_id)) = (
                std::str::from_utf8(&k[..sep]),
                std::str::from_utf8(&k[sep + 1..]),
            ) else {
                continue;
            };
            let Some(d) = self.domain(domain).cloned() else {
                continue;
            };
            let rec: SessionRecord = records::decode("sessions", &v)?;
            let since = if rec.disconnected_at == 0 {
                0
            } else {
                now.saturating_sub(rec.disconnected_at)
            };
            let left = if rec.expiry == u32::MAX {
                u32::MAX
            } else {
                rec.expiry
                    .saturating_sub(since.min(u64::from(u32::MAX)) as u32)
            };
            let (slot, _, _) = self.open_session(&d, client_id, false);
            if left == 0 {
                slot.lock().online = false;
                self.end_session(&d, &slot);
                continue;
            }
            slot.lock().expiry = rec.expiry;
            for s in rec.subscriptions {
                let rh = match s.retain_handling {
                    1 => RetainHandling::SendIfNew,
                    2 => RetainHandling::DoNotSend,
                    _ => RetainHandling::SendAtSubscribe,
                };
                let opts = SubscriptionOptions {
                    qos: qos_of(s.qos),
                    no_local: s.no_local,
                    retain_as_published: s.retain_as_published,
                    retain_handling: rh,
                };
                self.subscribe(&d, &slot, &s.filter, opts, s.id);
            }
            let mut prefix = k.clone();
            prefix.push(0);
            let mut restored = 0;
            for (mk, mv) in self.store().scan_prefix(Tree::Offline, &prefix)? {
                if let [b'q', hi, lo] = mk[prefix.len()..] {
                    slot.lock()
                        .incoming_qos2
                        .insert(u16::from_be_bytes([hi, lo]));
                    continue;
                }
                let Ok(seq_bytes) = <[u8; 8]>::try_from(&mk[prefix.len()..]) else {
                    continue;
                };
                let seq = Some(u64::from_be_bytes(seq_bytes));
                let mut buf = BytesMut::from(&mv[..]);
                match codec::decode(&mut buf, Some(Version::V5), usize::MAX) {
                    Ok(Some(Packet::Publish(p))) => {
                        // DUP marks a QoS 2 message already sent with this id.
                        let sent = (p.dup && p.qos == QoS::ExactlyOnce).then_some(p.packet_id);
                        let (qos, retain, sub_ids) = (
                            p.qos,
                            p.retain,
                            p.properties.subscription_identifiers.clone(),
                        );
                        let item = Queued {
                            msg: Arc::new(Routed::new(p, 0)),
                            qos,
                            retain,
                            sub_ids,
                            seq,
                        };
                        let mut st = slot.lock();
                        match sent {
                            Some(pid) => {
                                st.inflight.insert(
                                    pid,
                                    InFlight {
                                        item,
                                        stage: Stage::Published,
                                    },
                                );
                            }
                            None => st.queue.push_back(item),
                        }
                        restored += 1;
                    }
                    Ok(Some(Packet::PubRel(rel))) => {
                        // Only the PUBREL is owed: resent on resume, the
                        // record deleted by the PUBCOMP.
                        let item = Queued {
                            msg: Arc::new(Routed::new(codec::Publish::default(), 0)),
                            qos: QoS::ExactlyOnce,
                            retain: false,
                            sub_ids: Vec::new(),
                            seq,
                        };
                        slot.lock().inflight.insert(
                            rel.packet_id,
                            InFlight {
                                item,
                                stage: Stage::Released,
                            },
                        );
                        restored += 1;
                    }
                    _ => {}
                }
            }
            {
                let mut st = slot.lock();
                st.online = false;
                // The sweep ends it `expiry` after it went away.
                let gone_ms = since.min(u64::from(u32::MAX)) * 1000;
                slot.last_rx
                    .store(self.clock_ms().saturating_sub(gone_ms), Ordering::Relaxed);
            }
            tracing::info!(
                client_id,
                domain,
                restored,
                "restored a persistent MQTT session"
            );
            out += 1;
        }
        Ok(out)
    }
}

//! What of MQTT survives a crash or restart: persistent sessions (their
//! subscriptions and expiry) and the QoS 1/2 messages queued for them.
//!
//! A session whose Session Expiry Interval is above zero has a record in the
//! `Sessions` tree (key `domain NUL client-id`). Each QoS 1/2 message routed to
//! such a session is written to the `MqttQueue` tree (key `session-key NUL
//! seq`) as a PUBLISH frame, durable (a store barrier) before the publisher's
//! PUBACK/PUBREC goes out, and deleted when the subscriber acknowledges it.
//! At start the broker rebuilds the sessions, their subscriptions and their
//! queues from both trees.
//!
//! Writes never wait (the store thread applies them in order); whoever
//! acknowledges something that depends on them waits for a barrier first.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::broker::{session_key as slot_key, Broker, InFlight, Queued, Slot, Stage};
use super::codec::{self, Packet, QoS, RetainHandling, SubscriptionOptions, Version};
use crate::store::records::{self, StoredFrame};
use crate::store::{StoreError, Tree};

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
    /// The cluster node holding the session (empty outside a cluster):
    /// only that node restores it at start, and when it dies the node
    /// adopting its sessions rewrites it.
    node: String,
}

/// The record as written before the owner node was added.
#[derive(Deserialize)]
struct SessionRecordV1 {
    expiry: u32,
    disconnected_at: u64,
    subscriptions: Vec<StoredSub>,
}

fn decode_session(v: &[u8]) -> Result<SessionRecord, StoreError> {
    records::decode("sessions", v).or_else(|e| {
        let old: SessionRecordV1 = records::decode("sessions", v).map_err(|_| e)?;
        Ok(SessionRecord {
            expiry: old.expiry,
            disconnected_at: old.disconnected_at,
            subscriptions: old.subscriptions,
            node: String::new(),
        })
    })
}

/// The key of a session's record: `domain NUL localpart:client-id`.
pub fn record_key(
    domain: &str,
    account: Option<&crate::auth::BareJid>,
    client_id: &str,
) -> Vec<u8> {
    let mut k = domain.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(account.map_or("", |a| a.local()).as_bytes());
    k.push(b':');
    k.extend_from_slice(client_id.as_bytes());
    k
}

/// `domain NUL localpart:client-id`.
fn session_key(slot: &Slot) -> Vec<u8> {
    let mut k = slot.address().domain().as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(slot_key(slot).as_bytes());
    k
}

fn offline_key(slot: &Slot, seq: u64) -> Vec<u8> {
    let mut k = session_key(slot);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Key of an incoming QoS 2 packet id held by a persistent session
/// (`session-key NUL 'q' id`: three bytes after the prefix, so the message
/// records' eight-byte sequence numbers never collide with it).
fn incoming_key(slot: &Slot, packet_id: u16) -> Vec<u8> {
    let mut k = session_key(slot);
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
    /// waits for a store barrier before acknowledging anything that depends on it.
    pub fn save_session(&self, slot: &Slot, connected: bool) {
        let key = session_key(slot);
        let mut st = slot.lock();
        if st.ended {
            // Ended, or handed to another node: its records are not this
            // slot's to write any more.
            return;
        }
        if st.expiry == 0 {
            // Most sessions never were persistent: don't write a tombstone for them.
            if std::mem::take(&mut st.stored) {
                drop(st);
                self.store().delete(Tree::Sessions, key);
            }
            return;
        }
        st.stored = true;
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
            disconnected_at: if connected {
                0
            } else {
                self.registry().clock().unix()
            },
            subscriptions,
            node: self.node.clone().unwrap_or_default(),
        };
        drop(st);
        self.store().put(Tree::Sessions, key, records::encode(&rec));
    }

    /// Deletes what the store keeps of the session at `key` (a Clean Start
    /// in a cluster: whichever node held it, the old one is gone).
    pub fn forget_stored(&self, key: Vec<u8>) {
        let mut prefix = key.clone();
        prefix.push(0);
        self.store().delete(Tree::Sessions, key);
        self.store().delete_prefix(Tree::MqttQueue, prefix);
    }

    /// Deletes a session's record and its stored messages.
    pub fn forget_session(&self, slot: &Slot) {
        let key = session_key(slot);
        self.store().delete(Tree::Sessions, key.clone());
        let mut prefix = key;
        prefix.push(0);
        self.store().delete_prefix(Tree::MqttQueue, prefix);
    }

    /// Stores a QoS 1/2 message queued for a persistent session; returns its
    /// sequence number (the key to delete on acknowledgement).
    pub fn store_queued(&self, slot: &Slot, item: &Queued) -> u64 {
        let seq = self.new_seq();
        self.write_queued(slot, seq, &stored_frame(item, false, 1));
        seq
    }

    /// A stored QoS 2 message was sent with `packet_id`: its record says so
    /// (DUP set, the real id), so that after a restart it is resent with the
    /// same id and the client can tell it from a new message (4.3.3).
    pub fn mark_sent(&self, slot: &Slot, seq: u64, packet_id: u16, item: &Queued) {
        self.write_queued(slot, seq, &stored_frame(item, true, packet_id));
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
        self.write_queued(slot, seq, &rel);
    }

    /// Writes the record of queued message `seq` (a frame that cannot be
    /// encoded is not written).
    fn write_queued(&self, slot: &Slot, seq: u64, p: &Packet) {
        let mut buf = BytesMut::new();
        if codec::encode(p, Version::V5, &mut buf).is_ok() {
            let rec = StoredFrame {
                frame: buf.to_vec(),
            };
            self.store().put(
                Tree::MqttQueue,
                offline_key(slot, seq),
                records::encode(&rec),
            );
        }
    }

    /// Remembers an incoming QoS 2 packet id of a persistent session until
    /// its PUBREL, so that a PUBLISH the client re-sends after a restart is
    /// acknowledged, not routed a second time (4.3.3). The caller waits for
    /// a barrier before the PUBREC.
    pub fn store_incoming_qos2(&self, slot: &Slot, packet_id: u16) {
        self.store()
            .put(Tree::MqttQueue, incoming_key(slot, packet_id), Vec::new());
    }

    /// Forgets it at PUBREL (flushed before the PUBCOMP: a stale id would
    /// make the client's next message with that id look like a duplicate).
    pub fn unstore_incoming_qos2(&self, slot: &Slot, packet_id: u16) {
        self.store()
            .delete(Tree::MqttQueue, incoming_key(slot, packet_id));
    }

    /// Deletes a stored message once its recipient acknowledged it.
    pub fn unstore_queued(&self, slot: &Slot, seq: u64) {
        self.store().delete(Tree::MqttQueue, offline_key(slot, seq));
    }

    /// Rebuilds persistent sessions from the store, each as disconnected since
    /// the time it went away (the sweep ends it when its interval has passed),
    /// and returns how many it restored. In a cluster, only the sessions
    /// this node held. Blocking (store reads at start).
    pub fn restore_sessions(&self) -> Result<usize, StoreError> {
        let mut out = 0;
        let mine = self.node.clone().unwrap_or_default();
        for (k, v) in self.store().scan_prefix_blocking(Tree::Sessions, b"")? {
            if super::wills::is_will_key(&k) {
                continue;
            }
            let rec = match decode_session(&v) {
                Ok(r) => r,
                Err(e) => {
                    // One unreadable record must not keep the server from
                    // starting: that session is skipped (logged).
                    tracing::error!(error = %e, "skipping a stored MQTT session");
                    continue;
                }
            };
            if rec.node != mine {
                continue;
            }
            out += usize::from(self.restore_record(&k, rec)?.is_some());
        }
        Ok(out)
    }

    /// Takes over the persistent sessions a dead cluster node held (their
    /// records name it): restored here as detached, their records now
    /// naming this node. Returns the session ids. Blocking (store reads).
    pub fn adopt_sessions(&self, dead: &str) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for (k, v) in self.store().scan_prefix_blocking(Tree::Sessions, b"")? {
            if super::wills::is_will_key(&k) {
                continue;
            }
            let Ok(rec) = decode_session(&v) else {
                continue;
            };
            if rec.node != dead {
                continue;
            }
            if let Some(slot) = self.restore_record(&k, rec)? {
                self.save_session(&slot, false);
                ids.push(slot.id());
            }
        }
        Ok(ids)
    }

    /// Loads the stored session at `key` (another node held it until now),
    /// unless this node holds that session already. Blocking (store reads).
    pub fn load_session(&self, key: &[u8]) -> Result<(), StoreError> {
        let Some(v) = self.store().get_blocking(Tree::Sessions, key)? else {
            return Ok(());
        };
        let Ok(rec) = decode_session(&v) else {
            return Ok(());
        };
        if let Some(slot) = self.restore_record(key, rec)? {
            self.save_session(&slot, false);
        }
        Ok(())
    }

    /// Restores one session record (none when its domain is not hosted,
    /// its key unreadable, it expired, or this node holds the session).
    fn restore_record(
        &self,
        k: &[u8],
        rec: SessionRecord,
    ) -> Result<Option<Arc<Slot>>, StoreError> {
        let now = self.registry().clock().unix();
        {
            let Some(sep) = k.iter().position(|b| *b == 0) else {
                return Ok(None);
            };
            let (Ok(domain), Ok(client_id)) = (
                std::str::from_utf8(&k[..sep]),
                std::str::from_utf8(&k[sep + 1..]),
            ) else {
                return Ok(None);
            };
            let Some(d) = self.domain(domain).cloned() else {
                return Ok(None);
            };
            // The key is `localpart:client-id`; no localpart: anonymous.
            let Some((local, client)) = client_id.split_once(':') else {
                return Ok(None);
            };
            let account = match local {
                "" => None,
                l => match crate::auth::BareJid::new(l, domain) {
                    Ok(j) => Some(j),
                    Err(_) => return Ok(None),
                },
            };
            let text = account
                .as_ref()
                .map_or_else(|| domain.to_string(), |a| a.to_string());
            let addr = crate::session::Address::new(crate::session::Protocol::Mqtt, &text, client);
            if self
                .registry()
                .get::<super::broker::MqttState>(crate::session::Protocol::Mqtt, addr.text())
                .is_some()
            {
                return Ok(None);
            }
            let since = if rec.disconnected_at == 0 {
                0
            } else {
                now.saturating_sub(rec.disconnected_at)
            };
            // Written before `mqtt_max_session_expiry` (or under a larger
            // one): held to today's cap.
            let rec_expiry = rec.expiry.min(self.max_session_expiry);
            let left = if rec_expiry == u32::MAX {
                u32::MAX
            } else {
                rec_expiry.saturating_sub(since.min(u64::from(u32::MAX)) as u32)
            };
            let (slot, _, _) = self.open_session(&d, account.as_ref(), client, false);
            if left == 0 {
                slot.lock().online = false;
                self.end_session(&d, &slot);
                return Ok(None);
            }
            {
                let mut st = slot.lock();
                st.expiry = rec_expiry;
                st.stored = true;
            }
            // The queue before the subscriptions: a message routed to the
            // session meanwhile is not also read back from the store.
            let restored = self.restore_queue(&slot, k, &std::collections::HashSet::new())?;
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
            {
                let mut st = slot.lock();
                st.online = false;
                // The sweep ends it `expiry` after it went away.
                let gone_ms = since.min(u64::from(u32::MAX)) * 1000;
                slot.last_rx
                    .store(self.now_ms().saturating_sub(gone_ms), Ordering::Relaxed);
            }
            tracing::info!(
                client_id,
                domain,
                restored,
                "restored a persistent MQTT session"
            );
            Ok(Some(slot))
        }
    }

    /// Reads the queued messages of the session stored at key `k` into
    /// `slot`, but those whose sequence number is in `known`; returns how
    /// many. Blocking (store reads).
    fn restore_queue(
        &self,
        slot: &Slot,
        k: &[u8],
        known: &std::collections::HashSet<u64>,
    ) -> Result<usize, StoreError> {
        let client_id = slot.address().name();
        let mut prefix = k.to_vec();
        prefix.push(0);
        let mut restored = 0;
        for (mk, mv) in self
            .store()
            .scan_prefix_blocking(Tree::MqttQueue, &prefix)?
        {
            if let [b'q', hi, lo] = mk[prefix.len()..] {
                slot.lock()
                    .incoming_qos2
                    .insert(u16::from_be_bytes([hi, lo]));
                continue;
            }
            let Ok(seq_bytes) = <[u8; 8]>::try_from(&mk[prefix.len()..]) else {
                continue;
            };
            let seq = u64::from_be_bytes(seq_bytes);
            self.seq_seen(seq);
            if known.contains(&seq) {
                continue;
            }
            let seq = Some(seq);
            let frame: StoredFrame = match records::decode("mqtt_queue", &mv) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, client_id, "skipping a stored queued message");
                    continue;
                }
            };
            let mut buf = BytesMut::from(&frame.frame[..]);
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
                        msg: Arc::new(self.routed(p, 0)),
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
                        None => {
                            st.enqueue(item, self.limits(), self.now_ms());
                        }
                    }
                    restored += 1;
                }
                Ok(Some(Packet::PubRel(rel))) => {
                    // Only the PUBREL is owed: resent on resume, the
                    // record deleted by the PUBCOMP.
                    let item = Queued {
                        msg: Arc::new(self.routed(codec::Publish::default(), 0)),
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
        Ok(restored)
    }

    /// After a session moved here: the messages the node that held it
    /// stored while it moved, not yet in its queue. Blocking.
    pub fn load_missing(&self, slot: &Slot) -> Result<usize, StoreError> {
        let known: std::collections::HashSet<u64> = {
            let st = slot.lock();
            st.queued()
                .filter_map(|q| q.seq)
                .chain(st.inflight.values().filter_map(|f| f.item.seq))
                .collect()
        };
        let restored = self.restore_queue(slot, &session_key(slot), &known)?;
        if restored > 0 {
            slot.wake();
        }
        Ok(restored)
    }
}

//! The broker's shared state: per-domain sessions, subscriptions and retained
//! messages, and the routing of one PUBLISH to every matching session.
//!
//! Topics are per hosted domain: each [`Domain`] has its own session table,
//! subscription trie and retained index. A session is a [`Slot`] that outlives
//! its connections (persistent sessions): it owns the outbound queue, the
//! in-flight window and the subscriptions, so a connection task is only a thin
//! pump between the slot and the socket, and a resumed session simply gets a new
//! pump. Routing takes the trie's read lock, clones an `Arc` per subscriber and
//! pushes into the subscriber's bounded queue: no payload copy, no store write on
//! the QoS 0 path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::BytesMut;
use dashmap::DashMap;

use super::codec::{self, reason, Packet, Publish, QoS, SubscriptionOptions, Version};
use super::subscriptions::Subscriptions;
use super::topics::RetainedIndex;

mod slot;
use crate::store::records::{self, StoredFrame};
use crate::store::{Store, StoreError, Tree};
pub use slot::{PacketIds, Slot, SlotState};

/// Where [`Broker::clock_ms`] starts: about 35 years of milliseconds.
const CLOCK_BASE_MS: u64 = 1 << 40;

/// A message as routed: the PUBLISH stripped of per-hop fields, and who sent it.
#[derive(Debug)]
pub struct Routed {
    pub publish: Publish,
    /// Slot id of the publisher (for No Local); 0 for wills and retained loads.
    pub origin: u64,
    /// When the broker received it, for Message Expiry Interval.
    pub received: Instant,
}

impl Routed {
    pub fn new(mut publish: Publish, origin: u64) -> Routed {
        publish.properties.topic_alias = None;
        publish.properties.subscription_identifiers.clear();
        publish.dup = false;
        publish.packet_id = 0;
        Routed {
            publish,
            origin,
            received: Instant::now(),
        }
    }

    /// Seconds left of the Message Expiry Interval; `Some(0)` means expired.
    pub fn remaining_expiry(&self) -> Option<u32> {
        self.publish
            .properties
            .message_expiry_interval
            .map(|e| e.saturating_sub(self.received.elapsed().as_secs() as u32))
    }
}

/// One message waiting for, or in flight to, a session.
#[derive(Debug, Clone)]
pub struct Queued {
    pub msg: Arc<Routed>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// Key of the stored copy (persistent sessions, QoS 1/2), deleted on ack.
    pub seq: Option<u64>,
}

/// Where an outbound QoS 1/2 message is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug)]
pub struct InFlight {
    pub item: Queued,
    pub stage: Stage,
}

/// How far past the soft queue bound a live session's QoS 1/2 queue may grow
/// before messages are dropped (a subscriber that reads nothing).
pub const QOS1_HARD_FACTOR: usize = 16;

/// What [`Broker::enqueue`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pushed {
    /// A copy went to the store (flush before acknowledging).
    pub stored: bool,
    /// The queue is at or over its soft bound (hold the publisher back).
    pub congested: bool,
}

/// What [`Broker::publish`] did.
#[derive(Default)]
pub struct Routing {
    pub receivers: usize,
    pub stored: bool,
    pub congested: Option<Arc<Slot>>,
}

/// A subscription as the trie holds it.
#[derive(Clone)]
pub struct SubEntry {
    pub slot: Arc<Slot>,
    pub opts: SubscriptionOptions,
    pub id: Option<u32>,
}

/// One hosted domain's MQTT world.
pub struct Domain {
    pub name: Arc<str>,
    pub sessions: DashMap<Arc<str>, Arc<Slot>>,
    pub subs: Subscriptions,
    pub retained: RwLock<RetainedIndex<Arc<Routed>>>,
}

/// Counters for `stats` and the benches.
#[derive(Default)]
pub struct BrokerStats {
    pub received: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
}

/// Every domain's MQTT state, shared by all MQTT connections.
pub struct Broker {
    domains: HashMap<String, Arc<Domain>>,
    store: Store,
    next_slot: AtomicU64,
    /// Start of the broker's millisecond clock.
    epoch: Instant,
    /// Sequence numbers of stored queued messages (see `persist`).
    pub(super) next_seq: AtomicU64,
    /// Messages a session may have queued before new ones are dropped.
    pub queue_limit: usize,
    pub stats: BrokerStats,
}

fn retained_key(domain: &str, topic: &str) -> Vec<u8> {
    let mut k = domain.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(topic.as_bytes());
    k
}

impl Broker {
    /// Builds the broker for `hosts`, loading retained messages from the
    /// store. Blocking (store reads at start).
    pub fn new(hosts: &[String], store: Store, queue_limit: usize) -> Result<Broker, StoreError> {
        let mut domains = HashMap::new();
        for h in hosts {
            domains.insert(
                h.clone(),
                Arc::new(Domain {
                    name: Arc::from(h.as_str()),
                    sessions: DashMap::new(),
                    subs: Subscriptions::new(),
                    retained: RwLock::new(RetainedIndex::new()),
                }),
            );
        }
        let b = Broker {
            domains,
            store,
            next_slot: AtomicU64::new(1),
            epoch: Instant::now(),
            // Sequence numbers only need to grow across restarts: start from the clock.
            next_seq: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1),
            ),
            queue_limit,
            stats: BrokerStats::default(),
        };
        b.load_retained()?;
        Ok(b)
    }

    fn load_retained(&self) -> Result<(), StoreError> {
        for (k, v) in self.store.scan_prefix_blocking(Tree::Retained, b"")? {
            let Some(sep) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let Ok(domain) = std::str::from_utf8(&k[..sep]) else {
                continue;
            };
            let Some(d) = self.domains.get(domain) else {
                continue;
            };
            let frame: StoredFrame = records::decode("retained", &v)?;
            let mut buf = BytesMut::from(&frame.frame[..]);
            if let Ok(Some(Packet::Publish(p))) =
                codec::decode(&mut buf, Some(Version::V5), usize::MAX)
            {
                let topic = p.topic.clone();
                d.retained
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .set(&topic, Arc::new(Routed::new(p, 0)));
            }
        }
        Ok(())
    }

    pub fn domain(&self, name: &str) -> Option<&Arc<Domain>> {
        self.domains.get(name)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Finds or creates the session of `client_id`. Returns the slot, whether an
    /// existing session was kept (Session Present), and the generation the new
    /// connection owns. `clean_start` discards an old session first.
    pub fn open_session(
        &self,
        domain: &Arc<Domain>,
        client_id: &str,
        clean_start: bool,
    ) -> (Arc<Slot>, bool, u64) {
        // Find-or-create under the map's entry lock, so that two CONNECTs with
        // the same new id cannot both create a session.
        let key: Arc<str> = Arc::from(client_id);
        let (slot, present, replaced) = match domain.sessions.entry(key.clone()) {
            dashmap::Entry::Occupied(e) if !clean_start => {
                // Online before the map's lock is released, so that the
                // sweep cannot end a session that is being resumed.
                let slot = e.get().clone();
                slot.lock().online = true;
                (slot, true, None)
            }
            dashmap::Entry::Occupied(mut e) => {
                let new = self.make_slot(domain, key);
                let old = e.insert(new.clone());
                (new, false, Some(old))
            }
            dashmap::Entry::Vacant(v) => {
                let new = self.make_slot(domain, key);
                v.insert(new.clone());
                (new, false, None)
            }
        };
        if let Some(old) = replaced {
            // Clean Start over an old session: take its connection down and
            // drop it (it is no longer in the map, so drop its records here).
            old.generation.fetch_add(1, Ordering::AcqRel);
            old.wake();
            self.drop_subscriptions(domain, &old);
            self.forget_session(&old);
        }
        let gen = slot.generation.fetch_add(1, Ordering::AcqRel) + 1;
        // Wake a previous connection (it sees the new generation and leaves).
        slot.wake();
        {
            let mut st = slot.lock();
            st.ready = false;
            st.online = true;
            st.kick = None;
            st.grant = None;
            st.keep_alive = 0;
            st.since = u32::try_from(crate::auth::now()).unwrap_or(u32::MAX);
        }
        slot.last_rx.store(self.clock_ms(), Ordering::Relaxed);
        (slot, present, gen)
    }

    /// Milliseconds on the broker's own monotonic clock.
    /// Starts far from zero, so that a time before the start (a session
    /// restored as disconnected an hour ago) is a plain earlier value.
    pub fn clock_ms(&self) -> u64 {
        CLOCK_BASE_MS + self.epoch.elapsed().as_millis() as u64
    }

    /// One pass over every session: kicks live ones whose keep-alive ran out
    /// (0x8D) or whose token was revoked or expired (0x87), and returns the
    /// disconnected ones whose Session Expiry Interval has passed, for
    /// [`Broker::end_expired`]. The server runs it twice a second, so neither
    /// idle connections nor disconnected sessions need timers of their own.
    pub fn sweep(&self) -> Vec<(Arc<Domain>, Arc<Slot>)> {
        let now = self.clock_ms();
        let mut expired = Vec::new();
        for d in self.domains.values() {
            for e in d.sessions.iter() {
                let slot = e.value();
                let mut st = slot.lock();
                if !st.online {
                    // Offline, `last_rx` is when the last connection left.
                    let gone = now.saturating_sub(slot.last_rx.load(Ordering::Relaxed));
                    if st.expiry != u32::MAX && gone >= u64::from(st.expiry) * 1000 {
                        expired.push((d.clone(), slot.clone()));
                    }
                    continue;
                }
                if st.kick.is_some() {
                    continue;
                }
                let code = if st.grant.as_ref().is_some_and(|g| g.end().is_some()) {
                    Some(reason::NOT_AUTHORIZED)
                } else if st.keep_alive > 0
                    && now.saturating_sub(slot.last_rx.load(Ordering::Relaxed))
                        > u64::from(st.keep_alive) * 1500
                {
                    Some(reason::KEEP_ALIVE_TIMEOUT)
                } else {
                    None
                };
                // Decided and applied under one lock: a new connection taking
                // the session over meanwhile is never kicked for the old one.
                if let Some(c) = code {
                    st.kick = Some(c);
                    Slot::wake_locked(st);
                }
            }
        }
        expired
    }

    /// Ends the sessions [`Broker::sweep`] found expired. True if any ended
    /// (the caller waits for a store barrier).
    pub fn end_expired(&self, expired: Vec<(Arc<Domain>, Arc<Slot>)>) -> bool {
        let mut ended = false;
        for (d, slot) in expired {
            ended |= self.end_session(&d, &slot);
        }
        ended
    }

    /// Kicks every live session (shutdown: 0x8B).
    pub fn kick_all(&self, code: u8) {
        for d in self.domains.values() {
            for e in d.sessions.iter() {
                e.value().kick(code);
            }
        }
    }

    /// A new session, online from the start: it enters the map before its
    /// connection is live, and the sweep must not take it for an expired
    /// offline one meanwhile.
    fn make_slot(&self, domain: &Arc<Domain>, client_id: Arc<str>) -> Arc<Slot> {
        let slot = Slot::new(
            self.next_slot.fetch_add(1, Ordering::Relaxed),
            client_id,
            domain.name.clone(),
        );
        slot.lock().online = true;
        slot.last_rx.store(self.clock_ms(), Ordering::Relaxed);
        Arc::new(slot)
    }

    /// Removes a session, its subscriptions and what the store kept of it.
    /// Ends a disconnected session: removes it from the map — only if the
    /// map still holds this very session (a replaced one must not delete its
    /// successor's records) and it is still offline (checked under the map's
    /// lock, which a resume holds while marking it online) — then its
    /// subscriptions and what the store kept of it. True if it ended.
    pub fn end_session(&self, domain: &Domain, slot: &Arc<Slot>) -> bool {
        let removed = domain
            .sessions
            .remove_if(&slot.client_id, |_, v| {
                Arc::ptr_eq(v, slot) && !v.lock().online
            })
            .is_some();
        if removed {
            self.drop_subscriptions(domain, slot);
            self.forget_session(slot);
        }
        removed
    }

    fn drop_subscriptions(&self, domain: &Domain, slot: &Slot) {
        let filters: Vec<String> = slot.lock().subscriptions.keys().cloned().collect();
        for f in filters {
            domain.subs.remove(&f, slot.id);
        }
    }

    /// Adds (or replaces) a subscription; true if it replaced one.
    pub fn subscribe(
        &self,
        domain: &Domain,
        slot: &Arc<Slot>,
        filter: &str,
        opts: SubscriptionOptions,
        id: Option<u32>,
    ) -> bool {
        let existed = slot
            .lock()
            .subscriptions
            .insert(filter.to_string(), (opts, id))
            .is_some();
        domain.subs.insert(
            filter,
            SubEntry {
                slot: slot.clone(),
                opts,
                id,
            },
        );
        existed
    }

    /// Removes a subscription; false if there was none.
    pub fn unsubscribe(&self, domain: &Domain, slot: &Slot, filter: &str) -> bool {
        if slot.lock().subscriptions.remove(filter).is_none() {
            return false;
        }
        domain.subs.remove(filter, slot.id);
        true
    }

    /// Routes a message to every matching subscription. Returns how many
    /// sessions got it, whether a copy was stored for a persistent session
    /// (then the store must be flushed before the publisher is acknowledged)
    /// and a session whose queue is congested, if any.
    /// Retained handling is the caller's ([`Broker::retain`]).
    pub fn publish(&self, domain: &Domain, msg: &Arc<Routed>) -> Routing {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let p = &msg.publish;
        let targets = domain.subs.targets(&p.topic, msg.origin, p.qos, p.retain);
        let mut out = Routing {
            receivers: targets.len(),
            ..Routing::default()
        };
        for t in targets {
            let pushed = self.enqueue(
                &t.slot,
                Queued {
                    msg: msg.clone(),
                    qos: t.qos,
                    retain: t.retain,
                    sub_ids: t.sub_ids,
                    seq: None,
                },
            );
            out.stored |= pushed.stored;
            if pushed.congested && out.congested.is_none() {
                out.congested = Some(t.slot.clone());
            }
        }
        out
    }

    /// Puts a message in a session's queue and wakes the session's pump.
    ///
    /// Bounds: QoS 0 is dropped (and counted) once the queue holds
    /// `queue_limit` messages, and always for an offline session. QoS 1/2 for a
    /// live session goes over that soft bound — the publisher has been or will
    /// be acknowledged — and reports congestion so that the publisher's
    /// connection holds back its acknowledgements until the queue drains; only
    /// past `QOS1_HARD_FACTOR` times the bound (a subscriber that reads nothing
    /// at all) is it dropped. An offline session keeps up to `queue_limit`
    /// QoS 1/2 messages, stored for a persistent session.
    pub fn enqueue(&self, slot: &Slot, mut item: Queued) -> Pushed {
        let (persist, congested) = {
            let mut st = slot.lock();
            let len = st.queue.len();
            let drop = match (item.qos, st.online) {
                (QoS::AtMostOnce, online) => !online || len >= self.queue_limit,
                (_, true) => len >= self.queue_limit * QOS1_HARD_FACTOR,
                (_, false) => len >= self.queue_limit,
            };
            if drop {
                st.dropped = st.dropped.saturating_add(1);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Pushed::default();
            }
            let persist = st.expiry > 0 && item.qos != QoS::AtMostOnce && item.seq.is_none();
            (
                persist,
                item.qos != QoS::AtMostOnce && len + 1 >= self.queue_limit,
            )
        };
        if persist {
            item.seq = Some(self.store_queued(slot, &item));
        }
        let mut st = slot.lock();
        st.queue.push_back(item);
        Slot::wake_locked(st);
        Pushed {
            stored: persist,
            congested,
        }
    }

    /// Whether a session's queue is still at or over the soft bound.
    pub fn is_congested(&self, slot: &Slot) -> bool {
        let st = slot.lock();
        st.online && st.queue.len() >= self.queue_limit
    }

    /// Stores (or, with an empty payload, deletes) the retained message of a
    /// topic. The caller waits for a store barrier before acknowledging.
    pub fn retain(&self, domain: &Domain, msg: &Arc<Routed>) {
        let topic = &msg.publish.topic;
        let key = retained_key(&domain.name, topic);
        let mut idx = domain.retained.write().unwrap_or_else(|e| e.into_inner());
        if msg.publish.payload.is_empty() {
            idx.remove(topic);
            self.store.delete(Tree::Retained, key);
        } else {
            let mut p = msg.publish.clone();
            p.retain = true;
            // The stored form is a PUBLISH frame; QoS > 0 needs some packet id
            // there, which Routed::new drops again on load.
            p.packet_id = u16::from(p.qos != QoS::AtMostOnce);
            let mut buf = BytesMut::new();
            if codec::encode(&Packet::Publish(p), Version::V5, &mut buf).is_ok() {
                let rec = StoredFrame {
                    frame: buf.to_vec(),
                };
                self.store.put(Tree::Retained, key, records::encode(&rec));
            }
            idx.set(topic, msg.clone());
        }
    }

    /// The retained messages matching a filter.
    pub fn retained_for(&self, domain: &Domain, filter: &str) -> Vec<Arc<Routed>> {
        let mut out = Vec::new();
        let idx = domain.retained.read().unwrap_or_else(|e| e.into_inner());
        idx.matching(filter, |_, m: &Arc<Routed>| {
            if m.remaining_expiry() != Some(0) {
                out.push(m.clone());
            }
        });
        out
    }

    /// Sessions (online or not) across all domains.
    pub fn session_count(&self) -> usize {
        self.domains.values().map(|d| d.sessions.len()).sum()
    }
}

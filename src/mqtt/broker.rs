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
use std::sync::{Arc, Mutex, RwLock};

use bytes::BytesMut;

use super::acl::{Acl, Request, Who};
use super::codec::{self, Packet, Publish, QoS, SubscriptionOptions, Version};
use super::subscriptions::Subscriptions;
use super::topics::RetainedIndex;

mod remote;
mod slot;
use crate::auth::BareJid;
use crate::metrics::DropReason;
use crate::session::{Address, FlowLimits, Handle, Kick, Open, Protocol, Registry};
use crate::store::records::{self, StoredFrame};
use crate::store::{Store, StoreError, Tree};
pub use remote::{Forwarded, PeerFuture, Peers};

pub use slot::{session_key, MqttState, PacketIds, Slot, SlotState};

/// A message as routed: the PUBLISH stripped of per-hop fields, and who sent it.
#[derive(Debug)]
pub struct Routed {
    pub publish: Publish,
    /// Session id of the publisher (for No Local); 0 for wills and retained loads.
    pub origin: u64,
    /// When the broker received it (ms on the session clock), for Message
    /// Expiry Interval.
    pub received_ms: u64,
    /// What holding it costs: payload, topic and properties (computed once).
    pub bytes: u32,
    /// In a cluster, which node gives each matching shared group its turn
    /// (decided once, by the publishing node; see [`Peers::assign_shared`]).
    pub shares: std::sync::OnceLock<Shares>,
}

/// Shared groups and the node that delivers to one of their members.
pub type Shares = Box<[(Arc<str>, Arc<str>)]>;

impl Routed {
    /// `now_ms` is the session clock's time of arrival.
    pub fn new(mut publish: Publish, origin: u64, now_ms: u64) -> Routed {
        publish.properties.topic_alias = None;
        publish.properties.subscription_identifiers.clear();
        publish.dup = false;
        publish.packet_id = 0;
        let bytes = publish.payload.len()
            + publish.topic.len()
            + publish.properties.heap_len()
            + std::mem::size_of::<Routed>();
        Routed {
            publish,
            origin,
            received_ms: now_ms,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            shares: std::sync::OnceLock::new(),
        }
    }

    /// Seconds left of the Message Expiry Interval at `now_ms`; `Some(0)`
    /// means expired.
    pub fn remaining_expiry(&self, now_ms: u64) -> Option<u32> {
        let waited = now_ms.saturating_sub(self.received_ms) / 1000;
        self.publish
            .properties
            .message_expiry_interval
            .map(|e| e.saturating_sub(u32::try_from(waited).unwrap_or(u32::MAX)))
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

/// How far past the high-water mark a live session's queue may grow from
/// deliveries that cannot wait (wills, retained messages on subscribe)
/// before the session counts as a slow consumer and is cut off.
pub const HARD_FACTOR: u32 = 16;

/// What [`Broker::enqueue`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pushed {
    /// A copy went to the store (a barrier before acknowledging).
    pub stored: bool,
    /// The queue is at or over its high-water mark (the publisher waits).
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

/// One hosted domain's MQTT world: its subscriptions and retained
/// messages (its sessions are in the session registry).
pub struct Domain {
    pub name: Arc<str>,
    pub subs: Subscriptions,
    pub retained: RwLock<RetainedIndex<Arc<Routed>>>,
    /// Bytes the retained messages hold (changed under `retained`'s write lock).
    pub retained_bytes: AtomicU64,
    /// How many of the retained topics are the server's `$SYS` ones (not
    /// the clients': outside `mqtt_max_retained` and the count shown).
    pub sys_retained: AtomicU64,
}

/// Counters for `stats` and the benches.
#[derive(Default)]
pub struct BrokerStats {
    pub received: AtomicU64,
    pub delivered: AtomicU64,
    /// Messages not delivered: QoS 0 for a detached session or one cut off
    /// as a slow consumer, QoS 1/2 over a detached session's queue bound.
    pub dropped: AtomicU64,
}

/// Every domain's MQTT state, shared by all MQTT connections.
pub struct Broker {
    domains: HashMap<String, Arc<Domain>>,
    store: Store,
    registry: Arc<Registry>,
    /// Sequence numbers of stored queued messages (see `persist`).
    pub(super) next_seq: AtomicU64,
    /// QoS 1/2 messages a detached persistent session may have queued.
    pub queue_limit: usize,
    /// Retained topics a domain may hold (`mqtt_max_retained`).
    pub max_retained: std::sync::atomic::AtomicUsize,
    /// Bytes of retained messages a domain may hold (`mqtt_max_retained_bytes`).
    pub max_retained_bytes: AtomicU64,
    /// The longest session expiry granted (`mqtt_max_session_expiry`),
    /// applied to restored sessions too.
    pub max_session_expiry: u32,
    pub stats: BrokerStats,
    /// The access rules (`[[mqtt_acl]]`), checked beside token scopes.
    /// The access rules (swapped whole by a reload; read without a lock).
    pub acl: arc_swap::ArcSwap<Acl>,
    /// The `$SYS` values last published, by domain and topic.
    sys_last: Mutex<HashMap<(String, &'static str), String>>,
    /// The bridge to XMPP, set once at start when there is one.
    pub bridge: std::sync::OnceLock<Arc<crate::bridge::Bridge>>,
    /// This node's name in a cluster (`[cluster] node`; see
    /// [`Broker::set_node`]).
    pub node: Option<String>,
    /// In a cluster, the low 16 bits of this node's sequence numbers.
    seq_tag: Option<u64>,
    /// The other nodes of a cluster, set once at start when there are.
    pub peers: std::sync::OnceLock<Arc<dyn Peers>>,
    /// Sessions handed off to another node and kept here until it has
    /// them: address → session id.
    moving: Mutex<HashMap<String, u64>>,
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
    pub fn new(
        hosts: &[String],
        store: Store,
        registry: Arc<Registry>,
        queue_limit: usize,
    ) -> Result<Broker, StoreError> {
        let mut domains = HashMap::new();
        for h in hosts {
            domains.insert(
                h.clone(),
                Arc::new(Domain {
                    name: Arc::from(h.as_str()),
                    subs: Subscriptions::new(),
                    retained: RwLock::new(RetainedIndex::new()),
                    retained_bytes: AtomicU64::new(0),
                    sys_retained: AtomicU64::new(0),
                }),
            );
        }
        let b = Broker {
            domains,
            store,
            // Sequence numbers only need to grow across restarts: start from the clock.
            next_seq: AtomicU64::new(registry.clock().unix().saturating_mul(1_000_000_000)),
            registry,
            queue_limit,
            max_retained: 100_000.into(),
            max_retained_bytes: (1 << 30).into(),
            max_session_expiry: u32::MAX,
            acl: arc_swap::ArcSwap::from_pointee(Acl::default()),
            sys_last: Mutex::new(HashMap::new()),
            stats: BrokerStats::default(),
            bridge: std::sync::OnceLock::new(),
            node: None,
            seq_tag: None,
            peers: std::sync::OnceLock::new(),
            moving: Mutex::new(HashMap::new()),
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
            // One unreadable record must not keep the server from starting.
            let frame: StoredFrame = match records::decode("retained", &v) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "skipping a stored retained message");
                    continue;
                }
            };
            let mut buf = BytesMut::from(&frame.frame[..]);
            if let Ok(Some(Packet::Publish(p))) =
                codec::decode(&mut buf, Some(Version::V5), usize::MAX)
            {
                let topic = p.topic.clone();
                let m = Arc::new(self.routed(p, 0));
                let bytes = u64::from(m.bytes);
                let old = d
                    .retained
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .set(&topic, m);
                let old = old.map_or(0, |o| u64::from(o.bytes));
                d.retained_bytes.fetch_add(bytes, Ordering::Relaxed);
                d.retained_bytes.fetch_sub(old, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Makes this broker a cluster node named `node` (before sessions are
    /// restored): it restores only the sessions it held, and its sequence
    /// numbers end in a tag of its name, so two nodes storing for one
    /// session while it moves between them never pick the same one.
    pub fn set_node(&mut self, node: &str) {
        let tag = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) & 0xffff;
        self.seq_tag = Some(tag);
        self.node = Some(node.to_string());
        // The counter in the upper bits grows across restarts (and past
        // every number read back from the store: `seq_seen`).
        let start = self.registry.clock().unix().saturating_mul(1_000);
        self.next_seq = AtomicU64::new(start);
    }

    /// A new sequence number for a stored queued message.
    pub(super) fn new_seq(&self) -> u64 {
        let c = self.next_seq.fetch_add(1, Ordering::Relaxed);
        match self.seq_tag {
            Some(t) => (c << 16) | t,
            None => c,
        }
    }

    /// A stored sequence number was read back: later ones are above it.
    pub(super) fn seq_seen(&self, seq: u64) {
        let c = match self.seq_tag {
            Some(_) => seq >> 16,
            None => seq,
        };
        self.next_seq
            .fetch_max(c.saturating_add(1), Ordering::Relaxed);
    }

    pub fn domain(&self, name: &str) -> Option<&Arc<Domain>> {
        self.domains.get(name)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn limits(&self) -> &FlowLimits {
        self.registry.limits()
    }

    /// Milliseconds on the session clock, as of the registry's last sweep
    /// (no clock read per message).
    pub fn now_ms(&self) -> u64 {
        self.registry.now_ms()
    }

    /// A message received now.
    pub fn routed(&self, publish: Publish, origin: u64) -> Routed {
        Routed::new(publish, origin, self.now_ms())
    }

    /// Finds or creates the session of `client_id` under `account` (none:
    /// anonymous, in `domain`). Returns the slot, whether an existing
    /// session was kept (Session Present), and the generation the new
    /// connection owns. `clean_start` discards an old session first.
    ///
    /// Sessions belong to an account: the same client id under another
    /// account (or anonymous) is another session, never a takeover.
    pub fn open_session(
        &self,
        domain: &Domain,
        account: Option<&BareJid>,
        client_id: &str,
        clean_start: bool,
    ) -> (Arc<Slot>, bool, u64) {
        let account = account.map_or_else(|| domain.name.to_string(), |a| a.to_string());
        let addr = Address::new(Protocol::Mqtt, &account, client_id);
        let how = if clean_start {
            Open::Replace
        } else {
            Open::Resume
        };
        let o = self.registry.open::<MqttState>(addr, how);
        if let Some(old) = o.replaced {
            // Clean Start over an old session: the registry took its
            // connection down; drop what the broker kept of it.
            self.drop_subscriptions(domain, &old);
            self.forget_session(&old);
        }
        (o.session, o.resumed, o.generation)
    }

    /// Ends the detached sessions the registry's sweep found expired. True
    /// if any ended (the caller waits for a store barrier).
    pub fn end_expired(&self, expired: &[Arc<dyn Handle>]) -> bool {
        let mut ended = false;
        for h in expired {
            let Ok(slot) = h.clone().into_any().downcast::<Slot>() else {
                continue;
            };
            if let Some(d) = self.domains.get(slot.address().domain()) {
                ended |= self.end_session(d, &slot);
            }
        }
        ended
    }

    /// Whether the registry still holds this very session (it was not
    /// ended, nor replaced by a Clean Start connection).
    pub fn holds(&self, slot: &Slot) -> bool {
        self.registry.holds(slot)
    }

    /// Ends a detached session: removes it from the registry — only if the
    /// registry still holds this very session (a replaced one must not
    /// delete its successor's records) and it is still detached (checked
    /// under the map's lock, which a resume holds while marking it online)
    /// — then its subscriptions and what the store kept of it. True if it
    /// ended.
    pub fn end_session(&self, domain: &Domain, slot: &Arc<Slot>) -> bool {
        let removed = self.registry.remove(slot, |st| st.online);
        if removed {
            self.drop_subscriptions(domain, slot);
            self.forget_session(slot);
        }
        removed
    }

    pub(super) fn drop_subscriptions(&self, domain: &Domain, slot: &Slot) {
        let filters: Vec<String> = slot.lock().subscriptions.keys().cloned().collect();
        for f in filters {
            domain.subs.remove(&f, slot.id());
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
        domain.subs.remove(filter, slot.id());
        true
    }

    /// Routes a message to every matching subscription. Returns how many
    /// sessions got it, whether a copy was stored for a persistent session
    /// (then the store must be flushed before the publisher is acknowledged)
    /// and a session whose queue is congested, if any.
    /// Retained handling is the caller's ([`Broker::retain`]).
    pub fn publish(&self, domain: &Domain, msg: &Arc<Routed>) -> Routing {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        self.route(domain, msg)
    }

    /// [`Broker::publish`] without counting the message as received (the
    /// server's own `$SYS` messages).
    fn route(&self, domain: &Domain, msg: &Arc<Routed>) -> Routing {
        self.route_to(domain, msg, None)
    }

    /// [`Broker::route`] to the sessions `only` accepts, if given.
    fn route_to(
        &self,
        domain: &Domain,
        msg: &Arc<Routed>,
        only: Option<&dyn Fn(&Slot) -> bool>,
    ) -> Routing {
        let p = &msg.publish;
        let acl = self.acl.load();
        let cluster = self.peers.get().zip(self.node.as_deref());
        let targets = if only.is_some() || cluster.is_some() {
            let readable = |slot: &Slot| {
                only.is_none_or(|only| only(slot))
                    && (!acl.checks_reads()
                        || acl.allows(Who::of(slot.address()), Request::Read, &p.topic))
            };
            // A cluster: a shared group's turn is taken on the node the
            // publishing node chose for it (here, unless it chose another).
            let shares = cluster.map(|(peers, _)| {
                msg.shares.get_or_init(|| {
                    let here = domain.subs.shared_groups(&p.topic);
                    peers.assign_shared(&domain.name, &p.topic, &here)
                })
            });
            let me = cluster.map_or("", |(_, n)| n);
            let group_here = |g: &str| {
                shares
                    .and_then(|s| s.iter().find(|(sg, _)| &**sg == g))
                    .is_none_or(|(_, n)| &**n == me)
            };
            domain.subs.targets_in(
                &p.topic,
                msg.origin,
                p.qos,
                p.retain,
                &readable,
                &group_here,
            )
        } else if acl.checks_reads() {
            // A subscriber an access rule forbids to read the topic does
            // not get it (a `#` does not undo a deny); a shared group's
            // turn goes to a member that may.
            let readable =
                |slot: &Slot| acl.allows(Who::of(slot.address()), Request::Read, &p.topic);
            domain
                .subs
                .targets_for(&p.topic, msg.origin, p.qos, p.retain, &readable)
        } else {
            domain.subs.targets(&p.topic, msg.origin, p.qos, p.retain)
        };
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
    /// A live session takes every message; the publisher is told when the
    /// queue is at or over its high-water mark and waits for room (flow
    /// control, [`crate::session::flow`]) — QoS 0 included: a subscriber
    /// that reads is never a reason to drop. Only deliveries that cannot
    /// wait and fill a queue to [`HARD_FACTOR`] times the mark cut the
    /// session off as a slow consumer (its QoS 0 then dropped, counted).
    /// A detached session keeps QoS 1/2 messages (stored for a persistent
    /// one) up to `queue_limit`; QoS 0 is not kept for it (3.1.2.4).
    pub fn enqueue(&self, slot: &Slot, mut item: Queued) -> Pushed {
        let limits = self.registry.limits();
        let now = self.now_ms();
        // Decided, stored and queued under one lock: a session ending
        // meanwhile (which deletes its stored queue after setting `ended`
        // under this lock) never gets a record written after its deletion.
        let mut st = slot.lock();
        if st.ended {
            drop(st);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::metrics().dropped(DropReason::SessionEnded);
            return Pushed::default();
        }
        // A kicked session is going away: queue for it as for a detached one.
        let live = st.online && st.kick.is_none();
        let over_hard = live && st.queued_bytes() >= limits.high_water.saturating_mul(HARD_FACTOR);
        let drop_it = match (item.qos, live) {
            (QoS::AtMostOnce, live) => !live || over_hard,
            // A detached session's queue: bounded in count and in bytes.
            (_, false) => {
                st.queue_len() >= self.queue_limit
                    || st.queued_bytes() >= limits.high_water.saturating_mul(HARD_FACTOR)
            }
            (_, true) => false,
        };
        if drop_it {
            drop(st);
            let reason = if over_hard {
                slot.kick(Kick::SlowConsumer);
                DropReason::SlowConsumer
            } else if item.qos == QoS::AtMostOnce {
                DropReason::Qos0Offline
            } else {
                DropReason::QueueFull
            };
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::metrics().dropped(reason);
            return Pushed::default();
        }
        let persist = st.expiry > 0 && item.qos != QoS::AtMostOnce && item.seq.is_none();
        if persist {
            item.seq = Some(self.store_queued(slot, &item));
        }
        let congested = st.enqueue(item, limits, now);
        Slot::wake_locked(st);
        if over_hard {
            slot.kick(Kick::SlowConsumer);
        }
        Pushed {
            stored: persist,
            congested,
        }
    }

    /// Stores (or, with an empty payload, deletes) the retained message of a
    /// topic. The caller waits for a store barrier before acknowledging.
    /// False when the domain already holds `max_retained` topics (or
    /// `max_retained_bytes` would be passed) and this
    /// would be a new one (nothing is stored then).
    pub fn retain(&self, domain: &Domain, msg: &Arc<Routed>) -> bool {
        self.retain_with(domain, msg, true)
    }

    /// [`Broker::retain`]; `write` false keeps it in memory only (another
    /// cluster node stored it in the shared store).
    fn retain_with(&self, domain: &Domain, msg: &Arc<Routed>, write: bool) -> bool {
        let max = self.max_retained.load(Ordering::Relaxed);
        let topic = &msg.publish.topic;
        let key = retained_key(&domain.name, topic);
        let mut idx = domain.retained.write().unwrap_or_else(|e| e.into_inner());
        let held = domain.retained_bytes.load(Ordering::Relaxed);
        let old = idx.get(topic).map(|o| u64::from(o.bytes));
        let held_topics = idx
            .len()
            .saturating_sub(domain.sys_retained.load(Ordering::Relaxed) as usize);
        if msg.publish.payload.is_empty() {
            idx.remove(topic);
            if write {
                self.store.delete(Tree::Retained, key);
            }
            domain
                .retained_bytes
                .store(held.saturating_sub(old.unwrap_or(0)), Ordering::Relaxed);
        } else if (held_topics >= max && old.is_none())
            || held.saturating_sub(old.unwrap_or(0)) + u64::from(msg.bytes)
                > self.max_retained_bytes.load(Ordering::Relaxed)
        {
            return false;
        } else {
            domain.retained_bytes.store(
                held.saturating_sub(old.unwrap_or(0)) + u64::from(msg.bytes),
                Ordering::Relaxed,
            );
            let mut p = msg.publish.clone();
            p.retain = true;
            // The stored form is a PUBLISH frame; QoS > 0 needs some packet id
            // there, which Routed::new drops again on load.
            p.packet_id = u16::from(p.qos != QoS::AtMostOnce);
            let mut buf = BytesMut::new();
            if write && codec::encode(&Packet::Publish(p), Version::V5, &mut buf).is_ok() {
                let rec = StoredFrame {
                    frame: buf.to_vec(),
                };
                self.store.put(Tree::Retained, key, records::encode(&rec));
            }
            idx.set(topic, msg.clone());
        }
        true
    }

    /// The retained messages matching a filter.
    /// The retained messages matching a filter, as long as they fit in
    /// `budget` queue bytes (a `#` over a large domain must not copy every
    /// retained message into one session). True in the second place when
    /// some did not fit.
    pub fn retained_for(
        &self,
        domain: &Domain,
        who: Who<'_>,
        filter: &str,
        mut budget: u64,
    ) -> (Vec<Arc<Routed>>, bool) {
        let acl = self.acl.load();
        let check_reads = acl.checks_reads();
        let mut out = Vec::new();
        let mut cut = false;
        let idx = domain.retained.read().unwrap_or_else(|e| e.into_inner());
        let now = self.now_ms();
        idx.matching_while(filter, |_, m: &Arc<Routed>| {
            if m.remaining_expiry(now) == Some(0)
                || (check_reads && !acl.allows(who, Request::Read, &m.publish.topic))
            {
                return true;
            }
            // What the message will cost in the queue (as `item_bytes` counts it).
            let cost = u64::from(m.bytes) + std::mem::size_of::<Queued>() as u64;
            if cost > budget {
                cut = true;
                return false;
            }
            budget -= cost;
            out.push(m.clone());
            true
        });
        (out, cut)
    }

    /// Queue bytes a live session may still take from deliveries that
    /// cannot wait (retained messages on subscribe).
    pub fn unwaited_room(&self, slot: &Slot) -> u64 {
        let hard = u64::from(self.limits().high_water) * u64::from(HARD_FACTOR);
        hard.saturating_sub(u64::from(slot.lock().queued_bytes()))
    }

    /// Publishes the `$SYS/broker/…` statistics of every domain as
    /// retained QoS 0 messages, those whose value changed since the last
    /// time (kept in memory only: they are made again after a restart).
    /// `online` counts each domain's connected MQTT clients.
    /// The clients' retained messages (not `$SYS`), every domain.
    pub fn retained_count(&self) -> u64 {
        self.domains
            .values()
            .map(|d| {
                d.retained
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .len()
                    .saturating_sub(d.sys_retained.load(Ordering::Relaxed) as usize)
                    as u64
            })
            .sum()
    }

    pub fn publish_sys(&self, uptime_secs: u64, online: &HashMap<String, usize>) {
        let received = self.stats.received.load(Ordering::Relaxed);
        let sent = self.stats.delivered.load(Ordering::Relaxed);
        let mut last = self.sys_last.lock().unwrap_or_else(|e| e.into_inner());
        for (name, domain) in &self.domains {
            // The clients' retained messages, not these.
            let retained = domain
                .retained
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .len()
                .saturating_sub(domain.sys_retained.load(Ordering::Relaxed) as usize);
            let values = [
                (
                    "$SYS/broker/version",
                    format!("petrel {}", env!("CARGO_PKG_VERSION")),
                ),
                ("$SYS/broker/uptime", format!("{uptime_secs} seconds")),
                (
                    "$SYS/broker/clients/connected",
                    online.get(name).copied().unwrap_or(0).to_string(),
                ),
                ("$SYS/broker/messages/received", received.to_string()),
                ("$SYS/broker/messages/sent", sent.to_string()),
                ("$SYS/broker/retained messages/count", retained.to_string()),
            ];
            for (topic, value) in values {
                let key = (name.clone(), topic);
                if last.get(&key) == Some(&value) {
                    continue;
                }
                let publish = Publish {
                    topic: topic.into(),
                    payload: bytes::Bytes::from(value.clone().into_bytes()),
                    retain: true,
                    ..Publish::default()
                };
                let msg = Arc::new(self.routed(publish, 0));
                {
                    let mut idx = domain.retained.write().unwrap_or_else(|e| e.into_inner());
                    if idx.get(topic).is_none() {
                        domain.sys_retained.fetch_add(1, Ordering::Relaxed);
                    }
                    idx.set(topic, msg.clone());
                }
                self.route(domain, &msg);
                last.insert(key, value);
            }
        }
    }

    /// Sessions (online or not) across all domains.
    pub fn session_count(&self) -> usize {
        self.registry.len(Protocol::Mqtt)
    }
}

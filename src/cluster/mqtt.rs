//! MQTT across nodes: a message published on one node reaches the
//! subscribers on every node, with the guarantee it has on one.
//!
//! **Publishes.** The publishing node routes a message to its own
//! sessions, then sends it once on `petrel.mqtt`; NATS hands it to every
//! node, which routes it to its sessions (and keeps a retained one in
//! memory — the publisher wrote the shared store). A QoS 1/2 or retained
//! message carries an id and a reply subject (`petrel.node.<origin>.ack`):
//! each node answers once the message is queued for its sessions and, for
//! persistent ones, committed to the store; the publisher is acknowledged
//! when every live node answered. Sends leave in call order from one task,
//! so a publisher's messages keep their order on every node.
//!
//! **A node dies** (see [`super::members`]): a message a dead node did not
//! confirm — or published while its sessions have no node yet — waits for
//! the adoption, then goes to the adopter on `petrel.node.<adopter>.mqtt`
//! marked "for the sessions adopted from <dead>" only. Nothing waits past
//! `ack_timeout_ms`: then the publisher is answered 0x80 and sends again.
//!
//! **One session per client id.** Before a session opens, every live node
//! is asked (`petrel.node.<n>.claim`) to hand it off: its connection gets
//! DISCONNECT 0x8E; a persistent session resumed elsewhere stays, detached
//! and still storing, until the new node loaded it from the store and says
//! `petrel.node.<n>.letgo`. Overlap, never a gap: a message routed in
//! between may be delivered twice (QoS 1 allows it), none is lost.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::members::{Members, State};
use crate::mqtt::broker::{Broker, Forwarded, Peers, Routed, Shares};
use crate::mqtt::codec::{self, Packet, QoS, Version};

pub const PUBLISH: &str = "petrel.mqtt";

fn node_subject(node: &str, what: &str) -> String {
    format!("petrel.node.{node}.{what}")
}

/// The last [`SEEN`] waited-for messages routed here, to tell a resend
/// for a dead node's sessions that they already had the message (it
/// reached them after they were adopted here).
#[derive(Default)]
struct Seen {
    order: std::collections::VecDeque<(u64, u64)>,
    at: HashMap<(u64, u64), u64>,
}

const SEEN: usize = 65_536;

fn origin_hash(origin: &str) -> u64 {
    origin.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Seen {
    fn note(&mut self, key: (u64, u64), n: u64) {
        if self.order.len() >= SEEN {
            if let Some(old) = self.order.pop_front() {
                self.at.remove(&old);
            }
        }
        self.order.push_back(key);
        self.at.insert(key, n);
    }
}

/// Another node's shared subscription: (domain, group, filter).
type SharedSub = (String, Arc<str>, String);

/// One NATS message to send, in order.
struct Out {
    subject: String,
    reply: Option<String>,
    payload: Bytes,
    /// An acknowledgement entry ([`ACK_ENTRY`] bytes): the sending task
    /// gathers those queued together for one node into one NATS message.
    ack: bool,
}

/// One acknowledgement in an ack message: id (u64), receivers (u32),
/// resent to an adopter (u8). An ack message is the answering node's name
/// (u8 length, then the name) followed by one or more entries.
const ACK_ENTRY: usize = 13;
/// The most acknowledgements gathered into one NATS message.
const ACK_BATCH: usize = 1024;
/// The most queued sends taken at once by the sending task.
const SEND_BATCH: usize = 4096;

/// A forwarded message waiting for the nodes to take it.
struct Waiting {
    /// (node, resent to it as an adopter) still to answer.
    nodes: HashSet<(String, bool)>,
    /// Dead nodes whose sessions nobody adopted yet.
    unadopted: HashSet<String>,
    receivers: usize,
    done: Option<oneshot::Sender<Forwarded>>,
    domain: String,
    shares: Shares,
    frame: Bytes,
}

impl Waiting {
    fn finish_if_done(&mut self) -> bool {
        if self.nodes.is_empty() && self.unadopted.is_empty() {
            if let Some(tx) = self.done.take() {
                let _ = tx.send(Forwarded {
                    receivers: self.receivers,
                    failed: false,
                });
            }
            true
        } else {
            false
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Claim {
    addr: String,
    clean: bool,
}

/// A forwarded publish as it travels: header, then the PUBLISH frame.
pub struct Wire<'a> {
    pub id: u64,
    pub origin: &'a str,
    pub domain: &'a str,
    /// Only for the sessions adopted from this (dead) node.
    pub only: &'a str,
    /// Shared groups and the node that gives each its turn.
    pub shares: Vec<(&'a str, &'a str)>,
    pub frame: &'a [u8],
}

impl<'a> Wire<'a> {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(24 + self.frame.len() + self.domain.len());
        b.put_u8(1);
        b.put_u64(self.id);
        fn put(b: &mut BytesMut, s: &str) {
            // Node names are at most 64 bytes, domains at most 1023, group
            // names shorter than a topic filter's 65535.
            let n = s.len().min(usize::from(u16::MAX));
            b.put_u16(n as u16);
            b.put_slice(&s.as_bytes()[..n]);
        }
        for s in [self.origin, self.domain, self.only] {
            put(&mut b, s);
        }
        let n = self.shares.len().min(usize::from(u16::MAX));
        b.put_u16(n as u16);
        for (g, node) in &self.shares[..n] {
            put(&mut b, g);
            put(&mut b, node);
        }
        b.put_slice(self.frame);
        b.freeze()
    }

    pub fn decode(b: &'a [u8]) -> Option<Wire<'a>> {
        let (&1, rest) = b.split_first()? else {
            return None;
        };
        let id = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let mut rest = &rest[8..];
        let u16_at = |rest: &mut &'a [u8]| -> Option<usize> {
            let n = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
            *rest = &rest[2..];
            Some(n)
        };
        let text = |rest: &mut &'a [u8]| -> Option<&'a str> {
            let n = u16_at(rest)?;
            let s = std::str::from_utf8(rest.get(..n)?).ok()?;
            *rest = &rest[n..];
            Some(s)
        };
        let (origin, domain, only) = (text(&mut rest)?, text(&mut rest)?, text(&mut rest)?);
        let n = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
        rest = &rest[2..];
        let mut shares = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            shares.push((text(&mut rest)?, text(&mut rest)?));
        }
        Some(Wire {
            id,
            origin,
            domain,
            only,
            shares,
            frame: rest,
        })
    }
}

/// The broker's view of the other nodes ([`Peers`]).
pub struct MqttPeers {
    client: async_nats::Client,
    node: String,
    members: Arc<Members>,
    broker: Weak<Broker>,
    out: mpsc::Sender<Out>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Waiting>>,
    /// Session ids adopted here, by the dead node that held them.
    adopted: Mutex<HashMap<String, HashSet<u64>>>,
    ack_timeout: Duration,
    /// Forwards lost because the link to NATS was saturated (bridge only).
    pub refused: AtomicU64,
    /// The other nodes' shared subscriptions: (domain, group, filter).
    remote_shared: Mutex<HashMap<String, Vec<SharedSub>>>,
    /// Turns of the shared groups across nodes.
    turn: std::sync::atomic::AtomicUsize,
    /// Held while this node adopts a dead node's sessions: forwarded
    /// messages are routed wholly before or wholly after.
    pub gate: tokio::sync::Mutex<()>,
    /// Forwarded messages routed here, counted.
    routed: AtomicU64,
    /// Recently routed waited-for messages: (origin, id) → `routed` then.
    seen: Mutex<Seen>,
    /// Per dead node adopted here: `routed` when the adoption ended.
    adopted_at: Mutex<HashMap<String, u64>>,
    me: Weak<MqttPeers>,
}

async fn send(c: &async_nats::Client, subject: String, reply: Option<String>, payload: Bytes) {
    let r = match reply {
        Some(reply) => c.publish_with_reply(subject, reply, payload).await,
        None => c.publish(subject, payload).await,
    };
    if let Err(e) = r {
        tracing::error!(error = %e, "cluster: could not send to NATS");
    }
}

impl MqttPeers {
    /// Starts the task that sends in order (acknowledgements, which need no
    /// order, gathered per node among what was queued together).
    pub fn new(
        client: async_nats::Client,
        node: &str,
        members: Arc<Members>,
        broker: &Arc<Broker>,
        ack_timeout: Duration,
    ) -> Arc<MqttPeers> {
        let (tx, mut rx) = mpsc::channel::<Out>(8192);
        let c = client.clone();
        let header = {
            let name = &node.as_bytes()[..node.len().min(255)];
            let mut h = BytesMut::with_capacity(1 + name.len());
            h.put_u8(name.len() as u8);
            h.put_slice(name);
            h.freeze()
        };
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(SEND_BATCH);
            // Acknowledgements per node: (subject, message, entries in it).
            let mut acks: Vec<(String, BytesMut, usize)> = Vec::new();
            while rx.recv_many(&mut batch, SEND_BATCH).await > 0 {
                for o in batch.drain(..) {
                    if o.ack {
                        let i = match acks.iter().position(|(s, _, _)| *s == o.subject) {
                            Some(i) => i,
                            None => {
                                acks.push((o.subject, BytesMut::from(&header[..]), 0));
                                acks.len() - 1
                            }
                        };
                        let (_, m, n) = &mut acks[i];
                        m.put_slice(&o.payload);
                        *n += 1;
                        if *n == ACK_BATCH {
                            let (subject, m, _) = acks.swap_remove(i);
                            send(&c, subject, None, m.freeze()).await;
                        }
                        continue;
                    }
                    send(&c, o.subject, o.reply, o.payload).await;
                }
                for (subject, m, _) in acks.drain(..) {
                    send(&c, subject, None, m.freeze()).await;
                }
            }
        });
        Arc::new_cyclic(|me| MqttPeers {
            me: me.clone(),
            client,
            node: node.to_string(),
            members,
            broker: Arc::downgrade(broker),
            out: tx,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            adopted: Mutex::new(HashMap::new()),
            ack_timeout,
            refused: AtomicU64::new(0),
            remote_shared: Mutex::new(HashMap::new()),
            turn: Default::default(),
            gate: tokio::sync::Mutex::new(()),
            routed: AtomicU64::new(0),
            seen: Mutex::new(Seen::default()),
            adopted_at: Mutex::new(HashMap::new()),
        })
    }

    pub fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.upgrade()
    }

    fn frame(msg: &Routed) -> Bytes {
        let mut p = msg.publish.clone();
        p.packet_id = u16::from(p.qos != QoS::AtMostOnce);
        let mut buf = BytesMut::new();
        let _ = codec::encode(&Packet::Publish(p), Version::V5, &mut buf);
        buf.freeze()
    }

    fn wire(&self, id: u64, domain: &str, only: &str, shares: &Shares, frame: &[u8]) -> Bytes {
        Wire {
            id,
            origin: &self.node,
            domain,
            only,
            shares: shares.iter().map(|(g, n)| (&**g, &**n)).collect(),
            frame,
        }
        .encode()
    }

    /// How many shared subscriptions `node` last said it has members of.
    pub fn shared_of(&self, node: &str) -> usize {
        self.remote_shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .map_or(0, Vec::len)
    }

    /// A node's heartbeat listed its shared subscriptions
    /// (`domain NUL group NUL filter`).
    pub fn shared_heard(&self, node: &str, keys: &[String]) {
        tracing::debug!(
            node,
            keys = keys.len(),
            "cluster: shared subscriptions heard"
        );
        let parsed: Vec<SharedSub> = keys
            .iter()
            .filter_map(|k| {
                let mut it = k.splitn(3, '\0');
                Some((
                    it.next()?.to_string(),
                    Arc::from(it.next()?),
                    it.next()?.to_string(),
                ))
            })
            .collect();
        let mut r = self.remote_shared.lock().unwrap_or_else(|e| e.into_inner());
        if parsed.is_empty() {
            r.remove(node);
        } else {
            r.insert(node.to_string(), parsed);
        }
    }

    /// A message on `petrel.mqtt` or `petrel.node.<me>.mqtt`: routed here,
    /// answered once taken (after a store barrier, and room in a congested
    /// subscriber's queue, bounded).
    pub fn received(self: &Arc<Self>, payload: &[u8], reply: Option<String>) {
        let Some(w) = Wire::decode(payload) else {
            tracing::warn!("cluster: unreadable forwarded publish");
            return;
        };
        if w.origin == self.node && w.only.is_empty() {
            return;
        }
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let mut buf = BytesMut::from(w.frame);
        let Ok(Some(Packet::Publish(p))) = codec::decode(&mut buf, Some(Version::V5), usize::MAX)
        else {
            tracing::warn!("cluster: unreadable forwarded frame");
            return;
        };
        // A resend for a dead node's sessions: the groups whose turn that
        // node had take it here.
        let shares: Shares = w
            .shares
            .iter()
            .map(|(g, n)| {
                let n = if !w.only.is_empty() && *n == w.only {
                    self.node.as_str()
                } else {
                    n
                };
                (Arc::from(*g), Arc::from(n))
            })
            .collect();
        let n = self.routed.fetch_add(1, Ordering::Relaxed) + 1;
        let key = (origin_hash(w.origin), w.id);
        let already = !w.only.is_empty() && {
            // Routed here after the adoption ended: the adopted sessions
            // had it with everyone else.
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let adopted = self.adopted_at.lock().unwrap_or_else(|e| e.into_inner());
            matches!((seen.at.get(&key), adopted.get(w.only)), (Some(at), Some(end)) if at > end)
        };
        if w.only.is_empty() && w.id != 0 {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .note(key, n);
        }
        let routing = if already {
            crate::mqtt::broker::Routing::default()
        } else if w.only.is_empty() {
            broker.accept_remote(w.domain, p, shares, None)
        } else {
            let ids = self
                .adopted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(w.only)
                .cloned()
                .unwrap_or_default();
            broker.accept_remote(w.domain, p, shares, Some(&|s| ids.contains(&s.id())))
        };
        tracing::debug!(
            id = w.id,
            only = w.only,
            origin = w.origin,
            receivers = routing.receivers,
            "cluster: forwarded publish routed"
        );
        let Some(reply) = reply else { return };
        let mut b = BytesMut::with_capacity(ACK_ENTRY);
        b.put_u64(w.id);
        b.put_u32(u32::try_from(routing.receivers).unwrap_or(u32::MAX));
        b.put_u8(u8::from(!w.only.is_empty()));
        let ack = Out {
            subject: reply,
            reply: None,
            payload: b.freeze(),
            ack: true,
        };
        if !routing.stored && routing.congested.is_none() {
            // Nothing to wait for: answered in line (in a task only when
            // the sending queue is full).
            match self.out.try_send(ack) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(ack)) => {
                    let out = self.out.clone();
                    tokio::spawn(async move {
                        let _ = out.send(ack).await;
                    });
                    return;
                }
            }
        }
        let out = self.out.clone();
        tokio::spawn(async move {
            if routing.stored && broker.store().barrier().await.is_err() {
                // Not answered: the publisher times out and is told 0x80.
                return;
            }
            if let Some(c) = routing.congested {
                crate::session::wait_for_room(c.as_ref(), broker.limits()).await;
            }
            let _ = out.send(ack).await;
        });
    }

    /// A node's answer to a forwarded message.
    pub fn acked(&self, payload: &[u8]) {
        let Some((&n, rest)) = payload.split_first() else {
            return;
        };
        let n = usize::from(n);
        if rest.len() < n || (rest.len() - n) % ACK_ENTRY != 0 {
            return;
        }
        let Ok(node) = std::str::from_utf8(&rest[..n]) else {
            return;
        };
        // The keys it may answer as, made once for the whole batch.
        let keys = [(node.to_string(), false), (node.to_string(), true)];
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for e in rest[n..].chunks_exact(ACK_ENTRY) {
            let id = u64::from_be_bytes(e[..8].try_into().expect("8 bytes"));
            let receivers = u32::from_be_bytes(e[8..12].try_into().expect("4 bytes"));
            let resent = e[12] == 1;
            if let Some(w) = p.get_mut(&id) {
                if w.nodes.remove(&keys[usize::from(resent)]) {
                    w.receivers += receivers as usize;
                }
                if w.finish_if_done() {
                    p.remove(&id);
                }
            }
        }
    }

    /// `dead` stopped: what waited for it waits for its adopter.
    pub fn node_dead(&self, dead: &str) {
        self.remote_shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(dead);
        let adopter = match self.members.state(dead) {
            Some(State::Adopted(by)) => Some(by),
            _ => None,
        };
        let mut resend = Vec::new();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|id, w| {
            let was_waiting = w.nodes.remove(&(dead.to_string(), false));
            // A resend to an adopter that died too waits for the next one.
            let adopter_died = w.nodes.remove(&(dead.to_string(), true));
            if was_waiting || adopter_died {
                match &adopter {
                    Some(by) => {
                        // Waited for before the check below.
                        w.nodes.insert((by.clone(), true));
                        resend.push((*id, by.clone(), dead.to_string()));
                    }
                    None => {
                        w.unadopted.insert(dead.to_string());
                    }
                }
            }
            !w.finish_if_done()
        });
        drop(p);
        for (id, by, dead) in resend {
            self.resend(id, &by, &dead);
        }
    }

    /// `by` adopted `dead`'s sessions: messages waiting for that go there.
    pub fn node_adopted(&self, dead: &str, by: &str) {
        let ids: Vec<u64> = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.iter_mut()
                .filter_map(|(id, w)| {
                    w.unadopted.remove(dead).then(|| {
                        w.nodes.insert((by.to_string(), true));
                        *id
                    })
                })
                .collect()
        };
        for id in ids {
            self.resend(id, by, dead);
        }
    }

    /// This node adopted `ids` from `dead` (called under [`MqttPeers::gate`]).
    pub fn adopted_here(&self, dead: &str, ids: Vec<u64>) {
        self.adopted_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dead.to_string(), self.routed.load(Ordering::Relaxed));
        self.adopted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(dead.to_string())
            .or_default()
            .extend(ids);
    }

    fn resend(&self, id: u64, by: &str, dead: &str) {
        let payload = {
            let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let Some(w) = p.get(&id) else { return };
            self.wire(id, &w.domain, dead, &w.shares, &w.frame)
        };
        let out = Out {
            subject: node_subject(by, "mqtt"),
            reply: Some(node_subject(&self.node, "ack")),
            payload,
            ack: false,
        };
        if self.out.try_send(out).is_err() {
            // Not sent: the publisher times out and is told 0x80.
            tracing::warn!("cluster: could not resend to an adopter");
        }
    }

    /// A claim from another node: this node hands the session off, then
    /// answers after a store barrier.
    pub fn claimed_here(self: &Arc<Self>, payload: &[u8], reply: Option<String>) {
        let Ok(c) = serde_json::from_slice::<Claim>(payload) else {
            return;
        };
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let had = broker.hand_off(&c.addr, c.clean, self.ack_timeout * 3);
        let client = self.client.clone();
        tokio::spawn(async move {
            if had {
                let _ = broker.store().barrier().await;
            }
            if let Some(r) = reply {
                let _ = client.publish(r, Bytes::from_static(b"ok")).await;
            }
        });
    }

    /// A `letgo` from the node that now holds a session: answered once
    /// what this node stored for it is committed.
    pub fn let_go_here(&self, payload: &[u8], reply: Option<String>) {
        let (Ok(addr), Some(b)) = (std::str::from_utf8(payload), self.broker.upgrade()) else {
            return;
        };
        b.let_go(addr);
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = b.store().barrier().await;
            if let Some(r) = reply {
                let _ = client.publish(r, Bytes::from_static(b"ok")).await;
            }
        });
    }

    /// Asks every live node the same `body` on `petrel.node.<n>.<what>`
    /// and waits for all answers (each at most `ack_timeout`).
    fn ask_all(&self, what: &'static str, body: Bytes) -> crate::mqtt::broker::PeerFuture<()> {
        let alive = self.members.alive();
        let client = self.client.clone();
        let timeout = self.ack_timeout;
        Box::pin(async move {
            let asks = alive.into_iter().map(|n| {
                let client = client.clone();
                let body = body.clone();
                async move {
                    let r =
                        tokio::time::timeout(timeout, client.request(node_subject(&n, what), body))
                            .await;
                    if !matches!(r, Ok(Ok(_))) {
                        tracing::warn!(node = %n, what, "cluster: a node did not answer");
                    }
                }
            });
            futures_util::future::join_all(asks).await;
        })
    }
}

impl Peers for MqttPeers {
    fn forward(
        &self,
        domain: &str,
        msg: &Arc<Routed>,
        wait: bool,
    ) -> crate::mqtt::broker::PeerFuture<Forwarded> {
        let frame = Self::frame(msg);
        let shares = msg.shares.get().cloned().unwrap_or_default();
        let alive = self.members.alive();
        let unadopted = self.members.unadopted();
        if !wait || (alive.is_empty() && unadopted.is_empty()) {
            let payload = self.wire(0, domain, "", &shares, &frame);
            let out = self.out.clone();
            return Box::pin(async move {
                let _ = out
                    .send(Out {
                        subject: PUBLISH.to_string(),
                        reply: None,
                        payload,
                        ack: false,
                    })
                    .await;
                Forwarded::default()
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                Waiting {
                    nodes: alive.into_iter().map(|n| (n, false)).collect(),
                    unadopted: unadopted.into_iter().collect(),
                    receivers: 0,
                    done: Some(tx),
                    domain: domain.to_string(),
                    shares: shares.clone(),
                    frame: frame.clone(),
                },
            );
        let payload = self.wire(id, domain, "", &shares, &frame);
        let out = self.out.clone();
        let reply = node_subject(&self.node, "ack");
        let timeout = self.ack_timeout;
        let me = self.me.clone();
        Box::pin(async move {
            let _ = out
                .send(Out {
                    subject: PUBLISH.to_string(),
                    reply: Some(reply),
                    payload,
                    ack: false,
                })
                .await;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(f)) => f,
                _ => {
                    if let Some(me) = me.upgrade() {
                        me.pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id);
                    }
                    tracing::warn!(id, "cluster: a node did not take a message in time");
                    Forwarded {
                        receivers: 0,
                        failed: true,
                    }
                }
            }
        })
    }

    fn forward_now(&self, domain: &str, msg: &Arc<Routed>) {
        let shares = msg.shares.get().cloned().unwrap_or_default();
        let payload = self.wire(0, domain, "", &shares, &Self::frame(msg));
        let out = Out {
            subject: PUBLISH.to_string(),
            reply: None,
            payload,
            ack: false,
        };
        if self.out.try_send(out).is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "cluster: link to the other nodes saturated, a bridged message stayed on this node"
            );
        }
    }

    fn claim(&self, addr: &str, clean: bool) -> crate::mqtt::broker::PeerFuture<()> {
        let body = Bytes::from(
            serde_json::to_vec(&Claim {
                addr: addr.to_string(),
                clean,
            })
            .expect("plain data"),
        );
        self.ask_all("claim", body)
    }

    fn assign_shared(&self, domain: &str, topic: &str, here: &[Arc<str>]) -> Shares {
        let remote = self.remote_shared.lock().unwrap_or_else(|e| e.into_inner());
        if remote.is_empty() {
            // Nobody else has one: every group's turn is taken here.
            return here
                .iter()
                .map(|g| (g.clone(), Arc::from(self.node.as_str())))
                .collect();
        }
        let me: Arc<str> = Arc::from(self.node.as_str());
        let mut cands: Vec<(Arc<str>, Vec<Arc<str>>)> =
            here.iter().map(|g| (g.clone(), vec![me.clone()])).collect();
        for (node, keys) in remote.iter() {
            for (d, g, f) in keys {
                if d != domain || !crate::mqtt::topics::filter_matches(f, topic) {
                    continue;
                }
                let node: Arc<str> = Arc::from(node.as_str());
                match cands.iter_mut().find(|(cg, _)| cg == g) {
                    Some((_, nodes)) => {
                        if !nodes.contains(&node) {
                            nodes.push(node);
                        }
                    }
                    None => cands.push((g.clone(), vec![node])),
                }
            }
        }
        drop(remote);
        if cands.is_empty() {
            return Shares::default();
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        cands
            .into_iter()
            .map(|(g, mut nodes)| {
                // Same order on every call, so the turn walks the nodes.
                nodes.sort();
                let n = nodes.swap_remove(turn % nodes.len());
                (g, n)
            })
            .collect()
    }

    fn claimed(&self, addr: &str) -> crate::mqtt::broker::PeerFuture<()> {
        self.ask_all("letgo", Bytes::from(addr.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_publish_reads_back_and_junk_is_refused() {
        let w = Wire {
            id: 42,
            origin: "a",
            domain: "localhost",
            only: "b",
            shares: vec![("workers", "c")],
            frame: b"\x30\x03\x00\x01t",
        };
        let b = w.encode();
        let r = Wire::decode(&b).unwrap();
        assert_eq!(
            (r.id, r.origin, r.domain, r.only, r.frame),
            (42, "a", "localhost", "b", &b"\x30\x03\x00\x01t"[..])
        );
        assert_eq!(r.shares, [("workers", "c")]);
        for n in 0..b.len() - 5 {
            assert!(Wire::decode(&b[..n]).is_none(), "cut at {n}");
        }
        assert!(Wire::decode(b"\x02junk").is_none());
    }
}

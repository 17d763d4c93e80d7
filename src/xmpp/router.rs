//! The XMPP routing table: who is online where, in memory only.
//!
//! Two lock-free maps (dashmap): full JID → [`Route`], and bare JID → the
//! account's routes (the "bare-JID index"). A [`Route`] is a session's handle:
//! a bounded queue of already-serialized stanzas (`Bytes`, so a broadcast
//! clones a pointer, not the payload), what the session announced in its
//! presence (availability, priority, last presence for probes), whether it
//! asked for roster pushes, and a way to cut it off.
//!
//! The queue is a `VecDeque` behind a short mutex plus one `AtomicWaker`,
//! rather than a tokio mpsc channel: it allocates only while stanzas wait and
//! gives its memory back once drained, so an idle session holds no queue buffer
//! (an mpsc channel keeps a block of 32 slots, about 1 KB, from its creation).
//! The same waker carries kicks, so the session's task waits on its socket and
//! its route with a single small `poll_fn`.
//!
//! Delivery never waits: [`Route::deliver`] only appends. A session whose
//! queue is full is a slow consumer: it is kicked (its task ends the stream
//! with `<policy-violation/>`) and the stanza is dropped, so one stuck client
//! can neither stall senders nor grow memory.
//!
//! Routing a message to an online account touches no disk: a map lookup, a
//! priority check and a `try_send`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use std::task::{Context, Poll};

use bytes::Bytes;
use compact_str::{CompactString, ToCompactString};
use dashmap::DashMap;
use futures_util::task::AtomicWaker;

use super::element::Element;
use super::stanza::Jid;

/// Stanzas queued for one session before it counts as a slow consumer.
pub const DEFAULT_QUEUE_LEN: usize = 1024;

/// Why a session is being cut off from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Another session bound the same full JID.
    Conflict = 1,
    /// Its queue overflowed.
    Overflow = 2,
    /// The server is shutting down.
    Shutdown = 3,
}

/// What a session's presence announced.
#[derive(Debug, Default)]
pub struct PresenceState {
    /// Sent available presence (initial or later) and not unavailable since.
    pub available: bool,
    pub priority: i8,
    /// The last broadcast available presence (`from` stamped, no `to`).
    pub last: Option<Element>,
}

/// One bound session as the router sees it.
pub struct Route {
    /// Unique per bind, so a replaced session does not unbind its successor.
    pub id: u64,
    /// The full JID.
    pub jid: Jid,
    queue: Mutex<VecDeque<Bytes>>,
    queue_len: usize,
    kick: AtomicU8,
    /// Wakes the session's task when the queue gains a stanza or it is kicked.
    waker: AtomicWaker,
    /// Asked for the roster, so gets roster pushes (RFC 6121 §2.1.6).
    pub interested: AtomicBool,
    pub presence: Mutex<PresenceState>,
}

impl Route {
    /// Queues serialized bytes. `false` if the session is too slow (then it
    /// is kicked) or already kicked.
    pub fn deliver(&self, bytes: Bytes) -> bool {
        if self.kick.load(Ordering::Acquire) != 0 {
            return false;
        }
        {
            let mut q = self.queue.lock().expect("queue lock");
            if q.len() >= self.queue_len {
                drop(q);
                self.kick(Kick::Overflow);
                return false;
            }
            q.push_back(bytes);
        }
        self.waker.wake();
        true
    }

    /// Takes the next queued stanza, if any, without waiting.
    pub fn try_recv(&self) -> Option<Bytes> {
        let mut q = self.queue.lock().expect("queue lock");
        let b = q.pop_front();
        if q.is_empty() && q.capacity() > 0 {
            // Idle sessions keep no queue memory.
            *q = VecDeque::new();
        }
        b
    }

    /// Whether stanzas are waiting.
    pub fn has_queued(&self) -> bool {
        !self.queue.lock().expect("queue lock").is_empty()
    }

    /// Registers the session task's waker for deliveries and kicks. Call it
    /// before checking [`Route::has_queued`] and [`Route::kick_reason`], so a
    /// stanza or kick arriving in between still wakes the task. Only the
    /// session's own task may call it (there is one waker slot).
    pub fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// Waits for the next queued stanza (the session's own task only).
    pub async fn recv(&self) -> Bytes {
        std::future::poll_fn(|cx| {
            self.register(cx);
            match self.try_recv() {
                Some(b) => Poll::Ready(b),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Serializes `el` with `to` set to this session's JID and queues it.
    pub fn deliver_element(&self, el: &Element) -> bool {
        let mut el = el.clone();
        el.set_attr("to", self.jid.to_string());
        self.deliver(Bytes::from(el.to_bytes(super::stream::NS_CLIENT)))
    }

    pub fn kick(&self, why: Kick) {
        if self
            .kick
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
        }
    }

    /// Why the session was kicked, if it was.
    pub fn kick_reason(&self) -> Option<Kick> {
        match self.kick.load(Ordering::Acquire) {
            1 => Some(Kick::Conflict),
            2 => Some(Kick::Overflow),
            3 => Some(Kick::Shutdown),
            _ => None,
        }
    }

    /// Resolves when the session has been kicked (the session's own task only).
    pub fn poll_kicked(&self, cx: &Context<'_>) -> Poll<Kick> {
        self.register(cx);
        match self.kick_reason() {
            Some(k) => Poll::Ready(k),
            None => Poll::Pending,
        }
    }

    pub async fn kicked(&self) -> Kick {
        std::future::poll_fn(|cx| self.poll_kicked(cx)).await
    }

    /// Available, with a priority that may receive bare-JID messages.
    pub fn available_priority(&self) -> Option<i8> {
        let p = self.presence.lock().expect("presence lock");
        p.available.then_some(p.priority)
    }

    pub fn is_available(&self) -> bool {
        self.presence.lock().expect("presence lock").available
    }

    pub fn is_interested(&self) -> bool {
        self.interested.load(Ordering::Relaxed)
    }
}

/// The routing table. See the module docs.
pub struct Router {
    full: DashMap<CompactString, Arc<Route>>,
    bare: DashMap<CompactString, Vec<Arc<Route>>>,
    next_id: AtomicU64,
    queue_len: usize,
}

impl Default for Router {
    fn default() -> Self {
        Router::new(DEFAULT_QUEUE_LEN)
    }
}

impl Router {
    pub fn new(queue_len: usize) -> Router {
        Router {
            full: DashMap::new(),
            bare: DashMap::new(),
            next_id: AtomicU64::new(1),
            queue_len,
        }
    }

    /// Binds a full JID, kicking (with [`Kick::Conflict`]) a session that had it.
    pub fn bind(&self, jid: Jid) -> Arc<Route> {
        let route = Arc::new(Route {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            jid,
            queue: Mutex::new(VecDeque::new()),
            queue_len: self.queue_len,
            kick: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            interested: AtomicBool::new(false),
            presence: Mutex::new(PresenceState::default()),
        });
        let key = route.jid.to_compact_string();
        let bare = route.jid.bare().to_compact_string();
        if let Some(old) = self.full.insert(key, route.clone()) {
            old.kick(Kick::Conflict);
            self.remove_from_bare(&bare, old.id);
        }
        self.bare.entry(bare).or_default().push(route.clone());
        route
    }

    /// Removes a session's route, unless another session has taken its JID.
    pub fn unbind(&self, route: &Route) {
        let key = route.jid.to_compact_string();
        self.full.remove_if(&key, |_, r| r.id == route.id);
        self.remove_from_bare(&route.jid.bare().to_compact_string(), route.id);
    }

    fn remove_from_bare(&self, bare: &str, id: u64) {
        if let dashmap::Entry::Occupied(mut e) = self.bare.entry(bare.into()) {
            e.get_mut().retain(|r| r.id != id);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    /// The route of a full JID (normalized string form).
    pub fn route(&self, full: &str) -> Option<Arc<Route>> {
        self.full.get(full).map(|r| r.value().clone())
    }

    /// Every route of an account (bare JID, normalized string form).
    pub fn routes(&self, bare: &str) -> Vec<Arc<Route>> {
        self.bare.get(bare).map(|v| v.clone()).unwrap_or_default()
    }

    /// Runs `f` over an account's routes without copying the list.
    pub fn with_routes<R>(&self, bare: &str, f: impl FnOnce(&[Arc<Route>]) -> R) -> R {
        match self.bare.get(bare) {
            Some(v) => f(&v),
            None => f(&[]),
        }
    }

    /// Delivers to the account's available resources of highest non-negative
    /// priority (RFC 6121 §8.5.2.1.1). Returns how many got it.
    pub fn deliver_to_best(&self, bare: &str, bytes: &Bytes) -> usize {
        self.with_routes(bare, |routes| {
            let best = routes
                .iter()
                .filter_map(|r| r.available_priority())
                .filter(|p| *p >= 0)
                .max();
            let Some(best) = best else { return 0 };
            routes
                .iter()
                .filter(|r| r.available_priority() == Some(best))
                .filter(|r| r.deliver(bytes.clone()))
                .count()
        })
    }

    /// Delivers to every available resource with non-negative priority.
    pub fn deliver_to_all(&self, bare: &str, bytes: &Bytes) -> usize {
        self.with_routes(bare, |routes| {
            routes
                .iter()
                .filter(|r| r.available_priority().is_some_and(|p| p >= 0))
                .filter(|r| r.deliver(bytes.clone()))
                .count()
        })
    }

    /// Kicks every bound session (at shutdown).
    pub fn kick_all(&self, why: Kick) {
        for r in self.full.iter() {
            r.value().kick(why);
        }
    }

    /// Sessions bound right now.
    pub fn len(&self) -> usize {
        self.full.len()
    }

    pub fn is_empty(&self) -> bool {
        self.full.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn available(r: &Route, priority: i8) {
        let mut p = r.presence.lock().unwrap();
        p.available = true;
        p.priority = priority;
    }

    #[tokio::test]
    async fn bind_replace_unbind() {
        let router = Router::new(4);
        let a = router.bind(jid("alice@x/phone"));
        let b = router.bind(jid("alice@x/phone"));
        assert_eq!(a.kicked().await, Kick::Conflict);
        assert_eq!(router.routes("alice@x").len(), 1);
        router.unbind(&a); // the old one must not remove its successor
        assert!(router.route("alice@x/phone").is_some());
        assert!(b.deliver(Bytes::from_static(b"x")));
        assert_eq!(b.recv().await, Bytes::from_static(b"x"));
        assert!(
            !a.deliver(Bytes::from_static(b"y")),
            "a kicked session gets nothing"
        );
        router.unbind(&b);
        assert!(router.route("alice@x/phone").is_none());
        assert!(router.routes("alice@x").is_empty());
        assert!(router.is_empty());
    }

    #[tokio::test]
    async fn priorities_and_overflow() {
        let router = Router::new(2);
        let hi = router.bind(jid("a@x/hi"));
        let lo = router.bind(jid("a@x/lo"));
        let neg = router.bind(jid("a@x/neg"));
        let msg = Bytes::from_static(b"m");
        assert_eq!(router.deliver_to_best("a@x", &msg), 0, "nobody available");
        available(&hi, 5);
        available(&lo, 1);
        available(&neg, -1);
        assert_eq!(router.deliver_to_best("a@x", &msg), 1);
        assert!(hi.try_recv().is_some() && lo.try_recv().is_none());
        assert_eq!(router.deliver_to_all("a@x", &msg), 2);
        assert!(lo.try_recv().is_some());
        // hi holds one; fill it and overflow.
        assert!(hi.deliver(msg.clone()));
        assert!(!hi.deliver(msg.clone()));
        assert_eq!(hi.kicked().await, Kick::Overflow);
    }
}

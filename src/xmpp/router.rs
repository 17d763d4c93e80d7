//! XMPP routing on the one session registry: who is online where.
//!
//! A bound resource is a session of the session layer ([`Route`] =
//! [`Session`]`<`[`XmppState`]`>`) at the address `bare JID / resource`, so
//! its full JID is the registry key and its account's sessions are the
//! registry's account index — the "bare-JID index". XMPP adds only what its
//! presence announced and whether it asked for roster pushes.
//!
//! The queue holds already-serialized stanzas (`Bytes`, so a broadcast
//! clones a pointer, not the payload) and allocates only while stanzas wait.
//! Delivery never drops: [`Router::deliver`] appends and tells the caller
//! when the queue is at its high-water mark, and the sending session's task
//! then waits for room ([`crate::session::flow`]). A session that drains
//! nothing for the slow-consumer time is cut off, and what was queued for it
//! is routed again when it closes ([`super::ImServer::close_session`]).
//!
//! Routing a message to an online account touches no disk: a map lookup, a
//! priority check and a push.

use std::sync::Arc;

use bytes::Bytes;

use super::element::Element;
use super::stanza::Jid;
use crate::session::{Address, Handle, Kick, Open, Proto, Protocol, Registry, Session};

/// What a session's presence announced.
#[derive(Debug, Default)]
pub struct PresenceState {
    /// Sent available presence (initial or later) and not unavailable since.
    pub available: bool,
    pub priority: i8,
    /// The last broadcast available presence (`from` stamped, no `to`).
    pub last: Option<Element>,
}

/// What an XMPP session keeps beside the session layer's part.
#[derive(Default)]
pub struct XmppState {
    pub presence: PresenceState,
    /// Asked for the roster, so gets roster pushes (RFC 6121 §2.1.6).
    pub interested: bool,
    /// Enabled message carbons (XEP-0280).
    pub carbons: bool,
    /// Asked for the block list, so gets its pushes (XEP-0191 §3.2).
    pub blocklist_interested: bool,
    /// The PEP nodes whose notifications it wants (XEP-0163 `+notify`,
    /// from its entity capabilities); `None` until they are known.
    pub notify: Option<super::pep::Interest>,
}

impl Proto for XmppState {
    type Item = Bytes;

    fn item_bytes(item: &Bytes) -> u32 {
        u32::try_from(item.len() + 32).unwrap_or(u32::MAX)
    }

    /// The full JID.
    fn listed_name(addr: &Address) -> String {
        addr.text().to_string()
    }
}

/// One bound resource.
pub type Route = Session<XmppState>;

/// Where the sender's deliveries left a queue at its high-water mark (the
/// sender waits for room before its next stanza).
pub type Congestion = Option<Arc<dyn crate::session::Handle>>;

impl Session<XmppState> {
    /// The full JID.
    pub fn full_jid(&self) -> &str {
        self.address().text()
    }

    /// Available, with a priority that may receive bare-JID messages.
    pub fn available_priority(&self) -> Option<i8> {
        let st = self.lock();
        st.presence.available.then_some(st.presence.priority)
    }

    pub fn is_available(&self) -> bool {
        self.lock().presence.available
    }

    pub fn is_interested(&self) -> bool {
        self.lock().interested
    }

    pub fn carbons_enabled(&self) -> bool {
        self.lock().carbons
    }

    /// Available and interested in notifications of PEP `node`.
    pub fn wants_notify(&self, node: &str) -> bool {
        let st = self.lock();
        st.presence.available
            && st
                .notify
                .as_ref()
                .is_some_and(|n| n.iter().any(|x| x == node))
    }

    /// Sets the PEP nodes it wants; the ones that are new to it.
    pub fn set_notify(&self, interest: super::pep::Interest) -> Vec<String> {
        let mut st = self.lock();
        let new = interest
            .iter()
            .filter(|n| !st.notify.as_ref().is_some_and(|old| old.contains(n)))
            .cloned()
            .collect();
        st.notify = Some(interest);
        new
    }

    /// The last available presence it broadcast.
    pub fn last_presence(&self) -> Option<Element> {
        self.lock().presence.last.clone()
    }

    /// Whether the connection holding `generation` must leave: kicked, or
    /// taken over. Registers `cx` otherwise, without consuming the news
    /// flag that the session's main wait looks at.
    pub fn poll_kicked(&self, generation: u64, cx: &std::task::Context<'_>) -> std::task::Poll<()> {
        let st = self.lock();
        if self.generation() != generation || st.kick.is_some() || !st.online {
            return std::task::Poll::Ready(());
        }
        drop(st);
        self.watch(generation, cx.waker());
        std::task::Poll::Pending
    }
}

/// The routing table: XMPP's view of the session registry.
pub struct Router {
    registry: Arc<Registry>,
}

impl Router {
    pub fn new(registry: Arc<Registry>) -> Router {
        Router { registry }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Binds a full JID, replacing (kicking with [`Kick::Replaced`]) a
    /// session that had it. Returns the route and the generation its
    /// connection owns.
    pub fn bind(&self, jid: &Jid) -> (Arc<Route>, u64) {
        let bare = jid.bare().to_string();
        let addr = Address::new(Protocol::Xmpp, &bare, jid.resource().unwrap_or(""));
        let o = self.registry.open::<XmppState>(addr, Open::Replace);
        (o.session, o.generation)
    }

    /// Removes a session's route, unless another session has taken its JID.
    pub fn unbind(&self, route: &Arc<Route>) {
        self.registry.remove(route, |_| false);
    }

    /// The route of a full JID (normalized string form).
    pub fn route(&self, full: &str) -> Option<Arc<Route>> {
        self.registry.get::<XmppState>(Protocol::Xmpp, full)
    }

    /// Every XMPP route of an account (bare JID, normalized string form).
    pub fn routes(&self, bare: &str) -> Vec<Arc<Route>> {
        self.registry.with_account(bare, |all| {
            all.iter()
                .filter(|h| h.address().protocol() == Protocol::Xmpp)
                .filter_map(|h| h.clone().into_any().downcast::<Route>().ok())
                .collect()
        })
    }

    /// Runs `f` over the account's XMPP routes without copying the list.
    fn each_route(&self, bare: &str, mut f: impl FnMut(&Arc<dyn Handle>, &Route)) {
        self.registry.with_account(bare, |all| {
            for h in all {
                if let Some(r) = h.as_any().downcast_ref::<Route>() {
                    f(h, r);
                }
            }
        })
    }

    /// Queues serialized bytes for a session; false if it has closed (the
    /// caller routes elsewhere). Notes in `cong` when the queue reached its
    /// high-water mark.
    pub fn deliver(&self, route: &Arc<Route>, bytes: Bytes, cong: &mut Congestion) -> bool {
        let now = self.registry.now_ms();
        let congested = {
            let mut st = route.lock();
            if !st.online || st.ended {
                return false;
            }
            let c = st.enqueue(bytes, self.registry.limits(), now);
            Route::wake_locked(st);
            c
        };
        if congested && cong.is_none() {
            *cong = Some(route.clone() as Arc<dyn crate::session::Handle>);
        }
        true
    }

    /// Serializes `el` with `to` set to the session's full JID and queues it.
    pub fn deliver_element(&self, route: &Arc<Route>, el: &Element, cong: &mut Congestion) -> bool {
        let mut el = el.clone();
        el.set_attr("to", route.full_jid());
        self.deliver(
            route,
            Bytes::from(el.to_bytes(super::stream::NS_CLIENT)),
            cong,
        )
    }

    /// Delivers to the account's available resources of highest non-negative
    /// priority (RFC 6121 §8.5.2.1.1). Returns how many got it.
    pub fn deliver_to_best(&self, bare: &str, bytes: &Bytes, cong: &mut Congestion) -> usize {
        self.deliver_to_best_ids(bare, bytes, cong).len()
    }

    /// [`Router::deliver_to_best`], returning the ids of the sessions that
    /// got it (allocating only when one did).
    pub fn deliver_to_best_ids(
        &self,
        bare: &str,
        bytes: &Bytes,
        cong: &mut Congestion,
    ) -> Vec<u64> {
        let mut best: Option<i8> = None;
        self.each_route(bare, |_, r| {
            if let Some(p) = r.available_priority().filter(|p| *p >= 0) {
                best = best.max(Some(p));
            }
        });
        let Some(best) = best else {
            return Vec::new();
        };
        let mut got = Vec::new();
        self.each_route(bare, |h, r| {
            if r.available_priority() == Some(best) {
                if let Ok(route) = h.clone().into_any().downcast::<Route>() {
                    if self.deliver(&route, bytes.clone(), cong) {
                        got.push(route.id());
                    }
                }
            }
        });
        got
    }

    /// Delivers to every available resource with non-negative priority.
    pub fn deliver_to_all(&self, bare: &str, bytes: &Bytes, cong: &mut Congestion) -> usize {
        let mut n = 0;
        self.each_route(bare, |h, r| {
            if r.available_priority().is_some_and(|p| p >= 0) {
                if let Ok(route) = h.clone().into_any().downcast::<Route>() {
                    n += usize::from(self.deliver(&route, bytes.clone(), cong));
                }
            }
        });
        n
    }

    /// Kicks every bound session (at shutdown).
    pub fn kick_all(&self, why: Kick) {
        self.registry.kick_all(Some(Protocol::Xmpp), why);
    }

    /// Sessions bound right now.
    pub fn len(&self) -> usize {
        self.registry.len(Protocol::Xmpp)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Registry;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn available(r: &Route, priority: i8) {
        let mut st = r.lock();
        st.presence.available = true;
        st.presence.priority = priority;
    }

    fn router() -> Router {
        Router::new(Arc::new(Registry::standalone()))
    }

    fn limits(r: &Router) -> crate::session::FlowLimits {
        *r.registry().limits()
    }

    #[test]
    fn bind_replace_unbind() {
        let router = router();
        let mut cong = None;
        let (a, a_gen) = router.bind(&jid("alice@x/phone"));
        let (b, _) = router.bind(&jid("alice@x/phone"));
        assert_eq!(
            a.take_kick(a_gen),
            Err(crate::session::TakenOver),
            "taken over"
        );
        assert_eq!(a.lock().kick, Some(Kick::Replaced));
        assert_eq!(router.routes("alice@x").len(), 1);
        router.unbind(&a); // the old one must not remove its successor
        assert!(router.route("alice@x/phone").is_some());
        assert!(router.deliver(&b, Bytes::from_static(b"x"), &mut cong));
        assert_eq!(b.pop(&limits(&router), 0), Some(Bytes::from_static(b"x")));
        router.unbind(&b);
        assert!(router.route("alice@x/phone").is_none());
        assert!(router.routes("alice@x").is_empty());
        assert!(router.is_empty());
    }

    #[test]
    fn priorities_and_congestion() {
        let router = router();
        let lim = limits(&router);
        let (hi, _) = router.bind(&jid("a@x/hi"));
        let (lo, _) = router.bind(&jid("a@x/lo"));
        let (neg, _) = router.bind(&jid("a@x/neg"));
        let msg = Bytes::from_static(b"m");
        let mut cong = None;
        assert_eq!(
            router.deliver_to_best("a@x", &msg, &mut cong),
            0,
            "nobody available"
        );
        available(&hi, 5);
        available(&lo, 1);
        available(&neg, -1);
        assert_eq!(router.deliver_to_best("a@x", &msg, &mut cong), 1);
        assert!(hi.pop(&lim, 0).is_some() && lo.pop(&lim, 0).is_none());
        assert_eq!(router.deliver_to_all("a@x", &msg, &mut cong), 2);
        assert!(lo.pop(&lim, 0).is_some());
        assert!(cong.is_none());
        // Past the high-water mark the sender is told, and nothing is dropped.
        let big = Bytes::from(vec![b'x'; lim.high_water as usize]);
        assert!(router.deliver(&hi, big, &mut cong));
        assert!(cong
            .as_ref()
            .is_some_and(|c| std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(&hi))));
        assert!(router.deliver(&hi, msg.clone(), &mut cong), "still queued");
        assert_eq!(hi.lock().queue_len(), 3);
        // A closed session takes nothing: the caller routes elsewhere.
        hi.lock().online = false;
        assert!(!router.deliver(&hi, msg, &mut cong));
    }
}

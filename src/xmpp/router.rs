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
//!
//! In a cluster the other nodes' resources count too: a [`Remote`] (set once
//! at start, `crate::cluster::xmpp`) answers which resources of an account
//! are bound elsewhere and carries a stanza to one of them; the router tells
//! it when a resource binds, changes its presence or goes. Without a cluster
//! that costs one `OnceLock` check per lookup.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

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

/// A resource bound on another node of the cluster, as this node last
/// heard of it.
#[derive(Debug, Clone)]
pub struct RemoteResource {
    /// The full JID (normalized string form).
    pub full: String,
    /// The node holding it.
    pub node: Arc<str>,
    /// Its priority while available.
    pub priority: Option<i8>,
    /// Its last available presence (`from` stamped, no `to`).
    pub last: Option<Arc<Element>>,
}

impl RemoteResource {
    pub fn is_available(&self) -> bool {
        self.priority.is_some()
    }
}

/// What changed about a resource bound here, for the other nodes.
#[derive(Debug, Clone)]
pub enum Change {
    Bound,
    /// Its presence: the priority while available, the last available
    /// presence.
    Presence {
        priority: Option<i8>,
        last: Option<Element>,
    },
    Unbound,
}

/// The other nodes of a cluster, as the router sees them.
pub trait Remote: Send + Sync {
    /// An account's resources bound on other nodes.
    fn resources(&self, bare: &str) -> Vec<RemoteResource>;
    /// The resource bound elsewhere at a full JID.
    fn resource(&self, full: &str) -> Option<RemoteResource>;
    /// Carries a serialized stanza to `to`'s session on its node.
    fn send(&self, to: &RemoteResource, stanza: Bytes);
    /// A resource bound here (`full`, session `id`) changed.
    fn local_changed(&self, full: &str, id: u64, change: Change);
    /// Asks `to`'s node to end that session (a conflict), returning when
    /// it confirmed or did not answer in time.
    fn take_over<'a>(
        &'a self,
        to: &'a RemoteResource,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// Whom a bare-JID delivery reached: sessions here (ids) and resources on
/// other nodes.
#[derive(Debug, Default)]
pub struct Reached {
    pub ids: Vec<u64>,
    pub remote: usize,
}

impl Reached {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.remote == 0
    }

    pub fn len(&self) -> usize {
        self.ids.len() + self.remote
    }
}

/// The routing table: XMPP's view of the session registry.
pub struct Router {
    registry: Arc<Registry>,
    remote: OnceLock<Arc<dyn Remote>>,
}

impl Router {
    pub fn new(registry: Arc<Registry>) -> Router {
        Router {
            registry,
            remote: OnceLock::new(),
        }
    }

    /// Joins the router to the other nodes (once, at start).
    pub fn set_remote(&self, remote: Arc<dyn Remote>) {
        let _ = self.remote.set(remote);
    }

    /// An account's resources on other nodes (none outside a cluster).
    pub fn remote_resources(&self, bare: &str) -> Vec<RemoteResource> {
        match self.remote.get() {
            Some(r) => r.resources(bare),
            None => Vec::new(),
        }
    }

    /// The resource bound on another node at a full JID.
    pub fn remote_resource(&self, full: &str) -> Option<RemoteResource> {
        self.remote.get()?.resource(full)
    }

    /// Sends serialized bytes to a resource on another node.
    pub fn forward(&self, to: &RemoteResource, bytes: Bytes) {
        if let Some(r) = self.remote.get() {
            r.send(to, bytes);
        }
    }

    /// [`Router::forward`] of `el` with `to` set to the resource's full JID.
    pub fn forward_element(&self, to: &RemoteResource, el: &Element) {
        let mut el = el.clone();
        el.set_attr("to", to.full.as_str());
        self.forward(to, Bytes::from(el.to_bytes(super::stream::NS_CLIENT)));
    }

    /// Queues bytes for the session of a full JID, here or on another node;
    /// false if it is bound nowhere.
    pub fn send_to_full(&self, full: &str, bytes: Bytes, cong: &mut Congestion) -> bool {
        if let Some(route) = self.route(full) {
            if self.deliver(&route, bytes.clone(), cong) {
                return true;
            }
        }
        match self.remote_resource(full) {
            Some(r) => {
                self.forward(&r, bytes);
                true
            }
            None => false,
        }
    }

    /// Tells the other nodes that a session's presence changed.
    pub fn presence_changed(&self, route: &Route) {
        if let Some(r) = self.remote.get() {
            let change = {
                let st = route.lock();
                Change::Presence {
                    priority: st.presence.available.then_some(st.presence.priority),
                    last: st.presence.last.clone(),
                }
            };
            r.local_changed(route.full_jid(), route.id(), change);
        }
    }

    /// Before binding a full JID here: if another node holds it, that
    /// session is ended there first (a conflict, as for a local takeover).
    pub async fn take_over_elsewhere(&self, full: &str) {
        let Some(remote) = self.remote.get() else {
            return;
        };
        if let Some(r) = remote.resource(full) {
            remote.take_over(&r).await;
        }
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
        if let Some(r) = self.remote.get() {
            r.local_changed(o.session.full_jid(), o.session.id(), Change::Bound);
        }
        (o.session, o.generation)
    }

    /// Removes a session's route, unless another session has taken its JID.
    pub fn unbind(&self, route: &Arc<Route>) {
        if self.registry.remove(route, |_| false) {
            if let Some(r) = self.remote.get() {
                r.local_changed(route.full_jid(), route.id(), Change::Unbound);
            }
        }
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
    /// priority (RFC 6121 §8.5.2.1.1), on any node. Returns how many got it.
    pub fn deliver_to_best(&self, bare: &str, bytes: &Bytes, cong: &mut Congestion) -> usize {
        self.deliver_to_best_ids(bare, bytes, cong).len()
    }

    /// [`Router::deliver_to_best`], saying whom it reached (allocating only
    /// when a session here got it).
    pub fn deliver_to_best_ids(&self, bare: &str, bytes: &Bytes, cong: &mut Congestion) -> Reached {
        self.best(bare, bytes, cong, true)
    }

    /// [`Router::deliver_to_best`] among this node's sessions only (for a
    /// stanza another node sent here for a session that had gone).
    pub fn deliver_to_best_here(&self, bare: &str, bytes: &Bytes, cong: &mut Congestion) -> usize {
        self.best(bare, bytes, cong, false).len()
    }

    fn best(&self, bare: &str, bytes: &Bytes, cong: &mut Congestion, everywhere: bool) -> Reached {
        let mut best: Option<i8> = None;
        self.each_route(bare, |_, r| {
            if let Some(p) = r.available_priority().filter(|p| *p >= 0) {
                best = best.max(Some(p));
            }
        });
        let remote = if everywhere {
            self.remote_resources(bare)
        } else {
            Vec::new()
        };
        for r in &remote {
            if let Some(p) = r.priority.filter(|p| *p >= 0) {
                best = best.max(Some(p));
            }
        }
        let mut got = Reached::default();
        let Some(best) = best else {
            return got;
        };
        self.each_route(bare, |h, r| {
            if r.available_priority() == Some(best) {
                if let Ok(route) = h.clone().into_any().downcast::<Route>() {
                    if self.deliver(&route, bytes.clone(), cong) {
                        got.ids.push(route.id());
                    }
                }
            }
        });
        for r in remote.iter().filter(|r| r.priority == Some(best)) {
            self.forward(r, bytes.clone());
            got.remote += 1;
        }
        got
    }

    /// Delivers to every available resource with non-negative priority, on
    /// any node.
    pub fn deliver_to_all(&self, bare: &str, bytes: &Bytes, cong: &mut Congestion) -> usize {
        let mut n = 0;
        self.each_route(bare, |h, r| {
            if r.available_priority().is_some_and(|p| p >= 0) {
                if let Ok(route) = h.clone().into_any().downcast::<Route>() {
                    n += usize::from(self.deliver(&route, bytes.clone(), cong));
                }
            }
        });
        for r in self.remote_resources(bare) {
            if r.priority.is_some_and(|p| p >= 0) {
                self.forward(&r, bytes.clone());
                n += 1;
            }
        }
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
        assert!(cong.as_ref().is_some_and(|c| c.id() == hi.id()));
        assert!(router.deliver(&hi, msg.clone(), &mut cong), "still queued");
        assert_eq!(hi.lock().queue_len(), 3);
        // A closed session takes nothing: the caller routes elsewhere.
        hi.lock().online = false;
        assert!(!router.deliver(&hi, msg, &mut cong));
    }
}

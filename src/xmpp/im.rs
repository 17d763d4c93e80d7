//! Instant messaging for the hosted domains (RFC 6121): what happens to a
//! stanza once [`super::c2s::C2s`] has checked it and stamped its `from`.
//!
//! [`ImServer`] is shared by every session: the routing table
//! ([`super::router`]), rosters ([`super::roster`]), offline messages
//! ([`super::offline`]) and the auth core (whether an account exists). Each
//! bound session owns an [`ImSession`]. [`ImServer::handle`] runs in the
//! session's task and returns [`Effects`]: replies for the session itself and
//! whether a store barrier must pass before they are written (a roster change
//! is acknowledged only once durable). Stanzas for other sessions go straight
//! into their queues, or, in a cluster, to the node holding them
//! ([`super::router::Remote`]; this node still archives them, once). Store reads are awaited (the store thread does them);
//! routing to an online user awaits nothing.
//!
//! Only hosted domains are served: there is no server-to-server, so anything
//! addressed elsewhere gets `remote-server-not-found`.
//!
//! Submodules by concept: message routing here, [`super::presence`] for
//! presence and subscriptions, [`super::roster`] for the roster iq,
//! [`super::disco`] for iqs the server answers itself.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use super::blocking::{blocked_error, BlockStore};
use super::carbons::Carbon;
use super::element::Element;
use super::mam::{Archive, NS_SID};
use super::offline::OfflineStore;
use super::roster::RosterStore;
use super::router::{Congestion, Reached, Route, Router};
use super::stanza::{Jid, StanzaError};
use super::stream::NS_CLIENT;
use crate::auth::{may, Action, AuthCore, BareJid, Scopes};

/// What handling a stanza asks of the session's task.
#[derive(Default)]
pub struct Effects {
    /// Serialized stanzas for this session, in order.
    pub replies: Vec<Bytes>,
    /// Wait for a store barrier before writing the replies.
    pub flush: bool,
    /// A session whose queue this stanza filled to its high-water mark:
    /// the sender waits for room before its next stanza.
    pub congested: Congestion,
}

impl Effects {
    pub(crate) fn reply(&mut self, el: Element) {
        self.replies.push(Bytes::from(el.to_bytes(NS_CLIENT)));
    }
}

/// One bound session's IM state.
pub struct ImSession {
    pub route: Arc<Route>,
    /// The generation this connection owns of `route`.
    pub generation: u64,
    pub jid: Jid,
    pub user: BareJid,
    /// The token's scopes; `None` for a password login.
    pub scopes: Option<Scopes>,
    /// Where directed presence went while available (RFC 6121 §4.6), so they
    /// hear when the session goes away.
    pub(crate) directed: HashSet<String>,
    /// Bound by Bind 2 (XEP-0386 §3.2): the client syncs from the archive,
    /// so offline messages the archive holds are cleared, not delivered
    /// (those it does not hold still are).
    pub mam_synced: bool,
}

/// The IM service shared by every session. See the module docs.
pub struct ImServer {
    pub router: Router,
    pub(crate) roster: RosterStore,
    pub(crate) offline: OfflineStore,
    pub(crate) blocks: BlockStore,
    pub(crate) mam: Archive,
    /// XEP-0049 private storage and XEP-0054 vCards.
    pub account_xml: super::storage::AccountXml,
    /// The services on the hosts' subdomains (group chat, upload).
    pub services: super::services::Services,
    /// XEP-0163 PEP nodes of the accounts.
    pub pep: super::pep::Pep,
    /// The XEP-0060 service of `pubsub.<host>`.
    pub pubsub: super::pubsub::Pubsub,
    /// XEP-0045 rooms on `conference.<host>`.
    pub muc: super::muc::Muc,
    /// XEP-0363 HTTP file upload, when served.
    pub upload: Option<Arc<super::upload::Uploads>>,
    /// The bridge to MQTT, set once at start.
    pub bridge: std::sync::OnceLock<Arc<crate::bridge::Bridge>>,
    auth: Arc<AuthCore>,
}

impl ImServer {
    /// The IM service; `max_offline` messages kept per offline account.
    pub fn new(auth: Arc<AuthCore>, router: Router) -> ImServer {
        Self::with_offline_limit(auth, router, super::offline::MAX_PER_ACCOUNT)
    }

    pub fn with_offline_limit(auth: Arc<AuthCore>, router: Router, max_offline: usize) -> ImServer {
        let store = auth.store().clone();
        let clock = router.registry().clock().clone();
        ImServer {
            router,
            roster: RosterStore::new(store.clone()),
            blocks: BlockStore::new(store.clone(), super::blocking::MAX_ITEMS),
            mam: Archive::new(store.clone(), clock.clone()),
            account_xml: super::storage::AccountXml::new(store.clone()),
            services: Default::default(),
            pep: super::pep::Pep::new(store.clone(), Default::default()),
            pubsub: super::pubsub::Pubsub::new(store.clone(), Default::default()),
            muc: super::muc::Muc::new(store.clone(), Default::default()),
            upload: None,
            bridge: std::sync::OnceLock::new(),
            offline: {
                let mut o = OfflineStore::new(store, clock);
                o.max = max_offline;
                o
            },
            auth,
        }
    }

    /// A random id for a server-made iq push.
    pub(crate) fn push_id(&self) -> String {
        hex::encode(crate::session::random::<4>(
            self.router.registry().entropy().as_ref(),
        ))
    }

    /// The store (shared by every node of a cluster).
    pub(crate) fn store(&self) -> &crate::store::Store {
        self.auth.store()
    }

    pub fn is_hosted(&self, domain: &str) -> bool {
        self.auth.hosts().iter().any(|h| h == domain)
    }

    /// The hosted domains, the first one the default.
    pub(crate) fn hosts(&self) -> &[String] {
        self.auth.hosts()
    }

    /// Whether an account exists (a store read: only when nobody is online).
    pub(crate) async fn account_exists(&self, user: &BareJid) -> bool {
        self.auth.has_account(user).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "store failure looking up an account");
            false
        })
    }

    /// Puts a freshly bound session into the routing table.
    pub fn open_session(&self, jid: Jid, user: BareJid, scopes: Option<Scopes>) -> ImSession {
        let (route, generation) = self.router.bind(&jid);
        ImSession {
            route,
            generation,
            jid,
            user,
            scopes,
            directed: HashSet::new(),
            mam_synced: false,
        }
    }

    /// The session ended: it takes no more deliveries, unavailable presence
    /// goes to whoever saw it, it leaves the routing table, and what was
    /// queued for it but never written is routed again — messages to the
    /// account's other resources or to offline storage, requests answered
    /// with an error — so nothing sent to it disappears unseen.
    pub async fn close_session(&self, mut s: ImSession) {
        let left = {
            let mut st = s.route.lock();
            st.online = false;
            let left = st.take_queue();
            // Senders waiting for room in it go on.
            Route::wake_locked(st);
            left
        };
        let mut fx = Effects::default();
        let bye = Element::new("presence", NS_CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", s.jid.to_string());
        self.broadcast_unavailable(&mut s, &bye, &mut fx).await;
        self.router.unbind(&s.route);
        self.forget_blocklist(&s.user.to_string()).await;
        let owner = s.user.to_string();
        self.mam.forget(&owner, || self.online(&owner)).await;
        if !left.is_empty() {
            tracing::info!(
                stanzas = left.len(),
                "routing again what a closed session left"
            );
        }
        for bytes in left {
            match super::stream::read_back(&bytes) {
                Some(el) => self.reroute(&s.user, el, true, &mut fx).await,
                None => tracing::error!("a queued stanza could not be read back"),
            }
        }
    }

    /// A stanza queued for a session of `user` that closed before writing
    /// it (or one another node sent for a session gone from here: then
    /// `everywhere` is false and only this node's resources are tried, so a
    /// stanza never goes back and forth between nodes).
    pub(crate) async fn reroute(
        &self,
        user: &BareJid,
        el: Element,
        everywhere: bool,
        fx: &mut Effects,
    ) {
        let from = el.attr("from").and_then(|f| Jid::parse(f).ok());
        match el.name.as_str() {
            "message" => {
                let ty = el.attr("type").unwrap_or("normal");
                // A carbon is a copy: the message itself went elsewhere.
                let carbon = el.child("sent", super::carbons::NS_CARBONS).is_some()
                    || el.child("received", super::carbons::NS_CARBONS).is_some();
                if !carbon && matches!(ty, "chat" | "normal" | "headline") {
                    let bytes = Bytes::from(el.to_bytes(NS_CLIENT));
                    let key = user.to_string();
                    let got = if everywhere {
                        self.router.deliver_to_best(&key, &bytes, &mut fx.congested)
                    } else {
                        self.router
                            .deliver_to_best_here(&key, &bytes, &mut fx.congested)
                    };
                    if got == 0 {
                        // The sender hears nothing back for a stored message,
                        // as for any message to an offline account.
                        let mut to_sender = Effects::default();
                        self.store_offline(user, &el, &mut to_sender).await;
                        self.bounce(from.as_ref(), to_sender);
                    }
                }
            }
            "iq" if matches!(el.attr("type"), Some("get" | "set")) => {
                let mut to_sender = Effects::default();
                to_sender.error(&el, StanzaError::ServiceUnavailable);
                self.bounce(from.as_ref(), to_sender);
            }
            // Presence is state, sent again when it changes; results and
            // errors answer nothing that waits.
            _ => {}
        }
    }

    /// Replies meant for a stanza's sender, queued to the sender's session.
    fn bounce(&self, sender: Option<&Jid>, fx: Effects) {
        let Some(sender) = sender else { return };
        let sender = sender.to_string();
        let mut ignore = None;
        for r in fx.replies {
            // Here or on the sender's node.
            if !self.router.send_to_full(&sender, r, &mut ignore) {
                return;
            }
        }
    }

    /// Handles one stanza from a bound session (`from` already stamped).
    pub async fn handle(&self, s: &mut ImSession, el: Element) -> Effects {
        let kind = match el.name.as_str() {
            "message" => 0,
            "presence" => 1,
            _ => 2,
        };
        crate::metrics::metrics().xmpp_routed[kind].inc();
        let mut fx = Effects::default();
        if !may(s.scopes.as_ref(), Action::Send) {
            fx.error(&el, StanzaError::Forbidden);
            return fx;
        }
        match el.name.as_str() {
            "message" => self.message(s, el, &mut fx).await,
            "presence" => self.presence(s, el, &mut fx).await,
            "iq" => self.iq(s, el, &mut fx).await,
            _ => {}
        }
        fx
    }

    /// The stanza's `to` (checked by C2s), or the sender's own bare JID.
    fn target(s: &ImSession, el: &Element) -> Jid {
        el.attr("to")
            .and_then(|t| Jid::parse(t).ok())
            .unwrap_or_else(|| s.jid.bare())
    }

    /// RFC 6121 §8.5, with XEP-0280 carbons.
    async fn message(&self, s: &mut ImSession, mut el: Element, fx: &mut Effects) {
        let to = Self::target(s, &el);
        if let Some((service, _)) = self.service_of(to.domain()) {
            return self.service_stanza(service, s, el, fx).await;
        }
        if !self.is_hosted(to.domain()) {
            return fx.error(&el, StanzaError::RemoteServerNotFound);
        }
        let ty = match el.attr("type") {
            Some("chat") => "chat",
            Some("groupchat") => "groupchat",
            Some("headline") => "headline",
            Some("error") => "error",
            _ => "normal",
        };
        let Some(bare) = to.to_bare() else {
            // To the server itself: no message service here.
            if matches!(ty, "normal" | "chat") {
                fx.error(&el, StanzaError::ServiceUnavailable);
            }
            return;
        };
        if let Some(why) = self.blocked(s, &to).await {
            if let Some(e) = blocked_error(&el, why) {
                fx.reply(e);
            }
            return;
        }
        // XEP-0359 §5: stanza ids are the server's to give.
        el.remove_children("stanza-id", NS_SID);
        let carbons = super::carbons::eligible(&el, ty);
        if carbons && bare != s.user {
            // To the sender's other resources (a message to its own account
            // is copied as received, below).
            self.router.carbon_copies(
                Carbon::Sent,
                &s.user.to_string(),
                &[s.route.id()],
                ty,
                &el,
                &mut fx.congested,
            );
        }
        // XEP-0313: the recipient's archive id travels with the message; the
        // sender's copy is archived as sent.
        // Only a message the recipient archives gets its archive id.
        let archive_id = if Self::archivable(&el, ty) && self.archives_with(&bare, &s.jid).await {
            Some(self.mam.next_id())
        } else {
            None
        };
        let sender_may_archive = Self::archivable(&el, ty) && bare != s.user;
        // The sender's id is taken now too, so both archives order the
        // message where it was routed.
        let as_sent = sender_may_archive.then(|| (self.mam.next_id(), el.clone()));
        if let Some(id) = archive_id {
            el.push_child(
                Element::new("stanza-id", NS_SID)
                    .with_attr("by", bare.to_string())
                    .with_attr("id", super::mam::id_text(id)),
            );
        }
        let bytes = Bytes::from(el.to_bytes(NS_CLIENT));
        let key = bare.to_string();
        // The recipient's sessions that got the message itself (here, and
        // how many on other nodes).
        let mut got = Reached::default();
        let mut stored = false;
        if to.resource().is_some() {
            let full = to.to_string();
            if let Some(route) = self.router.route(&full) {
                if self
                    .router
                    .deliver(&route, bytes.clone(), &mut fx.congested)
                {
                    got.ids.push(route.id());
                }
            }
            if got.is_empty() {
                if let Some(r) = self.router.remote_resource(&full) {
                    self.router.forward(&r, bytes.clone());
                    got.remote += 1;
                }
            }
            // §8.5.3.2.1: an absent resource is treated like the bare JID,
            // except for groupchat and errors.
            if got.is_empty() {
                match ty {
                    "groupchat" => return fx.error(&el, StanzaError::ServiceUnavailable),
                    "error" => return,
                    _ => {}
                }
            }
        }
        if got.is_empty() {
            match ty {
                "groupchat" => return fx.error(&el, StanzaError::ServiceUnavailable),
                "headline" => {
                    self.router.deliver_to_all(&key, &bytes, &mut fx.congested);
                    return;
                }
                "error" => {
                    self.router.deliver_to_best(&key, &bytes, &mut fx.congested);
                    return;
                }
                _ => {
                    // On any node; offline only when available nowhere.
                    got = self
                        .router
                        .deliver_to_best_ids(&key, &bytes, &mut fx.congested);
                    if got.is_empty() {
                        stored = self.store_offline(&bare, &el, fx).await;
                    }
                }
            }
        }
        // Archived here, once, for both sides, wherever the recipient is:
        // the node that receives a forwarded message only delivers it.
        let delivered = !got.is_empty() || stored;
        if carbons {
            let mut got = got.ids;
            got.push(s.route.id());
            self.router
                .carbon_copies(Carbon::Received, &key, &got, ty, &el, &mut fx.congested);
        }
        if delivered {
            if let Some(id) = archive_id {
                self.mam.put(&key, id, &s.jid.to_string(), false, &el);
            }
            if let Some((own, as_sent)) = as_sent {
                if self.archives_with(&s.user, &to).await {
                    self.mam
                        .put(&s.user.to_string(), own, &to.to_string(), true, &as_sent);
                }
            }
        }
    }

    /// Keeps a message for an account with no available resource; true
    /// when it was stored.
    pub(crate) async fn store_offline(
        &self,
        bare: &BareJid,
        el: &Element,
        fx: &mut Effects,
    ) -> bool {
        if !self.account_exists(bare).await {
            fx.error(el, StanzaError::ServiceUnavailable);
            return false;
        }
        // Only messages with content; chat states and receipts alone are not
        // worth keeping (XEP-0160 §3 leaves this to the server).
        if el.child("body", NS_CLIENT).is_none() {
            return false;
        }
        match self.offline.push(bare, el, &self.auth.hosts()[0]).await {
            Ok(true) => true,
            Ok(false) => {
                crate::metrics::metrics().dropped(crate::metrics::DropReason::OfflineFull);
                fx.error(el, StanzaError::ResourceConstraint);
                false
            }
            Err(e) => {
                fx.internal(el, e);
                false
            }
        }
    }

    /// RFC 6120 §10.3 and RFC 6121 §8.5 for iq.
    async fn iq(&self, s: &mut ImSession, el: Element, fx: &mut Effects) {
        let request = matches!(el.attr("type"), Some("get" | "set"));
        let to = Self::target(s, &el);
        if let Some((service, _)) = self.service_of(to.domain()) {
            return self.service_stanza(service, s, el, fx).await;
        }
        if !self.is_hosted(to.domain()) {
            if request {
                fx.error(&el, StanzaError::RemoteServerNotFound);
            }
            return;
        }
        let Some(bare) = to.to_bare() else {
            return self.server_iq(s, &el, fx).await;
        };
        if let Some(why) = self.blocked(s, &to).await {
            if request {
                if let Some(e) = blocked_error(&el, why) {
                    fx.reply(e);
                }
            }
            return;
        }
        if to.resource().is_some() {
            let delivered = self.router.send_to_full(
                &to.to_string(),
                Bytes::from(el.to_bytes(NS_CLIENT)),
                &mut fx.congested,
            );
            if !delivered && request {
                fx.error(&el, StanzaError::ServiceUnavailable);
            }
            return;
        }
        if request {
            self.account_iq(s, &el, &bare, fx).await;
        }
    }
}

//! The IM service's side of a cluster: what another node asks of this one.
//! The transport (NATS) and the directory of the other nodes' resources are
//! `crate::cluster::xmpp`; the router sends to them through
//! [`super::router::Remote`].
//!
//! - A stanza another node routed to a full JID bound here is queued for
//!   that session exactly as a local delivery. If the session has gone
//!   meanwhile it is handled as what a closed session left queued
//!   ([`ImServer::reroute`]), among this node's resources only (so a
//!   stanza never goes back and forth): another resource, offline storage,
//!   an error to the sender (wherever the sender is).
//! - A takeover (the full JID is being bound on another node) ends the
//!   session here as a local conflict does.
//! - A resource that went with its node: unavailable presence to the local
//!   sessions that could see it.

use bytes::Bytes;

use super::element::Element;
use super::im::{Effects, ImServer};
use super::stanza::Jid;
use super::stream::NS_CLIENT;
use crate::session::Kick;

impl ImServer {
    /// Queues a stanza another node routed to `to` (a full JID bound here),
    /// as a local delivery does. Never waits: the caller carries every
    /// other session's traffic from the cluster too, in order. A receiver
    /// that does not drain its queue is cut off by the slow-consumer sweep,
    /// as for local senders, and its queue routed again. The stanza comes
    /// back when the session has gone: see [`Self::undeliverable_from_node`].
    pub fn deliver_from_node(&self, to: &str, stanza: Bytes) -> Result<(), Bytes> {
        let mut cong = None;
        match self.router.route(to) {
            Some(route) if self.router.deliver(&route, stanza.clone(), &mut cong) => Ok(()),
            _ => Err(stanza),
        }
    }

    /// A stanza from another node whose session here had gone: routed as
    /// what a closed session left queued, among this node's resources.
    pub async fn undeliverable_from_node(&self, to: &str, stanza: Bytes) {
        let Some(user) = Jid::parse(to).ok().and_then(|j| j.to_bare()) else {
            return;
        };
        let Some(el) = super::stream::read_back(&stanza) else {
            tracing::error!("cluster: a stanza from another node could not be read");
            return;
        };
        let mut fx = Effects::default();
        self.reroute(&user, el, false, &mut fx).await;
    }

    /// Another node is binding `full`: the session holding it here leaves
    /// the routing table at once and its stream ends with `<conflict/>`
    /// (as [`super::router::Router::bind`] does for a local takeover).
    /// True if there was one.
    pub fn taken_over_elsewhere(&self, full: &str) -> bool {
        let Some(route) = self.router.route(full) else {
            return false;
        };
        self.router.unbind(&route);
        route.kick(Kick::Replaced);
        route.retire();
        true
    }

    /// A resource bound on another node went with its node (`full`, which
    /// was available): its contacts' sessions here and its account's other
    /// sessions here hear it is unavailable.
    pub async fn gone_elsewhere(&self, full: &str) {
        let Some(user) = Jid::parse(full).ok().and_then(|j| j.to_bare()) else {
            return;
        };
        let bye = Element::new("presence", NS_CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", full);
        let items = match self.roster.items(&user).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "could not read a roster");
                return;
            }
        };
        let mut ignore = None;
        let mut to = vec![user.to_string()];
        for (contact, item) in items {
            if !item.hidden
                && item.subscription.has_from()
                && !self.presence_blocked(&user, &contact).await
            {
                to.push(contact);
            }
        }
        for bare in to {
            for r in self.router.routes(&bare) {
                if r.is_available() {
                    self.router.deliver_element(&r, &bye, &mut ignore);
                }
            }
        }
    }
}

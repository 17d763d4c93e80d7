//! Presence (RFC 6121 §4) and subscriptions (§3).
//!
//! Broadcast presence (no `to`) goes to the contacts whose subscription lets
//! them see it (`from`/`both`) and to all of the user's own available
//! resources. The first available presence of a session is its initial
//! presence: the server then answers the implicit probes itself from the
//! routing table (each online contact's last presence), hands over pending
//! subscription requests and delivers stored offline messages. Unavailable
//! presence, explicit or on disconnect, also reaches everyone who got directed
//! presence.
//!
//! Subscription stanzas are processed twice, as RFC 6121 describes: outbound
//! on the sender's roster, then inbound on the recipient's (both accounts are
//! on this server). Every roster change is pushed to the owner's interested
//! resources; the store is flushed before the sender hears back.
//!
//! In a cluster the resources on other nodes count everywhere above: their
//! presence is answered from the router's directory of them, and what is
//! for them is forwarded (a subscription stanza once the roster change is
//! in the shared store, which that node reads).

use bytes::Bytes;

use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::roster::RosterItem;
use super::router::RemoteResource;
use super::stanza::{Jid, StanzaError};
use super::stream::NS_CLIENT;
use crate::auth::{may, Action, BareJid};

/// `<presence/>` with these attributes.
fn presence(from: &str, to: Option<&str>, ty: Option<&str>) -> Element {
    let mut p = Element::new("presence", NS_CLIENT).with_attr("from", from);
    if let Some(to) = to {
        p.set_attr("to", to);
    }
    if let Some(ty) = ty {
        p.set_attr("type", ty);
    }
    p
}

impl ImServer {
    pub(crate) async fn presence(&self, s: &mut ImSession, el: Element, fx: &mut Effects) {
        let ty = el.attr("type").unwrap_or("").to_owned();
        let to = el.attr("to").and_then(|t| Jid::parse(t).ok());
        if let Some((service, _)) = to.as_ref().and_then(|t| self.service_of(t.domain())) {
            return self.service_stanza(service, s, el, fx).await;
        }
        if let Some(t) = &to {
            if self.blocked(s, t).await.is_some() {
                // XEP-0191 §3.4–3.5: presence either way is dropped.
                return;
            }
        }
        match (ty.as_str(), to) {
            ("", None) => self.broadcast_available(s, el, fx).await,
            ("unavailable", None) => self.broadcast_unavailable(s, &el, fx).await,
            ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed", Some(to)) => {
                if !may(s.scopes.as_ref(), Action::RosterWrite) {
                    return fx.error(&el, StanzaError::Forbidden);
                }
                if !self.is_hosted(to.domain()) {
                    return fx.error(&el, StanzaError::RemoteServerNotFound);
                }
                match to.to_bare() {
                    Some(contact) if contact != s.user => {
                        self.send_subscription(&s.user, &contact, &ty, fx).await
                    }
                    _ => fx.error(&el, StanzaError::BadRequest),
                }
            }
            ("probe", Some(to)) => self.answer_probe(s, &to, fx).await,
            ("" | "unavailable" | "error", Some(to)) => self.directed(s, &el, &to, fx),
            // Subscription stanzas without a `to`, or a broadcast probe.
            _ => fx.error(&el, StanzaError::BadRequest),
        }
    }

    async fn broadcast_available(&self, s: &mut ImSession, mut el: Element, fx: &mut Effects) {
        let priority = el
            .child("priority", NS_CLIENT)
            .and_then(|p| p.text().trim().parse::<i8>().ok())
            .unwrap_or(0);
        el.remove_attr("to");
        let initial = {
            let mut st = s.route.lock();
            let p = &mut st.presence;
            let initial = !p.available;
            p.available = true;
            p.priority = priority;
            p.last = Some(el.clone());
            initial
        };
        // The other nodes hear it before any stanza it causes.
        self.router.presence_changed(&s.route);
        let items = match self.roster.items(&s.user).await {
            Ok(i) => i,
            Err(e) => return fx.internal(&el, e),
        };
        for (contact, item) in items.iter().filter(|(_, i)| !i.hidden) {
            if item.subscription.has_from() && !self.presence_blocked(&s.user, contact).await {
                for r in self.router.routes(contact) {
                    if r.is_available() {
                        self.router.deliver_element(&r, &el, &mut fx.congested);
                    }
                }
                self.forward_to_available(contact, &el);
            }
        }
        // The sender's own copy first, then (below) what answers it.
        let mut echo = el.clone();
        echo.set_attr("to", s.jid.to_string());
        fx.reply(echo);
        for r in self.router.routes(&s.user.to_string()) {
            if r.id() != s.route.id() && r.is_available() {
                self.router.deliver_element(&r, &el, &mut fx.congested);
            }
        }
        self.forward_to_available(&s.user.to_string(), &el);
        self.pep_presence(s, &el, fx).await;
        if !initial {
            return;
        }
        let me = s.jid.to_string();
        // The probes of RFC 6121 §4.2.2, answered from the routing table.
        let mut others: Vec<String> = items
            .iter()
            .filter(|(_, i)| !i.hidden && i.subscription.has_to())
            .map(|(c, _)| c.clone())
            .collect();
        others.push(s.user.to_string());
        for contact in others {
            if self.presence_blocked(&s.user, &contact).await {
                continue;
            }
            for r in self.router.routes(&contact) {
                if r.id() == s.route.id() {
                    continue;
                }
                if let Some(mut p) = r.last_presence() {
                    p.set_attr("to", me.clone());
                    fx.reply(p);
                }
            }
            for r in self.router.remote_resources(&contact) {
                if let Some(p) = &r.last {
                    let mut p = Element::clone(p);
                    p.set_attr("to", me.clone());
                    fx.reply(p);
                }
            }
        }
        for (contact, _) in items.iter().filter(|(_, i)| i.pending_in) {
            if self.presence_blocked(&s.user, contact).await {
                continue;
            }
            fx.reply(presence(
                contact,
                Some(&s.user.to_string()),
                Some("subscribe"),
            ));
        }
        match self.offline.take(&s.user).await {
            Ok(msgs) if s.mam_synced => {
                let me = s.user.to_string();
                let archived = |m: &[u8]| {
                    super::stream::read_back(m).is_some_and(|el| {
                        el.child("stanza-id", super::mam::NS_SID)
                            .is_some_and(|id| id.attr("by") == Some(me.as_str()))
                    })
                };
                fx.replies
                    .extend(msgs.into_iter().filter(|m| !archived(m)).map(Bytes::from));
            }
            Ok(msgs) => fx.replies.extend(msgs.into_iter().map(Bytes::from)),
            Err(e) => tracing::error!(error = %e, "could not read offline messages"),
        }
    }

    /// Unavailable to subscribers, own resources and directed-presence
    /// recipients; used for `type='unavailable'` and on disconnect.
    pub(crate) async fn broadcast_unavailable(
        &self,
        s: &mut ImSession,
        el: &Element,
        fx: &mut Effects,
    ) {
        // Its occupants leave their rooms (XEP-0045 §7.14, §18.1).
        self.muc_session_gone(&s.jid, fx);
        let mut el = el.clone();
        el.remove_attr("to");
        let was_available = {
            let mut st = s.route.lock();
            let p = &mut st.presence;
            let was = p.available;
            p.available = false;
            p.last = None;
            was
        };
        if was_available {
            self.router.presence_changed(&s.route);
        }
        let items = if was_available {
            match self.roster.items(&s.user).await {
                Ok(items) => items,
                Err(e) => return fx.internal(&el, e),
            }
        } else {
            Vec::new()
        };
        let mut sent: Vec<u64> = Vec::new();
        let mut sent_elsewhere: Vec<String> = Vec::new();
        let router = &self.router;
        let cong = &mut fx.congested;
        let mut send = |r: &std::sync::Arc<super::router::Route>| {
            if !sent.contains(&r.id()) {
                sent.push(r.id());
                router.deliver_element(r, &el, cong);
            }
        };
        let mut forward = |r: &RemoteResource| {
            if !sent_elsewhere.contains(&r.full) {
                sent_elsewhere.push(r.full.clone());
                router.forward_element(r, &el);
            }
        };
        if was_available {
            for (contact, item) in items {
                if !item.hidden
                    && item.subscription.has_from()
                    && !self.presence_blocked(&s.user, &contact).await
                {
                    for r in self.router.routes(&contact) {
                        if r.is_available() {
                            send(&r);
                        }
                    }
                    for r in self.router.remote_resources(&contact) {
                        if r.is_available() {
                            forward(&r);
                        }
                    }
                }
            }
            for r in self.router.routes(&s.user.to_string()) {
                if r.id() != s.route.id() && r.is_available() {
                    send(&r);
                }
            }
            for r in self.router.remote_resources(&s.user.to_string()) {
                if r.is_available() {
                    forward(&r);
                }
            }
        }
        for target in std::mem::take(&mut s.directed) {
            let Ok(jid) = Jid::parse(&target) else {
                continue;
            };
            for r in self.targets(&jid) {
                send(&r);
            }
            for r in self.remote_targets(&jid) {
                forward(&r);
            }
        }
        if was_available {
            let mut echo = el.clone();
            echo.set_attr("to", s.jid.to_string());
            fx.reply(echo);
        }
    }

    /// The sessions a directed stanza to `to` reaches: the full JID's session,
    /// or every available resource of a bare JID.
    fn targets(&self, to: &Jid) -> Vec<std::sync::Arc<super::router::Route>> {
        if to.resource().is_some() {
            self.router.route(&to.to_string()).into_iter().collect()
        } else {
            self.router
                .routes(&to.to_string())
                .into_iter()
                .filter(|r| r.is_available())
                .collect()
        }
    }

    /// [`Self::targets`] on the other nodes of a cluster.
    fn remote_targets(&self, to: &Jid) -> Vec<RemoteResource> {
        if to.resource().is_some() {
            self.router
                .remote_resource(&to.to_string())
                .into_iter()
                .collect()
        } else {
            let mut all = self.router.remote_resources(&to.to_string());
            all.retain(|r| r.is_available());
            all
        }
    }

    /// Sends `el` to every available resource of `bare` on other nodes.
    fn forward_to_available(&self, bare: &str, el: &Element) {
        for r in self.router.remote_resources(bare) {
            if r.is_available() {
                self.router.forward_element(&r, el);
            }
        }
    }

    /// Directed presence (RFC 6121 §4.6).
    fn directed(&self, s: &mut ImSession, el: &Element, to: &Jid, fx: &mut Effects) {
        if !self.is_hosted(to.domain()) || to.local().is_none() {
            return;
        }
        let bytes = Bytes::from(el.to_bytes(NS_CLIENT));
        for r in self.targets(to) {
            self.router.deliver(&r, bytes.clone(), &mut fx.congested);
        }
        for r in self.remote_targets(to) {
            self.router.forward(&r, bytes.clone());
        }
        let key = to.to_string();
        match el.attr("type") {
            None if s.route.is_available() => {
                s.directed.insert(key);
            }
            Some("unavailable") => {
                s.directed.remove(&key);
            }
            _ => {}
        }
    }

    /// A client's own probe (RFC 6121 §4.3): answered if it may see the contact.
    async fn answer_probe(&self, s: &ImSession, to: &Jid, fx: &mut Effects) {
        let Some(contact) = to.to_bare() else { return };
        let allowed = contact == s.user
            || matches!(self.roster.get(&s.user, &contact.to_string()).await,
                Ok(Some(i)) if i.subscription.has_to());
        if !allowed {
            return;
        }
        let me = s.jid.to_string();
        let mut any = false;
        for r in self.router.routes(&contact.to_string()) {
            if let Some(mut p) = r.last_presence() {
                p.set_attr("to", me.clone());
                fx.reply(p);
                any = true;
            }
        }
        for r in self.router.remote_resources(&contact.to_string()) {
            if let Some(p) = &r.last {
                let mut p = Element::clone(p);
                p.set_attr("to", me.clone());
                fx.reply(p);
                any = true;
            }
        }
        if !any {
            fx.reply(presence(
                &contact.to_string(),
                Some(&me),
                Some("unavailable"),
            ));
        }
    }

    /// Changes `owner`'s item for `contact` with `f`; pushes and marks the
    /// flush when it changed. Returns whether it changed.
    async fn change_item(
        &self,
        owner: &BareJid,
        contact: &BareJid,
        fx: &mut Effects,
        f: impl FnOnce(Option<RosterItem>) -> Option<RosterItem>,
    ) -> bool {
        let c = contact.to_string();
        match self.roster.update(owner, &c, f).await {
            Ok((old, new)) if old != new => {
                fx.flush = true;
                let was_visible = old.as_ref().is_some_and(|i| !i.hidden);
                match &new {
                    Some(i) if !i.hidden => self.roster_push(owner, &c, Some(i), fx),
                    _ if was_visible => self.roster_push(owner, &c, None, fx),
                    _ => {}
                }
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "store failure updating a roster");
                false
            }
        }
    }

    /// `user` sends a subscription stanza of `kind` to `contact`: outbound
    /// processing on the user's roster, then inbound on the contact's.
    pub(crate) async fn send_subscription(
        &self,
        user: &BareJid,
        contact: &BareJid,
        kind: &str,
        fx: &mut Effects,
    ) {
        let route_it = match kind {
            "subscribe" => {
                self.change_item(user, contact, fx, |old| {
                    let mut i = old.unwrap_or_default();
                    i.hidden = false;
                    if !i.subscription.has_to() {
                        i.ask = true;
                    }
                    Some(i)
                })
                .await;
                true
            }
            "unsubscribe" => {
                self.change_item(user, contact, fx, |old| {
                    old.map(|mut i| {
                        i.subscription = i.subscription.with_to(false);
                        i.ask = false;
                        i
                    })
                })
                .await;
                true
            }
            // §3.1.5: approving needs a pending request (no pre-approval here).
            "subscribed" => {
                self.change_item(user, contact, fx, |old| match old {
                    Some(mut i) if i.pending_in => {
                        i.pending_in = false;
                        i.hidden = false;
                        i.subscription = i.subscription.with_from(true);
                        Some(i)
                    }
                    other => other,
                })
                .await
            }
            "unsubscribed" => {
                self.change_item(user, contact, fx, |old| {
                    old.and_then(|mut i| {
                        i.subscription = i.subscription.with_from(false);
                        i.pending_in = false;
                        (!i.hidden).then_some(i)
                    })
                })
                .await
            }
            _ => false,
        };
        if !route_it {
            return;
        }
        if !self.account_exists(contact).await {
            if kind == "subscribe" {
                // §3.1.3: no such contact; answer for it.
                self.receive_subscription(user, contact, "unsubscribed", fx)
                    .await;
            }
            return;
        }
        self.receive_subscription(contact, user, kind, fx).await;
    }

    /// Inbound processing: `owner` receives a subscription stanza of `kind`
    /// from `from`.
    async fn receive_subscription(
        &self,
        owner: &BareJid,
        from: &BareJid,
        kind: &str,
        fx: &mut Effects,
    ) {
        let owner_s = owner.to_string();
        let stanza = presence(&from.to_string(), Some(&owner_s), Some(kind));
        match kind {
            "subscribe" => {
                let current = self.roster.get(owner, &from.to_string()).await;
                if matches!(&current, Ok(Some(i)) if i.subscription.has_from()) {
                    // Already approved: answer for the owner (§3.1.3).
                    // (Boxed: an async call of itself.)
                    return Box::pin(self.receive_subscription(from, owner, "subscribed", fx))
                        .await;
                }
                self.change_item(owner, from, fx, |old| {
                    let mut i = old.unwrap_or(RosterItem {
                        hidden: true,
                        ..Default::default()
                    });
                    i.pending_in = true;
                    Some(i)
                })
                .await;
                // Delivered now if the owner is online, else at its next
                // initial presence (from the pending flag).
                self.deliver_subscription(&owner_s, &stanza, fx).await;
            }
            "subscribed" => {
                let changed = self
                    .change_item(owner, from, fx, |old| match old {
                        Some(mut i) if i.ask => {
                            i.ask = false;
                            i.subscription = i.subscription.with_to(true);
                            Some(i)
                        }
                        other => other,
                    })
                    .await;
                if changed {
                    self.deliver_subscription(&owner_s, &stanza, fx).await;
                    // §3.1.5: the contact's presence follows the approval.
                    self.presence_between(from, owner, None, fx);
                }
            }
            "unsubscribe" => {
                let changed = self
                    .change_item(owner, from, fx, |old| {
                        old.and_then(|mut i| {
                            i.subscription = i.subscription.with_from(false);
                            i.pending_in = false;
                            (!i.hidden).then_some(i)
                        })
                    })
                    .await;
                if changed {
                    self.deliver_subscription(&owner_s, &stanza, fx).await;
                    self.presence_between(owner, from, Some("unavailable"), fx);
                }
            }
            "unsubscribed" => {
                let changed = self
                    .change_item(owner, from, fx, |old| {
                        old.map(|mut i| {
                            i.subscription = i.subscription.with_to(false);
                            i.ask = false;
                            i
                        })
                    })
                    .await;
                if changed {
                    self.deliver_subscription(&owner_s, &stanza, fx).await;
                    self.presence_between(from, owner, Some("unavailable"), fx);
                }
            }
            _ => {}
        }
    }

    /// A subscription stanza to `owner`'s available resources. Another node
    /// answering it reads the rosters this change wrote: a resource there
    /// gets it once the change is in the shared store.
    async fn deliver_subscription(&self, owner: &str, el: &Element, fx: &mut Effects) {
        let bytes = Bytes::from(el.to_bytes(NS_CLIENT));
        for r in self.router.routes(owner) {
            if r.is_available() {
                self.router.deliver(&r, bytes.clone(), &mut fx.congested);
            }
        }
        let mut elsewhere = self.router.remote_resources(owner);
        elsewhere.retain(|r| r.is_available());
        if elsewhere.is_empty() {
            return;
        }
        if fx.flush {
            if let Err(e) = self.store().barrier().await {
                tracing::error!(error = %e, "store barrier failed");
            }
        }
        for r in elsewhere {
            self.router.forward(&r, bytes.clone());
        }
    }

    /// Sends the presence of each available resource of `from` (their last
    /// presence, or `unavailable` when `ty` says so) to each available
    /// resource of `to`.
    fn presence_between(&self, from: &BareJid, to: &BareJid, ty: Option<&str>, fx: &mut Effects) {
        let receivers: Vec<_> = self
            .router
            .routes(&to.to_string())
            .into_iter()
            .filter(|r| r.is_available())
            .collect();
        let mut elsewhere = self.router.remote_resources(&to.to_string());
        elsewhere.retain(|r| r.is_available());
        if receivers.is_empty() && elsewhere.is_empty() {
            return;
        }
        let mut sent: Vec<Element> = Vec::new();
        for sender in self.router.routes(&from.to_string()) {
            let p = match ty {
                Some(t) => sender
                    .is_available()
                    .then(|| presence(sender.full_jid(), None, Some(t))),
                None => sender.last_presence(),
            };
            sent.extend(p);
        }
        for sender in self.router.remote_resources(&from.to_string()) {
            let p = match ty {
                Some(t) => sender
                    .is_available()
                    .then(|| presence(&sender.full, None, Some(t))),
                None => sender.last.as_deref().cloned(),
            };
            sent.extend(p);
        }
        for p in &sent {
            for r in &receivers {
                self.router.deliver_element(r, p, &mut fx.congested);
            }
            for r in &elsewhere {
                self.router.forward_element(r, p);
            }
        }
    }
}

//! Rosters (RFC 6121 §2): stored items, the roster iq, and roster pushes.
//!
//! One record per (owner, contact) in the store's `Roster` tree, keyed
//! `owner NUL contact` so an owner's roster is one prefix scan. An item carries
//! the subscription state of RFC 6121 §3 (none/to/from/both, plus the pending
//! "ask" flag for our outgoing request and `pending_in` for an incoming one
//! not yet answered). An item created only by an incoming request is `hidden`:
//! kept for its pending state but not part of the roster the user sees.
//!
//! Read-modify-write of an item is serialized by a striped lock per owner, so
//! two sessions (or a session and a contact's subscription) cannot lose each
//! other's update. The store is read and written through its thread; a
//! change is acknowledged once a store barrier says it is durable.

use tokio::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::stanza::{error_reply, iq_result, Jid, StanzaError, NS_ROSTER};
use super::stream::NS_CLIENT;
use crate::auth::{may, Action, BareJid};
use crate::store::{records, Store, StoreError, Tree};

/// Items one roster may hold.
const MAX_ITEMS: usize = 1000;
/// Longest item name and group name, in characters.
const MAX_NAME: usize = 1023;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn name(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// We receive the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact receives our presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    pub fn with_to(self, on: bool) -> Subscription {
        Subscription::from_flags(on, self.has_from())
    }

    pub fn with_from(self, on: bool) -> Subscription {
        Subscription::from_flags(self.has_to(), on)
    }

    fn from_flags(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// A stored roster item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterItem {
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub subscription: Subscription,
    /// We asked for the contact's presence and await an answer.
    pub ask: bool,
    /// The contact asked for our presence and awaits an answer.
    pub pending_in: bool,
    /// Exists only for `pending_in`; not shown in the roster.
    pub hidden: bool,
}

impl RosterItem {
    /// The `<item/>` element of a roster result or push.
    pub fn to_element(&self, contact: &str) -> Element {
        let mut e = Element::new("item", NS_ROSTER)
            .with_attr("jid", contact)
            .with_attr("subscription", self.subscription.name());
        if let Some(n) = &self.name {
            e.set_attr("name", n.clone());
        }
        if self.ask {
            e.set_attr("ask", "subscribe");
        }
        for g in &self.groups {
            e.push_child(Element::new("group", NS_ROSTER).with_text(g.clone()));
        }
        e
    }
}

fn key(owner: &BareJid, contact: &str) -> Vec<u8> {
    let mut k = owner.to_string().into_bytes();
    k.push(0);
    k.extend_from_slice(contact.as_bytes());
    k
}

/// Roster records over the store, with per-owner update locks.
pub struct RosterStore {
    store: Store,
    locks: Vec<Mutex<()>>,
}

impl RosterStore {
    pub fn new(store: Store) -> RosterStore {
        RosterStore {
            store,
            locks: (0..64).map(|_| Mutex::new(())).collect(),
        }
    }

    pub async fn get(
        &self,
        owner: &BareJid,
        contact: &str,
    ) -> Result<Option<RosterItem>, StoreError> {
        match self.store.get(Tree::Roster, &key(owner, contact)).await? {
            Some(v) => Ok(Some(records::decode("roster", &v)?)),
            None => Ok(None),
        }
    }

    /// Every item of `owner` (hidden ones included), by contact.
    pub async fn items(&self, owner: &BareJid) -> Result<Vec<(String, RosterItem)>, StoreError> {
        let prefix = key(owner, "");
        self.store
            .scan_prefix(Tree::Roster, &prefix)
            .await?
            .into_iter()
            .map(|(k, v)| {
                let contact = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((contact, records::decode("roster", &v)?))
            })
            .collect()
    }

    /// Atomically changes one item: `f` gets the current item (if any) and
    /// returns the new one (`None` deletes). Returns (old, new).
    pub async fn update(
        &self,
        owner: &BareJid,
        contact: &str,
        f: impl FnOnce(Option<RosterItem>) -> Option<RosterItem>,
    ) -> Result<(Option<RosterItem>, Option<RosterItem>), StoreError> {
        let stripe = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            owner.hash(&mut h);
            (h.finish() as usize) % self.locks.len()
        };
        let _guard = self.locks[stripe].lock().await;
        let old = self.get(owner, contact).await?;
        let new = f(old.clone());
        if new != old {
            let k = key(owner, contact);
            match &new {
                Some(item) => self.store.put(Tree::Roster, k, records::encode(item)),
                None => self.store.delete(Tree::Roster, k),
            }
        }
        Ok((old, new))
    }
}

impl ImServer {
    /// A roster push of `contact`'s item (`None`: removed) to every
    /// interested resource of `owner`.
    pub(crate) fn roster_push(
        &self,
        owner: &BareJid,
        contact: &str,
        item: Option<&RosterItem>,
        fx: &mut Effects,
    ) {
        let el = match item {
            Some(i) if !i.hidden => i.to_element(contact),
            Some(_) => return,
            None => Element::new("item", NS_ROSTER)
                .with_attr("jid", contact)
                .with_attr("subscription", "remove"),
        };
        let push = Element::new("iq", NS_CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("push{}", self.push_id()))
            .with_child(Element::new("query", NS_ROSTER).with_child(el));
        for r in self.router.routes(&owner.to_string()) {
            if r.is_interested() {
                self.router.deliver_element(&r, &push, &mut fx.congested);
            }
        }
    }

    /// `<iq><query xmlns='jabber:iq:roster'/></iq>` from the user's own session.
    pub(crate) async fn roster_iq(&self, s: &mut ImSession, iq: &Element, fx: &mut Effects) {
        let query = iq.child("query", NS_ROSTER).expect("checked by caller");
        match iq.attr("type") {
            Some("get") => {
                if !may(s.scopes.as_ref(), Action::RosterRead) {
                    return fx.error(iq, StanzaError::Forbidden);
                }
                let items = match self.roster.items(&s.user).await {
                    Ok(i) => i,
                    Err(e) => return fx.internal(iq, e),
                };
                let mut q = Element::new("query", NS_ROSTER);
                for (contact, item) in items.iter().filter(|(_, i)| !i.hidden) {
                    q.push_child(item.to_element(contact));
                }
                s.route.lock().interested = true;
                fx.reply(iq_result(iq, Some(q)));
            }
            Some("set") => {
                if !may(s.scopes.as_ref(), Action::RosterWrite) {
                    return fx.error(iq, StanzaError::Forbidden);
                }
                let items: Vec<&Element> = query.children_named("item", NS_ROSTER).collect();
                let [item] = items.as_slice() else {
                    return fx.error(iq, StanzaError::BadRequest);
                };
                let Some(contact) = item
                    .attr("jid")
                    .and_then(|j| Jid::parse(j).ok())
                    .filter(|j| j.is_bare())
                else {
                    return fx.error(iq, StanzaError::BadRequest);
                };
                let contact = contact.to_string();
                if item.attr("subscription") == Some("remove") {
                    self.roster_remove(s, iq, &contact, fx).await;
                } else {
                    self.roster_set(s, iq, item, &contact, fx).await;
                }
            }
            _ => fx.error(iq, StanzaError::BadRequest),
        }
    }

    async fn roster_set(
        &self,
        s: &mut ImSession,
        iq: &Element,
        item: &Element,
        contact: &str,
        fx: &mut Effects,
    ) {
        let name = item
            .attr("name")
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let mut groups: Vec<String> = Vec::new();
        for g in item.children_named("group", NS_ROSTER) {
            let g = g.text();
            if g.is_empty() || g.chars().count() > MAX_NAME || groups.contains(&g) {
                return fx.error(iq, StanzaError::BadRequest);
            }
            groups.push(g);
        }
        if name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME) {
            return fx.error(iq, StanzaError::NotAcceptable);
        }
        let existing = match self.roster.get(&s.user, contact).await {
            Ok(e) => e,
            Err(e) => return fx.internal(iq, e),
        };
        if existing.as_ref().is_none_or(|i| i.hidden) {
            match self.roster.items(&s.user).await {
                Ok(all) if all.len() >= MAX_ITEMS => {
                    return fx.error(iq, StanzaError::NotAllowed);
                }
                Ok(_) => {}
                Err(e) => return fx.internal(iq, e),
            }
        }
        let r = self
            .roster
            .update(&s.user, contact, |old| {
                let mut i = old.unwrap_or_default();
                i.name = name;
                i.groups = groups;
                i.hidden = false;
                Some(i)
            })
            .await;
        match r {
            Ok((_, new)) => {
                fx.flush = true;
                fx.reply(iq_result(iq, None));
                self.roster_push(&s.user, contact, new.as_ref(), fx);
            }
            Err(e) => fx.internal(iq, e),
        }
    }

    async fn roster_remove(
        &self,
        s: &mut ImSession,
        iq: &Element,
        contact: &str,
        fx: &mut Effects,
    ) {
        let old = match self.roster.update(&s.user, contact, |_| None).await {
            Ok((old, _)) => old,
            Err(e) => return fx.internal(iq, e),
        };
        let Some(old) = old.filter(|i| !i.hidden) else {
            return fx.error(iq, StanzaError::ItemNotFound);
        };
        fx.flush = true;
        fx.reply(iq_result(iq, None));
        self.roster_push(&s.user, contact, None, fx);
        // RFC 6121 §2.5.2: removing an item cancels subscriptions both ways.
        if let Ok(contact_jid) = BareJid::parse(contact) {
            if old.subscription.has_to() || old.ask {
                self.send_subscription(&s.user, &contact_jid, "unsubscribe", fx)
                    .await;
            }
            if old.subscription.has_from() || old.pending_in {
                self.send_subscription(&s.user, &contact_jid, "unsubscribed", fx)
                    .await;
            }
        }
    }
}

impl Effects {
    pub(crate) fn error(&mut self, stanza: &Element, err: StanzaError) {
        if let Some(e) = error_reply(stanza, err, None) {
            self.reply(e);
        }
    }

    /// A store failure: logged once here, answered as internal-server-error.
    pub(crate) fn internal(&mut self, stanza: &Element, e: StoreError) {
        tracing::error!(error = %e, "store failure while handling a stanza");
        self.error(stanza, StanzaError::InternalServerError);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_flags() {
        assert_eq!(Subscription::None.with_to(true), Subscription::To);
        assert_eq!(Subscription::To.with_from(true), Subscription::Both);
        assert_eq!(Subscription::Both.with_to(false), Subscription::From);
        assert_eq!(Subscription::From.with_from(false), Subscription::None);
    }

    #[tokio::test]
    async fn store_update_and_scan() {
        let r = RosterStore::new(Store::memory());
        let a = BareJid::parse("a@x").unwrap();
        let b = BareJid::parse("b@x").unwrap();
        r.update(&a, "b@x", |_| {
            Some(RosterItem {
                name: Some("Bee".into()),
                ..Default::default()
            })
        })
        .await
        .unwrap();
        r.update(&a, "c@x", |_| Some(RosterItem::default()))
            .await
            .unwrap();
        r.update(&b, "a@x", |_| Some(RosterItem::default()))
            .await
            .unwrap();
        let items = r.items(&a).await.unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].0, "b@x");
        assert_eq!(
            String::from_utf8(items[0].1.to_element("b@x").to_bytes(NS_ROSTER)).unwrap(),
            "<item jid='b@x' subscription='none' name='Bee'/>"
        );
        let (old, new) = r.update(&a, "b@x", |_| None).await.unwrap();
        assert!(old.is_some() && new.is_none());
        assert_eq!(r.items(&a).await.unwrap().len(), 1);
    }
}

//! XEP-0191 Blocking Command (`urn:xmpp:blocking`): an account's list of
//! JIDs it wants nothing from and sends nothing to.
//!
//! The list is stored one record per item in the store's `Blocklist` tree,
//! keyed `owner NUL jid`, and kept in memory while the account has a session
//! online ([`AccountCache`]), so the checks on the routing path read no disk
//! for online users.
//!
//! An item is matched as XEP-0016 §2.1 says: `user@domain/resource` that
//! JID only, `user@domain` any of its resources, `domain/resource` and
//! `domain` anyone at that domain. What a block does (§3.4–3.5):
//! - a stanza from the owner to a blocked JID is not routed: message and iq
//!   requests get `<not-acceptable/>` with `<blocked
//!   xmlns='urn:xmpp:blocking:errors'/>`, presence is dropped;
//! - a stanza from a blocked JID to the owner is not routed: message and iq
//!   requests get `<service-unavailable/>` (as if the account did not
//!   exist), presence is dropped;
//! - presence broadcasts and the server's answers to probes leave them out;
//!   blocking a contact that sees the owner's presence sends it the owner's
//!   unavailable presence, unblocking sends the current one.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::account_cache::AccountCache;
use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::stanza::{error_reply, iq_result, Jid, StanzaError};
use super::stream::NS_CLIENT;
use crate::auth::BareJid;
use crate::store::{Store, StoreError, Tree};

pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
pub const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// Items one list may hold unless `max_blocklist_items` says otherwise.
pub const MAX_ITEMS: usize = 1000;

/// One account's blocked JIDs (normalized text).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlockList {
    items: BTreeSet<String>,
}

impl BlockList {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn items(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(String::as_str)
    }

    /// Whether an item matches `jid` (XEP-0016 §2.1).
    pub fn blocks(&self, jid: &Jid) -> bool {
        if self.items.is_empty() {
            return false;
        }
        let domain = jid.domain();
        if self.items.contains(domain) {
            return true;
        }
        if let Some(r) = jid.resource() {
            if self.items.contains(&format!("{domain}/{r}"))
                || self.items.contains(&jid.to_string())
            {
                return true;
            }
        }
        jid.local().is_some() && self.items.contains(&jid.bare().to_string())
    }

    /// Whether an item matches the account `bare` (text form), whatever its
    /// resource.
    pub fn blocks_account(&self, bare: &str) -> bool {
        Jid::parse(bare).is_ok_and(|j| self.blocks(&j))
    }
}

fn key(owner: &str, item: &str) -> Vec<u8> {
    let mut k = owner.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(item.as_bytes());
    k
}

/// Block lists over the store, kept in memory for accounts with a session
/// online ([`AccountCache`]).
pub struct BlockStore {
    store: Store,
    cache: AccountCache<BlockList>,
    /// Items one list may hold (`max_blocklist_items`).
    pub max_items: usize,
}

/// What a change did.
pub struct Changed {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl BlockStore {
    pub fn new(store: Store, max_items: usize) -> BlockStore {
        BlockStore {
            store,
            cache: AccountCache::default(),
            max_items,
        }
    }

    async fn read(&self, owner: &str) -> Result<BlockList, StoreError> {
        let prefix = key(owner, "");
        let items = self
            .store
            .scan_prefix(Tree::Blocklist, &prefix)
            .await?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect();
        Ok(BlockList { items })
    }

    /// An account's list: from memory, or read and (when `online` says the
    /// account has a session) kept there.
    pub async fn get(
        &self,
        owner: &str,
        online: impl Fn() -> bool,
    ) -> Result<Arc<BlockList>, StoreError> {
        self.cache.get(owner, || self.read(owner), online).await
    }

    /// Adds `items` (or, with `block` false, removes them; all when empty).
    /// `Ok(None)` when the list would exceed `max_items`.
    pub async fn change(
        &self,
        owner: &str,
        block: bool,
        items: Vec<String>,
    ) -> Result<Option<Changed>, StoreError> {
        let _g = self.cache.lock(owner).await;
        let mut list = match self.cache.cached(owner) {
            Some(l) => (*l).clone(),
            None => self.read(owner).await?,
        };
        let mut changed = Changed {
            added: Vec::new(),
            removed: Vec::new(),
        };
        if block {
            let new: BTreeSet<String> = items
                .into_iter()
                .filter(|i| !list.items.contains(i))
                .collect();
            if list.items.len() + new.len() > self.max_items {
                return Ok(None);
            }
            for i in new {
                self.store.put(Tree::Blocklist, key(owner, &i), Vec::new());
                list.items.insert(i.clone());
                changed.added.push(i);
            }
        } else {
            let gone: Vec<String> = if items.is_empty() {
                list.items.iter().cloned().collect()
            } else {
                items
                    .into_iter()
                    .filter(|i| list.items.contains(i))
                    .collect()
            };
            for i in gone {
                self.store.delete(Tree::Blocklist, key(owner, &i));
                list.items.remove(&i);
                changed.removed.push(i);
            }
        }
        self.cache.changed(owner, Arc::new(list));
        Ok(Some(changed))
    }

    /// The account's last session closed: its list leaves memory, unless
    /// `online` says a session came back meanwhile.
    pub async fn forget(&self, owner: &str, online: impl Fn() -> bool) {
        self.cache.forget(owner, online).await;
    }

    /// Lists held in memory.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// Which side of a stanza blocked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The sender blocked the recipient.
    BySender,
    /// The recipient's account blocked the sender.
    ByRecipient,
}

/// The error for a stanza the sender may not send (§3.5): `None` for
/// anything that is never answered with an error (presence, iq results).
pub fn blocked_error(stanza: &Element, why: Blocked) -> Option<Element> {
    if stanza.name == "presence" {
        return None;
    }
    match why {
        Blocked::BySender => {
            let mut e = error_reply(stanza, StanzaError::NotAcceptable, None)?;
            if let Some(err) = e.child_mut("error", NS_CLIENT) {
                err.set_attr("type", "cancel");
                err.push_child(Element::new("blocked", NS_BLOCKING_ERRORS));
            }
            Some(e)
        }
        Blocked::ByRecipient => error_reply(stanza, StanzaError::ServiceUnavailable, None),
    }
}

impl ImServer {
    /// Whether any account has a session online.
    pub(crate) fn online(&self, bare: &str) -> bool {
        !self.router.routes(bare).is_empty()
    }

    /// An account's block list (empty on a store failure, which is logged:
    /// the routing path does not stop for it).
    pub(crate) async fn blocklist(&self, bare: &str) -> Arc<BlockList> {
        match self.blocks.get(bare, || self.online(bare)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "could not read a block list");
                Arc::new(BlockList::default())
            }
        }
    }

    /// Whether a stanza from the session to `to` is blocked, and by whom.
    /// Stanzas within one account never are.
    pub(crate) async fn blocked(&self, s: &ImSession, to: &Jid) -> Option<Blocked> {
        if to.to_bare().as_ref() == Some(&s.user) {
            return None;
        }
        if self.blocklist(&s.user.to_string()).await.blocks(to) {
            return Some(Blocked::BySender);
        }
        let bare = to.to_bare()?;
        if !self.is_hosted(bare.domain()) {
            return None;
        }
        self.blocklist(&bare.to_string())
            .await
            .blocks(&s.jid)
            .then_some(Blocked::ByRecipient)
    }

    /// Whether presence between the account `user` and the contact `contact`
    /// (bare JID text) is blocked either way.
    pub(crate) async fn presence_blocked(&self, user: &BareJid, contact: &str) -> bool {
        let own = user.to_string();
        if contact == own {
            return false;
        }
        if self.blocklist(&own).await.blocks_account(contact) {
            return true;
        }
        let Ok(c) = Jid::parse(contact) else {
            return false;
        };
        if !self.is_hosted(c.domain()) {
            return false;
        }
        // The contact's items may name one of the user's resources; an
        // account-wide check is what presence between accounts needs.
        self.blocklist(contact).await.blocks(&Jid::from_bare(user))
    }

    /// The account's last session closed: its list may leave memory.
    pub(crate) async fn forget_blocklist(&self, bare: &str) {
        self.blocks.forget(bare, || self.online(bare)).await;
    }

    /// The blocking iqs of an account's own sessions (§3.1–3.3).
    pub(crate) async fn blocking_iq(
        &self,
        s: &mut ImSession,
        iq: &Element,
        p: &Element,
        fx: &mut Effects,
    ) {
        let owner = s.user.to_string();
        match (iq.attr("type"), p.name.as_str()) {
            (Some("get"), "blocklist") => {
                s.route.lock().blocklist_interested = true;
                let list = self.blocklist(&owner).await;
                let mut q = Element::new("blocklist", NS_BLOCKING);
                for i in list.items() {
                    q.push_child(Element::new("item", NS_BLOCKING).with_attr("jid", i));
                }
                fx.reply(iq_result(iq, Some(q)));
            }
            (Some("set"), "block" | "unblock") => {
                let block = p.name == "block";
                let mut items = Vec::new();
                for item in p.children_named("item", NS_BLOCKING) {
                    match item.attr("jid").map(Jid::parse) {
                        Some(Ok(j)) => items.push(j.to_string()),
                        _ => return fx.error(iq, StanzaError::JidMalformed),
                    }
                }
                if block && items.is_empty() {
                    // §3.2: a block needs at least one item.
                    return fx.error(iq, StanzaError::BadRequest);
                }
                let all = items.is_empty();
                let changed = match self.blocks.change(&owner, block, items).await {
                    Ok(Some(c)) => c,
                    Ok(None) => return fx.error(iq, StanzaError::ResourceConstraint),
                    Err(e) => return fx.internal(iq, e),
                };
                fx.flush = true;
                fx.reply(iq_result(iq, None));
                let changed_items = if block {
                    &changed.added
                } else {
                    &changed.removed
                };
                self.blocking_push(&s.user, &p.name, changed_items, all && !block, fx);
                self.presence_after_block(s, block, changed_items, fx).await;
            }
            _ => fx.error(iq, StanzaError::BadRequest),
        }
    }

    /// Tells the account's sessions that asked for the list what changed
    /// (§3.2–3.3): the same `block`/`unblock` as an iq set.
    fn blocking_push(
        &self,
        owner: &BareJid,
        what: &str,
        items: &[String],
        all: bool,
        fx: &mut Effects,
    ) {
        if items.is_empty() && !all {
            return;
        }
        let mut payload = Element::new(what, NS_BLOCKING);
        if !all {
            for i in items {
                payload.push_child(Element::new("item", NS_BLOCKING).with_attr("jid", i.clone()));
            }
        }
        for r in self.router.routes(&owner.to_string()) {
            if !r.lock().blocklist_interested {
                continue;
            }
            let push = Element::new("iq", NS_CLIENT)
                .with_attr("type", "set")
                .with_attr("id", format!("block{}", self.push_id()))
                .with_attr("to", r.full_jid())
                .with_child(payload.clone());
            self.router.deliver_element(&r, &push, &mut fx.congested);
        }
    }

    /// After a block, contacts that saw the account's presence get its
    /// unavailable presence; after an unblock, its current presence (and its
    /// resources theirs).
    async fn presence_after_block(
        &self,
        s: &ImSession,
        block: bool,
        items: &[String],
        fx: &mut Effects,
    ) {
        if items.is_empty() {
            return;
        }
        let list = BlockList {
            items: items.iter().cloned().collect(),
        };
        let roster = match self.roster.items(&s.user).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "could not read a roster after a block change");
                return;
            }
        };
        let own = self.router.routes(&s.user.to_string());
        for (contact, item) in roster.iter().filter(|(_, i)| !i.hidden) {
            if !list.blocks_account(contact) {
                continue;
            }
            if !block && self.presence_blocked(&s.user, contact).await {
                // Still blocked by another item, or by the contact.
                continue;
            }
            let theirs = self.router.routes(contact);
            if item.subscription.has_from() {
                for mine in &own {
                    let p = if block {
                        mine.is_available().then(|| {
                            Element::new("presence", NS_CLIENT)
                                .with_attr("type", "unavailable")
                                .with_attr("from", mine.full_jid())
                        })
                    } else {
                        mine.last_presence()
                    };
                    let Some(p) = p else { continue };
                    for t in theirs.iter().filter(|t| t.is_available()) {
                        self.router.deliver_element(t, &p, &mut fx.congested);
                    }
                }
            }
            if !block && item.subscription.has_to() {
                for t in &theirs {
                    let Some(p) = t.last_presence() else { continue };
                    for mine in own.iter().filter(|m| m.is_available()) {
                        self.router.deliver_element(mine, &p, &mut fx.congested);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> BlockList {
        BlockList {
            items: items.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn items_match_as_xep_0016_says() {
        assert!(!list(&[]).blocks(&j("a@x/r")));
        let full = list(&["a@x/r"]);
        assert!(full.blocks(&j("a@x/r")));
        assert!(!full.blocks(&j("a@x/other")) && !full.blocks(&j("a@x")));
        let bare = list(&["a@x"]);
        assert!(bare.blocks(&j("a@x/r")) && bare.blocks(&j("a@x")));
        assert!(!bare.blocks(&j("b@x/r")) && !bare.blocks(&j("x")));
        let domain = list(&["x"]);
        assert!(domain.blocks(&j("a@x/r")) && domain.blocks(&j("x")) && domain.blocks(&j("x/r")));
        assert!(!domain.blocks(&j("a@y")));
        let domain_res = list(&["x/r"]);
        assert!(domain_res.blocks(&j("a@x/r")) && domain_res.blocks(&j("x/r")));
        assert!(!domain_res.blocks(&j("a@x/s")));
        assert!(bare.blocks_account("a@x") && !full.blocks_account("a@x"));
    }

    #[test]
    fn the_blocked_error_says_blocked() {
        let m = Element::new("message", NS_CLIENT)
            .with_attr("from", "a@x/r")
            .with_attr("to", "b@x")
            .with_attr("type", "chat");
        let e = blocked_error(&m, Blocked::BySender).unwrap();
        let text = String::from_utf8(e.to_bytes(NS_CLIENT)).unwrap();
        assert!(text.contains("<error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><blocked xmlns='urn:xmpp:blocking:errors'/></error>"), "{text}");
        let e = blocked_error(&m, Blocked::ByRecipient).unwrap();
        assert!(String::from_utf8(e.to_bytes(NS_CLIENT))
            .unwrap()
            .contains("service-unavailable"));
        let p = Element::new("presence", NS_CLIENT);
        assert!(blocked_error(&p, Blocked::BySender).is_none());
    }

    #[tokio::test]
    async fn changes_are_stored_and_cached_lists_follow_them() {
        let store = Store::memory();
        let b = BlockStore::new(store.clone(), 3);
        assert!(b.get("o@x", || true).await.unwrap().is_empty());
        assert_eq!(b.cached(), 1, "an online account's list is kept");
        let c = b
            .change("o@x", true, vec!["a@x".into(), "b@x".into()])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.added, ["a@x", "b@x"]);
        assert_eq!(
            b.get("o@x", || true).await.unwrap().len(),
            2,
            "cache updated"
        );
        // Adding twice adds nothing; past the limit nothing is added.
        let c = b
            .change("o@x", true, vec!["a@x".into()])
            .await
            .unwrap()
            .unwrap();
        assert!(c.added.is_empty());
        assert!(b
            .change("o@x", true, vec!["c@x".into(), "d@x".into()])
            .await
            .unwrap()
            .is_none());
        // What the store holds is what a fresh reader sees.
        let fresh = BlockStore::new(store.clone(), 3);
        assert_eq!(fresh.get("o@x", || false).await.unwrap().len(), 2);
        assert_eq!(fresh.cached(), 0, "an offline account's list is not kept");
        let c = b.change("o@x", false, vec![]).await.unwrap().unwrap();
        assert_eq!(c.removed, ["a@x", "b@x"], "unblock all");
        assert!(fresh.get("o@x", || false).await.unwrap().is_empty());
        b.forget("o@x", || false).await;
        assert_eq!(b.cached(), 0);
    }
}

//! XEP-0163 Personal Eventing Protocol: the subset of XEP-0060 publish-
//! subscribe every account has on its bare JID — what OMEMO device lists and
//! bundles, XEP-0084 avatars, XEP-0402 bookmarks and moods live on.
//!
//! - The owner publishes (nodes are created on first publish, configured by
//!   XEP-0223 publish-options or `#owner` configure), retracts, purges and
//!   deletes; anyone the node's `access_model` lets in reads its items.
//! - Subscriptions are implicit (§4.3): a resource gets notifications of a
//!   node when its entity capabilities (XEP-0115, [`caps`]) carry
//!   `<node>+notify` and it may see the owner's presence (or it is the
//!   owner's own). It gets each node's last item when that interest
//!   appears. Explicit `<subscribe/>` is not offered.
//! - Nodes and persistent items are in the store (`Tree::Pep`, `owner NUL
//!   node`); a node with `persist_items` off keeps its items in memory only.
//!   A publish is acknowledged after the store barrier.
//!
//! Limits (`[pep]`): `max_nodes` per account, `max_items` per node (what
//! `max` means), `caps_cache_size` verified capability hashes remembered.

pub mod caps;
pub mod node;

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use serde::Deserialize;

use self::caps::{Caps, CapsCache};
pub use self::caps::{Interest, NS_CAPS};
use self::node::{fields, Access, Item, Node, NodeConfig, SendLast};
use self::node::{NS_NODE_CONFIG, NS_PUBLISH_OPTIONS};
use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::stanza::{error_reply, iq_result, StanzaError, NS_DELAY, NS_DISCO_INFO};
use super::stream::{read_back, NS_CLIENT};
use crate::auth::BareJid;
use crate::store::{records, Store, StoreError, Tree};

pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

/// What the account's disco#info says of PEP (exactly what is served).
pub const FEATURES: &[&str] = &[
    NS_PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

/// The `[pep]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PepConfig {
    /// Nodes one account may have.
    pub max_nodes: usize,
    /// Items one node may keep (`pubsub#max_items` at most this; `max`
    /// means it).
    pub max_items: usize,
    /// Verified capability hashes remembered (and queries awaited).
    pub caps_cache_size: usize,
}

impl Default for PepConfig {
    fn default() -> Self {
        PepConfig {
            max_nodes: 100,
            max_items: 256,
            caps_cache_size: 10_000,
        }
    }
}

impl PepConfig {
    /// Checks the ranges; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, v) in [
            ("max_nodes", self.max_nodes),
            ("max_items", self.max_items),
            ("caps_cache_size", self.caps_cache_size),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

/// The PEP nodes of every account.
pub struct Pep {
    store: Store,
    pub config: PepConfig,
    /// Items of nodes that do not persist them, by store key.
    volatile: DashMap<Vec<u8>, Vec<Item>>,
    /// Read-modify-write of one account's nodes, one at a time.
    locks: Vec<tokio::sync::Mutex<()>>,
    pub caps: CapsCache,
    queries: AtomicU64,
}

fn key(owner: &str, node: &str) -> Vec<u8> {
    format!("{owner}\0{node}").into_bytes()
}

impl Pep {
    pub fn new(store: Store, config: PepConfig) -> Pep {
        Pep {
            store,
            caps: CapsCache::new(config.caps_cache_size),
            config,
            volatile: DashMap::new(),
            locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            queries: AtomicU64::new(0),
        }
    }

    fn lock_of(&self, owner: &str) -> &tokio::sync::Mutex<()> {
        let h = owner
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.locks[h % self.locks.len()]
    }

    fn decode(&self, k: &[u8], v: &[u8]) -> Result<Node, StoreError> {
        let mut n: Node = records::decode("pep", v)?;
        if !n.config.persist_items {
            n.items = self.volatile.get(k).map(|i| i.clone()).unwrap_or_default();
        }
        Ok(n)
    }

    async fn load(&self, owner: &str, node: &str) -> Result<Option<Node>, StoreError> {
        let k = key(owner, node);
        match self.store.get(Tree::Pep, &k).await? {
            Some(v) => self.decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    fn save(&self, owner: &str, name: &str, n: &Node) {
        let k = key(owner, name);
        if n.config.persist_items {
            self.volatile.remove(&k);
            self.store.put(Tree::Pep, k, records::encode(n));
        } else {
            let bare = Node::new(n.config.clone());
            self.store.put(Tree::Pep, k.clone(), records::encode(&bare));
            self.volatile.insert(k, n.items.clone());
        }
    }

    fn remove(&self, owner: &str, name: &str) {
        let k = key(owner, name);
        self.volatile.remove(&k);
        self.store.delete(Tree::Pep, k);
    }

    /// Every node of `owner`, by name.
    async fn nodes(&self, owner: &str) -> Result<Vec<(String, Node)>, StoreError> {
        let prefix = key(owner, "");
        let mut out = Vec::new();
        for (k, v) in self.store.scan_prefix(Tree::Pep, &prefix).await? {
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((name, self.decode(&k, &v)?));
        }
        Ok(out)
    }

    /// A new id for a query sent to a client.
    fn query_id(&self) -> String {
        format!("caps-{}", self.queries.fetch_add(1, Ordering::Relaxed))
    }
}

/// An error with a pubsub application condition (XEP-0060 §7–8).
pub(crate) fn ps_error(fx: &mut Effects, iq: &Element, err: StanzaError, app: Option<&str>) {
    if let Some(mut e) = error_reply(iq, err, None) {
        if let (Some(app), Some(error)) = (app, e.child_mut("error", NS_CLIENT)) {
            error.push_child(Element::new(app, NS_ERRORS));
        }
        fx.reply(e);
    }
}

/// The one item of a publish, with exactly one payload element.
fn the_item(publish: &Element) -> Result<(Option<String>, &Element), &'static str> {
    let mut items = publish.children_named("item", NS_PUBSUB);
    let item = items.next().ok_or("item-required")?;
    if items.next().is_some() {
        return Err("invalid-payload");
    }
    let mut payloads = item.elements();
    let payload = payloads.next().ok_or("payload-required")?;
    if payloads.next().is_some() {
        return Err("invalid-payload");
    }
    let id = item
        .attr("id")
        .filter(|i| !i.is_empty())
        .map(str::to_string);
    Ok((id, payload))
}

fn item_element(i: &Item) -> Element {
    let mut el = Element::new("item", NS_PUBSUB).with_attr("id", i.id.clone());
    if let Some(p) = read_back(&i.payload) {
        el.push_child(p);
    }
    el
}

/// What a requester may do with a node.
enum Reader {
    Owner,
    Allowed,
    Refused(StanzaError, &'static str),
}

impl ImServer {
    /// Whether `reader` may see the items of a node of `owner`.
    async fn reader(&self, owner: &BareJid, reader: &BareJid, access: Access) -> Reader {
        if owner == reader {
            return Reader::Owner;
        }
        match access {
            Access::Open => Reader::Allowed,
            Access::Whitelist => Reader::Refused(StanzaError::NotAllowed, "closed-node"),
            Access::Presence => {
                let sees = matches!(self.roster.get(owner, &reader.to_string()).await,
                    Ok(Some(i)) if i.subscription.has_from());
                if sees && !self.presence_blocked(owner, &reader.to_string()).await {
                    Reader::Allowed
                } else {
                    Reader::Refused(StanzaError::NotAuthorized, "presence-subscription-required")
                }
            }
        }
    }

    /// A `pubsub` or `pubsub#owner` iq to an account's bare JID.
    pub(crate) async fn pep_iq(
        &self,
        s: &mut ImSession,
        iq: &Element,
        p: &Element,
        target: &BareJid,
        fx: &mut Effects,
    ) {
        let set = iq.attr("type") == Some("set");
        let own = *target == s.user;
        let mut verbs = p.elements();
        let Some(verb) = verbs.next() else {
            return fx.error(iq, StanzaError::BadRequest);
        };
        let owner = target.to_string();
        let node = verb.attr("node").unwrap_or("").to_string();
        let r = match (p.ns.as_str(), verb.name.as_str(), set) {
            (NS_PUBSUB, "items", false) => self.pep_items(s, iq, verb, target, fx).await,
            (NS_PUBSUB, "publish", true) if own => {
                let options = verbs
                    .find(|e| e.name == "publish-options")
                    .and_then(|o| o.child("x", super::mam::NS_DATA));
                self.pep_publish(s, iq, verb, options, fx).await
            }
            (NS_PUBSUB, "retract", true) if own => self.pep_retract(s, iq, verb, fx).await,
            (NS_PUBSUB, "create", true) if own => {
                let form = verbs
                    .find(|e| e.name == "configure")
                    .and_then(|c| c.child("x", super::mam::NS_DATA));
                self.pep_create(iq, &owner, &node, form, fx).await
            }
            (NS_PUBSUB, "subscribe" | "unsubscribe" | "options", _) => {
                if let Some(mut e) = error_reply(iq, StanzaError::FeatureNotImplemented, None) {
                    if let Some(error) = e.child_mut("error", NS_CLIENT) {
                        error.push_child(
                            Element::new("unsupported", NS_ERRORS)
                                .with_attr("feature", "subscribe"),
                        );
                    }
                    fx.reply(e);
                }
                Ok(())
            }
            (NS_PUBSUB, "subscriptions", false) if own => {
                let list = Element::new("subscriptions", NS_PUBSUB);
                fx.reply(iq_result(
                    iq,
                    Some(Element::new("pubsub", NS_PUBSUB).with_child(list)),
                ));
                Ok(())
            }
            (NS_PUBSUB | NS_OWNER, "affiliations", false) if own => {
                let mut list = Element::new("affiliations", p.ns.clone());
                for (name, _) in self.pep.nodes(&owner).await.unwrap_or_default() {
                    list.push_child(
                        Element::new("affiliation", p.ns.clone())
                            .with_attr("node", name)
                            .with_attr("affiliation", "owner"),
                    );
                }
                fx.reply(iq_result(
                    iq,
                    Some(Element::new("pubsub", p.ns.clone()).with_child(list)),
                ));
                Ok(())
            }
            (NS_OWNER, "configure", _) if own => {
                self.pep_configure(iq, &owner, &node, verb, set, fx).await
            }
            (NS_OWNER, "default", false) if own => {
                let form = NodeConfig::pep_default(self.pep.config.max_items)
                    .form(self.pep.config.max_items);
                let default = Element::new("default", NS_OWNER).with_child(form);
                fx.reply(iq_result(
                    iq,
                    Some(Element::new("pubsub", NS_OWNER).with_child(default)),
                ));
                Ok(())
            }
            (NS_OWNER, "delete" | "purge", true) if own => {
                self.pep_delete(s, iq, &node, verb.name == "purge", fx)
                    .await
            }
            (_, _, true) if !own => {
                fx.error(iq, StanzaError::Forbidden);
                Ok(())
            }
            _ => {
                fx.error(iq, StanzaError::FeatureNotImplemented);
                Ok(())
            }
        };
        if let Err(e) = r {
            fx.internal(iq, e);
        }
    }

    async fn pep_items(
        &self,
        s: &ImSession,
        iq: &Element,
        verb: &Element,
        owner: &BareJid,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let Some(name) = verb.attr("node") else {
            ps_error(fx, iq, StanzaError::BadRequest, Some("nodeid-required"));
            return Ok(());
        };
        let Some(n) = self.pep.load(&owner.to_string(), name).await? else {
            fx.error(iq, StanzaError::ItemNotFound);
            return Ok(());
        };
        if let Reader::Refused(err, app) = self.reader(owner, &s.user, n.config.access).await {
            ps_error(fx, iq, err, Some(app));
            return Ok(());
        }
        let wanted: Vec<String> = verb
            .children_named("item", NS_PUBSUB)
            .filter_map(|i| i.attr("id").map(str::to_string))
            .collect();
        let max = verb
            .attr("max_items")
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        let chosen: Vec<&Item> = if wanted.is_empty() {
            let skip = n.items.len().saturating_sub(max);
            n.items.iter().skip(skip).collect()
        } else {
            n.items.iter().filter(|i| wanted.contains(&i.id)).collect()
        };
        let mut items = Element::new("items", NS_PUBSUB).with_attr("node", name);
        for i in chosen {
            items.push_child(item_element(i));
        }
        fx.reply(iq_result(
            iq,
            Some(Element::new("pubsub", NS_PUBSUB).with_child(items)),
        ));
        Ok(())
    }

    async fn pep_publish(
        &self,
        s: &ImSession,
        iq: &Element,
        publish: &Element,
        options: Option<&Element>,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let Some(name) = publish.attr("node").filter(|n| !n.is_empty()) else {
            ps_error(fx, iq, StanzaError::BadRequest, Some("nodeid-required"));
            return Ok(());
        };
        let (id, payload) = match the_item(publish) {
            Ok(x) => x,
            Err(app) => {
                ps_error(fx, iq, StanzaError::BadRequest, Some(app));
                return Ok(());
            }
        };
        let options = match options.map(|x| fields(x, NS_PUBLISH_OPTIONS)) {
            Some(None) => {
                fx.error(iq, StanzaError::BadRequest);
                return Ok(());
            }
            Some(Some(f)) => f,
            None => Vec::new(),
        };
        let max = self.pep.config.max_items;
        let owner = s.user.to_string();
        let _guard = self.pep.lock_of(&owner).lock().await;
        let mut n = match self.pep.load(&owner, name).await? {
            Some(n) => {
                if !options.is_empty() && !n.config.agrees(&options, max) {
                    ps_error(fx, iq, StanzaError::Conflict, Some("precondition-not-met"));
                    return Ok(());
                }
                n
            }
            None => {
                if self.pep.nodes(&owner).await?.len() >= self.pep.config.max_nodes {
                    ps_error(fx, iq, StanzaError::NotAllowed, Some("max-nodes-exceeded"));
                    return Ok(());
                }
                let mut config = NodeConfig::pep_default(max);
                if config.apply(&options, max).is_err() {
                    ps_error(fx, iq, StanzaError::Conflict, Some("precondition-not-met"));
                    return Ok(());
                }
                Node::new(config)
            }
        };
        let id = id.unwrap_or_else(|| self.push_id() + &self.push_id());
        let item = Item {
            id: id.clone(),
            payload: payload.to_bytes(NS_CLIENT),
            published: self.router.registry().clock().now_ms(),
        };
        n.publish(item.clone());
        self.pep.save(&owner, name, &n);
        drop(_guard);
        fx.flush = n.config.persist_items;
        let done = Element::new("publish", NS_PUBSUB)
            .with_attr("node", name)
            .with_child(Element::new("item", NS_PUBSUB).with_attr("id", id));
        fx.reply(iq_result(
            iq,
            Some(Element::new("pubsub", NS_PUBSUB).with_child(done)),
        ));
        let event = Element::new("items", NS_EVENT)
            .with_attr("node", name)
            .with_child(event_item(&item));
        self.pep_notify(&s.user, name, n.config.access, event, fx)
            .await;
        Ok(())
    }

    async fn pep_retract(
        &self,
        s: &ImSession,
        iq: &Element,
        retract: &Element,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let Some(name) = retract.attr("node") else {
            ps_error(fx, iq, StanzaError::BadRequest, Some("nodeid-required"));
            return Ok(());
        };
        let Some(id) = retract
            .child("item", NS_PUBSUB)
            .and_then(|i| i.attr("id"))
            .map(str::to_string)
        else {
            ps_error(fx, iq, StanzaError::BadRequest, Some("item-required"));
            return Ok(());
        };
        let owner = s.user.to_string();
        let guard = self.pep.lock_of(&owner).lock().await;
        let Some(mut n) = self.pep.load(&owner, name).await? else {
            fx.error(iq, StanzaError::ItemNotFound);
            return Ok(());
        };
        if !n.retract(&id) {
            fx.error(iq, StanzaError::ItemNotFound);
            return Ok(());
        }
        self.pep.save(&owner, name, &n);
        drop(guard);
        fx.flush = true;
        fx.reply(iq_result(iq, None));
        let notify =
            n.config.notify_retract || matches!(retract.attr("notify"), Some("1" | "true"));
        if notify {
            let event = Element::new("items", NS_EVENT)
                .with_attr("node", name)
                .with_child(Element::new("retract", NS_EVENT).with_attr("id", id));
            self.pep_notify(&s.user, name, n.config.access, event, fx)
                .await;
        }
        Ok(())
    }

    async fn pep_create(
        &self,
        iq: &Element,
        owner: &str,
        name: &str,
        form: Option<&Element>,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        if name.is_empty() {
            // Instant nodes (a server-chosen name) are not offered in PEP.
            ps_error(fx, iq, StanzaError::NotAcceptable, Some("nodeid-required"));
            return Ok(());
        }
        let max = self.pep.config.max_items;
        let mut config = NodeConfig::pep_default(max);
        if let Some(x) = form {
            match fields(x, NS_NODE_CONFIG) {
                Some(f) if config.apply(&f, max).is_ok() => {}
                _ => {
                    fx.error(iq, StanzaError::NotAcceptable);
                    return Ok(());
                }
            }
        }
        let _guard = self.pep.lock_of(owner).lock().await;
        if self.pep.load(owner, name).await?.is_some() {
            fx.error(iq, StanzaError::Conflict);
            return Ok(());
        }
        if self.pep.nodes(owner).await?.len() >= self.pep.config.max_nodes {
            ps_error(fx, iq, StanzaError::NotAllowed, Some("max-nodes-exceeded"));
            return Ok(());
        }
        self.pep.save(owner, name, &Node::new(config));
        fx.flush = true;
        fx.reply(iq_result(iq, None));
        Ok(())
    }

    async fn pep_configure(
        &self,
        iq: &Element,
        owner: &str,
        name: &str,
        verb: &Element,
        set: bool,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let max = self.pep.config.max_items;
        let _guard = self.pep.lock_of(owner).lock().await;
        let Some(mut n) = self.pep.load(owner, name).await? else {
            fx.error(iq, StanzaError::ItemNotFound);
            return Ok(());
        };
        if !set {
            let configure = Element::new("configure", NS_OWNER)
                .with_attr("node", name)
                .with_child(n.config.form(max));
            fx.reply(iq_result(
                iq,
                Some(Element::new("pubsub", NS_OWNER).with_child(configure)),
            ));
            return Ok(());
        }
        let Some(x) = verb.child("x", super::mam::NS_DATA) else {
            fx.error(iq, StanzaError::BadRequest);
            return Ok(());
        };
        if x.attr("type") == Some("cancel") {
            fx.reply(iq_result(iq, None));
            return Ok(());
        }
        match fields(x, NS_NODE_CONFIG) {
            Some(f) if n.config.apply(&f, max).is_ok() => {}
            _ => {
                fx.error(iq, StanzaError::NotAcceptable);
                return Ok(());
            }
        }
        n.trim();
        self.pep.save(owner, name, &n);
        fx.flush = true;
        fx.reply(iq_result(iq, None));
        Ok(())
    }

    async fn pep_delete(
        &self,
        s: &ImSession,
        iq: &Element,
        name: &str,
        purge: bool,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let owner = s.user.to_string();
        let guard = self.pep.lock_of(&owner).lock().await;
        let Some(mut n) = self.pep.load(&owner, name).await? else {
            fx.error(iq, StanzaError::ItemNotFound);
            return Ok(());
        };
        if purge {
            n.items.clear();
            self.pep.save(&owner, name, &n);
        } else {
            self.pep.remove(&owner, name);
        }
        drop(guard);
        fx.flush = true;
        fx.reply(iq_result(iq, None));
        let event =
            Element::new(if purge { "purge" } else { "delete" }, NS_EVENT).with_attr("node", name);
        self.pep_notify(&s.user, name, n.config.access, event, fx)
            .await;
        Ok(())
    }

    /// Sends an event of `owner`'s node to every available resource that
    /// wants it and may see it: the owner's own, and (unless the node is
    /// whitelisted) those of contacts subscribed to the owner's presence.
    async fn pep_notify(
        &self,
        owner: &BareJid,
        node: &str,
        access: Access,
        event: Element,
        fx: &mut Effects,
    ) {
        let from = owner.to_string();
        let mut accounts = vec![from.clone()];
        if access != Access::Whitelist {
            if let Ok(items) = self.roster.items(owner).await {
                for (contact, item) in items {
                    if !item.hidden
                        && item.subscription.has_from()
                        && !self.presence_blocked(owner, &contact).await
                    {
                        accounts.push(contact);
                    }
                }
            }
        }
        let event = Element::new("event", NS_EVENT).with_child(event);
        for account in accounts {
            for r in self.router.routes(&account) {
                if r.wants_notify(node) {
                    let msg = Element::new("message", NS_CLIENT)
                        .with_attr("from", from.clone())
                        .with_attr("to", r.full_jid().to_string())
                        .with_attr("type", "headline")
                        .with_attr("id", self.push_id())
                        .with_child(event.clone());
                    self.router.deliver_element(&r, &msg, &mut fx.congested);
                }
            }
        }
    }

    /// An available presence of `s`: its capabilities give its interest,
    /// from the cache or by asking the client (answered through
    /// [`Self::pep_caps_answer`]).
    pub(crate) async fn pep_presence(&self, s: &mut ImSession, el: &Element, fx: &mut Effects) {
        let Some(caps) = Caps::of(el) else { return };
        if let Some(interest) = self.pep.caps.known(&caps) {
            return self.pep_interest(s, interest, fx).await;
        }
        let id = self.pep.query_id();
        self.pep
            .caps
            .asked(id.clone(), s.jid.to_string(), caps.ver.clone());
        let query = Element::new("query", NS_DISCO_INFO)
            .with_attr("node", format!("{}#{}", caps.node, caps.ver));
        fx.reply(
            Element::new("iq", NS_CLIENT)
                .with_attr("type", "get")
                .with_attr("id", id)
                .with_attr("from", s.jid.domain().to_string())
                .with_attr("to", s.jid.to_string())
                .with_child(query),
        );
    }

    /// An iq result or error sent to the server's domain: the answer to a
    /// capabilities query, if it is one.
    pub(crate) async fn pep_caps_answer(&self, s: &mut ImSession, iq: &Element, fx: &mut Effects) {
        let Some(id) = iq.attr("id").filter(|i| i.starts_with("caps-")) else {
            return;
        };
        let info = (iq.attr("type") == Some("result"))
            .then(|| iq.child("query", NS_DISCO_INFO))
            .flatten();
        let from = s.jid.to_string();
        if let Some(interest) = self.pep.caps.answered(id, &from, info) {
            self.pep_interest(s, interest, fx).await;
        }
    }

    /// Sets what `s` wants; for nodes it did not want before, the last item
    /// of its own account's node and of each contact's whose presence it
    /// sees (XEP-0163 §4.3.3, with a delay stamp).
    async fn pep_interest(&self, s: &mut ImSession, interest: Interest, fx: &mut Effects) {
        let new = s.route.set_notify(interest);
        if new.is_empty() {
            return;
        }
        let mut accounts = vec![s.user.clone()];
        if let Ok(items) = self.roster.items(&s.user).await {
            accounts.extend(
                items
                    .into_iter()
                    .filter(|(_, i)| !i.hidden && i.subscription.has_to())
                    .filter_map(|(c, _)| BareJid::parse(&c).ok()),
            );
        }
        for owner in accounts {
            for name in &new {
                let Ok(Some(n)) = self.pep.load(&owner.to_string(), name).await else {
                    continue;
                };
                if n.config.send_last == SendLast::Never {
                    continue;
                }
                let Some(last) = n.last() else { continue };
                if let Reader::Refused(..) = self.reader(&owner, &s.user, n.config.access).await {
                    continue;
                }
                let msg = Element::new("message", NS_CLIENT)
                    .with_attr("from", owner.to_string())
                    .with_attr("to", s.jid.to_string())
                    .with_attr("type", "headline")
                    .with_attr("id", self.push_id())
                    .with_child(
                        Element::new("event", NS_EVENT).with_child(
                            Element::new("items", NS_EVENT)
                                .with_attr("node", name.clone())
                                .with_child(event_item(last)),
                        ),
                    )
                    .with_child(
                        Element::new("delay", NS_DELAY)
                            .with_attr("from", owner.to_string())
                            .with_attr("stamp", crate::ctl::rfc3339(last.published / 1000)),
                    );
                fx.reply(msg);
            }
        }
    }

    /// The account's disco#items: the nodes the requester may read.
    pub(crate) async fn pep_disco_items(&self, owner: &BareJid, reader: &BareJid) -> Element {
        let mut q = Element::new("query", super::stanza::NS_DISCO_ITEMS);
        for (name, n) in self.pep.nodes(&owner.to_string()).await.unwrap_or_default() {
            if let Reader::Refused(..) = self.reader(owner, reader, n.config.access).await {
                continue;
            }
            q.push_child(
                Element::new("item", super::stanza::NS_DISCO_ITEMS)
                    .with_attr("jid", owner.to_string())
                    .with_attr("node", name),
            );
        }
        q
    }
}

/// An item in an event (`pubsub#event` namespace).
fn event_item(i: &Item) -> Element {
    let mut el = Element::new("item", NS_EVENT).with_attr("id", i.id.clone());
    if let Some(p) = read_back(&i.payload) {
        el.push_child(p);
    }
    el
}

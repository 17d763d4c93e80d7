//! The iqs of `pubsub.<host>`: the dispatch, XEP-0060's entity use cases
//! (the owner's are in `owner.rs`, discovery in `../disco.rs`), and the
//! notifications a change sends.

use super::state::{Affiliation, PublishModel, Refusal, ServiceNode};
use super::{Pubsub, StoredItem};
use crate::auth::BareJid;
use crate::store::StoreError;
use crate::xmpp::element::Element;
use crate::xmpp::im::{Effects, ImServer, ImSession};
use crate::xmpp::mam::NS_DATA;
use crate::xmpp::pep::node::NS_PUBLISH_OPTIONS;
use crate::xmpp::pep::node::{fields, Access, Item, NodeConfig, SendLast, NS_NODE_CONFIG};
use crate::xmpp::pep::{NS_EVENT, NS_OWNER, NS_PUBSUB};
use crate::xmpp::services::refuse;
use crate::xmpp::stanza::{iq_result, Jid, StanzaError, NS_DISCO_INFO, NS_DISCO_ITEMS};
use crate::xmpp::stream::{read_back, NS_CLIENT};

mod owner;

const NS_RSM: &str = "http://jabber.org/protocol/rsm";

/// What the service's disco#info says (exactly what is served).
pub const FEATURES: &[&str] = &[
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#instant-nodes",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#manage-affiliations",
    "http://jabber.org/protocol/pubsub#manage-subscriptions",
    "http://jabber.org/protocol/pubsub#meta-data",
    "http://jabber.org/protocol/pubsub#modify-affiliations",
    "http://jabber.org/protocol/pubsub#outcast-affiliation",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#publisher-affiliation",
    "http://jabber.org/protocol/pubsub#member-affiliation",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-affiliations",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
    "http://jabber.org/protocol/pubsub#subscribe",
    "http://jabber.org/protocol/rsm",
];

fn refusal(fx: &mut Effects, iq: &Element, (err, app): Refusal) {
    crate::xmpp::pep::ps_error(fx, iq, err, app);
}

fn result_with(iq: &Element, ns: &str, child: Element) -> Element {
    iq_result(iq, Some(Element::new("pubsub", ns).with_child(child)))
}

/// A submitted form's fields: `(var, values)`.
type FormFields = Vec<(String, Vec<String>)>;

/// Splits `pubsub#publish_model` (which PEP does not take) off a form.
fn split_publish_model(mut f: FormFields) -> Result<(FormFields, Option<PublishModel>), ()> {
    let mut model = None;
    if let Some(i) = f.iter().position(|(v, _)| v == "pubsub#publish_model") {
        let (_, values) = f.remove(i);
        model = Some(
            values
                .first()
                .and_then(|v| PublishModel::parse(v))
                .ok_or(())?,
        );
    }
    Ok((f, model))
}

impl Pubsub {
    pub(super) fn default_config(&self) -> NodeConfig {
        let mut c = NodeConfig::pep_default(self.config.max_items);
        c.access = Access::Open;
        c.max_items = self.config.max_items;
        c
    }

    /// Applies a submitted node config form (publish model included);
    /// on a refusal `n` may be half changed, so callers pass a copy or a
    /// node not yet stored.
    fn configure(&self, n: &mut ServiceNode, x: &Element) -> Result<(), ()> {
        let (f, model) = split_publish_model(fields(x, NS_NODE_CONFIG).ok_or(())?)?;
        n.config.apply(&f, self.config.max_items).map_err(|_| ())?;
        if let Some(m) = model {
            n.publish_model = m;
        }
        Ok(())
    }

    fn form(&self, n: &ServiceNode) -> Element {
        let mut x = n.config.form(self.config.max_items);
        let mut f = Element::new("field", NS_DATA)
            .with_attr("var", "pubsub#publish_model")
            .with_attr("type", "list-single")
            .with_child(Element::new("value", NS_DATA).with_text(n.publish_model.as_str()));
        for o in ["publishers", "subscribers", "open"] {
            f.push_child(
                Element::new("option", NS_DATA)
                    .with_child(Element::new("value", NS_DATA).with_text(o)),
            );
        }
        x.push_child(f);
        x
    }
}

impl ImServer {
    /// A stanza to `pubsub.<host>`.
    pub(crate) async fn pubsub_stanza(&self, s: &mut ImSession, el: Element, fx: &mut Effects) {
        let to = el.attr("to").and_then(|t| Jid::parse(t).ok());
        let host = match to.as_ref() {
            Some(t) if t.local().is_none() && t.resource().is_none() => {
                t.domain().split_once('.').map(|(_, h)| h.to_string())
            }
            _ => None,
        };
        let (Some(host), "iq", Some(ty @ ("get" | "set"))) =
            (host, el.name.as_str(), el.attr("type"))
        else {
            return refuse(&el, fx);
        };
        let set = ty == "set";
        let Some(p) = el.elements().next() else {
            return fx.error(&el, StanzaError::BadRequest);
        };
        let r = match (p.ns.as_str(), p.name.as_str(), set) {
            (NS_DISCO_INFO, "query", false) => self.pubsub_info(s, &el, p, &host, fx).await,
            (NS_DISCO_ITEMS, "query", false) => self.pubsub_items_disco(s, &el, p, &host, fx).await,
            (NS_PUBSUB, "pubsub", _) => self.pubsub_entity(s, &el, p, &host, set, fx).await,
            (NS_OWNER, "pubsub", _) => self.pubsub_owner(s, &el, p, &host, set, fx).await,
            _ => {
                fx.error(&el, StanzaError::ServiceUnavailable);
                Ok(())
            }
        };
        if let Err(e) = r {
            fx.internal(&el, e);
        }
    }

    /// Whether `who` may see the presence of the node's first owner (the
    /// presence access model).
    pub(super) async fn sees_owner(&self, n: &ServiceNode, who: &BareJid) -> bool {
        if n.config.access != Access::Presence {
            return false;
        }
        for (owner, a) in &n.affiliations {
            if *a != Affiliation::Owner {
                continue;
            }
            let Ok(owner) = BareJid::parse(owner) else {
                continue;
            };
            if matches!(self.roster.get(&owner, &who.to_string()).await,
                Ok(Some(i)) if i.subscription.has_from())
            {
                return true;
            }
        }
        false
    }

    /// Whether `jid` (the asker's, or the one it subscribes) may read the
    /// locked node; if not, the refusal is answered.
    pub(super) async fn readable(
        &self,
        s: &ImSession,
        n: &ServiceNode,
        jid: &str,
        iq: &Element,
        fx: &mut Effects,
    ) -> bool {
        let in_roster = self.sees_owner(n, &s.user).await;
        match n.may_read(jid, in_roster) {
            Ok(()) => true,
            Err(r) => {
                refusal(fx, iq, r);
                false
            }
        }
    }

    async fn pubsub_entity(
        &self,
        s: &mut ImSession,
        iq: &Element,
        p: &Element,
        host: &str,
        set: bool,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let mut verbs = p.elements();
        let Some(verb) = verbs.next() else {
            fx.error(iq, StanzaError::BadRequest);
            return Ok(());
        };
        let form_of = |name: &str| {
            p.elements()
                .find(|e| e.name == name)
                .and_then(|c| c.child("x", NS_DATA))
        };
        match (verb.name.as_str(), set) {
            ("create", true) => {
                self.ps_create(s, iq, verb, form_of("configure"), host, fx)
                    .await
            }
            ("publish", true) => {
                self.ps_publish(s, iq, verb, form_of("publish-options"), host, fx)
                    .await
            }
            ("retract", true) => self.ps_retract(s, iq, verb, host, fx).await,
            ("subscribe", true) => self.ps_subscribe(s, iq, verb, host, fx).await,
            ("unsubscribe", true) => self.ps_unsubscribe(s, iq, verb, host, fx).await,
            ("items", false) => self.ps_items(s, iq, verb, p, host, fx).await,
            ("subscriptions" | "affiliations", false) => {
                self.ps_mine(s, iq, verb, host, fx).await;
                Ok(())
            }
            ("options", _) => {
                refusal(
                    fx,
                    iq,
                    (StanzaError::FeatureNotImplemented, Some("unsupported")),
                );
                Ok(())
            }
            _ => {
                fx.error(iq, StanzaError::BadRequest);
                Ok(())
            }
        }
    }

    /// The node a verb names, or the error that answers.
    fn ps_node(
        &self,
        iq: &Element,
        verb: &Element,
        host: &str,
        fx: &mut Effects,
    ) -> Option<(String, super::NodeCell)> {
        self.ps_node_made(iq, verb, host, false, fx)
    }

    /// [`Self::ps_node`], creating a bridge rule's node on first use when
    /// `create` (publish, subscribe).
    fn ps_node_made(
        &self,
        iq: &Element,
        verb: &Element,
        host: &str,
        create: bool,
        fx: &mut Effects,
    ) -> Option<(String, super::NodeCell)> {
        let Some(name) = verb.attr("node").filter(|n| !n.is_empty()) else {
            refusal(fx, iq, (StanzaError::BadRequest, Some("nodeid-required")));
            return None;
        };
        match self.node_or_bridged(host, name, create) {
            Some(c) => Some((name.to_string(), c)),
            None => {
                fx.error(iq, StanzaError::ItemNotFound);
                None
            }
        }
    }

    async fn ps_create(
        &self,
        s: &ImSession,
        iq: &Element,
        verb: &Element,
        form: Option<&Element>,
        host: &str,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let instant = verb.attr("node").is_none_or(str::is_empty);
        let name = match verb.attr("node") {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => format!("{}{}", self.push_id(), self.push_id()),
        };
        if self.bridged_name(host, &name) {
            // A bridge rule's node: the bridge makes it, with the rule's
            // owners and access model.
            fx.error(iq, StanzaError::Forbidden);
            return Ok(());
        }
        let mut n = ServiceNode::new(self.pubsub.default_config(), &s.user.to_string());
        if let Some(x) = form {
            if self.pubsub.configure(&mut n, x).is_err() {
                fx.error(iq, StanzaError::NotAcceptable);
                return Ok(());
            }
        }
        match self.pubsub.insert(host, &name, n) {
            Ok(()) => {}
            Err(true) => {
                fx.error(iq, StanzaError::Conflict);
                return Ok(());
            }
            Err(false) => {
                refusal(
                    fx,
                    iq,
                    (StanzaError::NotAllowed, Some("max-nodes-exceeded")),
                );
                return Ok(());
            }
        }
        self.pubsub.barrier().await?;
        if instant {
            let create = Element::new("create", NS_PUBSUB).with_attr("node", name);
            fx.reply(result_with(iq, NS_PUBSUB, create));
        } else {
            fx.reply(iq_result(iq, None));
        }
        Ok(())
    }

    async fn ps_publish(
        &self,
        s: &ImSession,
        iq: &Element,
        verb: &Element,
        options: Option<&Element>,
        host: &str,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let Some((name, cell)) = self.ps_node_made(iq, verb, host, true, fx) else {
            return Ok(());
        };
        let mut items = verb.children_named("item", NS_PUBSUB);
        let (Some(item), None) = (items.next(), items.next()) else {
            refusal(fx, iq, (StanzaError::BadRequest, Some("item-required")));
            return Ok(());
        };
        let mut payloads = item.elements();
        let (Some(payload), None) = (payloads.next(), payloads.next()) else {
            refusal(fx, iq, (StanzaError::BadRequest, Some("invalid-payload")));
            return Ok(());
        };
        let id = item
            .attr("id")
            .filter(|i| !i.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}{}", self.push_id(), self.push_id()));
        let mut n = cell.lock().await;
        if let Err(r) = n.may_publish(&s.jid.to_string()) {
            refusal(fx, iq, r);
            return Ok(());
        }
        if let Some(x) = options {
            let agrees = fields(x, NS_PUBLISH_OPTIONS)
                .ok_or(())
                .and_then(split_publish_model)
                .is_ok_and(|(f, model)| {
                    n.config.agrees(&f, self.pubsub.config.max_items)
                        && model.is_none_or(|m| m == n.publish_model)
                });
            if !agrees {
                refusal(
                    fx,
                    iq,
                    (StanzaError::Conflict, Some("precondition-not-met")),
                );
                return Ok(());
            }
        }
        // A bridged node's item must be fit to cross before it is stored.
        let crossing = match self.item_crossing(s, host, &name, payload, &id) {
            Ok(c) => c,
            Err(r) => {
                refusal(fx, iq, r);
                return Ok(());
            }
        };
        let stored = StoredItem {
            item: Item {
                id: id.clone(),
                payload: payload.to_bytes(NS_CLIENT),
                published: self.router.registry().clock().now_ms(),
            },
            publisher: s.user.to_string(),
        };
        // The node's record is not written again: what an item changes
        // (order, next sequence number) is read back from the items' keys.
        let (seq, gone) = n.add_item(&id);
        self.pubsub.put_item(host, &name, seq, &stored);
        self.pubsub.delete_items(host, &name, &gone);
        // To MQTT under the node's lock: items and retained messages keep
        // one order.
        if let Some(t) = crossing {
            self.item_crossed(host, t, &mut fx.congested);
        }
        let subscribers = self.ps_readers(&n).await;
        drop(n);
        fx.flush = true;
        let publish = Element::new("publish", NS_PUBSUB)
            .with_attr("node", name.clone())
            .with_child(Element::new("item", NS_PUBSUB).with_attr("id", id));
        fx.reply(result_with(iq, NS_PUBSUB, publish));
        let event = Element::new("items", NS_EVENT)
            .with_attr("node", name)
            .with_child(event_item_of(&stored, payload.clone()));
        self.ps_send_event(host, &subscribers, event, None, &mut fx.congested);
        Ok(())
    }

    async fn ps_retract(
        &self,
        s: &ImSession,
        iq: &Element,
        verb: &Element,
        host: &str,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let Some((name, cell)) = self.ps_node(iq, verb, host, fx) else {
            return Ok(());
        };
        let Some(id) = verb
            .child("item", NS_PUBSUB)
            .and_then(|i| i.attr("id"))
            .map(str::to_string)
        else {
            refusal(fx, iq, (StanzaError::BadRequest, Some("item-required")));
            return Ok(());
        };
        let mut n = cell.lock().await;
        let me = s.jid.to_string();
        if !matches!(
            n.affiliation(&me),
            Some(Affiliation::Owner | Affiliation::Publisher)
        ) {
            fx.error(iq, StanzaError::Forbidden);
            return Ok(());
        }
        let Some(seq) = n.remove_item(&id) else {
            fx.error(iq, StanzaError::ItemNotFound);
            return Ok(());
        };
        self.pubsub.delete_items(host, &name, &[seq]);
        let notify = n.config.notify_retract || matches!(verb.attr("notify"), Some("1" | "true"));
        let subscribers: Vec<String> = n.subscriptions.keys().cloned().collect();
        drop(n);
        fx.flush = true;
        fx.reply(iq_result(iq, None));
        if notify {
            let event = Element::new("items", NS_EVENT)
                .with_attr("node", name)
                .with_child(Element::new("retract", NS_EVENT).with_attr("id", id));
            self.ps_send_event(host, &subscribers, event, None, &mut fx.congested);
        }
        Ok(())
    }

    async fn ps_subscribe(
        &self,
        s: &ImSession,
        iq: &Element,
        verb: &Element,
        host: &str,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let Some((name, cell)) = self.ps_node_made(iq, verb, host, true, fx) else {
            return Ok(());
        };
        // §6.1.3.1: the subscribed JID is the sender's, bare or full.
        let jid = verb.attr("jid").unwrap_or("");
        let me = s.jid.to_string();
        let bare = s.user.to_string();
        if jid != me && jid != bare {
            refusal(fx, iq, (StanzaError::BadRequest, Some("invalid-jid")));
            return Ok(());
        }
        let mut n = cell.lock().await;
        if !self.readable(s, &n, jid, iq, fx).await {
            return Ok(());
        }
        let subid = match n.subscriptions.get(jid) {
            Some(id) => id.clone(),
            None => {
                if n.subscriptions.len() >= self.pubsub.config.max_subscriptions {
                    refusal(
                        fx,
                        iq,
                        (StanzaError::NotAllowed, Some("too-many-subscriptions")),
                    );
                    return Ok(());
                }
                let id = format!("{}{}", self.push_id(), self.push_id());
                n.subscriptions.insert(jid.to_string(), id.clone());
                self.pubsub.save_meta(host, &name, &n);
                fx.flush = true;
                id
            }
        };
        let last = (n.config.send_last != SendLast::Never)
            .then(|| n.order.last_key_value().map(|(seq, _)| *seq))
            .flatten();
        drop(n);
        let sub = Element::new("subscription", NS_PUBSUB)
            .with_attr("node", name.clone())
            .with_attr("jid", jid)
            .with_attr("subid", subid)
            .with_attr("subscription", "subscribed");
        fx.reply(result_with(iq, NS_PUBSUB, sub));
        if let Some(seq) = last {
            if let Some(item) = self.pubsub.get_item(host, &name, seq).await? {
                let event = Element::new("items", NS_EVENT)
                    .with_attr("node", name)
                    .with_child(event_item(&item));
                let mut msg = notification(host, &me, event);
                msg.push_child(
                    Element::new("delay", crate::xmpp::stanza::NS_DELAY)
                        .with_attr("from", format!("pubsub.{host}"))
                        .with_attr("stamp", crate::ctl::rfc3339(item.item.published / 1000)),
                );
                fx.reply(msg);
            }
        }
        Ok(())
    }

    async fn ps_unsubscribe(
        &self,
        s: &ImSession,
        iq: &Element,
        verb: &Element,
        host: &str,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let Some((name, cell)) = self.ps_node(iq, verb, host, fx) else {
            return Ok(());
        };
        let jid = verb.attr("jid").unwrap_or("");
        let mut n = cell.lock().await;
        let owner = n.is_owner(&s.jid.to_string());
        if !owner && Jid::parse(jid).ok().and_then(|j| j.to_bare()) != Some(s.user.clone()) {
            refusal(fx, iq, (StanzaError::BadRequest, Some("invalid-jid")));
            return Ok(());
        }
        if n.subscriptions.remove(jid).is_none() {
            refusal(
                fx,
                iq,
                (StanzaError::UnexpectedRequest, Some("not-subscribed")),
            );
            return Ok(());
        }
        self.pubsub.save_meta(host, &name, &n);
        drop(n);
        fx.flush = true;
        fx.reply(iq_result(iq, None));
        Ok(())
    }

    async fn ps_items(
        &self,
        s: &ImSession,
        iq: &Element,
        verb: &Element,
        p: &Element,
        host: &str,
        fx: &mut Effects,
    ) -> Result<(), StoreError> {
        let Some((name, cell)) = self.ps_node(iq, verb, host, fx) else {
            return Ok(());
        };
        let n = cell.lock().await;
        if !self.readable(s, &n, &s.jid.to_string(), iq, fx).await {
            return Ok(());
        }
        let all: Vec<(u64, String)> = n.order.iter().map(|(s, i)| (*s, i.clone())).collect();
        drop(n);
        let wanted: Vec<&str> = verb
            .children_named("item", NS_PUBSUB)
            .filter_map(|i| i.attr("id"))
            .collect();
        let page_max = self.pubsub.config.max_page;
        let rsm = p.child("set", NS_RSM);
        let (chosen, set): (Vec<(u64, String)>, Option<Element>) = if !wanted.is_empty() {
            (
                all.into_iter()
                    .filter(|(_, id)| wanted.contains(&id.as_str()))
                    .collect(),
                None,
            )
        } else if let Some(rsm) = rsm {
            let max = rsm
                .child("max", NS_RSM)
                .and_then(|m| m.text().trim().parse::<usize>().ok())
                .unwrap_or(page_max)
                .min(page_max);
            let pos = |id: &str| all.iter().position(|(_, i)| i == id);
            let (start, end) = if let Some(after) = rsm.child("after", NS_RSM) {
                let Some(i) = pos(after.text().trim()) else {
                    fx.error(iq, StanzaError::ItemNotFound);
                    return Ok(());
                };
                (i + 1, (i + 1 + max).min(all.len()))
            } else if let Some(before) = rsm.child("before", NS_RSM) {
                let t = before.text();
                let end = if t.trim().is_empty() {
                    all.len()
                } else {
                    match pos(t.trim()) {
                        Some(i) => i,
                        None => {
                            fx.error(iq, StanzaError::ItemNotFound);
                            return Ok(());
                        }
                    }
                };
                (end.saturating_sub(max), end)
            } else {
                (0, max.min(all.len()))
            };
            let page: Vec<(u64, String)> = all[start..end].to_vec();
            let mut set = Element::new("set", NS_RSM);
            if let (Some(first), Some(last)) = (page.first(), page.last()) {
                set.push_child(
                    Element::new("first", NS_RSM)
                        .with_attr("index", start.to_string())
                        .with_text(first.1.clone()),
                );
                set.push_child(Element::new("last", NS_RSM).with_text(last.1.clone()));
            }
            set.push_child(Element::new("count", NS_RSM).with_text(all.len().to_string()));
            (page, Some(set))
        } else {
            let max = verb
                .attr("max_items")
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(page_max)
                .min(page_max);
            let skip = all.len().saturating_sub(max);
            (all.into_iter().skip(skip).collect(), None)
        };
        let mut items = Element::new("items", NS_PUBSUB).with_attr("node", name.clone());
        for (seq, _) in chosen {
            if let Some(st) = self.pubsub.get_item(host, &name, seq).await? {
                let mut el = Element::new("item", NS_PUBSUB)
                    .with_attr("id", st.item.id.clone())
                    .with_attr("publisher", st.publisher.clone());
                if let Some(pl) = read_back(&st.item.payload) {
                    el.push_child(pl);
                }
                items.push_child(el);
            }
        }
        let mut ps = Element::new("pubsub", NS_PUBSUB).with_child(items);
        if let Some(set) = set {
            ps.push_child(set);
        }
        fx.reply(iq_result(iq, Some(ps)));
        Ok(())
    }

    /// The requester's own subscriptions or affiliations (§5.6, §5.7).
    async fn ps_mine(
        &self,
        s: &ImSession,
        iq: &Element,
        verb: &Element,
        host: &str,
        fx: &mut Effects,
    ) {
        let subs = verb.name == "subscriptions";
        let only = verb.attr("node");
        let me = s.jid.to_string();
        let bare = s.user.to_string();
        let mut list = Element::new(verb.name.clone(), NS_PUBSUB);
        for name in self.pubsub.names(host) {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let Some(cell) = self.pubsub.node(host, &name) else {
                continue;
            };
            let n = cell.lock().await;
            if subs {
                for (jid, subid) in n
                    .subscriptions
                    .iter()
                    .filter(|(j, _)| **j == me || **j == bare)
                {
                    list.push_child(
                        Element::new("subscription", NS_PUBSUB)
                            .with_attr("node", name.clone())
                            .with_attr("jid", jid.clone())
                            .with_attr("subid", subid.clone())
                            .with_attr("subscription", "subscribed"),
                    );
                }
            } else if let Some(a) = n.affiliation(&bare) {
                list.push_child(
                    Element::new("affiliation", NS_PUBSUB)
                        .with_attr("node", name.clone())
                        .with_attr("affiliation", a.as_str()),
                );
            }
        }
        fx.reply(result_with(iq, NS_PUBSUB, list));
    }
}

pub(super) fn notification(host: &str, to: &str, event: Element) -> Element {
    Element::new("message", NS_CLIENT)
        .with_attr("from", format!("pubsub.{host}"))
        .with_attr("to", to)
        .with_attr("type", "headline")
        .with_child(Element::new("event", NS_EVENT).with_child(event))
}

/// An item of a notification, from the payload element at hand (no
/// parse of the stored bytes).
pub(super) fn event_item_of(st: &StoredItem, payload: Element) -> Element {
    Element::new("item", NS_EVENT)
        .with_attr("id", st.item.id.clone())
        .with_attr("publisher", st.publisher.clone())
        .with_child(payload)
}

pub(super) fn event_item(st: &StoredItem) -> Element {
    let mut el = Element::new("item", NS_EVENT)
        .with_attr("id", st.item.id.clone())
        .with_attr("publisher", st.publisher.clone());
    if let Some(p) = read_back(&st.item.payload) {
        el.push_child(p);
    }
    el
}

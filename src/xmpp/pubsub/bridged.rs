//! The PubSub side of the MQTT bridge ([`crate::bridge`]): nodes the
//! bridge creates from its rules, MQTT publishes stored as items and
//! notified, and items published here carried to MQTT.

use std::sync::Arc;

use super::iq::{event_item_of, notification};
use super::state::{Affiliation, PublishModel, ServiceNode};
use super::{NodeCell, StoredItem};
use crate::bridge::{payload, Bridge, Message, Refused, Rule};
use crate::xmpp::element::Element;
use crate::xmpp::im::{ImServer, ImSession};
use crate::xmpp::pep::node::{Access, Item};
use crate::xmpp::pep::NS_EVENT;
use crate::xmpp::router::Congestion;
use crate::xmpp::stanza::StanzaError;
use crate::xmpp::stream::NS_CLIENT;

/// Why an item may not cross to MQTT: the stanza error and its
/// `pubsub#errors` condition.
pub type NotCarried = (StanzaError, Option<&'static str>);

/// An item on its way to MQTT, checked before it is stored.
pub struct ToMqtt {
    bridge: Arc<Bridge>,
    rule: Rule,
    topic: String,
    content: payload::Content,
}

impl ImServer {
    pub(crate) fn bridge(&self) -> Option<&Arc<Bridge>> {
        self.bridge.get()
    }

    /// Whether `name` belongs to a bridge rule (such nodes are the
    /// bridge's to create: nobody may take the name first).
    pub(crate) fn bridged_name(&self, host: &str, name: &str) -> bool {
        self.bridge()
            .is_some_and(|b| b.rules.for_node(host, name).is_some())
    }

    /// The node `name` of `host`, created from the bridge rule it belongs
    /// to if it does not exist yet and `create` (a publish or a
    /// subscription: reads create nothing). None: no such node (or the
    /// host holds `max_nodes`).
    pub(crate) fn node_or_bridged(&self, host: &str, name: &str, create: bool) -> Option<NodeCell> {
        if let Some(c) = self.pubsub.node(host, name) {
            return Some(c);
        }
        if !create {
            return None;
        }
        let rule = self.bridge()?.rules.for_node(host, name)?.clone();
        self.node_from_rule(host, name, &rule)
    }

    /// Creates the node `name` with the settings of `rule` (or finds it).
    fn node_from_rule(&self, host: &str, name: &str, rule: &Rule) -> Option<NodeCell> {
        let c = &rule.config;
        let mut config = self.pubsub.default_config();
        config.access = match c.access.as_str() {
            "presence" => Access::Presence,
            "whitelist" => Access::Whitelist,
            _ => Access::Open,
        };
        if let Some(m) = c.max_items {
            config.max_items = m.min(self.pubsub.config.max_items);
        }
        config.title = format!("MQTT {}", c.mqtt);
        let mut n = ServiceNode::new(config, "");
        n.affiliations.clear();
        n.publish_model = PublishModel::Publishers;
        for p in &c.publishers {
            n.affiliations.insert(p.clone(), Affiliation::Publisher);
        }
        for o in &c.owners {
            n.affiliations.insert(o.clone(), Affiliation::Owner);
        }
        match self.pubsub.insert(host, name, n) {
            // Created now, or by someone else meanwhile.
            Ok(()) | Err(true) => self.pubsub.node(host, name),
            Err(false) => {
                tracing::warn!(
                    host,
                    node = name,
                    "bridge: max_nodes reached, node not created"
                );
                None
            }
        }
    }

    /// The node's subscribers that may read it now (the access model is
    /// checked at each notification, not only at subscription).
    pub(crate) async fn ps_readers(&self, n: &ServiceNode) -> Vec<String> {
        let mut out = Vec::with_capacity(n.subscriptions.len());
        for jid in n.subscriptions.keys() {
            let in_roster = match crate::auth::BareJid::parse(jid.split('/').next().unwrap_or(jid))
            {
                Ok(b) => self.sees_owner(n, &b).await,
                Err(_) => false,
            };
            if n.may_read(jid, in_roster).is_ok() {
                out.push(jid.clone());
            }
        }
        out
    }

    /// Sends an event to the JIDs (a full JID: that resource if online; a
    /// bare one: each available resource), with XEP-0131 headers if any.
    pub(crate) fn ps_send_event(
        &self,
        host: &str,
        to: &[String],
        event: Element,
        headers: Option<&Element>,
        cong: &mut Congestion,
    ) {
        for jid in to {
            let mut msg = notification(host, jid, event.clone());
            if let Some(h) = headers {
                msg.push_child(h.clone());
            }
            if jid.contains('/') {
                if let Some(r) = self.router.route(jid) {
                    self.router.deliver_element(&r, &msg, cong);
                }
            } else {
                let bytes = bytes::Bytes::from(msg.to_bytes(NS_CLIENT));
                self.router.deliver_to_all(jid, &bytes, cong);
            }
        }
    }

    /// An MQTT client's publish on a bridged topic: stored as an item of
    /// `node` (created from `rule` if need be) and notified to its readers;
    /// an empty retained message purges the node (MQTT's "no value").
    /// `stored` runs under the node's lock once the item is in.
    #[allow(clippy::too_many_arguments)]
    pub async fn bridge_publish(
        &self,
        host: &str,
        node: &str,
        rule: &Rule,
        publisher: &str,
        p: Message<'_>,
        stored: impl FnOnce(),
        cong: &mut Congestion,
    ) -> Result<(), Refused> {
        if !self.services.is_on(crate::xmpp::services::Service::Pubsub) {
            return Ok(());
        }
        let cell = self
            .pubsub
            .node(host, node)
            .or_else(|| self.node_from_rule(host, node, rule));
        let Some(cell) = cell else {
            return Err(Refused::Full);
        };
        let mut n = cell.lock().await;
        if n.affiliation(publisher) == Some(Affiliation::Outcast) {
            return Err(Refused::NotAuthorized);
        }
        if p.retain && p.payload.is_empty() {
            let gone = n.clear();
            self.pubsub.delete_items(host, node, &gone);
            self.pubsub.save_meta(host, node, &n);
            stored();
            let readers = self.ps_readers(&n).await;
            drop(n);
            let event = Element::new("purge", NS_EVENT).with_attr("node", node);
            self.ps_send_event(host, &readers, event, None, cong);
            return Ok(());
        }
        let ct = p.content_type;
        let el = payload::to_item(p.payload, ct);
        let id = format!("{}{}", self.push_id(), self.push_id());
        let item = StoredItem {
            item: Item {
                id: id.clone(),
                payload: el.to_bytes(NS_CLIENT),
                published: self.router.registry().clock().now_ms(),
            },
            publisher: publisher.to_string(),
        };
        let (seq, gone) = n.add_item(&id);
        self.pubsub.put_item(host, node, seq, &item);
        self.pubsub.delete_items(host, node, &gone);
        stored();
        let readers = self.ps_readers(&n).await;
        drop(n);
        let event = Element::new("items", NS_EVENT)
            .with_attr("node", node)
            .with_child(event_item_of(&item, el));
        let headers = payload::headers(ct, p.user_properties);
        self.ps_send_event(host, &readers, event, headers.as_ref(), cong);
        Ok(())
    }

    /// Whether an item an XMPP user publishes to `node` crosses to MQTT,
    /// checked before it is stored: `Ok(None)` it does not (no rule),
    /// `Ok(Some)` it will, `Err` it may not be published at all.
    pub(crate) fn item_crossing(
        &self,
        s: &ImSession,
        host: &str,
        node: &str,
        payload_el: &Element,
        item_id: &str,
    ) -> Result<Option<ToMqtt>, NotCarried> {
        let Some(bridge) = self.bridge() else {
            return Ok(None);
        };
        let Some((rule, topic)) = bridge.rules.to_topic(host, node) else {
            return Ok(None);
        };
        // The account's limits on the MQTT side: the token's
        // `mqtt:publish:` scopes and the access rules.
        let account = s.user.to_string();
        let resource = s.jid.resource().unwrap_or("");
        if !bridge.may_publish_to(&account, resource, s.scopes.as_ref(), &topic) {
            return Err((StanzaError::Forbidden, None));
        }
        let mut content = match payload::from_item(payload_el) {
            Ok(c) => c,
            Err(_) => return Err((StanzaError::BadRequest, Some("invalid-payload"))),
        };
        if content.payload.len() > bridge.config.max_payload {
            return Err((StanzaError::NotAcceptable, Some("payload-too-big")));
        }
        content.user_properties = vec![
            ("xmpp-publisher".into(), account),
            ("xmpp-item-id".into(), item_id.to_string()),
        ];
        Ok(Some(ToMqtt {
            bridge: bridge.clone(),
            rule: rule.clone(),
            topic,
            content,
        }))
    }

    /// Publishes a stored item's MQTT message; true when a store barrier
    /// is due.
    pub(crate) fn item_crossed(&self, host: &str, t: ToMqtt, cong: &mut Congestion) -> bool {
        t.bridge.to_mqtt(host, &t.rule, &t.topic, t.content, cong)
    }

    /// A bridged node was purged or deleted: its topic's retained message
    /// goes too (when the rule retains). True when a barrier is due.
    pub(crate) fn bridged_node_emptied(&self, host: &str, node: &str) -> bool {
        let Some(bridge) = self.bridge() else {
            return false;
        };
        match bridge.rules.to_topic(host, node) {
            Some((rule, topic)) if rule.config.retain => bridge.clear_retained(host, &topic),
            _ => false,
        }
    }
}

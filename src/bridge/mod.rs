//! The bridge between MQTT and XMPP: one message space for one identity.
//!
//! Two modes:
//! - **Rules** (`[[bridge.rule]]`, [`rules`]): an MQTT topic filter paired
//!   with PubSub node names on `pubsub.<host>`. A client's MQTT publish on a
//!   matching topic becomes an item of the node (stored, and notified to the
//!   node's subscribers that may read it) before the publisher's PUBACK; an
//!   item an XMPP user publishes to a matching node becomes an MQTT publish
//!   (retained when the rule says so: the last item is the retained
//!   message) before the publisher's iq result. Payloads are mapped by
//!   [`payload`].
//! - **Direct addressing**: an MQTT publish to `$xmpp/<bare JID>` is a chat
//!   message from `<client-id>@mqtt.<host>` to that account; a message to
//!   `<client-id>@mqtt.<host>` is published to that client's session on
//!   `$xmpp/inbox/<sender's bare JID>`, if it subscribed there.
//!
//! Loops cannot form: the bridge takes only what clients publish (an MQTT
//! client's PUBLISH, an XMPP client's publish iq or message), never what it
//! published itself, so a message crosses once.
//!
//! Authorization, with the one identity (the account) on both sides: what
//! enters is checked by the side it enters (an MQTT publish by the token's
//! `mqtt:publish:` scopes and the access rules; an XMPP item by the node's
//! affiliations and publish model, then the account's access rules and
//! `mqtt:publish:` limits for the topic), and what leaves by the side it
//! leaves (an item reaches the node's subscribers whose access model lets
//! them read it; an MQTT message the subscribers whose scopes and access
//! rules let them read the topic). The rule itself is the grant to cross:
//! a device whose token has `mqtt` but not `xmpp` scope still feeds a node
//! through a rule, and a chat user's `xmpp` token still publishes to a
//! topic through one. Node owners can shut an account out (outcast),
//! whichever protocol it publishes from.

pub mod payload;
pub mod rules;

use std::sync::{Arc, OnceLock, Weak};

use dashmap::DashMap;
use serde::Deserialize;

use crate::mqtt::acl::{Request, Who};
use crate::mqtt::broker::{Broker, MqttState, Queued, Routed, Slot};
use crate::mqtt::codec::{reason, Publish, QoS};
use crate::mqtt::topics::filter_matches;
use crate::session::{Address, Handle, Protocol};
use crate::xmpp::im::ImServer;

pub use rules::{Direction, Rule, RuleConfig, Rules};

/// The topic prefix of direct addressing.
pub const DIRECT: &str = "$xmpp/";
/// Where a session gets the messages addressed to it.
pub const INBOX: &str = "$xmpp/inbox/";

/// The `[bridge]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Direct addressing (`$xmpp/…` topics and `mqtt.<host>`).
    pub direct: bool,
    /// Bytes of a payload that may cross (an MQTT payload, an item's).
    pub max_payload: usize,
    /// Client ids per host whose `$xmpp/inbox/` subscriptions are indexed
    /// for direct messages.
    pub max_inboxes: usize,
    /// The rules (`[[bridge.rule]]`).
    pub rule: Vec<RuleConfig>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            direct: true,
            max_payload: 64 * 1024,
            max_inboxes: 100_000,
            rule: Vec::new(),
        }
    }
}

impl BridgeConfig {
    /// Checks the ranges and the rules; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_payload == 0 {
            return Err(("max_payload", "must be at least 1".into()));
        }
        if self.max_inboxes == 0 {
            return Err(("max_inboxes", "must be at least 1".into()));
        }
        Rules::compile(&self.rule)
            .map(|_| ())
            .map_err(|e| ("rule", e))
    }
}

/// What a client's MQTT publish asks of the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A rule carries the topic to a node.
    Rule,
    /// `$xmpp/<bare JID>`: a chat message.
    Direct,
}

/// What crossing did, for the MQTT publisher's acknowledgement.
#[derive(Default)]
pub struct Crossed {
    /// The reason code to acknowledge with (MQTT 5).
    pub code: u8,
    /// Something was written to the store: a barrier before the ack.
    pub stored: bool,
    /// A session whose queue the delivery filled (the publisher waits).
    pub congested: Option<Arc<dyn Handle>>,
}

/// The bridge, shared by the MQTT connections and the XMPP service.
pub struct Bridge {
    pub config: BridgeConfig,
    pub rules: Rules,
    /// Weak: the broker holds the bridge.
    broker: Weak<Broker>,
    im: OnceLock<Weak<ImServer>>,
    /// `host NUL client id` → the accounts whose session with that client
    /// id subscribed under `$xmpp/inbox/` (checked again on use).
    inboxes: DashMap<String, Vec<String>>,
}

impl Bridge {
    pub fn new(config: BridgeConfig, broker: &Arc<Broker>) -> Result<Bridge, String> {
        let rules = Rules::compile(&config.rule)?;
        Ok(Bridge {
            config,
            rules,
            broker: Arc::downgrade(broker),
            im: OnceLock::new(),
            inboxes: DashMap::new(),
        })
    }

    /// Joins the XMPP side (after both were built).
    pub fn attach(&self, im: &Arc<ImServer>) {
        let _ = self.im.set(Arc::downgrade(im));
    }

    fn im(&self) -> Option<Arc<ImServer>> {
        self.im.get().and_then(Weak::upgrade)
    }

    fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.upgrade()
    }

    /// The broker's access rules as they are now.
    pub fn broker_acl(&self) -> Option<Arc<crate::mqtt::acl::Acl>> {
        self.broker().map(|b| b.acl.load_full())
    }

    /// What a client's publish on `topic` in `host` asks of the bridge
    /// (cheap: called for every publish).
    pub fn wants(&self, host: &str, topic: &str) -> Option<Want> {
        if topic.starts_with('$') {
            return (self.config.direct && topic.starts_with(DIRECT)).then_some(Want::Direct);
        }
        if self.rules.is_empty() {
            return None;
        }
        self.rules.to_node(host, topic).map(|_| Want::Rule)
    }

    /// A session subscribed to `filter`: index it for direct messages when
    /// the filter reaches into its inbox.
    pub fn subscribed(&self, addr: &Address, filter: &str) {
        if !self.config.direct || !addr.account().contains('@') {
            return;
        }
        let inbox = filter.starts_with(INBOX) || filter == "$xmpp/#" || filter == "$xmpp/+/#";
        if !inbox {
            return;
        }
        let key = format!("{}\0{}", addr.domain(), addr.name());
        if !self.inboxes.contains_key(&key) && self.inboxes.len() >= self.config.max_inboxes {
            self.sweep_inboxes();
            if self.inboxes.len() >= self.config.max_inboxes {
                tracing::warn!("bridge max_inboxes reached: a device's inbox is not indexed");
                return;
            }
        }
        let mut e = self.inboxes.entry(key).or_default();
        if !e.iter().any(|a| a == addr.account()) {
            e.push(addr.account().to_string());
        }
    }

    /// Drops the index entries whose session is gone.
    pub fn sweep_inboxes(&self) {
        let Some(broker) = self.broker() else { return };
        let registry = broker.registry();
        self.inboxes.retain(|k, accounts| {
            let client = k.split_once('\0').map_or("", |(_, c)| c);
            accounts.retain(|a| {
                registry
                    .get::<MqttState>(Protocol::Mqtt, &format!("{a}/{client}"))
                    .is_some()
            });
            !accounts.is_empty()
        });
    }

    /// Carries a client's MQTT publish across (what [`Bridge::wants`] said).
    /// `code` is what the MQTT side alone would acknowledge with.
    pub async fn from_mqtt(
        &self,
        from: &Address,
        msg: &Arc<Routed>,
        want: Want,
        code: u8,
    ) -> Crossed {
        let mut out = Crossed {
            code,
            ..Crossed::default()
        };
        let Some(im) = self.im() else {
            return out;
        };
        let p = &msg.publish;
        if p.payload.len() > self.config.max_payload {
            tracing::info!(topic = %p.topic, "bridge: payload over max_payload, not carried");
            out.code = reason::QUOTA_EXCEEDED;
            return out;
        }
        let durable = p.qos != QoS::AtMostOnce;
        match want {
            Want::Rule => {
                let host = from.domain();
                let Some((rule, node)) = self.rules.to_node(host, &p.topic) else {
                    return out;
                };
                let publisher = device_or_account(from);
                match im
                    .bridge_publish(host, &node, rule, &publisher, p, &mut out.congested)
                    .await
                {
                    Ok(()) => {
                        out.stored = durable;
                        if out.code == reason::NO_MATCHING_SUBSCRIBERS {
                            out.code = reason::SUCCESS;
                        }
                    }
                    Err(code) => out.code = code,
                }
            }
            Want::Direct => {
                let host = from.domain();
                let to = &p.topic[DIRECT.len()..];
                let device = format!("{}@mqtt.{host}", from.name());
                match im
                    .message_from_device(
                        &device,
                        from.account(),
                        to,
                        &p.payload,
                        &mut out.congested,
                    )
                    .await
                {
                    Ok(stored) => {
                        out.code = reason::SUCCESS;
                        out.stored = stored && durable;
                    }
                    Err(code) => out.code = code,
                }
            }
        }
        out
    }

    /// Publishes an item of a bridged node to MQTT: `topic` in `host`,
    /// retained if the rule says so. `Ok(stored)`: whether a barrier is due
    /// before the XMPP publisher hears back.
    pub fn to_mqtt(
        &self,
        host: &str,
        rule: &Rule,
        topic: &str,
        content: payload::Content,
        congested: &mut Option<Arc<dyn Handle>>,
    ) -> bool {
        let Some(broker) = self.broker() else {
            return false;
        };
        let Some(domain) = broker.domain(host) else {
            return false;
        };
        let mut publish = Publish {
            topic: topic.to_string(),
            qos: QoS::from_u8(rule.config.qos).unwrap_or(QoS::AtLeastOnce),
            retain: rule.config.retain,
            payload: bytes::Bytes::from(content.payload),
            ..Publish::default()
        };
        publish.properties.content_type = content.content_type;
        publish.properties.payload_format_indicator = content.utf8.then_some(true);
        publish.properties.user_properties = content.user_properties;
        // Origin 0: no MQTT session published it (No Local spares nobody).
        let msg = Arc::new(broker.routed(publish, 0));
        let mut stored = false;
        if msg.publish.retain {
            if broker.retain(domain, &msg) {
                stored = true;
            } else {
                tracing::info!(
                    topic,
                    "bridge: retained quota reached, item routed without retaining"
                );
            }
        }
        let routing = broker.publish(domain, &msg);
        stored |= routing.stored;
        if let Some(c) = routing.congested {
            congested.get_or_insert(c as Arc<dyn Handle>);
        }
        stored
    }

    /// Clears a topic's retained message (a bridged node was purged).
    pub fn clear_retained(&self, host: &str, topic: &str) -> bool {
        let Some(broker) = self.broker() else {
            return false;
        };
        let Some(domain) = broker.domain(host) else {
            return false;
        };
        let publish = Publish {
            topic: topic.to_string(),
            retain: true,
            ..Publish::default()
        };
        let msg = Arc::new(broker.routed(publish, 0));
        broker.retain(domain, &msg)
    }

    /// Delivers a chat message to the MQTT session `client` of `host` on
    /// `$xmpp/inbox/<from>`. `Ok(stored)`; `Err` when no such session
    /// subscribed there (or may not read it).
    #[allow(clippy::result_unit_err)]
    pub fn to_device(
        &self,
        host: &str,
        client: &str,
        from: &str,
        body: &str,
        congested: &mut Option<Arc<dyn Handle>>,
    ) -> Result<bool, ()> {
        if body.len() > self.config.max_payload {
            return Err(());
        }
        let Some(broker) = self.broker() else {
            return Err(());
        };
        if broker.domain(host).is_none() {
            return Err(());
        }
        let topic = format!("{INBOX}{from}");
        let accounts = self
            .inboxes
            .get(&format!("{host}\0{client}"))
            .map(|a| a.clone())
            .unwrap_or_default();
        let registry = broker.registry();
        let acl = broker.acl.load();
        let mut sent = false;
        let mut stored = false;
        for account in accounts {
            let Some(slot) =
                registry.get::<MqttState>(Protocol::Mqtt, &format!("{account}/{client}"))
            else {
                continue;
            };
            let Some((qos, sub_ids)) = inbox_subscription(&slot, &topic) else {
                continue;
            };
            if acl.checks_reads() && !acl.allows(Who::of(slot.address()), Request::Read, &topic) {
                continue;
            }
            let mut publish = Publish {
                topic: topic.clone(),
                qos,
                payload: bytes::Bytes::from(body.to_string().into_bytes()),
                ..Publish::default()
            };
            publish.properties.payload_format_indicator = Some(true);
            publish.properties.content_type = Some("text/plain; charset=utf-8".into());
            let msg = Arc::new(broker.routed(publish, 0));
            let pushed = broker.enqueue(
                &slot,
                Queued {
                    msg,
                    qos,
                    retain: false,
                    sub_ids,
                    seq: None,
                },
            );
            stored |= pushed.stored;
            if pushed.congested {
                congested.get_or_insert(slot.clone() as Arc<dyn Handle>);
            }
            // Queued for a session that is away counts as delivered only
            // for QoS 1/2 (kept); QoS 0 to an away session is lost.
            sent |= slot.is_online() || qos != QoS::AtMostOnce;
        }
        if sent {
            Ok(stored)
        } else {
            Err(())
        }
    }
}

/// The best subscription of a session matching `topic`: its QoS and
/// subscription identifiers.
fn inbox_subscription(slot: &Slot, topic: &str) -> Option<(QoS, Vec<u32>)> {
    let st = slot.lock();
    let mut best: Option<(QoS, Vec<u32>)> = None;
    for (filter, (opts, id)) in st.subscriptions.iter() {
        if !filter_matches(filter, topic) {
            continue;
        }
        let b = best.get_or_insert((QoS::AtMostOnce, Vec::new()));
        if opts.qos as u8 > b.0 as u8 {
            b.0 = opts.qos;
        }
        b.1.extend(id.iter().copied());
    }
    best
}

/// An MQTT client as XMPP names it: its account, or for an anonymous
/// client `<client-id>@mqtt.<host>`.
fn device_or_account(a: &Address) -> String {
    if a.account().contains('@') {
        a.account().to_string()
    } else {
        format!("{}@mqtt.{}", a.name(), a.domain())
    }
}

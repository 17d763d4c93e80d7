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
//!   message to that account from the device's JID,
//!   `<account's local part>@mqtt.<host>/<client id>` (client ids are per
//!   account, so the account is part of the address: no account can pose
//!   as another's device); a message to that JID is published to that
//!   session on `$xmpp/inbox/<sender's bare JID>` if it subscribed there,
//!   and one to the bare `<local part>@mqtt.<host>` to each of the
//!   account's sessions that did.
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
    /// The rules (`[[bridge.rule]]`).
    pub rule: Vec<RuleConfig>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            direct: true,
            max_payload: 64 * 1024,
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

/// Why the XMPP side did not take a message from MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The sender may not (outcast, blocked, anonymous).
    NotAuthorized,
    /// No such account, or not a JID.
    NoAddressee,
    /// A chat message must be text.
    NotText,
    /// A limit was reached (nodes, offline messages).
    Full,
}

impl Refused {
    fn reason_code(self) -> u8 {
        match self {
            Refused::NotAuthorized => reason::NOT_AUTHORIZED,
            Refused::NoAddressee => reason::TOPIC_NAME_INVALID,
            Refused::NotText => reason::PAYLOAD_FORMAT_INVALID,
            Refused::Full => reason::QUOTA_EXCEEDED,
        }
    }
}

/// An MQTT message as the XMPP side sees it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub payload: &'a [u8],
    pub retain: bool,
    pub content_type: Option<&'a str>,
    pub user_properties: &'a [(String, String)],
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
}

impl Bridge {
    pub fn new(config: BridgeConfig, broker: &Arc<Broker>) -> Result<Bridge, String> {
        let rules = Rules::compile(&config.rule)?;
        Ok(Bridge {
            config,
            rules,
            broker: Arc::downgrade(broker),
            im: OnceLock::new(),
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

    /// Whether an XMPP user may send an item to `topic`: the account's
    /// access rules and its token's `mqtt:publish:` limits, as for an MQTT
    /// publish of its own.
    pub fn may_publish_to(
        &self,
        account: &str,
        resource: &str,
        scopes: Option<&crate::auth::Scopes>,
        topic: &str,
    ) -> bool {
        let who = Who {
            account,
            client_id: resource,
            domain: account.split_once('@').map_or(account, |(_, d)| d),
        };
        let acl_ok = self
            .broker()
            .is_none_or(|b| b.acl.load().allows(who, Request::Publish, topic));
        acl_ok && crate::auth::scopes::topic_within_limits(scopes, topic)
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
        self.rules.carries_topic(host, topic).then_some(Want::Rule)
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
        match want {
            Want::Rule => {
                let host = from.domain();
                let Some((rule, node)) = self.rules.to_node(host, &p.topic) else {
                    return out;
                };
                let publisher = device_or_account(from);
                let m = Message {
                    payload: &p.payload,
                    retain: p.retain,
                    content_type: p.properties.content_type.as_deref(),
                    user_properties: &p.properties.user_properties,
                };
                // The retained message is set again under the node's lock,
                // so that of two publishers racing on one topic the last
                // item and the retained message are the same one.
                let broker = self.broker();
                let reassert = || {
                    if let (true, Some(b)) = (p.retain, broker.as_ref()) {
                        if let Some(d) = b.domain(host) {
                            b.retain(d, msg);
                        }
                    }
                };
                match im
                    .bridge_publish(
                        host,
                        &node,
                        rule,
                        &publisher,
                        m,
                        reassert,
                        &mut out.congested,
                    )
                    .await
                {
                    Ok(()) => {
                        // Every QoS waits for the store: QoS 1/2 to be
                        // acknowledged, QoS 0 so that a flood meets the
                        // store's pace instead of an ever longer queue.
                        out.stored = true;
                        if out.code == reason::NO_MATCHING_SUBSCRIBERS {
                            out.code = reason::SUCCESS;
                        }
                    }
                    Err(r) => out.code = r.reason_code(),
                }
            }
            Want::Direct => {
                let to = &p.topic[DIRECT.len()..];
                let Some(device) = device_jid(from) else {
                    out.code = reason::NOT_AUTHORIZED;
                    return out;
                };
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
                        out.stored = stored;
                    }
                    Err(r) => out.code = r.reason_code(),
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
        if let Some(peers) = broker.peers.get() {
            peers.forward_now(host, &msg);
        }
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

    /// Delivers a chat message to the MQTT sessions of `account` (a bare
    /// JID) on `$xmpp/inbox/<from>`: the one with client id `client`, or
    /// each that subscribed there. `Some(stored)`; `None` when no such
    /// session subscribed there (or may read it).
    pub fn to_device(
        &self,
        account: &str,
        client: Option<&str>,
        from: &str,
        body: &str,
        congested: &mut Option<Arc<dyn Handle>>,
    ) -> Option<bool> {
        if body.len() > self.config.max_payload {
            return None;
        }
        let broker = self.broker()?;
        let registry = broker.registry();
        let slots: Vec<Arc<Slot>> = match client {
            Some(c) => registry
                .get::<MqttState>(Protocol::Mqtt, &format!("{account}/{c}"))
                .into_iter()
                .collect(),
            None => registry.with_account(account, |all| {
                all.iter()
                    .filter_map(|h| h.clone().into_any().downcast::<Slot>().ok())
                    .collect()
            }),
        };
        let topic = format!("{INBOX}{from}");
        let acl = broker.acl.load();
        let mut sent = false;
        let mut stored = false;
        for slot in slots {
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
        sent.then_some(stored)
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

/// An MQTT client as the publisher of an item: its account, or for an
/// anonymous client the gateway `mqtt.<host>`.
fn device_or_account(a: &Address) -> String {
    if a.account().contains('@') {
        a.account().to_string()
    } else {
        format!("mqtt.{}", a.domain())
    }
}

/// A session's JID on the XMPP side, `<local part>@mqtt.<host>/<client
/// id>`; none for an anonymous client (no account to speak for) or a
/// client id that is no JID resource.
pub fn device_jid(a: &Address) -> Option<String> {
    let (local, host) = a.account().split_once('@')?;
    let jid = format!("{local}@mqtt.{host}/{}", a.name());
    let parsed = crate::xmpp::stanza::Jid::parse(&jid).ok()?;
    (parsed.resource() == Some(a.name())).then_some(jid)
}

//! The sans-I/O MQTT connection: decoded packets in, encoded bytes out.
//!
//! [`Connection`] owns no socket. The listener feeds it packets
//! ([`Connection::handle`]), asks it to move queued messages into its output
//! ([`Connection::pump`]), tells it about timers and token ends, and writes
//! [`Connection::out`] to the socket — after flushing the store when
//! [`Connection::needs_flush`] says an acknowledgement depends on it. The
//! session itself (queue, in-flight window, subscriptions) lives in the broker's
//! [`Slot`], so a resumed session continues where the last connection stopped.

use std::sync::Arc;

use bytes::BytesMut;

use super::broker::{Broker, Domain, InFlight, Queued, Routed, Slot, Stage};
use super::codec::{
    self, reason, Ack, Auth, ConnAck, Connect, DecodeError, Delivery, Disconnect, LastWill, Packet,
    Properties, Publish, QoS, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe, Version,
};
use super::connect::{self, Credentials, X_OAUTH2};
use super::topics;
use crate::auth::{
    self, Action, AuthCore, BareJid, Grant, Login, LoginError, LoginRequest, Scopes,
};

mod aliases;
mod live;
mod outbound;

use aliases::OutAliases;

/// Broker-wide settings every connection reads.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub default_host: String,
    pub allow_anonymous: bool,
    /// Largest packet we accept (advertised in CONNACK).
    pub max_packet_size: u32,
    /// How many unacknowledged incoming QoS 2 messages a client may have.
    pub receive_maximum: u16,
    pub topic_alias_maximum: u16,
    pub limits: MqttLimits,
}

impl MqttSettings {
    /// The settings a listener runs with, from the config keys.
    pub fn from_config(c: &crate::config::Config) -> MqttSettings {
        MqttSettings {
            default_host: c.default_host().to_string(),
            allow_anonymous: c.mqtt_allow_anonymous,
            max_packet_size: c.mqtt_max_packet_size,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            limits: MqttLimits {
                max_connect_size: c.mqtt_max_connect_size,
                max_filters_per_subscribe: c.mqtt_max_filters_per_subscribe,
                max_subscriptions: c.mqtt_max_subscriptions,
                max_topic_levels: c.mqtt_max_topic_levels,
                max_topic_length: c.mqtt_max_topic_length,
                max_sessions_per_account: c.mqtt_max_sessions_per_account,
                max_session_expiry: c.mqtt_max_session_expiry,
                max_keepalive: c.mqtt_max_keepalive,
                max_retained: c.mqtt_max_retained,
            },
        }
    }
}

/// What one client may cost (each a config key: see `configs/petrel.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttLimits {
    /// Largest packet before the login succeeded (`mqtt_max_connect_size`).
    pub max_connect_size: usize,
    /// Filters one SUBSCRIBE may carry; the rest get 0x97
    /// (`mqtt_max_filters_per_subscribe`).
    pub max_filters_per_subscribe: usize,
    /// Subscriptions one session may hold (`mqtt_max_subscriptions`).
    pub max_subscriptions: usize,
    /// Levels of a topic name or filter (`mqtt_max_topic_levels`).
    pub max_topic_levels: usize,
    /// Bytes of a topic name or filter (`mqtt_max_topic_length`).
    pub max_topic_length: usize,
    /// Sessions (live or kept) of one account, or of the anonymous clients
    /// of a domain (`mqtt_max_sessions_per_account`).
    pub max_sessions_per_account: usize,
    /// The longest Session Expiry Interval granted, seconds; 3.1.1
    /// persistent sessions get it too (`mqtt_max_session_expiry`).
    pub max_session_expiry: u32,
    /// The longest keep-alive, seconds; 0: none (`mqtt_max_keepalive`).
    /// An MQTT 5 client asking for more (or for none) is told this one
    /// as Server Keep Alive; a 3.1.1 client is refused (it cannot be told).
    pub max_keepalive: u16,
    /// Retained topics per domain (`mqtt_max_retained`).
    pub max_retained: usize,
}

impl Default for MqttLimits {
    fn default() -> Self {
        MqttLimits {
            max_connect_size: 64 * 1024,
            max_filters_per_subscribe: 32,
            max_subscriptions: 1000,
            max_topic_levels: 32,
            max_topic_length: 1024,
            max_sessions_per_account: 10_000,
            max_session_expiry: 7 * 24 * 3600,
            max_keepalive: 0,
            max_retained: 100_000,
        }
    }
}

/// What the listener must do after a call.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// Ask the auth core's login decision (with the peer's address), then
    /// call `login_decided`. Boxed: rare, and a `Next` lives in every
    /// connection's task.
    Login(Box<LoginRequest>),
    /// Write `out` (flushing first if needed), then close.
    Close,
}

/// What a closed connection leaves behind for the listener to schedule.
pub struct Aftermath {
    pub slot: Arc<Slot>,
    pub domain: Arc<Domain>,
    pub generation: u64,
    /// Will to publish after `will_delay` seconds unless the session resumes.
    pub will: Option<(Arc<Routed>, u32)>,
    /// Session Expiry Interval; 0 ends it now, `u32::MAX` never.
    pub expiry: u32,
}

#[cfg(test)]
pub const LIVE_SIZE: usize = std::mem::size_of::<Live>();

struct Live {
    domain: Arc<Domain>,
    slot: Arc<Slot>,
    generation: u64,
    grant: Option<Grant>,
    version: Version,
    keep_alive: u16,
    /// Boxed: most devices send no will, and a will carries its own properties.
    will: Option<Box<LastWill>>,
    client_receive_max: u16,
    client_max_packet: Option<u32>,
    /// Topic aliases the client set (at most `topic_alias_maximum`, a few
    /// dozen: a list costs less than a map in every connection).
    aliases: Vec<(u16, String)>,
    /// The topic aliases this server set towards the client (3.3.2.3.4).
    out_aliases: OutAliases,
    uses_enhanced_auth: bool,
    expiry: u32,
    /// A publish the bridge must carry across before it is acknowledged.
    bridging: Option<Box<Crossing>>,
}

/// A client's publish waiting for the bridge or the other nodes of a
/// cluster (see [`Connection::take_crossing`]).
pub struct Crossing {
    pub msg: Arc<Routed>,
    /// What the bridge must do with it, if anything.
    pub want: Option<crate::bridge::Want>,
    /// The other nodes of a cluster must have it.
    pub forward: bool,
    pub qos: QoS,
    packet_id: u16,
    /// What the MQTT side alone acknowledges with.
    pub code: u8,
}

enum Phase {
    AwaitConnect,
    /// AUTH 0x18 sent; the client's AUTH brings the token.
    AwaitToken(Box<Connect>),
    /// The login decision is under way.
    LoggingIn(Box<Connect>),
    Live(Box<Live>),
    Closed,
}

pub struct Connection {
    broker: Arc<Broker>,
    auth: Arc<AuthCore>,
    settings: Arc<MqttSettings>,
    phase: Phase,
    version: Option<Version>,
    /// Encoded packets waiting to be written.
    pub out: BytesMut,
    /// An acknowledgement in `out` depends on a store write: flush first.
    pub needs_flush: bool,
    /// Whether the session ended with a DISCONNECT that suppresses the will.
    will_suppressed: bool,
    /// A subscriber whose queue a publish left at its high-water mark: the
    /// listener reads nothing more from this publisher (nor acknowledges
    /// what it read) until that queue has room.
    pub congested: Option<Arc<Slot>>,
}

/// Most messages one `pump` call moves into `out`, so writes interleave.
const PUMP_BATCH: usize = 256;
/// And most bytes: a subscriber that stops reading must not make its
/// connection hold copies of many large messages.
const PUMP_BYTES: usize = 64 * 1024;

impl Connection {
    pub fn new(
        broker: Arc<Broker>,
        auth: Arc<AuthCore>,
        settings: Arc<MqttSettings>,
    ) -> Connection {
        Connection {
            broker,
            auth,
            settings,
            phase: Phase::AwaitConnect,
            version: None,
            out: BytesMut::new(),
            needs_flush: false,
            will_suppressed: false,
            congested: None,
        }
    }

    /// The negotiated version, once CONNECT was read.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    pub fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live(_))
    }

    /// `(slot, generation)` of a live connection, for the listener's wake-ups.
    pub fn session(&self) -> Option<(&Arc<Slot>, u64)> {
        match &self.phase {
            Phase::Live(l) => Some((&l.slot, l.generation)),
            _ => None,
        }
    }

    pub fn grant(&self) -> Option<&Grant> {
        match &self.phase {
            Phase::Live(l) => l.grant.as_ref(),
            _ => None,
        }
    }

    /// Client keep-alive in seconds (0: none).
    pub fn keep_alive(&self) -> u16 {
        match &self.phase {
            Phase::Live(l) => l.keep_alive,
            _ => 0,
        }
    }

    /// The largest packet the decoder should accept: before the login
    /// succeeded, only `max_connect_size` (a stranger's CONNECT is small).
    pub fn max_packet_size(&self) -> usize {
        let max = self.settings.max_packet_size as usize;
        if self.is_live() {
            max
        } else {
            max.min(self.settings.limits.max_connect_size)
        }
    }

    fn send(&mut self, p: Packet) {
        let v = self.version.unwrap_or(Version::V5);
        if let Err(e) = codec::encode(&p, v, &mut self.out) {
            tracing::error!(error = %e, "could not encode a packet");
        }
    }

    /// Sends DISCONNECT with `code` (v5 only; 3.1.1 just closes) and closes.
    pub fn disconnect(&mut self, code: u8) -> Next {
        if self.version == Some(Version::V5)
            && matches!(self.phase, Phase::Live(_) | Phase::AwaitToken(_))
        {
            self.send(Packet::Disconnect(Disconnect {
                reason_code: code,
                properties: Properties::default(),
            }));
        }
        Next::Close
    }

    /// Kicked from outside the connection: DISCONNECT with the kick's
    /// reason. A session whose token ended or whose account changed
    /// publishes no will: the authority it was given with is gone.
    pub fn kicked(&mut self, why: crate::session::Kick) -> Next {
        use crate::session::Kick;
        if matches!(why, Kick::TokenEnded(_) | Kick::AccountChanged) {
            self.will_suppressed = true;
        }
        self.disconnect(connect::kick_code(why))
    }

    /// A frame could not be decoded: answer with its reason code and close.
    pub fn decode_error(&mut self, e: &DecodeError) -> Next {
        tracing::debug!(error = %e, "MQTT decode error");
        let code = e.reason_code();
        match self.phase {
            Phase::AwaitConnect if code == reason::UNSUPPORTED_PROTOCOL_VERSION => {
                // Unknown level: answer in the oldest form every client reads
                // (3.1.1 return code 1, "unacceptable protocol version").
                self.version = Some(Version::V311);
                self.send(connect::refusal(code, Version::V311));
                Next::Close
            }
            Phase::AwaitConnect => Next::Close,
            _ => self.disconnect(code),
        }
    }

    /// Handles one decoded packet.
    pub fn handle(&mut self, p: Packet) -> Next {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::AwaitConnect => match p {
                Packet::Connect(c) => self.on_connect(c),
                _ => Next::Close,
            },
            Phase::AwaitToken(c) => match p {
                Packet::Auth(a) => match connect::token_of(&a, reason::CONTINUE_AUTHENTICATION) {
                    Ok(token) => {
                        let creds = connect::check_token(
                            &self.auth,
                            &c,
                            &self.settings.default_host,
                            &token,
                        );
                        self.admit(*c, creds)
                    }
                    Err(code) => self.refuse(code),
                },
                Packet::Disconnect(_) => Next::Close,
                _ => self.refuse(reason::PROTOCOL_ERROR),
            },
            Phase::LoggingIn(c) => {
                // Packets pipelined behind CONNECT before the answer: not allowed.
                self.phase = Phase::LoggingIn(c);
                self.disconnect(reason::PROTOCOL_ERROR)
            }
            Phase::Live(live) => {
                let taken_over = live.slot.generation() != live.generation;
                self.phase = Phase::Live(live);
                if taken_over {
                    // Packets still buffered on a taken-over connection must
                    // not act on the session the new connection owns.
                    return self.disconnect(reason::SESSION_TAKEN_OVER);
                }
                self.on_live(p)
            }
            Phase::Closed => Next::Close,
        }
    }

    fn on_connect(&mut self, c: Connect) -> Next {
        self.version = Some(c.version);
        // The will's topic obeys the rules of any PUBLISH: no `$` topics
        // (the server's), within the length and depth limits.
        if let Some(w) = &c.will {
            let l = &self.settings.limits;
            if w.topic.starts_with('$')
                || !topics::within(&w.topic, (l.max_topic_length, l.max_topic_levels))
            {
                tracing::info!(topic = %w.topic, "MQTT will topic refused");
                return self.refuse(reason::TOPIC_NAME_INVALID);
            }
        }
        let creds = connect::examine(
            &self.auth,
            &c,
            &self.settings.default_host,
            self.settings.allow_anonymous,
        );
        self.admit(c, creds)
    }

    fn refuse(&mut self, code: u8) -> Next {
        let v = self.version.unwrap_or(Version::V5);
        self.send(connect::refusal(code, v));
        self.phase = Phase::Closed;
        Next::Close
    }

    fn admit(&mut self, c: Connect, creds: Credentials) -> Next {
        match creds {
            Credentials::Refused(code) => self.refuse(code),
            Credentials::AskToken => {
                self.send(connect::continue_auth());
                self.phase = Phase::AwaitToken(Box::new(c));
                Next::Continue
            }
            Credentials::Login(req) => {
                self.phase = Phase::LoggingIn(Box::new(c));
                Next::Login(Box::new(req))
            }
            Credentials::Anonymous => self.accept(c, None, None),
        }
    }

    /// The answer to [`Next::Login`].
    pub fn login_decided(&mut self, result: Result<Login, LoginError>) -> Next {
        let Phase::LoggingIn(c) = std::mem::replace(&mut self.phase, Phase::Closed) else {
            return Next::Close;
        };
        match result {
            Ok(l) => self.accept(*c, Some(l.account), l.grant),
            Err(e) => self.refuse(connect::refusal_code(&e)),
        }
    }

    fn accept(&mut self, mut c: Connect, identity: Option<BareJid>, grant: Option<Grant>) -> Next {
        let host = identity
            .as_ref()
            .map_or(self.settings.default_host.as_str(), |j| j.domain())
            .to_string();
        let Some(domain) = self.broker.domain(&host).cloned() else {
            return self.refuse(reason::NOT_AUTHORIZED);
        };
        let mut assigned = None;
        if c.client_id.is_empty() {
            if c.version == Version::V311 && !c.clean_start {
                return self.refuse(reason::CLIENT_IDENTIFIER_NOT_VALID);
            }
            let bytes = crate::session::random::<8>(self.broker.registry().entropy().as_ref());
            let id = format!("petrel-{}", hex::encode(bytes));
            c.client_id = id.clone();
            assigned = Some(id);
        }
        let requested = match c.version {
            Version::V5 => c.properties.session_expiry_interval.unwrap_or(0),
            Version::V311 if c.clean_start => 0,
            Version::V311 => u32::MAX,
        };
        // The server's cap; MQTT 5 is told the value granted (3.2.2.3.2).
        let expiry = requested.min(self.settings.limits.max_session_expiry);
        // MQTT 5 §3.2.2.3.14: the server may set the keep-alive.
        let max_ka = self.settings.limits.max_keepalive;
        let keep_alive = if max_ka > 0 && (c.keep_alive == 0 || c.keep_alive > max_ka) {
            if c.version == Version::V311 {
                // As Mosquitto does: 3.1.1 has no way to tell the client.
                tracing::info!(
                    keep_alive = c.keep_alive,
                    "MQTT 3.1.1 keep-alive over mqtt_max_keepalive: refused"
                );
                return self.refuse(reason::CLIENT_IDENTIFIER_NOT_VALID);
            }
            max_ka
        } else {
            c.keep_alive
        };
        if self.over_session_quota(identity.as_ref(), &host, &c.client_id) {
            tracing::info!(account = ?identity.as_ref().map(|j| j.to_string()), "MQTT session quota reached");
            return self.refuse(reason::QUOTA_EXCEEDED);
        }
        // Sessions belong to an account: the same client id under another
        // account (or anonymous) is another session, never a takeover.
        let (slot, present, generation) =
            self.broker
                .open_session(&domain, identity.as_ref(), &c.client_id, c.clean_start);
        {
            // What the registry's sweep watches for this connection.
            let mut st = slot.lock();
            st.expiry = expiry;
            st.keep_alive = keep_alive;
        }
        // The session now ends when its token does.
        self.broker.registry().set_grant(&slot, grant.clone());
        self.persist_session(&slot, true);
        let uses_enhanced_auth = c.properties.authentication_method.is_some();
        let method = match (uses_enhanced_auth, &grant, &identity) {
            (true, _, _) => "x-oauth2",
            (false, Some(_), _) => "token",
            (false, None, Some(_)) => "password",
            (false, None, None) => "anonymous",
        };
        crate::metrics::metrics().login("mqtt", method, true);
        let mut props = Properties::default();
        if c.version == Version::V5 {
            props.receive_maximum = Some(self.settings.receive_maximum);
            props.maximum_packet_size = Some(self.settings.max_packet_size);
            props.topic_alias_maximum = Some(self.settings.topic_alias_maximum);
            props.retain_available = Some(true);
            props.wildcard_subscription_available = Some(true);
            props.subscription_identifier_available = Some(true);
            props.shared_subscription_available = Some(true);
            props.assigned_client_identifier = assigned;
            if expiry != requested {
                props.session_expiry_interval = Some(expiry);
            }
            if keep_alive != c.keep_alive {
                props.server_keep_alive = Some(keep_alive);
            }
            if uses_enhanced_auth {
                props.authentication_method = Some(X_OAUTH2.to_string());
            }
        }
        self.send(Packet::ConnAck(ConnAck {
            session_present: present,
            reason_code: reason::SUCCESS,
            properties: props,
        }));
        tracing::info!(client_id = %c.client_id, account = ?identity.as_ref().map(|j| j.to_string()), token = ?grant.as_ref().map(|g| g.token_id()), "MQTT session open");
        if let Some(w) = &c.will {
            // In a cluster, kept in the store for the node that would
            // publish it if this one died — when the token and the access
            // rules let it be published at all.
            let allowed = auth::may(
                grant.as_ref().map(|g| g.scopes()),
                Action::Publish(&w.topic),
            ) && self.broker.acl.load().allows(
                crate::mqtt::acl::Who::of(slot.address()),
                crate::mqtt::acl::Request::Publish,
                &w.topic,
            );
            if allowed {
                self.broker.store_will(&slot, generation, w);
            }
        }
        let live = Live {
            domain,
            slot,
            generation,
            grant,
            version: c.version,
            keep_alive,
            will: c.will.take(),
            client_receive_max: c.properties.receive_maximum.unwrap_or(u16::MAX).max(1),
            client_max_packet: c.properties.maximum_packet_size,
            aliases: Vec::new(),
            out_aliases: OutAliases::new(if c.version == Version::V5 {
                c.properties
                    .topic_alias_maximum
                    .unwrap_or(0)
                    .min(self.settings.topic_alias_maximum)
            } else {
                0
            }),
            uses_enhanced_auth,
            expiry,
            bridging: None,
        };
        self.phase = Phase::Live(Box::new(live));
        if present {
            self.drop_unauthorized_subscriptions();
            self.resend_inflight();
        }
        self.pump();
        Next::Continue
    }

    /// Whether `account` (none: the anonymous clients of `host`) holds as
    /// many sessions as it may, not counting the one at `client_id` (a
    /// resumption or takeover adds none).
    fn over_session_quota(&self, account: Option<&BareJid>, host: &str, client_id: &str) -> bool {
        let key = account.map_or_else(|| host.to_string(), |a| a.to_string());
        let max = self.settings.limits.max_sessions_per_account;
        self.broker.registry().with_account(&key, |all| {
            // Fewer sessions of every kind than the quota: no need to count
            // (a fleet on one account reconnecting would otherwise scan it
            // once per connect).
            all.len() >= max
                && all
                    .iter()
                    .filter(|h| {
                        h.address().protocol() == crate::session::Protocol::Mqtt
                            && h.address().name() != client_id
                    })
                    .count()
                    >= max
        })
    }

    /// Saves a persistent session's record (the CONNACK/SUBACK waits for the flush).
    fn persist_session(&mut self, slot: &Slot, connected: bool) {
        let persistent = slot.lock().expiry > 0;
        self.broker.save_session(slot, connected);
        self.needs_flush |= persistent;
    }

    fn live(&mut self) -> &mut Live {
        match &mut self.phase {
            Phase::Live(l) => l,
            _ => unreachable!("on_live runs only when live"),
        }
    }

    fn scopes(&self) -> Option<&Scopes> {
        match &self.phase {
            Phase::Live(l) => l.grant.as_ref().map(|g| g.scopes()),
            _ => None,
        }
    }

    /// The session this connection is about to open, once its login is
    /// decided for `account`: the registry's address text and whether it
    /// starts clean. `None` when a server-assigned client id makes it new.
    pub fn opening(&self, account: &BareJid) -> Option<(String, bool)> {
        match &self.phase {
            Phase::LoggingIn(c) if !c.client_id.is_empty() => {
                Some((format!("{account}/{}", c.client_id), c.clean_start))
            }
            _ => None,
        }
    }

    /// A publish is waiting for the bridge: the listener handles no more
    /// packets until it called [`Connection::crossed`] (acknowledgements
    /// keep the order of the publishes).
    pub fn crossing_pending(&self) -> bool {
        matches!(&self.phase, Phase::Live(l) if l.bridging.is_some())
    }

    /// The publish the bridge must carry across, with its publisher.
    pub fn take_crossing(&mut self) -> Option<(Box<Crossing>, Arc<Slot>)> {
        match &mut self.phase {
            Phase::Live(l) => l.bridging.take().map(|c| (c, l.slot.clone())),
            _ => None,
        }
    }

    /// The bridge carried a publish across: acknowledge it. Returns a
    /// congested session of the other protocol for the listener to wait
    /// on (an MQTT one becomes [`Connection::congested`]).
    pub fn crossed(
        &mut self,
        c: &Crossing,
        done: crate::bridge::Crossed,
    ) -> Option<Arc<dyn crate::session::Handle>> {
        self.needs_flush |= done.stored;
        if let Phase::Live(l) = &self.phase {
            let slot = l.slot.clone();
            self.answer_publish(&slot, c.qos, c.packet_id, done.code);
        }
        let h = done.congested?;
        match h.clone().into_any().downcast::<Slot>() {
            Ok(slot) => {
                self.congested.get_or_insert(slot);
                None
            }
            Err(_) => Some(h),
        }
    }

    /// A publish the other nodes did not all take, from a client that
    /// cannot be told so (MQTT 3.1.1): not acknowledged, its QoS 2 id freed,
    /// the connection closed (the client sends it again).
    pub fn crossing_failed(&mut self, c: &Crossing) -> Next {
        if let Phase::Live(l) = &self.phase {
            let slot = l.slot.clone();
            if c.qos == QoS::ExactlyOnce && slot.lock().incoming_qos2.remove(&c.packet_id) {
                self.broker.unstore_incoming_qos2(&slot, c.packet_id);
            }
        }
        self.disconnect(reason::UNSPECIFIED_ERROR)
    }

    /// Acknowledges a publish of `qos` with `code` (a failed QoS 2 publish
    /// does not hold its packet id).
    fn answer_publish(&mut self, slot: &Slot, qos: QoS, pid: u16, code: u8) {
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.ack(Packet::PubAck, pid, code),
            QoS::ExactlyOnce => {
                if code >= 0x80 && slot.lock().incoming_qos2.remove(&pid) {
                    self.broker.unstore_incoming_qos2(slot, pid);
                }
                self.ack(Packet::PubRec, pid, code)
            }
        }
    }

    fn ack(&mut self, kind: fn(Ack) -> Packet, packet_id: u16, code: u8) {
        self.send(kind(Ack {
            packet_id,
            reason_code: code,
            properties: Properties::default(),
        }));
    }

    /// The connection is gone (or is going): what the listener must schedule.
    /// `taken_over`: a newer connection owns the session now.
    pub fn finish(&mut self, taken_over: bool) -> Option<Aftermath> {
        let Phase::Live(l) = std::mem::replace(&mut self.phase, Phase::Closed) else {
            return None;
        };
        let l = *l;
        if let Some(c) = &l.bridging {
            // Closed before the bridge carried it: never acknowledged, so
            // the client sends it again; a QoS 2 id must not stay taken
            // (its resend would be acknowledged and never carried).
            if c.qos == QoS::ExactlyOnce && l.slot.lock().incoming_qos2.remove(&c.packet_id) {
                self.broker.unstore_incoming_qos2(&l.slot, c.packet_id);
            }
        }
        if !taken_over {
            let mut st = l.slot.lock();
            if l.slot.generation() == l.generation {
                // Set before `online` goes false (both under the lock): the
                // sweep counts the Session Expiry Interval from it.
                l.slot
                    .last_rx
                    .store(self.broker.now_ms(), std::sync::atomic::Ordering::Relaxed);
                st.online = false;
                let persistent = st.expiry > 0;
                // Publishers waiting for room in its queue go on: nobody
                // drains it now.
                Slot::wake_locked(st);
                if persistent {
                    // Records when it went away, so expiry counts across restarts.
                    self.broker.save_session(&l.slot, false);
                }
            }
        }
        if l.will.is_some() {
            // Published from memory or suppressed: not left for the cluster.
            self.broker.forget_will(&l.slot, l.generation);
        }
        let will = match l.will {
            Some(w) if !self.will_suppressed => {
                let (p, delay) = crate::mqtt::wills::will_publish(*w);
                Some((Arc::new(self.broker.routed(p, l.slot.id())), delay))
            }
            _ => None,
        };
        // A will a token was not allowed to publish is not published either.
        // Nor one an access rule forbids.
        let will = will.filter(|(m, _)| {
            auth::may(
                l.grant.as_ref().map(|g| g.scopes()),
                Action::Publish(&m.publish.topic),
            ) && self.broker.acl.load().allows(
                crate::mqtt::acl::Who::of(l.slot.address()),
                crate::mqtt::acl::Request::Publish,
                &m.publish.topic,
            )
        });
        Some(Aftermath {
            slot: l.slot,
            domain: l.domain,
            generation: l.generation,
            will,
            expiry: if taken_over { u32::MAX } else { l.expiry },
        })
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

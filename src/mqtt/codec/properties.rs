//! MQTT 5 properties (spec 2.2.2): one struct covering every property, with
//! decoding that enforces which properties each packet may carry.

use bytes::Bytes;
#[cfg(test)]
use bytes::BytesMut;

use super::error::DecodeError;
use super::wire::Reader;

/// Where a property block sits; decides which property ids are allowed
/// (table in spec 2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    Connect,
    ConnAck,
    Publish,
    /// Will Properties in the CONNECT payload (spec 3.1.3.2).
    Will,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropertyContext {
    pub(super) const fn bit(self) -> u16 {
        1 << self as u16
    }
}

pub(super) mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Packets each property may appear in (spec 2.2.2.2 table). Zero for
/// unknown ids, which makes them "not allowed" everywhere.
pub(super) const fn allowed(property: u8) -> u16 {
    use PropertyContext as C;
    const fn m(cs: &[PropertyContext]) -> u16 {
        let mut acc = 0;
        let mut i = 0;
        while i < cs.len() {
            acc |= cs[i].bit();
            i += 1;
        }
        acc
    }
    match property {
        id::PAYLOAD_FORMAT_INDICATOR
        | id::MESSAGE_EXPIRY_INTERVAL
        | id::CONTENT_TYPE
        | id::RESPONSE_TOPIC
        | id::CORRELATION_DATA => m(&[C::Publish, C::Will]),
        id::SUBSCRIPTION_IDENTIFIER => m(&[C::Publish, C::Subscribe]),
        id::SESSION_EXPIRY_INTERVAL => m(&[C::Connect, C::ConnAck, C::Disconnect]),
        id::ASSIGNED_CLIENT_IDENTIFIER
        | id::SERVER_KEEP_ALIVE
        | id::RESPONSE_INFORMATION
        | id::MAXIMUM_QOS
        | id::RETAIN_AVAILABLE
        | id::WILDCARD_SUBSCRIPTION_AVAILABLE
        | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | id::SHARED_SUBSCRIPTION_AVAILABLE => m(&[C::ConnAck]),
        id::AUTHENTICATION_METHOD | id::AUTHENTICATION_DATA => {
            m(&[C::Connect, C::ConnAck, C::Auth])
        }
        id::REQUEST_PROBLEM_INFORMATION | id::REQUEST_RESPONSE_INFORMATION => m(&[C::Connect]),
        id::WILL_DELAY_INTERVAL => m(&[C::Will]),
        id::SERVER_REFERENCE => m(&[C::ConnAck, C::Disconnect]),
        id::REASON_STRING => m(&[
            C::ConnAck,
            C::PubAck,
            C::PubRec,
            C::PubRel,
            C::PubComp,
            C::SubAck,
            C::UnsubAck,
            C::Disconnect,
            C::Auth,
        ]),
        id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS_MAXIMUM | id::MAXIMUM_PACKET_SIZE => {
            m(&[C::Connect, C::ConnAck])
        }
        id::TOPIC_ALIAS => m(&[C::Publish]),
        id::USER_PROPERTY => u16::MAX,
        _ => 0,
    }
}

/// Every MQTT 5 property. `None` / empty means absent. Repeatable
/// properties (Subscription Identifier in PUBLISH, User Property) are
/// vectors that keep wire order; empty vectors do not allocate, so a
/// property-less PUBLISH costs no allocation here.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01; `true` = payload is UTF-8 (3.3.2.3.2).
    pub payload_format_indicator: Option<bool>,
    /// 0x02, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03.
    pub content_type: Option<String>,
    /// 0x08; a topic name without wildcards.
    pub response_topic: Option<String>,
    /// 0x09.
    pub correlation_data: Option<Bytes>,
    /// 0x0B; 1..=268435455. Several in PUBLISH, at most one in SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12.
    pub assigned_client_identifier: Option<String>,
    /// 0x13, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15.
    pub authentication_method: Option<String>,
    /// 0x16.
    pub authentication_data: Option<Bytes>,
    /// 0x17.
    pub request_problem_information: Option<bool>,
    /// 0x18, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19.
    pub request_response_information: Option<bool>,
    /// 0x1A.
    pub response_information: Option<String>,
    /// 0x1C.
    pub server_reference: Option<String>,
    /// 0x1F.
    pub reason_string: Option<String>,
    /// 0x21; non-zero.
    pub receive_maximum: Option<u16>,
    /// 0x22.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23; non-zero.
    pub topic_alias: Option<u16>,
    /// 0x24; 0 or 1 (absent means 2).
    pub maximum_qos: Option<u8>,
    /// 0x25.
    pub retain_available: Option<bool>,
    /// 0x26; ordered name/value pairs, names may repeat (3.1.2.11.8).
    pub user_properties: Vec<(String, String)>,
    /// 0x27; non-zero.
    pub maximum_packet_size: Option<u32>,
    /// 0x28.
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29.
    pub subscription_identifier_available: Option<bool>,
    /// 0x2A.
    pub shared_subscription_available: Option<bool>,
}

// Hand-written: the properties present, and never the authentication data
// (it carries tokens) — a packet may be printed in a log or a panic.
impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Properties");
        if let Some(v) = &self.payload_format_indicator {
            d.field("payload_format_indicator", v);
        }
        if let Some(v) = &self.message_expiry_interval {
            d.field("message_expiry_interval", v);
        }
        if let Some(v) = &self.content_type {
            d.field("content_type", v);
        }
        if let Some(v) = &self.response_topic {
            d.field("response_topic", v);
        }
        if let Some(v) = &self.correlation_data {
            d.field("correlation_data", v);
        }
        if let Some(v) = &self.session_expiry_interval {
            d.field("session_expiry_interval", v);
        }
        if let Some(v) = &self.assigned_client_identifier {
            d.field("assigned_client_identifier", v);
        }
        if let Some(v) = &self.server_keep_alive {
            d.field("server_keep_alive", v);
        }
        if let Some(v) = &self.authentication_method {
            d.field("authentication_method", v);
        }
        if let Some(v) = &self.request_problem_information {
            d.field("request_problem_information", v);
        }
        if let Some(v) = &self.will_delay_interval {
            d.field("will_delay_interval", v);
        }
        if let Some(v) = &self.request_response_information {
            d.field("request_response_information", v);
        }
        if let Some(v) = &self.response_information {
            d.field("response_information", v);
        }
        if let Some(v) = &self.server_reference {
            d.field("server_reference", v);
        }
        if let Some(v) = &self.reason_string {
            d.field("reason_string", v);
        }
        if let Some(v) = &self.receive_maximum {
            d.field("receive_maximum", v);
        }
        if let Some(v) = &self.topic_alias_maximum {
            d.field("topic_alias_maximum", v);
        }
        if let Some(v) = &self.topic_alias {
            d.field("topic_alias", v);
        }
        if let Some(v) = &self.maximum_qos {
            d.field("maximum_qos", v);
        }
        if let Some(v) = &self.retain_available {
            d.field("retain_available", v);
        }
        if let Some(v) = &self.maximum_packet_size {
            d.field("maximum_packet_size", v);
        }
        if let Some(v) = &self.wildcard_subscription_available {
            d.field("wildcard_subscription_available", v);
        }
        if let Some(v) = &self.subscription_identifier_available {
            d.field("subscription_identifier_available", v);
        }
        if let Some(v) = &self.shared_subscription_available {
            d.field("shared_subscription_available", v);
        }
        if let Some(v) = &self.authentication_data {
            d.field(
                "authentication_data",
                &format_args!("<{} bytes hidden>", v.len()),
            );
        }
        if !self.subscription_identifiers.is_empty() {
            d.field("subscription_identifiers", &self.subscription_identifiers);
        }
        if !self.user_properties.is_empty() {
            d.field("user_properties", &self.user_properties);
        }
        d.finish()
    }
}

impl Properties {
    /// About how many bytes the variable-length properties hold (strings,
    /// binary data, user properties, subscription identifiers): what a
    /// queue or a budget must count besides payload and topic, or a
    /// message of a million user properties would pass for a small one.
    pub fn heap_len(&self) -> usize {
        let s = |o: &Option<String>| o.as_ref().map_or(0, String::len);
        let b = |o: &Option<Bytes>| o.as_ref().map_or(0, Bytes::len);
        s(&self.content_type)
            + s(&self.response_topic)
            + b(&self.correlation_data)
            + s(&self.assigned_client_identifier)
            + s(&self.authentication_method)
            + b(&self.authentication_data)
            + s(&self.response_information)
            + s(&self.server_reference)
            + s(&self.reason_string)
            + self.subscription_identifiers.len() * 4
            + self
                .user_properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2 * std::mem::size_of::<String>())
                .sum::<usize>()
    }
}

/// Each non-repeatable property may appear once; the spec makes a repeat a
/// Protocol Error for every one of them (e.g. 3.1.2.11.2, 3.3.2.3.2).
fn once<T>(slot: &mut Option<T>, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol(
            "property included more than once (2.2.2.2)",
        ));
    }
    *slot = Some(v);
    Ok(())
}

/// Byte properties defined as 0/1: other values are a Protocol Error
/// (e.g. 3.1.2.11.6, 3.2.2.3.5, 3.2.2.3.11).
fn flag(v: u8) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol("boolean property not 0 or 1")),
    }
}

fn nonzero16(v: u16, what: &'static str) -> Result<u16, DecodeError> {
    if v == 0 {
        Err(DecodeError::Protocol(what))
    } else {
        Ok(v)
    }
}

impl Properties {
    /// True when no property is set (the block encodes as a single 0 byte).
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Decode a property block (length prefix included) for `ctx`.
    pub(super) fn decode(r: &mut Reader, ctx: PropertyContext) -> Result<Properties, DecodeError> {
        let len = r.varint()? as usize;
        let mut p = Properties::default();
        if len == 0 {
            return Ok(p);
        }
        // Spec 2.2.2.1: the length counts the properties; running past the
        // packet end is malformed.
        let mut r = r.sub(len)?;
        while !r.is_empty() {
            // Identifiers are varints (2.2.2.2) though all defined ones are
            // a single byte; a bigger value is simply an unknown id.
            let raw = r.varint()?;
            let pid = u8::try_from(raw).unwrap_or(0);
            // Spec 2.2.2.2: an identifier not valid for this packet type is
            // a Malformed Packet.
            if allowed(pid) & ctx.bit() == 0 {
                return Err(DecodeError::Malformed(
                    "property not allowed in this packet (2.2.2.2)",
                ));
            }
            match pid {
                id::PAYLOAD_FORMAT_INDICATOR => {
                    let v = r.u8()?;
                    once(&mut p.payload_format_indicator, flag(v)?)?
                }
                id::MESSAGE_EXPIRY_INTERVAL => once(&mut p.message_expiry_interval, r.u32()?)?,
                id::CONTENT_TYPE => once(&mut p.content_type, r.string()?)?,
                id::RESPONSE_TOPIC => {
                    let t = r.string()?;
                    // 3.3.2.3.5 [MQTT-3.3.2-14]: Response Topic is a topic
                    // name, so no wildcards.
                    if t.is_empty() || t.contains(['+', '#']) {
                        return Err(DecodeError::Protocol(
                            "Response Topic is not a valid topic name (3.3.2.3.5)",
                        ));
                    }
                    once(&mut p.response_topic, t)?
                }
                id::CORRELATION_DATA => once(&mut p.correlation_data, r.binary()?)?,
                id::SUBSCRIPTION_IDENTIFIER => {
                    let v = r.varint()?;
                    // 3.3.2.3.8 / 3.8.2.1.2: value 0 is a Protocol Error.
                    if v == 0 {
                        return Err(DecodeError::Protocol(
                            "Subscription Identifier 0 (3.8.2.1.2)",
                        ));
                    }
                    // 3.8.2.1.2: at most once in SUBSCRIBE (PUBLISH may carry several).
                    if ctx == PropertyContext::Subscribe && !p.subscription_identifiers.is_empty() {
                        return Err(DecodeError::Protocol(
                            "Subscription Identifier more than once (3.8.2.1.2)",
                        ));
                    }
                    p.subscription_identifiers.push(v)
                }
                id::SESSION_EXPIRY_INTERVAL => once(&mut p.session_expiry_interval, r.u32()?)?,
                id::ASSIGNED_CLIENT_IDENTIFIER => {
                    once(&mut p.assigned_client_identifier, r.string()?)?
                }
                id::SERVER_KEEP_ALIVE => once(&mut p.server_keep_alive, r.u16()?)?,
                id::AUTHENTICATION_METHOD => once(&mut p.authentication_method, r.string()?)?,
                id::AUTHENTICATION_DATA => once(&mut p.authentication_data, r.binary()?)?,
                id::REQUEST_PROBLEM_INFORMATION => {
                    let v = flag(r.u8()?)?;
                    once(&mut p.request_problem_information, v)?
                }
                id::WILL_DELAY_INTERVAL => once(&mut p.will_delay_interval, r.u32()?)?,
                id::REQUEST_RESPONSE_INFORMATION => {
                    let v = flag(r.u8()?)?;
                    once(&mut p.request_response_information, v)?
                }
                id::RESPONSE_INFORMATION => once(&mut p.response_information, r.string()?)?,
                id::SERVER_REFERENCE => once(&mut p.server_reference, r.string()?)?,
                id::REASON_STRING => once(&mut p.reason_string, r.string()?)?,
                id::RECEIVE_MAXIMUM => {
                    // 3.1.2.11.3 / 3.2.2.3.3: value 0 is a Protocol Error.
                    let v = nonzero16(r.u16()?, "Receive Maximum 0 (3.1.2.11.3)")?;
                    once(&mut p.receive_maximum, v)?
                }
                id::TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, r.u16()?)?,
                id::TOPIC_ALIAS => {
                    // 0 is not permitted (3.3.2.3.4), but the answer is the
                    // specific DISCONNECT 0x94 Topic Alias invalid, which the
                    // session sends along with the over-the-maximum case.
                    once(&mut p.topic_alias, r.u16()?)?
                }
                id::MAXIMUM_QOS => {
                    // 3.2.2.3.4: only 0 or 1.
                    let v = r.u8()?;
                    if v > 1 {
                        return Err(DecodeError::Protocol("Maximum QoS not 0 or 1 (3.2.2.3.4)"));
                    }
                    once(&mut p.maximum_qos, v)?
                }
                id::RETAIN_AVAILABLE => {
                    let v = flag(r.u8()?)?;
                    once(&mut p.retain_available, v)?
                }
                id::USER_PROPERTY => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user_properties.push((k, v))
                }
                id::MAXIMUM_PACKET_SIZE => {
                    // 3.1.2.11.4 / 3.2.2.3.6: value 0 is a Protocol Error.
                    let v = r.u32()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("Maximum Packet Size 0 (3.1.2.11.4)"));
                    }
                    once(&mut p.maximum_packet_size, v)?
                }
                id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                    let v = flag(r.u8()?)?;
                    once(&mut p.wildcard_subscription_available, v)?
                }
                id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                    let v = flag(r.u8()?)?;
                    once(&mut p.subscription_identifier_available, v)?
                }
                id::SHARED_SUBSCRIPTION_AVAILABLE => {
                    let v = flag(r.u8()?)?;
                    once(&mut p.shared_subscription_available, v)?
                }
                _ => unreachable!("allowed() is zero for unknown ids"),
            }
        }
        // 3.1.2.11.10 / 3.2.2.3.18 / 3.15.2.2.3: Authentication Data
        // without an Authentication Method is a Protocol Error.
        if p.authentication_data.is_some() && p.authentication_method.is_none() {
            return Err(DecodeError::Protocol(
                "Authentication Data without Authentication Method (3.1.2.11.10)",
            ));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PropertyContext as C;

    fn decode(bytes: &[u8], ctx: PropertyContext) -> Result<Properties, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(bytes));
        let p = Properties::decode(&mut r, ctx)?;
        r.finish()?;
        Ok(p)
    }

    fn round_trip(p: &Properties, ctx: PropertyContext) {
        let n = p.content_len(ctx).unwrap();
        let mut out = BytesMut::new();
        p.write(n, &mut out);
        assert_eq!(out.len(), p.block_len(ctx).unwrap());
        assert_eq!(&decode(&out, ctx).unwrap(), p);
    }

    #[test]
    fn every_property_round_trips_in_some_packet() {
        let connack = Properties {
            session_expiry_interval: Some(10),
            assigned_client_identifier: Some("auto-1".into()),
            server_keep_alive: Some(30),
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(b"\x00\x01")),
            response_information: Some("resp/".into()),
            server_reference: Some("other:1883".into()),
            reason_string: Some("ok".into()),
            receive_maximum: Some(10),
            topic_alias_maximum: Some(5),
            maximum_qos: Some(1),
            retain_available: Some(false),
            user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            maximum_packet_size: Some(1 << 20),
            wildcard_subscription_available: Some(true),
            subscription_identifier_available: Some(true),
            shared_subscription_available: Some(false),
            ..Default::default()
        };
        round_trip(&connack, C::ConnAck);
        let publish = Properties {
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/to".into()),
            correlation_data: Some(Bytes::from_static(b"id")),
            subscription_identifiers: vec![1, 268_435_455, 7],
            topic_alias: Some(3),
            ..Default::default()
        };
        round_trip(&publish, C::Publish);
        let connect = Properties {
            request_problem_information: Some(false),
            request_response_information: Some(true),
            ..Default::default()
        };
        round_trip(&connect, C::Connect);
        let will = Properties {
            will_delay_interval: Some(5),
            ..Default::default()
        };
        round_trip(&will, C::Will);
    }

    #[test]
    fn duplicate_property_is_protocol_error() {
        // Two Message Expiry Intervals.
        let e = decode(&[10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2], C::Publish).unwrap_err();
        assert_eq!(e.reason_code(), 0x82);
        // User properties may repeat.
        assert!(decode(&[11, 0x26, 0, 1, b'a', 0, 0, 0x26, 0, 0, 0, 0], C::Publish).is_ok());
        // Subscription Identifier repeats in PUBLISH, not in SUBSCRIBE.
        assert!(decode(&[4, 0x0B, 1, 0x0B, 2], C::Publish).is_ok());
        assert_eq!(
            decode(&[4, 0x0B, 1, 0x0B, 2], C::Subscribe)
                .unwrap_err()
                .reason_code(),
            0x82
        );
    }

    #[test]
    fn property_not_allowed_for_packet_is_malformed() {
        // Topic Alias in CONNECT; Session Expiry in PUBLISH; unknown id 0x7F.
        assert_eq!(
            decode(&[3, 0x23, 0, 1], C::Connect)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        assert_eq!(
            decode(&[5, 0x11, 0, 0, 0, 1], C::Publish)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        assert_eq!(
            decode(&[2, 0x7F, 0], C::Publish).unwrap_err().reason_code(),
            0x81
        );
        // Will Delay Interval only in the Will block.
        assert_eq!(
            decode(&[5, 0x18, 0, 0, 0, 1], C::Connect)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        // Encoding refuses too.
        let p = Properties {
            topic_alias: Some(1),
            ..Default::default()
        };
        assert!(p.content_len(C::Connect).is_err());
    }

    #[test]
    fn wrong_length_or_type_is_malformed() {
        // Property length says 5 but only 3 bytes follow.
        assert_eq!(
            decode(&[5, 0x23, 0, 1], C::Publish)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        // Topic Alias is a two-byte integer: one byte is truncated.
        assert_eq!(
            decode(&[2, 0x23, 1], C::Publish).unwrap_err().reason_code(),
            0x81
        );
    }

    #[test]
    fn value_rules() {
        // Topic Alias 0 is left to the session (DISCONNECT 0x94).
        assert_eq!(
            decode(&[3, 0x23, 0, 0], C::Publish).unwrap().topic_alias,
            Some(0)
        );
        assert_eq!(
            decode(&[3, 0x21, 0, 0], C::Connect)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        assert_eq!(
            decode(&[5, 0x27, 0, 0, 0, 0], C::Connect)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        assert_eq!(
            decode(&[2, 0x0B, 0], C::Publish).unwrap_err().reason_code(),
            0x82
        );
        assert_eq!(
            decode(&[2, 0x17, 2], C::Connect).unwrap_err().reason_code(),
            0x82
        );
        assert_eq!(
            decode(&[2, 0x24, 2], C::ConnAck).unwrap_err().reason_code(),
            0x82
        );
        assert_eq!(
            decode(&[4, 0x08, 0, 1, b'#'], C::Publish)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        assert_eq!(
            decode(&[3, 0x16, 0, 0], C::Auth).unwrap_err().reason_code(),
            0x82
        );
    }
}

//! Differential tests against mqtt5-protocol 0.16, an independent MQTT
//! implementation: random packets encoded by us must decode with theirs to
//! the same content, and packets encoded by them must decode with ours.
//! Property order differs between the two encoders (theirs is a HashMap),
//! so content is compared after conversion, not bytes.
//!
//! What the oracle cannot do, and how the generators avoid it:
//! * Its CONNECT decoder rejects a password without a user name even in v5
//!   (MQTT 5 allows it, 3.1.2.9), so generated CONNECTs with a password
//!   always carry a user name; our own unit tests cover the v5 case.
//! * Its CONNACK maps only some v5 codes to 3.1.1 return codes the way we
//!   do, so 3.1.1 CONNACKs use the six codes 3.1.1 defines.
//! * It does not police the rules we enforce on decode (Authentication
//!   Method required in AUTH, Authentication Data needs a Method, topic name
//!   syntax...), so generated packets satisfy them.
//! * It has no 3.1.1 AUTH (there is none) and no 3.1.1-specific ack forms
//!   beyond the two-byte ones, which are generated with reason code 0.

use bytes::{Bytes, BytesMut};
use mqtt5_protocol::packet::{
    auth::AuthPacket,
    connack::ConnAckPacket,
    connect::ConnectPacket,
    disconnect::DisconnectPacket,
    pingreq::PingReqPacket,
    pingresp::PingRespPacket,
    puback::PubAckPacket,
    pubcomp::PubCompPacket,
    publish::PublishPacket,
    pubrec::PubRecPacket,
    pubrel::PubRelPacket,
    suback::{SubAckPacket, SubAckReasonCode},
    subscribe::{
        RetainHandling as TRetain, SubscribePacket, SubscriptionOptions as TOptions, TopicFilter,
    },
    unsuback::{UnsubAckPacket, UnsubAckReasonCode},
    unsubscribe::UnsubscribePacket,
    MqttPacket,
};
use mqtt5_protocol::{
    FixedHeader, Packet as TPacket, Properties as TProps, PropertyId as I, PropertyValue as PV,
    QoS as TQoS, ReasonCode, WillMessage, WillProperties,
};
use petrel::mqtt::codec::*;
use proptest::prelude::*;

// ---------------------------------------------------------------- conversion

fn tq(q: QoS) -> TQoS {
    match q {
        QoS::AtMostOnce => TQoS::AtMostOnce,
        QoS::AtLeastOnce => TQoS::AtLeastOnce,
        QoS::ExactlyOnce => TQoS::ExactlyOnce,
    }
}

fn mq(q: TQoS) -> QoS {
    QoS::from_u8(q as u8).unwrap()
}

fn rc(c: u8) -> ReasonCode {
    ReasonCode::from_u8(c).unwrap_or_else(|| panic!("oracle has no reason code {c:#x}"))
}

fn to_tprops(p: &Properties) -> TProps {
    let mut t = TProps::default();
    let mut add = |id, v| t.add(id, v).unwrap();
    let s = |v: &String| PV::Utf8String(v.clone());
    let b = |v: &Bytes| PV::BinaryData(v.clone());
    if let Some(v) = p.payload_format_indicator {
        add(I::PayloadFormatIndicator, PV::Byte(v.into()));
    }
    if let Some(v) = p.message_expiry_interval {
        add(I::MessageExpiryInterval, PV::FourByteInteger(v));
    }
    if let Some(v) = &p.content_type {
        add(I::ContentType, s(v));
    }
    if let Some(v) = &p.response_topic {
        add(I::ResponseTopic, s(v));
    }
    if let Some(v) = &p.correlation_data {
        add(I::CorrelationData, b(v));
    }
    for &v in &p.subscription_identifiers {
        add(I::SubscriptionIdentifier, PV::VariableByteInteger(v));
    }
    if let Some(v) = p.session_expiry_interval {
        add(I::SessionExpiryInterval, PV::FourByteInteger(v));
    }
    if let Some(v) = &p.assigned_client_identifier {
        add(I::AssignedClientIdentifier, s(v));
    }
    if let Some(v) = p.server_keep_alive {
        add(I::ServerKeepAlive, PV::TwoByteInteger(v));
    }
    if let Some(v) = &p.authentication_method {
        add(I::AuthenticationMethod, s(v));
    }
    if let Some(v) = &p.authentication_data {
        add(I::AuthenticationData, b(v));
    }
    if let Some(v) = p.request_problem_information {
        add(I::RequestProblemInformation, PV::Byte(v.into()));
    }
    if let Some(v) = p.will_delay_interval {
        add(I::WillDelayInterval, PV::FourByteInteger(v));
    }
    if let Some(v) = p.request_response_information {
        add(I::RequestResponseInformation, PV::Byte(v.into()));
    }
    if let Some(v) = &p.response_information {
        add(I::ResponseInformation, s(v));
    }
    if let Some(v) = &p.server_reference {
        add(I::ServerReference, s(v));
    }
    if let Some(v) = &p.reason_string {
        add(I::ReasonString, s(v));
    }
    if let Some(v) = p.receive_maximum {
        add(I::ReceiveMaximum, PV::TwoByteInteger(v));
    }
    if let Some(v) = p.topic_alias_maximum {
        add(I::TopicAliasMaximum, PV::TwoByteInteger(v));
    }
    if let Some(v) = p.topic_alias {
        add(I::TopicAlias, PV::TwoByteInteger(v));
    }
    if let Some(v) = p.maximum_qos {
        add(I::MaximumQoS, PV::Byte(v));
    }
    if let Some(v) = p.retain_available {
        add(I::RetainAvailable, PV::Byte(v.into()));
    }
    for (k, v) in &p.user_properties {
        add(I::UserProperty, PV::Utf8StringPair(k.clone(), v.clone()));
    }
    if let Some(v) = p.maximum_packet_size {
        add(I::MaximumPacketSize, PV::FourByteInteger(v));
    }
    if let Some(v) = p.wildcard_subscription_available {
        add(I::WildcardSubscriptionAvailable, PV::Byte(v.into()));
    }
    if let Some(v) = p.subscription_identifier_available {
        add(I::SubscriptionIdentifierAvailable, PV::Byte(v.into()));
    }
    if let Some(v) = p.shared_subscription_available {
        add(I::SharedSubscriptionAvailable, PV::Byte(v.into()));
    }
    t
}

fn from_tprops(t: &TProps) -> Properties {
    let mut p = Properties::default();
    for (id, v) in t.iter() {
        match (id, v.clone()) {
            (I::PayloadFormatIndicator, PV::Byte(b)) => p.payload_format_indicator = Some(b == 1),
            (I::MessageExpiryInterval, PV::FourByteInteger(n)) => {
                p.message_expiry_interval = Some(n)
            }
            (I::ContentType, PV::Utf8String(s)) => p.content_type = Some(s),
            (I::ResponseTopic, PV::Utf8String(s)) => p.response_topic = Some(s),
            (I::CorrelationData, PV::BinaryData(b)) => p.correlation_data = Some(b),
            (I::SubscriptionIdentifier, PV::VariableByteInteger(n)) => {
                p.subscription_identifiers.push(n)
            }
            (I::SessionExpiryInterval, PV::FourByteInteger(n)) => {
                p.session_expiry_interval = Some(n)
            }
            (I::AssignedClientIdentifier, PV::Utf8String(s)) => {
                p.assigned_client_identifier = Some(s)
            }
            (I::ServerKeepAlive, PV::TwoByteInteger(n)) => p.server_keep_alive = Some(n),
            (I::AuthenticationMethod, PV::Utf8String(s)) => p.authentication_method = Some(s),
            (I::AuthenticationData, PV::BinaryData(b)) => p.authentication_data = Some(b),
            (I::RequestProblemInformation, PV::Byte(b)) => {
                p.request_problem_information = Some(b == 1)
            }
            (I::WillDelayInterval, PV::FourByteInteger(n)) => p.will_delay_interval = Some(n),
            (I::RequestResponseInformation, PV::Byte(b)) => {
                p.request_response_information = Some(b == 1)
            }
            (I::ResponseInformation, PV::Utf8String(s)) => p.response_information = Some(s),
            (I::ServerReference, PV::Utf8String(s)) => p.server_reference = Some(s),
            (I::ReasonString, PV::Utf8String(s)) => p.reason_string = Some(s),
            (I::ReceiveMaximum, PV::TwoByteInteger(n)) => p.receive_maximum = Some(n),
            (I::TopicAliasMaximum, PV::TwoByteInteger(n)) => p.topic_alias_maximum = Some(n),
            (I::TopicAlias, PV::TwoByteInteger(n)) => p.topic_alias = Some(n),
            (I::MaximumQoS, PV::Byte(b)) => p.maximum_qos = Some(b),
            (I::RetainAvailable, PV::Byte(b)) => p.retain_available = Some(b == 1),
            (I::UserProperty, PV::Utf8StringPair(k, v)) => p.user_properties.push((k, v)),
            (I::MaximumPacketSize, PV::FourByteInteger(n)) => p.maximum_packet_size = Some(n),
            (I::WildcardSubscriptionAvailable, PV::Byte(b)) => {
                p.wildcard_subscription_available = Some(b == 1)
            }
            (I::SubscriptionIdentifierAvailable, PV::Byte(b)) => {
                p.subscription_identifier_available = Some(b == 1)
            }
            (I::SharedSubscriptionAvailable, PV::Byte(b)) => {
                p.shared_subscription_available = Some(b == 1)
            }
            other => panic!("unexpected property {other:?}"),
        }
    }
    p
}

fn opts_to(o: &SubscriptionOptions) -> TOptions {
    TOptions {
        qos: tq(o.qos),
        no_local: o.no_local,
        retain_as_published: o.retain_as_published,
        retain_handling: match o.retain_handling {
            RetainHandling::SendAtSubscribe => TRetain::SendAtSubscribe,
            RetainHandling::SendIfNew => TRetain::SendAtSubscribeIfNew,
            RetainHandling::DoNotSend => TRetain::DoNotSend,
        },
    }
}

fn opts_from(o: &TOptions) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: mq(o.qos),
        no_local: o.no_local,
        retain_as_published: o.retain_as_published,
        retain_handling: match o.retain_handling {
            TRetain::SendAtSubscribe => RetainHandling::SendAtSubscribe,
            TRetain::SendAtSubscribeIfNew => RetainHandling::SendIfNew,
            TRetain::DoNotSend => RetainHandling::DoNotSend,
        },
    }
}

/// Our packet as the oracle's packet, for protocol level `level`.
fn to_theirs(p: &Packet, v: Version) -> TPacket {
    let level = v.level();
    match p {
        Packet::Connect(c) => TPacket::Connect(Box::new(ConnectPacket {
            protocol_version: c.version.level(),
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            client_id: c.client_id.clone(),
            username: c.username.clone(),
            password: c.password.as_ref().map(|b| b.to_vec()),
            will: c.will.as_ref().map(|w| WillMessage {
                topic: w.topic.clone(),
                payload: w.payload.to_vec(),
                qos: tq(w.qos),
                retain: w.retain,
                properties: WillProperties::default(),
            }),
            properties: to_tprops(&c.properties),
            will_properties: c
                .will
                .as_ref()
                .map(|w| to_tprops(&w.properties))
                .unwrap_or_default(),
        })),
        Packet::ConnAck(c) => TPacket::ConnAck(ConnAckPacket {
            session_present: c.session_present,
            reason_code: rc(c.reason_code),
            properties: to_tprops(&c.properties),
            protocol_version: level,
        }),
        Packet::Publish(x) => TPacket::Publish(PublishPacket {
            topic_name: x.topic.clone(),
            packet_id: (x.qos != QoS::AtMostOnce).then_some(x.packet_id),
            payload: x.payload.clone(),
            qos: tq(x.qos),
            retain: x.retain,
            dup: x.dup,
            properties: to_tprops(&x.properties),
            protocol_version: level,
            stream_id: None,
        }),
        Packet::PubAck(a) => TPacket::PubAck(PubAckPacket {
            packet_id: a.packet_id,
            reason_code: rc(a.reason_code),
            properties: to_tprops(&a.properties),
        }),
        Packet::PubRec(a) => TPacket::PubRec(PubRecPacket {
            packet_id: a.packet_id,
            reason_code: rc(a.reason_code),
            properties: to_tprops(&a.properties),
        }),
        Packet::PubRel(a) => TPacket::PubRel(PubRelPacket {
            packet_id: a.packet_id,
            reason_code: rc(a.reason_code),
            properties: to_tprops(&a.properties),
        }),
        Packet::PubComp(a) => TPacket::PubComp(PubCompPacket {
            packet_id: a.packet_id,
            reason_code: rc(a.reason_code),
            properties: to_tprops(&a.properties),
        }),
        Packet::Subscribe(s) => TPacket::Subscribe(SubscribePacket {
            packet_id: s.packet_id,
            filters: s
                .filters
                .iter()
                .map(|(f, o)| TopicFilter {
                    filter: f.clone(),
                    options: opts_to(o),
                })
                .collect(),
            properties: to_tprops(&s.properties),
            protocol_version: level,
        }),
        Packet::SubAck(s) => TPacket::SubAck(SubAckPacket {
            packet_id: s.packet_id,
            reason_codes: s
                .reason_codes
                .iter()
                .map(|&c| SubAckReasonCode::from_u8(c).unwrap())
                .collect(),
            properties: to_tprops(&s.properties),
            protocol_version: level,
        }),
        Packet::Unsubscribe(u) => TPacket::Unsubscribe(UnsubscribePacket {
            packet_id: u.packet_id,
            filters: u.filters.clone(),
            properties: to_tprops(&u.properties),
            protocol_version: level,
        }),
        Packet::UnsubAck(u) => TPacket::UnsubAck(UnsubAckPacket {
            packet_id: u.packet_id,
            reason_codes: u
                .reason_codes
                .iter()
                .map(|&c| UnsubAckReasonCode::from_u8(c).unwrap())
                .collect(),
            properties: to_tprops(&u.properties),
            protocol_version: level,
        }),
        Packet::PingReq => TPacket::PingReq,
        Packet::PingResp => TPacket::PingResp,
        Packet::Disconnect(d) => TPacket::Disconnect(DisconnectPacket {
            reason_code: rc(d.reason_code),
            properties: to_tprops(&d.properties),
        }),
        Packet::Auth(a) => TPacket::Auth(AuthPacket {
            reason_code: rc(a.reason_code),
            properties: to_tprops(&a.properties),
        }),
    }
}

fn from_theirs(t: &TPacket) -> Packet {
    let ack = |id: u16, code: ReasonCode, props: &TProps| Ack {
        packet_id: id,
        reason_code: u8::from(code),
        properties: from_tprops(props),
    };
    match t {
        TPacket::Connect(c) => Packet::Connect(Connect {
            version: if c.protocol_version == 5 {
                Version::V5
            } else {
                Version::V311
            },
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            properties: from_tprops(&c.properties),
            client_id: c.client_id.clone(),
            will: c.will.as_ref().map(|w| {
                Box::new(LastWill {
                    topic: w.topic.clone(),
                    payload: Bytes::from(w.payload.clone()),
                    qos: mq(w.qos),
                    retain: w.retain,
                    properties: from_tprops(&c.will_properties),
                })
            }),
            username: c.username.clone(),
            password: c.password.clone().map(Bytes::from),
        }),
        TPacket::ConnAck(c) => Packet::ConnAck(ConnAck {
            session_present: c.session_present,
            reason_code: u8::from(c.reason_code),
            properties: from_tprops(&c.properties),
        }),
        TPacket::Publish(x) => Packet::Publish(Publish {
            dup: x.dup,
            qos: mq(x.qos),
            retain: x.retain,
            topic: x.topic_name.clone(),
            packet_id: x.packet_id.unwrap_or(0),
            properties: from_tprops(&x.properties),
            payload: x.payload.clone(),
        }),
        TPacket::PubAck(a) => Packet::PubAck(ack(a.packet_id, a.reason_code, &a.properties)),
        TPacket::PubRec(a) => Packet::PubRec(ack(a.packet_id, a.reason_code, &a.properties)),
        TPacket::PubRel(a) => Packet::PubRel(ack(a.packet_id, a.reason_code, &a.properties)),
        TPacket::PubComp(a) => Packet::PubComp(ack(a.packet_id, a.reason_code, &a.properties)),
        TPacket::Subscribe(s) => Packet::Subscribe(Subscribe {
            packet_id: s.packet_id,
            properties: from_tprops(&s.properties),
            filters: s
                .filters
                .iter()
                .map(|f| (f.filter.clone(), opts_from(&f.options)))
                .collect(),
        }),
        TPacket::SubAck(s) => Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: from_tprops(&s.properties),
            reason_codes: s.reason_codes.iter().map(|&c| c as u8).collect(),
        }),
        TPacket::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            packet_id: u.packet_id,
            properties: from_tprops(&u.properties),
            filters: u.filters.clone(),
        }),
        TPacket::UnsubAck(u) => Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: from_tprops(&u.properties),
            reason_codes: u.reason_codes.iter().map(|&c| c as u8).collect(),
        }),
        TPacket::PingReq => Packet::PingReq,
        TPacket::PingResp => Packet::PingResp,
        TPacket::Disconnect(d) => Packet::Disconnect(Disconnect {
            reason_code: u8::from(d.reason_code),
            properties: from_tprops(&d.properties),
        }),
        TPacket::Auth(a) => Packet::Auth(Auth {
            reason_code: u8::from(a.reason_code),
            properties: from_tprops(&a.properties),
        }),
    }
}

fn their_encode(t: &TPacket) -> BytesMut {
    let mut buf = BytesMut::new();
    let r = match t {
        TPacket::Connect(p) => p.encode(&mut buf),
        TPacket::ConnAck(p) => p.encode(&mut buf),
        TPacket::Publish(p) => p.encode(&mut buf),
        TPacket::PubAck(p) => p.encode(&mut buf),
        TPacket::PubRec(p) => p.encode(&mut buf),
        TPacket::PubRel(p) => p.encode(&mut buf),
        TPacket::PubComp(p) => p.encode(&mut buf),
        TPacket::Subscribe(p) => p.encode(&mut buf),
        TPacket::SubAck(p) => p.encode(&mut buf),
        TPacket::Unsubscribe(p) => p.encode(&mut buf),
        TPacket::UnsubAck(p) => p.encode(&mut buf),
        TPacket::PingReq => PingReqPacket::default().encode(&mut buf),
        TPacket::PingResp => PingRespPacket::default().encode(&mut buf),
        TPacket::Disconnect(p) => p.encode(&mut buf),
        TPacket::Auth(p) => p.encode(&mut buf),
    };
    r.expect("oracle encode");
    buf
}

fn their_decode(bytes: &[u8], v: Version) -> TPacket {
    let mut buf = BytesMut::from(bytes);
    let fh = FixedHeader::decode(&mut buf).expect("oracle fixed header");
    assert_eq!(buf.len(), fh.remaining_length as usize, "frame length");
    TPacket::decode_from_body_with_version(fh.packet_type, &fh, &mut buf, v.level())
        .expect("oracle decode")
}

/// Both directions for one packet.
fn check(p: &Packet, v: Version) -> Result<(), TestCaseError> {
    let state = if matches!(p, Packet::Connect(_)) {
        None
    } else {
        Some(v)
    };
    // Ours -> theirs.
    let mut ours = BytesMut::from(&b"prefix"[..]);
    encode(p, v, &mut ours).expect("our encode");
    let ours = ours.split_off(6);
    prop_assert_eq!(ours.len(), encoded_len(p, v).unwrap());
    let theirs = from_theirs(&their_decode(&ours, v));
    prop_assert_eq!(&theirs, p, "ours -> theirs");
    // Theirs -> ours.
    let mut bytes = their_encode(&to_theirs(p, v));
    let got = decode(&mut bytes, state, usize::MAX);
    prop_assert_eq!(got.as_ref(), Ok(&Some(p.clone())), "theirs -> ours");
    prop_assert!(bytes.is_empty());
    Ok(())
}

// ---------------------------------------------------------------- generators

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn topic() -> impl Strategy<Value = String> {
    "[^\u{0}+#]{1,12}"
}

fn filter() -> impl Strategy<Value = String> {
    "[a-z/+#]{1,10}"
}

fn bin() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pid() -> impl Strategy<Value = u16> {
    1u16..
}

fn user() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(), text()), 0..3)
}

/// Every property with random presence; `keep` later clears what a
/// packet type may not carry.
fn any_props() -> BoxedStrategy<Properties> {
    use proptest::option::of as o;
    // Boxed in three groups: the unboxed nested tuple strategy is large
    // enough to overflow a test thread's stack in debug builds.
    let a = (
        o(any::<bool>()),
        o(any::<u32>()),
        o(text()),
        o(topic()),
        o(bin()),
        prop::collection::vec(1u32..=268_435_455, 0..3),
        o(any::<u32>()),
        o(text()),
        o(any::<u16>()),
    )
        .boxed();
    let b = (
        o(text()),
        o(bin()),
        o(any::<bool>()),
        o(any::<u32>()),
        o(any::<bool>()),
        o(text()),
        o(text()),
        o(text()),
        o(1u16..),
        o(any::<u16>()),
        o(1u16..),
    )
        .boxed();
    let c = (
        o(0u8..=1),
        o(any::<bool>()),
        user(),
        o(1u32..),
        o(any::<bool>()),
        o(any::<bool>()),
        o(any::<bool>()),
    )
        .boxed();
    (a, b, c)
        .prop_map(|(a, b, c)| Properties {
            payload_format_indicator: a.0,
            message_expiry_interval: a.1,
            content_type: a.2,
            response_topic: a.3,
            correlation_data: a.4,
            subscription_identifiers: a.5,
            session_expiry_interval: a.6,
            assigned_client_identifier: a.7,
            server_keep_alive: a.8,
            authentication_method: b.0,
            authentication_data: b.1,
            request_problem_information: b.2,
            will_delay_interval: b.3,
            request_response_information: b.4,
            response_information: b.5,
            server_reference: b.6,
            reason_string: b.7,
            receive_maximum: b.8,
            topic_alias_maximum: b.9,
            topic_alias: b.10,
            maximum_qos: c.0,
            retain_available: c.1,
            user_properties: c.2,
            maximum_packet_size: c.3,
            wildcard_subscription_available: c.4,
            subscription_identifier_available: c.5,
            shared_subscription_available: c.6,
        })
        .boxed()
}

#[derive(Clone, Copy)]
enum Ctx {
    Connect,
    ConnAck,
    Publish,
    Will,
    Ack,
    Subscribe,
    UserOnly,
    ReasonUser,
    Disconnect,
    Auth,
}

/// Keep only the properties allowed in `ctx` (spec 2.2.2.2 table).
fn keep(p: Properties, ctx: Ctx) -> Properties {
    let auth_data = if p.authentication_method.is_some() {
        p.authentication_data.clone()
    } else {
        None
    };
    let d = Properties::default;
    match ctx {
        Ctx::Connect => Properties {
            session_expiry_interval: p.session_expiry_interval,
            authentication_method: p.authentication_method,
            authentication_data: auth_data,
            request_problem_information: p.request_problem_information,
            request_response_information: p.request_response_information,
            receive_maximum: p.receive_maximum,
            topic_alias_maximum: p.topic_alias_maximum,
            user_properties: p.user_properties,
            maximum_packet_size: p.maximum_packet_size,
            ..d()
        },
        Ctx::ConnAck => Properties {
            session_expiry_interval: p.session_expiry_interval,
            assigned_client_identifier: p.assigned_client_identifier,
            server_keep_alive: p.server_keep_alive,
            authentication_method: p.authentication_method,
            authentication_data: auth_data,
            response_information: p.response_information,
            server_reference: p.server_reference,
            reason_string: p.reason_string,
            receive_maximum: p.receive_maximum,
            topic_alias_maximum: p.topic_alias_maximum,
            maximum_qos: p.maximum_qos,
            retain_available: p.retain_available,
            user_properties: p.user_properties,
            maximum_packet_size: p.maximum_packet_size,
            wildcard_subscription_available: p.wildcard_subscription_available,
            subscription_identifier_available: p.subscription_identifier_available,
            shared_subscription_available: p.shared_subscription_available,
            ..d()
        },
        Ctx::Publish | Ctx::Will => Properties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            subscription_identifiers: if matches!(ctx, Ctx::Publish) {
                p.subscription_identifiers
            } else {
                vec![]
            },
            topic_alias: if matches!(ctx, Ctx::Publish) {
                p.topic_alias
            } else {
                None
            },
            will_delay_interval: if matches!(ctx, Ctx::Will) {
                p.will_delay_interval
            } else {
                None
            },
            user_properties: p.user_properties,
            ..d()
        },
        Ctx::Ack | Ctx::ReasonUser => Properties {
            reason_string: p.reason_string,
            user_properties: p.user_properties,
            ..d()
        },
        Ctx::Subscribe => Properties {
            subscription_identifiers: p.subscription_identifiers.into_iter().take(1).collect(),
            user_properties: p.user_properties,
            ..d()
        },
        Ctx::UserOnly => Properties {
            user_properties: p.user_properties,
            ..d()
        },
        Ctx::Disconnect => Properties {
            session_expiry_interval: p.session_expiry_interval,
            server_reference: p.server_reference,
            reason_string: p.reason_string,
            user_properties: p.user_properties,
            ..d()
        },
        Ctx::Auth => Properties {
            authentication_method: p.authentication_method,
            authentication_data: auth_data,
            reason_string: p.reason_string,
            user_properties: p.user_properties,
            ..d()
        },
    }
}

fn props(ctx: Ctx, v: Version) -> BoxedStrategy<Properties> {
    any_props()
        .prop_map(move |p| {
            if v == Version::V5 {
                keep(p, ctx)
            } else {
                Properties::default()
            }
        })
        .boxed()
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V311), Just(Version::V5)]
}

fn connect() -> impl Strategy<Value = (Packet, Version)> {
    version().prop_flat_map(|v| {
        let will = proptest::option::of(
            (topic(), bin(), qos(), any::<bool>(), props(Ctx::Will, v)).prop_map(
                |(topic, payload, qos, retain, properties)| {
                    Box::new(LastWill {
                        topic,
                        payload,
                        qos,
                        retain,
                        properties,
                    })
                },
            ),
        );
        (
            any::<bool>(),
            any::<u16>(),
            props(Ctx::Connect, v),
            text(),
            will,
            proptest::option::of(text()),
            proptest::option::of(bin()),
        )
            .prop_map(
                move |(
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                )| {
                    // The oracle refuses a password without user name (see top).
                    let username = if password.is_some() {
                        Some(username.unwrap_or_default())
                    } else {
                        username
                    };
                    let c = Connect {
                        version: v,
                        clean_start,
                        keep_alive,
                        properties,
                        client_id,
                        will,
                        username,
                        password,
                    };
                    (Packet::Connect(c), v)
                },
            )
    })
}

fn connack() -> impl Strategy<Value = (Packet, Version)> {
    let v5_codes = prop::sample::select(vec![
        0x00u8, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    ]);
    let v311_codes = prop::sample::select(vec![0x00u8, 0x84, 0x85, 0x88, 0x86, 0x87]);
    version().prop_flat_map(move |v| {
        let codes = if v == Version::V5 {
            v5_codes.clone()
        } else {
            v311_codes.clone()
        };
        (any::<bool>(), codes, props(Ctx::ConnAck, v)).prop_map(move |(sp, code, properties)| {
            let ack = ConnAck {
                session_present: sp && code == 0,
                reason_code: code,
                properties,
            };
            (Packet::ConnAck(ack), v)
        })
    })
}

fn publish() -> impl Strategy<Value = (Packet, Version)> {
    version().prop_flat_map(|v| {
        (
            qos(),
            any::<bool>(),
            any::<bool>(),
            topic(),
            pid(),
            props(Ctx::Publish, v),
            bin(),
        )
            .prop_map(
                move |(qos, dup, retain, topic, packet_id, properties, payload)| {
                    let qos0 = qos == QoS::AtMostOnce;
                    let p = Publish {
                        dup: dup && !qos0,
                        qos,
                        retain,
                        topic,
                        packet_id: if qos0 { 0 } else { packet_id },
                        properties,
                        payload,
                    };
                    (Packet::Publish(p), v)
                },
            )
    })
}

fn acks() -> impl Strategy<Value = (Packet, Version)> {
    let pub_codes =
        prop::sample::select(vec![0x00u8, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]);
    let rel_codes = prop::sample::select(vec![0x00u8, 0x92]);
    (version(), 0u8..4).prop_flat_map(move |(v, kind)| {
        let codes = if kind < 2 {
            pub_codes.clone()
        } else {
            rel_codes.clone()
        };
        (pid(), codes, props(Ctx::Ack, v)).prop_map(move |(packet_id, code, properties)| {
            // 3.1.1 acks are two bytes: no reason code.
            let reason_code = if v == Version::V5 { code } else { 0 };
            let a = Ack {
                packet_id,
                reason_code,
                properties,
            };
            let p = match kind {
                0 => Packet::PubAck(a),
                1 => Packet::PubRec(a),
                2 => Packet::PubRel(a),
                _ => Packet::PubComp(a),
            };
            (p, v)
        })
    })
}

fn sub_options(v: Version) -> impl Strategy<Value = SubscriptionOptions> {
    let rh = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (qos(), any::<bool>(), any::<bool>(), rh).prop_map(move |(qos, nl, rap, rh)| match v {
        Version::V5 => SubscriptionOptions {
            qos,
            no_local: nl,
            retain_as_published: rap,
            retain_handling: rh,
        },
        Version::V311 => SubscriptionOptions {
            qos,
            ..Default::default()
        },
    })
}

fn subscribe() -> impl Strategy<Value = (Packet, Version)> {
    version().prop_flat_map(|v| {
        (
            pid(),
            props(Ctx::Subscribe, v),
            prop::collection::vec((filter(), sub_options(v)), 1..4),
        )
            .prop_map(move |(packet_id, properties, filters)| {
                (
                    Packet::Subscribe(Subscribe {
                        packet_id,
                        properties,
                        filters,
                    }),
                    v,
                )
            })
    })
}

fn suback() -> impl Strategy<Value = (Packet, Version)> {
    version().prop_flat_map(|v| {
        let codes = if v == Version::V5 {
            vec![
                0x00u8, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
            ]
        } else {
            vec![0x00u8, 0x01, 0x02, 0x80]
        };
        (
            pid(),
            props(Ctx::ReasonUser, v),
            prop::collection::vec(prop::sample::select(codes), 1..5),
        )
            .prop_map(move |(packet_id, properties, reason_codes)| {
                (
                    Packet::SubAck(SubAck {
                        packet_id,
                        properties,
                        reason_codes,
                    }),
                    v,
                )
            })
    })
}

fn unsubscribe() -> impl Strategy<Value = (Packet, Version)> {
    version().prop_flat_map(|v| {
        (
            pid(),
            props(Ctx::UserOnly, v),
            prop::collection::vec(filter(), 1..4),
        )
            .prop_map(move |(packet_id, properties, filters)| {
                (
                    Packet::Unsubscribe(Unsubscribe {
                        packet_id,
                        properties,
                        filters,
                    }),
                    v,
                )
            })
    })
}

fn unsuback() -> impl Strategy<Value = (Packet, Version)> {
    let codes = prop::sample::select(vec![0x00u8, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]);
    version().prop_flat_map(move |v| {
        (
            pid(),
            props(Ctx::ReasonUser, v),
            prop::collection::vec(codes.clone(), 1..5),
        )
            .prop_map(move |(packet_id, properties, codes)| {
                let reason_codes = if v == Version::V5 { codes } else { vec![] };
                (
                    Packet::UnsubAck(UnsubAck {
                        packet_id,
                        properties,
                        reason_codes,
                    }),
                    v,
                )
            })
    })
}

fn disconnect() -> impl Strategy<Value = (Packet, Version)> {
    let codes = prop::sample::select(vec![
        0x00u8, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
        0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ]);
    version().prop_flat_map(move |v| {
        (codes.clone(), props(Ctx::Disconnect, v)).prop_map(move |(code, properties)| {
            let reason_code = if v == Version::V5 { code } else { 0 };
            (
                Packet::Disconnect(Disconnect {
                    reason_code,
                    properties,
                }),
                v,
            )
        })
    })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        prop::sample::select(vec![0x00u8, 0x18, 0x19]),
        props(Ctx::Auth, Version::V5),
        text(),
        any::<bool>(),
    )
        .prop_map(|(reason_code, mut properties, method, empty)| {
            if reason_code == 0 && empty {
                // The abbreviated form: remaining length 0.
                return Packet::Auth(Auth::default());
            }
            // Any non-empty AUTH carries its Authentication Method (3.15.2.2.2).
            properties.authentication_method.get_or_insert(method);
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        })
}

// ---------------------------------------------------------------- tests

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn oracle_connect((p, v) in connect()) { check(&p, v)?; }

    #[test]
    fn oracle_connack((p, v) in connack()) { check(&p, v)?; }

    #[test]
    fn oracle_publish((p, v) in publish()) { check(&p, v)?; }

    #[test]
    fn oracle_puback_family((p, v) in acks()) { check(&p, v)?; }

    #[test]
    fn oracle_subscribe((p, v) in subscribe()) { check(&p, v)?; }

    #[test]
    fn oracle_suback((p, v) in suback()) { check(&p, v)?; }

    #[test]
    fn oracle_unsubscribe((p, v) in unsubscribe()) { check(&p, v)?; }

    #[test]
    fn oracle_unsuback((p, v) in unsuback()) { check(&p, v)?; }

    #[test]
    fn oracle_disconnect((p, v) in disconnect()) { check(&p, v)?; }

    #[test]
    fn oracle_auth(p in auth()) { check(&p, Version::V5)?; }
}

#[test]
fn oracle_ping() {
    for v in [Version::V311, Version::V5] {
        check(&Packet::PingReq, v).unwrap();
        check(&Packet::PingResp, v).unwrap();
    }
}

//! PUBLISH (spec 3.3), including the fan-out encoder.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::properties::{Properties, PropertyContext as C};
use super::wire::{field_len, frame_len, put_field, put_fixed_header, varint_len, Reader};
use super::{pt, Plan, QoS, Version};

/// PUBLISH. The payload is a zero-copy slice of the received frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in v5 when a Topic Alias is present (3.3.2.3.4).
    pub topic: String,
    /// Meaningful only for QoS 1 and 2 (non-zero there); 0 for QoS 0.
    pub packet_id: u16,
    pub properties: Properties,
    pub payload: Bytes,
}

/// What changes per recipient when a broker forwards one message to many
/// subscribers: [`encode_publish`] writes the shared `Publish` with these
/// values instead of its own, so nothing is cloned per subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    pub qos: QoS,
    /// Ignored for QoS 0.
    pub packet_id: u16,
    pub retain: bool,
    pub dup: bool,
    /// Replaces `publish.properties.subscription_identifiers` when `Some`
    /// (the matching subscriptions' identifiers, 3.3.4).
    pub subscription_identifiers: Option<&'a [u32]>,
    /// Replaces the Message Expiry Interval's value when the publish has one:
    /// the time it has left after waiting in the server (3.3.2.3.3).
    pub message_expiry: Option<u32>,
    /// A Topic Alias towards this client (3.3.2.3.4), and whether the topic
    /// goes too (the alias is new or reassigned) or is left empty. Only for
    /// a publish that carries no alias of its own.
    pub topic_alias: Option<(u16, bool)>,
}

impl<'a> Delivery<'a> {
    /// The publish's own header fields, unchanged.
    pub fn of(p: &Publish) -> Delivery<'a> {
        Delivery {
            qos: p.qos,
            packet_id: p.packet_id,
            retain: p.retain,
            dup: p.dup,
            subscription_identifiers: None,
            message_expiry: None,
            topic_alias: None,
        }
    }

    /// The alias to write, if any (never over the publish's own).
    fn alias(&self, p: &Publish, v: Version) -> Option<(u16, bool)> {
        self.topic_alias
            .filter(|_| v == Version::V5 && p.properties.topic_alias.is_none())
    }
}

impl Publish {
    pub(super) fn decode(r: &mut Reader, flags: u8, v: Version) -> Result<Publish, DecodeError> {
        // Flags were validated by check_first_byte (QoS 3, DUP at QoS 0).
        let qos = QoS::from_u8((flags >> 1) & 3)
            .ok_or(DecodeError::Malformed("PUBLISH with QoS 3 (3.3.1.2)"))?;
        let topic = r.string()?;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            let id = r.u16()?;
            // 2.2.1 [MQTT-2.2.1-3]: QoS > 0 needs a non-zero packet id.
            if id == 0 {
                return Err(DecodeError::Protocol("PUBLISH packet identifier 0 (2.2.1)"));
            }
            id
        };
        let properties = match v {
            Version::V5 => Properties::decode(r, C::Publish)?,
            Version::V311 => Properties::default(),
        };
        // 3.3.2.1 [MQTT-3.3.2-2]: no wildcards in a topic name.
        if topic.bytes().any(|b| b == b'+' || b == b'#') {
            return Err(DecodeError::TopicNameInvalid(
                "wildcard in PUBLISH topic name (3.3.2.1)",
            ));
        }
        if topic.is_empty() {
            match v {
                // 3.3.2.3.4: empty topic without Topic Alias is a Protocol Error.
                Version::V5 if properties.topic_alias.is_none() => {
                    return Err(DecodeError::Protocol(
                        "empty topic name without Topic Alias (3.3.2.3.4)",
                    ))
                }
                Version::V5 => {}
                // 3.1.1 spec 4.7.3 [MQTT-4.7.3-1]: at least one character.
                Version::V311 => {
                    return Err(DecodeError::TopicNameInvalid("empty topic name (4.7.3)"))
                }
            }
        }
        Ok(Publish {
            dup: flags & 0x08 != 0,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            properties,
            // 3.3.3: the rest of the frame is the payload (may be empty).
            payload: r.rest(),
        })
    }

    pub(super) fn plan(&self, d: &Delivery<'_>, v: Version) -> Result<Plan, EncodeError> {
        let mut plan = Plan::default();
        let alias = d.alias(self, v);
        let topic_len = match alias {
            Some((_, false)) => 0,
            _ => self.topic.len(),
        };
        let mut n = field_len(topic_len)?;
        if d.qos != QoS::AtMostOnce {
            if d.packet_id == 0 {
                return Err(EncodeError::ZeroPacketId);
            }
            n += 2;
        } else if d.dup {
            return Err(EncodeError::Invalid("DUP must be 0 for QoS 0 (3.3.1.1)"));
        }
        if v == Version::V5 {
            let ids = d
                .subscription_identifiers
                .unwrap_or(&self.properties.subscription_identifiers);
            plan.props = self.properties.content_len_with(C::Publish, ids)?
                + if alias.is_some() { 3 } else { 0 };
            n += varint_len(plan.props) + plan.props;
        }
        plan.remaining = n + self.payload.len();
        Ok(plan)
    }

    pub(super) fn write(&self, d: &Delivery<'_>, v: Version, plan: &Plan, out: &mut BytesMut) {
        let first =
            pt::PUBLISH << 4 | u8::from(d.dup) << 3 | (d.qos as u8) << 1 | u8::from(d.retain);
        put_fixed_header(out, first, plan.remaining);
        let alias = d.alias(self, v);
        match alias {
            Some((_, false)) => put_field(out, b""),
            _ => put_field(out, self.topic.as_bytes()),
        }
        if d.qos != QoS::AtMostOnce {
            out.put_u16(d.packet_id);
        }
        if v == Version::V5 {
            let ids = d
                .subscription_identifiers
                .unwrap_or(&self.properties.subscription_identifiers);
            self.properties.write_with(
                plan.props,
                ids,
                d.message_expiry,
                alias.map(|(a, _)| a),
                out,
            );
        }
        out.put_slice(&self.payload);
    }
}

/// Append `publish` as delivered to one subscriber (see [`Delivery`]).
/// This is the broker's hot path: one size computation, one `reserve`, then
/// the header, topic, properties and payload are copied straight in. For
/// 3.1.1 recipients the properties are simply left out.
pub fn encode_publish(
    publish: &Publish,
    delivery: &Delivery<'_>,
    version: Version,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let plan = publish.plan(delivery, version)?;
    frame_len(plan.remaining)?;
    publish.write(delivery, version, &plan, out);
    Ok(())
}

/// Bytes [`encode_publish`] would append: compare with the subscriber's
/// Maximum Packet Size (3.1.2.11.4, the server must not send larger).
pub fn publish_encoded_len(
    publish: &Publish,
    delivery: &Delivery<'_>,
    version: Version,
) -> Result<usize, EncodeError> {
    frame_len(publish.plan(delivery, version)?.remaining)
}

#[cfg(test)]
mod tests {
    use super::super::{decode, encode, encoded_len, Packet};
    use super::*;

    fn dec(bytes: &[u8], v: Version) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), Some(v), usize::MAX)
    }

    #[test]
    fn qos0_publish_v311_bytes() {
        let p = Publish {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hi"),
            ..Default::default()
        };
        let mut out = BytesMut::new();
        encode(&Packet::Publish(p.clone()), Version::V311, &mut out).unwrap();
        assert_eq!(&out[..], &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i']);
        assert_eq!(dec(&out, Version::V311).unwrap(), Some(Packet::Publish(p)));
    }

    #[test]
    fn payload_is_zero_copy() {
        let p = Publish {
            qos: QoS::AtLeastOnce,
            packet_id: 9,
            topic: "t".into(),
            payload: Bytes::from(vec![7u8; 1000]),
            ..Default::default()
        };
        let mut buf = BytesMut::new();
        encode(&Packet::Publish(p), Version::V5, &mut buf).unwrap();
        let range = buf.as_ptr_range();
        let Some(Packet::Publish(got)) = decode(&mut buf, Some(Version::V5), usize::MAX).unwrap()
        else {
            panic!("not a publish")
        };
        // The payload points into the original receive buffer.
        assert!(range.contains(&got.payload.as_ptr()));
        assert_eq!(got.payload.len(), 1000);
    }

    #[test]
    fn packet_id_zero_and_qos3() {
        // QoS 1, topic "t", packet id 0.
        assert_eq!(
            dec(&[0x32, 6, 0, 1, b't', 0, 0, 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        // QoS 3.
        assert_eq!(
            dec(&[0x36, 6, 0, 1, b't', 0, 1, 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        // DUP with QoS 0.
        assert_eq!(
            dec(&[0x38, 4, 0, 1, b't', 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        let p = Publish {
            qos: QoS::AtLeastOnce,
            topic: "t".into(),
            ..Default::default()
        };
        assert_eq!(
            encode(&Packet::Publish(p), Version::V5, &mut BytesMut::new()),
            Err(EncodeError::ZeroPacketId)
        );
    }

    #[test]
    fn topic_rules() {
        assert_eq!(
            dec(&[0x30, 4, 0, 1, b'#', 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x90
        );
        assert_eq!(
            dec(&[0x30, 3, 0, 0, 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        // Empty topic with a Topic Alias is fine.
        assert!(dec(&[0x30, 6, 0, 0, 3, 0x23, 0, 1], Version::V5)
            .unwrap()
            .is_some());
        // Topic Alias 0 decodes; the session answers it with 0x94.
        assert!(dec(&[0x30, 6, 0, 0, 3, 0x23, 0, 0], Version::V5)
            .unwrap()
            .is_some());
        assert!(dec(&[0x30, 2, 0, 0], Version::V311).is_err());
    }

    #[test]
    fn fan_out_overrides_per_subscriber() {
        let p = Publish {
            qos: QoS::ExactlyOnce,
            packet_id: 1,
            retain: true,
            topic: "s/1".into(),
            properties: Properties {
                message_expiry_interval: Some(9),
                ..Default::default()
            },
            payload: Bytes::from_static(b"x"),
            ..Default::default()
        };
        let ids = [4u32, 200];
        let d = Delivery {
            qos: QoS::AtLeastOnce,
            packet_id: 77,
            retain: false,
            dup: false,
            subscription_identifiers: Some(&ids),
            message_expiry: Some(3),
            topic_alias: None,
        };
        let mut out = BytesMut::from(&b"queued"[..]);
        encode_publish(&p, &d, Version::V5, &mut out).unwrap();
        assert_eq!(
            out.len() - 6,
            publish_encoded_len(&p, &d, Version::V5).unwrap()
        );
        let mut frame = out.split_off(6);
        let Some(Packet::Publish(got)) = decode(&mut frame, Some(Version::V5), usize::MAX).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (got.qos, got.packet_id, got.retain),
            (QoS::AtLeastOnce, 77, false)
        );
        assert_eq!(got.properties.subscription_identifiers, vec![4, 200]);
        // The time left replaces the received interval.
        assert_eq!(got.properties.message_expiry_interval, Some(3));
        // v3.1.1 recipient: properties dropped.
        let len = publish_encoded_len(&p, &d, Version::V311).unwrap();
        assert_eq!(
            len,
            encoded_len(
                &Packet::Publish(Publish {
                    properties: Properties::default(),
                    ..p
                }),
                Version::V311
            )
            .unwrap()
        );
    }

    /// A server topic alias: the first send names the topic, a later one
    /// only the alias; sizes agree with what is written; 3.1.1 gets none.
    #[test]
    fn server_topic_alias_on_the_wire() {
        let p = Publish {
            qos: QoS::AtMostOnce,
            topic: "sensors/t1".into(),
            payload: Bytes::from_static(b"21.5"),
            ..Default::default()
        };
        for (with_topic, want_topic) in [(true, "sensors/t1"), (false, "")] {
            let d = Delivery {
                topic_alias: Some((3, with_topic)),
                ..Delivery::of(&p)
            };
            let mut out = BytesMut::new();
            encode_publish(&p, &d, Version::V5, &mut out).unwrap();
            assert_eq!(out.len(), publish_encoded_len(&p, &d, Version::V5).unwrap());
            let Some(Packet::Publish(got)) =
                decode(&mut out, Some(Version::V5), usize::MAX).unwrap()
            else {
                panic!()
            };
            assert_eq!(got.topic, want_topic);
            assert_eq!(got.properties.topic_alias, Some(3));
            assert_eq!(got.payload, p.payload);
            let mut old = BytesMut::new();
            encode_publish(&p, &d, Version::V311, &mut old).unwrap();
            let Some(Packet::Publish(got)) =
                decode(&mut old, Some(Version::V311), usize::MAX).unwrap()
            else {
                panic!()
            };
            assert_eq!(got.topic, "sensors/t1", "3.1.1: no aliases");
        }
    }
}

//! SUBSCRIBE / SUBACK (spec 3.8, 3.9) and UNSUBSCRIBE / UNSUBACK (3.10, 3.11).
//!
//! Topic filter syntax is deliberately not checked here: an invalid filter
//! is answered per filter in SUBACK / UNSUBACK (0x8F), not by closing the
//! connection, so the caller validates with `topics::valid_topic_filter`.

use bytes::{BufMut, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::properties::{Properties, PropertyContext as C};
use super::wire::{field_len, put_field, put_fixed_header, varint_len, Reader};
use super::{pt, Plan, QoS, Version};

/// Retain Handling subscription option (3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at subscribe time.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist.
    SendIfNew = 1,
    /// 2: never send them at subscribe time.
    DoNotSend = 2,
}

/// Subscription Options byte (3.8.3.1). In 3.1.1 only `qos` exists; the
/// other fields decode as their defaults and are not encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    fn to_byte(self, v: Version) -> u8 {
        match v {
            Version::V311 => self.qos as u8,
            Version::V5 => {
                self.qos as u8
                    | u8::from(self.no_local) << 2
                    | u8::from(self.retain_as_published) << 3
                    | (self.retain_handling as u8) << 4
            }
        }
    }

    fn from_byte(b: u8, v: Version, filter: &str) -> Result<SubscriptionOptions, DecodeError> {
        let qos = b & 0x03;
        match v {
            Version::V311 => {
                // 3.1.1 spec 3.8.3.1 [MQTT-3-8.3-4]: upper six bits reserved,
                // QoS 3 malformed.
                if b & 0xFC != 0 || qos == 3 {
                    return Err(DecodeError::Malformed(
                        "invalid 3.1.1 requested QoS byte (3.8.3.1)",
                    ));
                }
            }
            Version::V5 => {
                // 3.8.3.1 [MQTT-3.8.3-5]: reserved bits 6 and 7 must be 0.
                if b & 0xC0 != 0 {
                    return Err(DecodeError::Malformed(
                        "reserved subscription option bits set (3.8.3.1)",
                    ));
                }
                // 3.8.3.1: Maximum QoS 3 is a Protocol Error.
                if qos == 3 {
                    return Err(DecodeError::Protocol("subscription QoS 3 (3.8.3.1)"));
                }
                // 3.8.3.1: Retain Handling 3 is a Protocol Error.
                if (b >> 4) & 0x03 == 3 {
                    return Err(DecodeError::Protocol("Retain Handling 3 (3.8.3.1)"));
                }
            }
        }
        let no_local = b & 0x04 != 0;
        // 3.8.3.1 [MQTT-3.8.3-4]: No Local on a Shared Subscription is a
        // Protocol Error.
        if no_local && filter.starts_with("$share/") {
            return Err(DecodeError::Protocol(
                "No Local on a shared subscription (3.8.3.1)",
            ));
        }
        Ok(SubscriptionOptions {
            qos: QoS::from_u8(qos).unwrap_or_default(),
            no_local,
            retain_as_published: b & 0x08 != 0,
            retain_handling: match (b >> 4) & 0x03 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                _ => RetainHandling::DoNotSend,
            },
        })
    }
}

/// SUBSCRIBE: at least one (filter, options) pair.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    pub packet_id: u16,
    /// At most one Subscription Identifier, plus User Properties.
    pub properties: Properties,
    pub filters: Vec<(String, SubscriptionOptions)>,
}

/// SUBACK: one reason code per filter (v5 codes; 3.1.1 return codes are a
/// subset, other failures are sent as 0x80).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubAck {
    pub packet_id: u16,
    pub properties: Properties,
    pub reason_codes: Vec<u8>,
}

/// UNSUBSCRIBE: at least one filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub properties: Properties,
    pub filters: Vec<String>,
}

/// UNSUBACK. 3.1.1 has no payload: `reason_codes` decodes empty and is not
/// encoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub properties: Properties,
    pub reason_codes: Vec<u8>,
}

/// Common start: non-zero packet id (2.2.1 [MQTT-2.2.1-3]) then, in v5,
/// the property block.
fn head(r: &mut Reader, v: Version, ctx: C) -> Result<(u16, Properties), DecodeError> {
    let id = r.u16()?;
    if id == 0 {
        return Err(DecodeError::Protocol("packet identifier 0 (2.2.1)"));
    }
    let props = match v {
        Version::V5 => Properties::decode(r, ctx)?,
        Version::V311 => Properties::default(),
    };
    Ok((id, props))
}

fn head_plan(id: u16, props: &Properties, v: Version, ctx: C) -> Result<Plan, EncodeError> {
    if id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    let mut plan = Plan {
        remaining: 2,
        ..Plan::default()
    };
    if v == Version::V5 {
        plan.props = props.content_len(ctx)?;
        plan.remaining += varint_len(plan.props) + plan.props;
    }
    Ok(plan)
}

fn head_write(first: u8, id: u16, props: &Properties, v: Version, plan: &Plan, out: &mut BytesMut) {
    put_fixed_header(out, first, plan.remaining);
    out.put_u16(id);
    if v == Version::V5 {
        props.write(plan.props, out);
    }
}

impl Subscribe {
    pub(super) fn decode(r: &mut Reader, v: Version) -> Result<Subscribe, DecodeError> {
        let (packet_id, properties) = head(r, v, C::Subscribe)?;
        // 3.8.3 [MQTT-3.8.3-2]: at least one filter; none is a Protocol Error.
        if r.is_empty() {
            return Err(DecodeError::Protocol(
                "SUBSCRIBE without topic filters (3.8.3)",
            ));
        }
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            let options = SubscriptionOptions::from_byte(r.u8()?, v, &filter)?;
            filters.push((filter, options));
        }
        Ok(Subscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(super) fn plan(&self, v: Version) -> Result<Plan, EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::Invalid("SUBSCRIBE needs at least one filter"));
        }
        if self.properties.subscription_identifiers.len() > 1 {
            return Err(EncodeError::Invalid(
                "SUBSCRIBE carries at most one Subscription Identifier",
            ));
        }
        let mut plan = head_plan(self.packet_id, &self.properties, v, C::Subscribe)?;
        for (f, _) in &self.filters {
            plan.remaining += field_len(f.len())? + 1;
        }
        Ok(plan)
    }

    pub(super) fn write(&self, v: Version, plan: &Plan, out: &mut BytesMut) {
        head_write(
            pt::SUBSCRIBE << 4 | 0b0010,
            self.packet_id,
            &self.properties,
            v,
            plan,
            out,
        );
        for (f, o) in &self.filters {
            put_field(out, f.as_bytes());
            out.put_u8(o.to_byte(v));
        }
    }
}

/// 3.9.3: Subscribe Reason Codes; 3.1.1: 0, 1, 2 and 0x80.
fn valid_suback_code(c: u8, v: Version) -> bool {
    match v {
        Version::V311 => matches!(c, 0x00..=0x02 | 0x80),
        Version::V5 => matches!(
            c,
            0x00..=0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
        ),
    }
}

impl SubAck {
    pub(super) fn decode(r: &mut Reader, v: Version) -> Result<SubAck, DecodeError> {
        let (packet_id, properties) = head(r, v, C::SubAck)?;
        // 3.9.3: one reason code per filter of the SUBSCRIBE, so at least one.
        if r.is_empty() {
            return Err(DecodeError::Protocol("SUBACK without reason codes (3.9.3)"));
        }
        let reason_codes = r.rest().to_vec();
        if !reason_codes.iter().all(|&c| valid_suback_code(c, v)) {
            return Err(DecodeError::Protocol("invalid SUBACK reason code (3.9.3)"));
        }
        Ok(SubAck {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(super) fn plan(&self, v: Version) -> Result<Plan, EncodeError> {
        if self.reason_codes.is_empty() {
            return Err(EncodeError::Invalid(
                "SUBACK needs at least one reason code",
            ));
        }
        let mut plan = head_plan(self.packet_id, &self.properties, v, C::SubAck)?;
        plan.remaining += self.reason_codes.len();
        Ok(plan)
    }

    pub(super) fn write(&self, v: Version, plan: &Plan, out: &mut BytesMut) {
        head_write(
            pt::SUBACK << 4,
            self.packet_id,
            &self.properties,
            v,
            plan,
            out,
        );
        match v {
            Version::V5 => out.put_slice(&self.reason_codes),
            // 3.1.1 knows granted QoS 0-2 and failure 0x80 only.
            Version::V311 => {
                for &c in &self.reason_codes {
                    out.put_u8(if c <= 2 { c } else { 0x80 });
                }
            }
        }
    }
}

impl Unsubscribe {
    pub(super) fn decode(r: &mut Reader, v: Version) -> Result<Unsubscribe, DecodeError> {
        let (packet_id, properties) = head(r, v, C::Unsubscribe)?;
        // 3.10.3 [MQTT-3.10.3-2]: at least one filter.
        if r.is_empty() {
            return Err(DecodeError::Protocol(
                "UNSUBSCRIBE without topic filters (3.10.3)",
            ));
        }
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(r.string()?);
        }
        Ok(Unsubscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(super) fn plan(&self, v: Version) -> Result<Plan, EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::Invalid(
                "UNSUBSCRIBE needs at least one filter",
            ));
        }
        let mut plan = head_plan(self.packet_id, &self.properties, v, C::Unsubscribe)?;
        for f in &self.filters {
            plan.remaining += field_len(f.len())?;
        }
        Ok(plan)
    }

    pub(super) fn write(&self, v: Version, plan: &Plan, out: &mut BytesMut) {
        head_write(
            pt::UNSUBSCRIBE << 4 | 0b0010,
            self.packet_id,
            &self.properties,
            v,
            plan,
            out,
        );
        for f in &self.filters {
            put_field(out, f.as_bytes());
        }
    }
}

impl UnsubAck {
    pub(super) fn decode(r: &mut Reader, v: Version) -> Result<UnsubAck, DecodeError> {
        let (packet_id, properties) = head(r, v, C::UnsubAck)?;
        let reason_codes = match v {
            // 3.1.1 spec 3.11: remaining length 2, no payload.
            Version::V311 => {
                r.finish()?;
                Vec::new()
            }
            Version::V5 => {
                // 3.11.3: one reason code per filter, so at least one.
                if r.is_empty() {
                    return Err(DecodeError::Protocol(
                        "UNSUBACK without reason codes (3.11.3)",
                    ));
                }
                let codes = r.rest().to_vec();
                if !codes
                    .iter()
                    .all(|c| matches!(c, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91))
                {
                    return Err(DecodeError::Protocol(
                        "invalid UNSUBACK reason code (3.11.3)",
                    ));
                }
                codes
            }
        };
        Ok(UnsubAck {
            packet_id,
            properties,
            reason_codes,
        })
    }

    pub(super) fn plan(&self, v: Version) -> Result<Plan, EncodeError> {
        let mut plan = head_plan(self.packet_id, &self.properties, v, C::UnsubAck)?;
        if v == Version::V5 {
            if self.reason_codes.is_empty() {
                return Err(EncodeError::Invalid(
                    "v5 UNSUBACK needs at least one reason code",
                ));
            }
            plan.remaining += self.reason_codes.len();
        }
        Ok(plan)
    }

    pub(super) fn write(&self, v: Version, plan: &Plan, out: &mut BytesMut) {
        head_write(
            pt::UNSUBACK << 4,
            self.packet_id,
            &self.properties,
            v,
            plan,
            out,
        );
        if v == Version::V5 {
            out.put_slice(&self.reason_codes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode, encode, Packet};
    use super::*;

    fn dec(bytes: &[u8], v: Version) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), Some(v), usize::MAX)
    }

    fn sub(options: u8, filter: &[u8]) -> Vec<u8> {
        let mut b = vec![0x82, 0, 0, 1, 0, 0, filter.len() as u8];
        b.extend_from_slice(filter);
        b.push(options);
        b[1] = (b.len() - 2) as u8;
        b
    }

    #[test]
    fn subscription_option_rules() {
        assert!(dec(&sub(0x2E, b"a/#"), Version::V5).unwrap().is_some());
        assert_eq!(
            dec(&sub(0x40, b"a"), Version::V5)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        assert_eq!(
            dec(&sub(0x03, b"a"), Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        assert_eq!(
            dec(&sub(0x30, b"a"), Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        assert_eq!(
            dec(&sub(0x04, b"$share/g/a"), Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        assert!(dec(&sub(0x00, b"$share/g/a"), Version::V5)
            .unwrap()
            .is_some());
    }

    #[test]
    fn v311_subscribe_options_reserved_bits() {
        // 3.1.1 has no property block: strip the property length byte.
        let mut b = sub(0x04, b"a");
        b.remove(4);
        b[1] -= 1;
        assert_eq!(dec(&b, Version::V311).unwrap_err().reason_code(), 0x81);
        let last = b.len() - 1;
        b[last] = 1;
        let got = dec(&b, Version::V311).unwrap().unwrap();
        let Packet::Subscribe(s) = got else { panic!() };
        assert_eq!(s.filters[0].1.qos, QoS::AtLeastOnce);
    }

    #[test]
    fn subscribe_needs_filters_and_flags() {
        assert_eq!(
            dec(&[0x82, 3, 0, 1, 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        assert_eq!(
            dec(&[0x80, 3, 0, 1, 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        assert_eq!(
            dec(&[0xA2, 3, 0, 1, 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        assert_eq!(
            dec(&[0xA0, 3, 0, 1, 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        assert_eq!(
            dec(&[0x82, 6, 0, 1, 0, 0, 1, b'a'], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        // Packet id 0.
        assert_eq!(
            dec(&[0x82, 7, 0, 0, 0, 0, 1, b'a', 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
    }

    #[test]
    fn acks_across_versions() {
        let sa = SubAck {
            packet_id: 3,
            properties: Properties::default(),
            reason_codes: vec![0, 2, 0x97],
        };
        let mut out = BytesMut::new();
        encode(&Packet::SubAck(sa), Version::V311, &mut out).unwrap();
        assert_eq!(&out[..], &[0x90, 5, 0, 3, 0, 2, 0x80]);
        out.clear();
        let ua = UnsubAck {
            packet_id: 3,
            properties: Properties::default(),
            reason_codes: vec![0x11],
        };
        encode(&Packet::UnsubAck(ua.clone()), Version::V311, &mut out).unwrap();
        assert_eq!(&out[..], &[0xB0, 2, 0, 3]);
        out.clear();
        encode(&Packet::UnsubAck(ua.clone()), Version::V5, &mut out).unwrap();
        assert_eq!(&out[..], &[0xB0, 4, 0, 3, 0, 0x11]);
        assert_eq!(
            decode(&mut out, Some(Version::V5), 99).unwrap(),
            Some(Packet::UnsubAck(ua))
        );
        assert_eq!(
            dec(&[0x90, 4, 0, 3, 0, 0x05], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
    }
}

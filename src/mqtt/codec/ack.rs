//! PUBACK, PUBREC, PUBREL, PUBCOMP (spec 3.4-3.7): same layout, different
//! packet type, fixed header flags and allowed reason codes.

use bytes::{BufMut, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::properties::{Properties, PropertyContext};
use super::wire::{put_fixed_header, varint_len, Reader};
use super::{Plan, Version};

/// Body of PUBACK / PUBREC / PUBREL / PUBCOMP. For 3.1.1, `reason_code` is
/// 0 and `properties` empty on decode, and both are dropped on encode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    pub packet_id: u16,
    pub reason_code: u8,
    pub properties: Properties,
}

/// Allowed reason codes: 3.4.2.1 (PUBACK), 3.5.2.1 (PUBREC), 3.6.2.1
/// (PUBREL), 3.7.2.1 (PUBCOMP).
fn valid_code(ctx: PropertyContext, c: u8) -> bool {
    match ctx {
        PropertyContext::PubAck | PropertyContext::PubRec => {
            matches!(
                c,
                0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
            )
        }
        _ => matches!(c, 0x00 | 0x92),
    }
}

impl Ack {
    pub(super) fn decode(
        r: &mut Reader,
        v: Version,
        ctx: PropertyContext,
    ) -> Result<Ack, DecodeError> {
        let packet_id = r.u16()?;
        // 2.2.1 [MQTT-2.2.1-3..6]: packet identifiers are non-zero.
        if packet_id == 0 {
            return Err(DecodeError::Protocol("packet identifier 0 (2.2.1)"));
        }
        let mut ack = Ack {
            packet_id,
            ..Ack::default()
        };
        // 3.1.1: remaining length is exactly 2. v5 (3.4.2.1): reason code
        // omitted means Success; (3.4.2.2) property length omitted when the
        // remaining length is less than 4 means no properties.
        if v == Version::V5 && !r.is_empty() {
            ack.reason_code = r.u8()?;
            if !valid_code(ctx, ack.reason_code) {
                return Err(DecodeError::Protocol(
                    "invalid reason code for this acknowledgement (3.4.2.1)",
                ));
            }
            if !r.is_empty() {
                ack.properties = Properties::decode(r, ctx)?;
            }
        }
        r.finish()?;
        Ok(ack)
    }

    pub(super) fn plan(&self, v: Version, ctx: PropertyContext) -> Result<Plan, EncodeError> {
        if self.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId);
        }
        let mut plan = Plan {
            remaining: 2,
            ..Plan::default()
        };
        if v == Version::V5 {
            plan.props = self.properties.content_len(ctx)?;
            // Use the short forms whenever they carry the same information.
            if plan.props > 0 {
                plan.remaining = 3 + varint_len(plan.props) + plan.props;
            } else if self.reason_code != 0 {
                plan.remaining = 3;
            }
        }
        Ok(plan)
    }

    pub(super) fn write(&self, first: u8, _v: Version, plan: &Plan, out: &mut BytesMut) {
        put_fixed_header(out, first, plan.remaining);
        out.put_u16(self.packet_id);
        if plan.remaining > 2 {
            out.put_u8(self.reason_code);
        }
        if plan.remaining > 3 {
            self.properties.write(plan.props, out);
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

    #[test]
    fn short_forms() {
        let ok = Ack {
            packet_id: 5,
            ..Ack::default()
        };
        let mut out = BytesMut::new();
        encode(&Packet::PubAck(ok.clone()), Version::V5, &mut out).unwrap();
        assert_eq!(&out[..], &[0x40, 2, 0, 5]);
        let nms = Ack {
            packet_id: 5,
            reason_code: 0x10,
            ..Ack::default()
        };
        out.clear();
        encode(&Packet::PubRec(nms.clone()), Version::V5, &mut out).unwrap();
        assert_eq!(&out[..], &[0x50, 3, 0, 5, 0x10]);
        // 3.1.1 drops the reason code.
        out.clear();
        encode(&Packet::PubRel(nms), Version::V311, &mut out).unwrap();
        assert_eq!(&out[..], &[0x62, 2, 0, 5]);
        // Explicit reason code plus empty property block decodes too.
        assert_eq!(
            dec(&[0x70, 4, 0, 5, 0, 0], Version::V5).unwrap(),
            Some(Packet::PubComp(ok))
        );
    }

    #[test]
    fn ack_rules() {
        // Packet id 0.
        assert_eq!(
            dec(&[0x40, 2, 0, 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        // PUBREL flags must be 0010; PUBACK flags 0000.
        assert_eq!(
            dec(&[0x60, 2, 0, 1], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        assert_eq!(
            dec(&[0x42, 2, 0, 1], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        // 3.1.1 ack with extra bytes.
        assert_eq!(
            dec(&[0x40, 3, 0, 1, 0], Version::V311)
                .unwrap_err()
                .reason_code(),
            0x81
        );
        // PUBCOMP cannot carry 0x10.
        assert_eq!(
            dec(&[0x70, 3, 0, 1, 0x10], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        // Reason String is allowed, Topic Alias is not.
        assert!(
            dec(&[0x40, 8, 0, 1, 0x80, 4, 0x1F, 0, 1, b'x'], Version::V5)
                .unwrap()
                .is_some()
        );
        assert_eq!(
            dec(&[0x40, 7, 0, 1, 0x80, 3, 0x23, 0, 1], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x81
        );
    }
}

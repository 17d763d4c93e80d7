//! DISCONNECT (spec 3.14) and AUTH (spec 3.15).

use bytes::{BufMut, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::properties::{Properties, PropertyContext as C};
use super::wire::{put_fixed_header, varint_len, Reader};
use super::{pt, Plan, Version};

/// DISCONNECT. 3.1.1 has no body: decodes as 0x00 with no properties and
/// encodes as `E0 00` whatever the fields say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    pub reason_code: u8,
    pub properties: Properties,
}

/// AUTH (MQTT 5 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// 0x00 Success, 0x18 Continue authentication, 0x19 Re-authenticate.
    pub reason_code: u8,
    /// Must carry the Authentication Method unless the packet is the empty
    /// Success form.
    pub properties: Properties,
}

/// Disconnect Reason Codes (3.14.2.1).
fn valid_disconnect_code(c: u8) -> bool {
    matches!(
        c,
        0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D..=0x90 | 0x93..=0xA2
    )
}

/// Reason code followed by an optional property block, both optional at
/// the end of the packet (3.14.2.1, 3.14.2.2.1, 3.15.2.1).
fn tail(r: &mut Reader, ctx: C) -> Result<(u8, Properties), DecodeError> {
    if r.is_empty() {
        return Ok((0, Properties::default()));
    }
    let code = r.u8()?;
    let props = if r.is_empty() {
        Properties::default()
    } else {
        Properties::decode(r, ctx)?
    };
    r.finish()?;
    Ok((code, props))
}

/// Shortest form carrying `code` and the properties (0, 1 or full).
fn tail_plan(code: u8, props: &Properties, ctx: C) -> Result<Plan, EncodeError> {
    let p = props.content_len(ctx)?;
    let remaining = match (code, p) {
        (0, 0) => 0,
        (_, 0) => 1,
        _ => 1 + varint_len(p) + p,
    };
    Ok(Plan {
        remaining,
        props: p,
        will_props: 0,
    })
}

fn tail_write(first: u8, code: u8, props: &Properties, plan: &Plan, out: &mut BytesMut) {
    put_fixed_header(out, first, plan.remaining);
    if plan.remaining > 0 {
        out.put_u8(code);
    }
    if plan.remaining > 1 {
        props.write(plan.props, out);
    }
}

impl Disconnect {
    pub(super) fn decode(r: &mut Reader, v: Version) -> Result<Disconnect, DecodeError> {
        match v {
            // 3.1.1 spec 3.14: no variable header or payload.
            Version::V311 => {
                r.finish()?;
                Ok(Disconnect::default())
            }
            Version::V5 => {
                // 3.14.2.1: remaining length 0 means 0x00 Normal disconnection.
                let (reason_code, properties) = tail(r, C::Disconnect)?;
                if !valid_disconnect_code(reason_code) {
                    return Err(DecodeError::Protocol(
                        "invalid DISCONNECT reason code (3.14.2.1)",
                    ));
                }
                Ok(Disconnect {
                    reason_code,
                    properties,
                })
            }
        }
    }

    pub(super) fn plan(&self, v: Version) -> Result<Plan, EncodeError> {
        match v {
            Version::V311 => Ok(Plan::default()),
            Version::V5 => tail_plan(self.reason_code, &self.properties, C::Disconnect),
        }
    }

    pub(super) fn write(&self, _v: Version, plan: &Plan, out: &mut BytesMut) {
        tail_write(
            pt::DISCONNECT << 4,
            self.reason_code,
            &self.properties,
            plan,
            out,
        );
    }
}

impl Auth {
    pub(super) fn decode(r: &mut Reader) -> Result<Auth, DecodeError> {
        // 3.15.2.1: remaining length 0 means Success without properties.
        let empty = r.is_empty();
        let (reason_code, properties) = tail(r, C::Auth)?;
        // 3.15.2.1: only 0x00, 0x18, 0x19.
        if !matches!(reason_code, 0x00 | 0x18 | 0x19) {
            return Err(DecodeError::Protocol("invalid AUTH reason code (3.15.2.1)"));
        }
        // 3.15.2.2.2: omitting the Authentication Method is a Protocol Error
        // (only the empty Success form has no properties at all).
        if !empty && properties.authentication_method.is_none() {
            return Err(DecodeError::Protocol(
                "AUTH without Authentication Method (3.15.2.2.2)",
            ));
        }
        Ok(Auth {
            reason_code,
            properties,
        })
    }

    pub(super) fn plan(&self, v: Version) -> Result<Plan, EncodeError> {
        if v == Version::V311 {
            return Err(EncodeError::Invalid("AUTH does not exist in MQTT 3.1.1"));
        }
        let plan = tail_plan(self.reason_code, &self.properties, C::Auth)?;
        if plan.remaining > 0 && self.properties.authentication_method.is_none() {
            return Err(EncodeError::Invalid("AUTH needs an Authentication Method"));
        }
        Ok(plan)
    }

    pub(super) fn write(&self, plan: &Plan, out: &mut BytesMut) {
        tail_write(pt::AUTH << 4, self.reason_code, &self.properties, plan, out);
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
    fn plain_v5_disconnect_e0_00() {
        assert_eq!(
            dec(&[0xE0, 0], Version::V5).unwrap(),
            Some(Packet::Disconnect(Disconnect::default()))
        );
        let mut out = BytesMut::new();
        encode(
            &Packet::Disconnect(Disconnect::default()),
            Version::V5,
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..], &[0xE0, 0]);
        // Reason code only.
        let d = Disconnect {
            reason_code: 0x04,
            ..Default::default()
        };
        assert_eq!(
            dec(&[0xE0, 1, 4], Version::V5).unwrap(),
            Some(Packet::Disconnect(d))
        );
        assert_eq!(
            dec(&[0xE0, 1, 0x01], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        assert_eq!(
            dec(&[0xE0, 1, 0], Version::V311).unwrap_err().reason_code(),
            0x81
        );
        // Session Expiry Interval is allowed, Topic Alias is not.
        assert!(dec(&[0xE0, 7, 0, 5, 0x11, 0, 0, 0, 1], Version::V5)
            .unwrap()
            .is_some());
        assert_eq!(
            dec(&[0xE0, 5, 0, 3, 0x23, 0, 1], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x81
        );
    }

    #[test]
    fn auth_packet() {
        assert_eq!(
            dec(&[0xF0, 0], Version::V5).unwrap(),
            Some(Packet::Auth(Auth::default()))
        );
        // AUTH does not exist in 3.1.1 (type 15 reserved).
        assert_eq!(
            dec(&[0xF0, 0], Version::V311).unwrap_err().reason_code(),
            0x81
        );
        let a = Auth {
            reason_code: 0x18,
            properties: Properties {
                authentication_method: Some("SCRAM-SHA-256".into()),
                authentication_data: Some(bytes::Bytes::from_static(b"n,,n=user")),
                ..Default::default()
            },
        };
        let mut out = BytesMut::new();
        encode(&Packet::Auth(a.clone()), Version::V5, &mut out).unwrap();
        assert_eq!(
            decode(&mut out, Some(Version::V5), 1000).unwrap(),
            Some(Packet::Auth(a))
        );
        // Continue without method; unknown reason code.
        assert_eq!(
            dec(&[0xF0, 2, 0x18, 0], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        assert_eq!(
            dec(&[0xF0, 1, 0x80], Version::V5)
                .unwrap_err()
                .reason_code(),
            0x82
        );
        assert!(encode(&Packet::Auth(Auth::default()), Version::V311, &mut out).is_err());
    }
}

//! CONNECT (spec 3.1) and CONNACK (spec 3.2).

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{reason, DecodeError, EncodeError};
use super::properties::{Properties, PropertyContext as C};
use super::wire::{field_len, put_field, put_fixed_header, Reader};
use super::{pt, Plan, QoS, Version};

/// CONNECT. `version` is read from the packet (protocol level).
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    /// Clean Start (v5) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Seconds; 0 disables keep alive.
    pub keep_alive: u16,
    /// Always empty for 3.1.1.
    pub properties: Properties,
    /// May be empty (the server may assign one, 3.1.3.1).
    pub client_id: String,
    /// Boxed: rare, and inline it would double the size of every `Packet`.
    pub will: Option<Box<LastWill>>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
}

// Hand-written so that the password (often a token) never reaches a log.
impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("version", &self.version)
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .field("properties", &self.properties)
            .field("client_id", &self.client_id)
            .field("will", &self.will)
            .field("username", &self.username)
            .field(
                "password",
                &self
                    .password
                    .as_ref()
                    .map(|p| format!("<{} bytes hidden>", p.len())),
            )
            .finish()
    }
}

/// Will Message from the CONNECT payload (spec 3.1.2.5, 3.1.3.2-3.1.3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will Properties (v5 only).
    pub properties: Properties,
}

/// CONNACK. `reason_code` is always an MQTT 5 Connect Reason Code; for
/// 3.1.1 it is mapped from / to the 3.1.1 return code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason_code: u8,
    pub properties: Properties,
}

/// A topic name that is not empty and has no wildcards (4.7.1, 4.7.3).
fn valid_will_topic(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#'])
}

impl Connect {
    pub(super) fn decode(r: &mut Reader) -> Result<Connect, DecodeError> {
        // 3.1.2.1 / 3.1.2.2: anything but "MQTT" level 4 or 5 (including
        // MQTT 3.1 "MQIsdp" level 3) is an unsupported protocol version.
        let name = r.binary()?;
        let level = r.u8()?;
        let version = match (&name[..], level) {
            (b"MQTT", 4) => Version::V311,
            (b"MQTT", 5) => Version::V5,
            _ => return Err(DecodeError::UnsupportedProtocolVersion { level }),
        };
        let flags = r.u8()?;
        // 3.1.2.3 [MQTT-3.1.2-3]: reserved flag must be 0, else malformed.
        if flags & 0x01 != 0 {
            return Err(DecodeError::Malformed(
                "CONNECT reserved flag set (3.1.2.3)",
            ));
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos = (flags >> 3) & 0x03;
        let will_retain = flags & 0x20 != 0;
        let password_flag = flags & 0x40 != 0;
        let username_flag = flags & 0x80 != 0;
        // 3.1.2.6 [MQTT-3.1.2-12]: Will QoS 3 is malformed.
        if will_qos == 3 {
            return Err(DecodeError::Malformed("Will QoS 3 (3.1.2.6)"));
        }
        // 3.1.2.6 [MQTT-3.1.2-11], 3.1.2.7 [MQTT-3.1.2-13]: without the Will
        // Flag, Will QoS and Will Retain must be 0.
        if !will_flag && (will_qos != 0 || will_retain) {
            return Err(DecodeError::Malformed(
                "Will QoS/Retain set without Will Flag (3.1.2.6)",
            ));
        }
        // 3.1.1 spec 3.1.2.9 [MQTT-3.1.2-22]: no password without user name
        // in 3.1.1. MQTT 5 allows it (3.1.2.9).
        if version == Version::V311 && password_flag && !username_flag {
            return Err(DecodeError::Malformed(
                "3.1.1 password without user name (3.1.2.9)",
            ));
        }
        let keep_alive = r.u16()?;
        let properties = match version {
            Version::V5 => Properties::decode(r, C::Connect)?,
            Version::V311 => Properties::default(),
        };
        let client_id = r.string()?;
        let will = if will_flag {
            let properties = match version {
                Version::V5 => Properties::decode(r, C::Will)?,
                Version::V311 => Properties::default(),
            };
            let topic = r.string()?;
            // 3.1.3.3: the Will Topic is a topic name; CONNACK 0x90 if not.
            if !valid_will_topic(&topic) {
                return Err(DecodeError::TopicNameInvalid(
                    "Will Topic empty or with wildcards (3.1.3.3)",
                ));
            }
            let payload = r.binary()?;
            Some(Box::new(LastWill {
                topic,
                payload,
                qos: QoS::from_u8(will_qos).unwrap_or_default(),
                retain: will_retain,
                properties,
            }))
        } else {
            None
        };
        let username = if username_flag {
            Some(r.string()?)
        } else {
            None
        };
        let password = if password_flag {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Connect {
            version,
            clean_start,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    fn flags(&self) -> u8 {
        let mut f = u8::from(self.clean_start) << 1;
        if let Some(w) = &self.will {
            f |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
        }
        if self.password.is_some() {
            f |= 0x40;
        }
        if self.username.is_some() {
            f |= 0x80;
        }
        f
    }

    pub(super) fn plan(&self) -> Result<Plan, EncodeError> {
        let v5 = self.version == Version::V5;
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::Invalid(
                "3.1.1 CONNECT cannot carry a password without user name",
            ));
        }
        let mut plan = Plan::default();
        // Protocol name (2 + 4), level, flags, keep alive.
        let mut n = 6 + 1 + 1 + 2;
        if v5 {
            let b = self.properties.content_len(C::Connect)?;
            plan.props = b;
            n += super::wire::varint_len(b) + b;
        }
        n += field_len(self.client_id.len())?;
        if let Some(w) = &self.will {
            if v5 {
                let b = w.properties.content_len(C::Will)?;
                plan.will_props = b;
                n += super::wire::varint_len(b) + b;
            }
            n += field_len(w.topic.len())? + field_len(w.payload.len())?;
        }
        if let Some(u) = &self.username {
            n += field_len(u.len())?;
        }
        if let Some(p) = &self.password {
            n += field_len(p.len())?;
        }
        plan.remaining = n;
        Ok(plan)
    }

    pub(super) fn write(&self, plan: &Plan, out: &mut BytesMut) {
        let v5 = self.version == Version::V5;
        put_fixed_header(out, pt::CONNECT << 4, plan.remaining);
        put_field(out, b"MQTT");
        out.put_u8(self.version.level());
        out.put_u8(self.flags());
        out.put_u16(self.keep_alive);
        if v5 {
            self.properties.write(plan.props, out);
        }
        put_field(out, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            if v5 {
                w.properties.write(plan.will_props, out);
            }
            put_field(out, w.topic.as_bytes());
            put_field(out, &w.payload);
        }
        if let Some(u) = &self.username {
            put_field(out, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_field(out, p);
        }
    }
}

/// Connect Reason Codes (3.2.2.2).
fn valid_connack_code(c: u8) -> bool {
    matches!(c, 0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F)
}

/// 3.1.1 return codes (3.1.1 spec 3.2.2.3) to MQTT 5 reason codes.
fn v311_to_v5(rc: u8) -> Option<u8> {
    Some(match rc {
        0 => reason::SUCCESS,
        1 => reason::UNSUPPORTED_PROTOCOL_VERSION,
        2 => reason::CLIENT_IDENTIFIER_NOT_VALID,
        3 => reason::SERVER_UNAVAILABLE,
        4 => reason::BAD_USER_NAME_OR_PASSWORD,
        5 => reason::NOT_AUTHORIZED,
        _ => return None,
    })
}

/// MQTT 5 reason code to the closest 3.1.1 return code. Codes 3.1.1 has no
/// equivalent for become "server unavailable" (3), its generic refusal.
pub(super) fn v5_to_v311(code: u8) -> u8 {
    match code {
        reason::SUCCESS => 0,
        reason::UNSUPPORTED_PROTOCOL_VERSION => 1,
        reason::CLIENT_IDENTIFIER_NOT_VALID => 2,
        reason::BAD_USER_NAME_OR_PASSWORD => 4,
        reason::NOT_AUTHORIZED | reason::BANNED | reason::BAD_AUTHENTICATION_METHOD => 5,
        _ => 3,
    }
}

impl ConnAck {
    pub(super) fn decode(r: &mut Reader, v: Version) -> Result<ConnAck, DecodeError> {
        let flags = r.u8()?;
        // 3.2.2.1: bits 7-1 of the acknowledge flags are reserved (0).
        if flags & 0xFE != 0 {
            return Err(DecodeError::Malformed(
                "CONNACK reserved flags set (3.2.2.1)",
            ));
        }
        let session_present = flags & 1 != 0;
        let code = r.u8()?;
        let (reason_code, properties) = match v {
            Version::V311 => {
                let c = v311_to_v5(code)
                    .ok_or(DecodeError::Protocol("unknown 3.1.1 CONNACK return code"))?;
                (c, Properties::default())
            }
            Version::V5 => {
                // 3.2.2.2 [MQTT-3.2.2-8]: one of the Connect Reason Codes.
                if !valid_connack_code(code) {
                    return Err(DecodeError::Protocol(
                        "invalid CONNACK reason code (3.2.2.2)",
                    ));
                }
                // 3.2.2.3: the property length is not optional in CONNACK.
                (code, Properties::decode(r, C::ConnAck)?)
            }
        };
        // 3.2.2.1.1 [MQTT-3.2.2-6]: a refusal has Session Present 0.
        if session_present && reason_code != reason::SUCCESS {
            return Err(DecodeError::Protocol(
                "Session Present with a failure reason code (3.2.2.1.1)",
            ));
        }
        r.finish()?;
        Ok(ConnAck {
            session_present,
            reason_code,
            properties,
        })
    }

    pub(super) fn plan(&self, v: Version) -> Result<Plan, EncodeError> {
        if self.session_present && self.reason_code != reason::SUCCESS {
            return Err(EncodeError::Invalid(
                "CONNACK refusal must not set Session Present",
            ));
        }
        Ok(match v {
            Version::V311 => Plan {
                remaining: 2,
                ..Plan::default()
            },
            Version::V5 => {
                // A v5 CONNACK always has a property length, even 0.
                let props = self.properties.content_len(C::ConnAck)?;
                Plan {
                    remaining: 2 + super::wire::varint_len(props) + props,
                    props,
                    will_props: 0,
                }
            }
        })
    }

    pub(super) fn write(&self, v: Version, plan: &Plan, out: &mut BytesMut) {
        put_fixed_header(out, pt::CONNACK << 4, plan.remaining);
        out.put_u8(u8::from(self.session_present));
        match v {
            Version::V311 => out.put_u8(v5_to_v311(self.reason_code)),
            Version::V5 => {
                out.put_u8(self.reason_code);
                self.properties.write(plan.props, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode, encode, Packet};
    use super::*;

    fn connect_v5() -> Connect {
        Connect {
            version: Version::V5,
            clean_start: true,
            keep_alive: 30,
            properties: Properties {
                session_expiry_interval: Some(60),
                ..Default::default()
            },
            client_id: "c1".into(),
            will: Some(Box::new(LastWill {
                topic: "dead/c1".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties {
                    will_delay_interval: Some(3),
                    ..Default::default()
                },
            })),
            username: None,
            password: Some(Bytes::from_static(b"secret")),
        }
    }

    fn dec(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), None, usize::MAX)
    }

    #[test]
    fn connect_round_trip_and_password_without_username_in_v5() {
        let c = connect_v5();
        let mut out = BytesMut::new();
        encode(&Packet::Connect(c.clone()), Version::V5, &mut out).unwrap();
        assert_eq!(dec(&out).unwrap(), Some(Packet::Connect(c)));
    }

    #[test]
    fn v311_password_without_username_rejected_both_ways() {
        let mut c = connect_v5();
        c.version = Version::V311;
        c.properties = Properties::default();
        assert!(encode(
            &Packet::Connect(c.clone()),
            Version::V311,
            &mut BytesMut::new()
        )
        .is_err());
        // Hand-built: flags 0x42 = password + clean session.
        let bytes = [
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(dec(&bytes).unwrap_err().reason_code(), 0x81);
        c.username = Some("u".into());
        let mut out = BytesMut::new();
        encode(&Packet::Connect(c.clone()), Version::V311, &mut out).unwrap();
        c.will.as_mut().unwrap().properties = Properties::default();
        assert_eq!(dec(&out).unwrap(), Some(Packet::Connect(c)));
    }

    #[test]
    fn connect_flag_rules() {
        let base = |flags: u8| {
            [
                0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, flags, 0, 0, 0, 0, 0,
            ]
        };
        assert!(dec(&base(0x02)).unwrap().is_some());
        // Reserved bit.
        assert_eq!(dec(&base(0x03)).unwrap_err().reason_code(), 0x81);
        // Will QoS / Will Retain without Will Flag.
        assert_eq!(dec(&base(0x08)).unwrap_err().reason_code(), 0x81);
        assert_eq!(dec(&base(0x20)).unwrap_err().reason_code(), 0x81);
        // Will QoS 3.
        assert_eq!(dec(&base(0x1C)).unwrap_err().reason_code(), 0x81);
    }

    #[test]
    fn unsupported_protocol_versions() {
        let e = dec(&[0x10, 10, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 0]).unwrap_err();
        assert_eq!(e, DecodeError::UnsupportedProtocolVersion { level: 6 });
        assert_eq!(e.reason_code(), 0x84);
        // MQTT 3.1: "MQIsdp", level 3 -> 3.1.1 CONNACK return code 1.
        let e = dec(&[
            0x10, 12, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 0,
        ])
        .unwrap_err();
        assert_eq!(e.reason_code(), 0x84);
        assert_eq!(e.v311_connack_return_code(), Some(1));
    }

    #[test]
    fn will_topic_with_wildcard_is_topic_name_invalid() {
        let mut c = connect_v5();
        c.will.as_mut().unwrap().topic = "a/+".into();
        let mut out = BytesMut::new();
        encode(&Packet::Connect(c), Version::V5, &mut out).unwrap();
        assert_eq!(dec(&out).unwrap_err().reason_code(), 0x90);
    }

    #[test]
    fn connack_forms() {
        let ack = ConnAck::default();
        let mut out = BytesMut::new();
        encode(&Packet::ConnAck(ack.clone()), Version::V5, &mut out).unwrap();
        // v5 CONNACK without properties still has property length 0.
        assert_eq!(&out[..], &[0x20, 3, 0, 0, 0]);
        let got = decode(&mut out, Some(Version::V5), 100).unwrap();
        assert_eq!(got, Some(Packet::ConnAck(ack)));
        let refused = ConnAck {
            reason_code: reason::BAD_USER_NAME_OR_PASSWORD,
            ..Default::default()
        };
        encode(&Packet::ConnAck(refused.clone()), Version::V311, &mut out).unwrap();
        assert_eq!(&out[..], &[0x20, 2, 0, 4]);
        let got = decode(&mut out, Some(Version::V311), 100).unwrap();
        assert_eq!(got, Some(Packet::ConnAck(refused)));
        // v5 CONNACK missing its property length is malformed.
        let e = decode(
            &mut BytesMut::from(&[0x20, 2, 0, 0][..]),
            Some(Version::V5),
            100,
        );
        assert_eq!(e.unwrap_err().reason_code(), 0x81);
        // Session present with a refusal; unknown reason code; reserved flags.
        for bad in [
            [0x20, 3, 1, 0x87, 0],
            [0x20, 3, 0, 0x01, 0],
            [0x20, 3, 2, 0, 0],
        ] {
            assert!(decode(&mut BytesMut::from(&bad[..]), Some(Version::V5), 100).is_err());
        }
    }
}

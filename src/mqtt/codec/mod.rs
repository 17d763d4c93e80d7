//! Sans-I/O MQTT 5.0 and 3.1.1 codec.
//!
//! # Design
//!
//! * **Sans-I/O.** [`decode`] takes whatever bytes the connection has
//!   buffered and either returns one packet (consuming exactly its frame),
//!   `Ok(None)` (consuming nothing: wait for more bytes), or an error that
//!   carries the MQTT 5 reason code to send before closing
//!   ([`DecodeError::reason_code`]). [`encode`] appends one packet to a
//!   `BytesMut` that may already hold queued packets. No sockets, no async,
//!   no state beyond the two parameters a connection has to remember: the
//!   protocol version (unknown until CONNECT) and our Maximum Packet Size.
//!   That is why decoding is a free function rather than a `Decoder` struct:
//!   the connection already owns both values and its read buffer.
//! * **Fail early.** The first byte is checked as soon as it arrives (packet
//!   type allowed in this state, reserved flag bits) and the packet size is
//!   checked against the maximum from the fixed header alone, even from a
//!   partial remaining length, before any body is buffered.
//! * **Zero copy.** A complete frame is split off the read buffer with
//!   `BytesMut::split_to(..).freeze()`; PUBLISH payloads, binary properties
//!   and passwords are `Bytes` slices of that frame. Strings are validated
//!   (well-formed UTF-8, no U+0000, spec 1.5.4) and copied into `String`; so
//!   decoding a property-less PUBLISH allocates only its topic.
//! * **Two-phase encode.** Every packet is sized first (which validates field
//!   lengths, packet ids and which properties the packet may carry), then
//!   written straight into the output with one `reserve`: no intermediate
//!   buffers, and on error nothing has been written. [`encoded_len`] exposes
//!   the sizing pass so a server can honour a client's Maximum Packet Size
//!   before sending; [`encode_publish`] writes one message to many
//!   subscribers with per-recipient QoS, packet id, flags and subscription
//!   identifiers without cloning the `Publish`.
//! * **One model for both versions.** Packets carry MQTT 5 fields
//!   (properties, reason codes). Decoding 3.1.1 fills defaults; encoding
//!   3.1.1 drops what 3.1.1 cannot express (properties, ack reason codes,
//!   subscription option bits) and maps CONNACK / SUBACK codes to their 3.1.1
//!   return codes, so a broker can build one packet and send it to clients of
//!   either version. AUTH cannot be encoded for 3.1.1.
//! * **Direction-agnostic** apart from the CONNECT gate: every packet type
//!   decodes, so the same code serves tests and a future client. Rules that
//!   depend on direction or session state (a client must not send a
//!   Subscription Identifier, topic alias within maximum, invalid topic
//!   filters answered per filter in SUBACK) belong to the caller.
//!
//! # Why not mqttbytes 0.6.0
//!
//! It was the obvious off-the-shelf choice, but in that version: it has no
//! AUTH packet (type 15), so MQTT 5 enhanced authentication is impossible;
//! it rejects the ordinary v5 DISCONNECT `E0 00` (remaining length 0 means
//! "normal disconnection", spec 3.14.2.1); it encodes a v5 CONNACK without
//! its property length, which conforming clients must treat as malformed
//! (3.2.2.3); and it corrupts a CONNECT written into a non-empty buffer,
//! which is how a broker batches outgoing packets. Each is disqualifying
//! for a broker, so we own this codec and check it against an independent
//! implementation (mqtt5-protocol, in `tests/oracle.rs`).

mod ack;
mod auth;
mod connect;
mod error;
mod properties;
mod properties_encode;
mod publish;
mod subscribe;
mod wire;

#[cfg(test)]
mod tests;

use bytes::{Buf, BytesMut};

pub use ack::Ack;
pub use auth::{Auth, Disconnect};
pub use connect::{ConnAck, Connect, LastWill};
pub use error::{reason, DecodeError, EncodeError};
pub use properties::{Properties, PropertyContext};
pub use publish::{encode_publish, publish_encoded_len, Delivery, Publish};
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
pub use wire::MAX_VARINT as MAX_REMAINING_LENGTH;

use wire::{frame_len, parse_fixed_header, put_fixed_header, Reader};

/// Protocol version negotiated by CONNECT (protocol level, spec 3.1.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl Version {
    /// The protocol level byte in CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// Quality of service (spec 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// `None` for 3, which is never valid.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// One MQTT control packet (spec 2.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

mod packet_type {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}
use packet_type as pt;

/// Checks that need only the first byte, so they run before waiting for
/// (or buffering) the rest of the frame.
fn check_first_byte(first: u8, version: Option<Version>) -> Result<(), DecodeError> {
    let (ty, flags) = (first >> 4, first & 0x0F);
    match (ty, version) {
        // 2.1.2: type 0 is reserved (forbidden).
        (0, _) => return Err(DecodeError::Malformed("reserved packet type 0 (2.1.2)")),
        // 3.1.0 [MQTT-3.1.0-1]: the first packet from a client is CONNECT.
        (t, None) if t != pt::CONNECT => {
            return Err(DecodeError::Protocol("first packet is not CONNECT (3.1.0)"))
        }
        // 3.1.0 [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error.
        (pt::CONNECT, Some(_)) => return Err(DecodeError::Protocol("second CONNECT (3.1.0)")),
        // 3.1.1 spec 2.2.1: type 15 is reserved there; AUTH is MQTT 5 only.
        (pt::AUTH, Some(Version::V311)) => {
            return Err(DecodeError::Malformed(
                "packet type 15 is reserved in MQTT 3.1.1",
            ))
        }
        _ => {}
    }
    // 2.1.3 [MQTT-2.1.3-1]: reserved flag bits must have the listed values,
    // else the packet is malformed.
    let ok = match ty {
        pt::PUBLISH => {
            let qos = (flags >> 1) & 3;
            // 3.3.1.2 [MQTT-3.3.1-4]: QoS 3 is malformed.
            if qos == 3 {
                return Err(DecodeError::Malformed("PUBLISH with QoS 3 (3.3.1.2)"));
            }
            // 3.3.1.1 [MQTT-3.3.1-2]: DUP must be 0 for QoS 0 messages.
            qos != 0 || flags & 0x08 == 0
        }
        pt::PUBREL | pt::SUBSCRIBE | pt::UNSUBSCRIBE => flags == 0b0010,
        _ => flags == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Malformed("invalid fixed header flags (2.1.3)"))
    }
}

/// Whether the frames at the front of `buf` include a PUBLISH, looking at
/// fixed headers only (cheap; a malformed length stops the walk, and
/// [`decode`] then says what is wrong).
pub fn holds_publish(buf: &[u8]) -> bool {
    holds(buf, packet_type::PUBLISH)
}

/// [`holds_publish`] for SUBSCRIBE.
pub fn holds_subscribe(buf: &[u8]) -> bool {
    holds(buf, packet_type::SUBSCRIBE)
}

fn holds(buf: &[u8], kind: u8) -> bool {
    let mut at = 0;
    while let Some(&first) = buf.get(at) {
        if first >> 4 == kind {
            return true;
        }
        let mut len: usize = 0;
        let mut shift = 0;
        let mut i = at + 1;
        loop {
            let Some(&b) = buf.get(i) else { return false };
            len |= usize::from(b & 0x7F) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return false;
            }
        }
        at = i + len;
    }
    false
}

/// Decode one packet from the front of `buf`.
///
/// * `version`: `None` until CONNECT was accepted; then only CONNECT is
///   accepted and it carries its own version. Afterwards pass the version
///   from that CONNECT; a second CONNECT is a Protocol Error.
/// * `max_packet_size`: total frame size (fixed header included) we accept,
///   checked from the fixed header before the body arrives.
///
/// Returns `Ok(None)` without consuming anything while the frame is
/// incomplete. On `Ok(Some(_))` exactly one frame is consumed. After an
/// error the connection must be closed; the buffer state is unspecified.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<Version>,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first_byte(first, version)?;
    let Some(header) = parse_fixed_header(buf, max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < header.frame_len() {
        return Ok(None);
    }
    let mut frame = buf.split_to(header.frame_len()).freeze();
    frame.advance(header.header_len);
    let mut r = Reader::new(frame);
    let packet = match version {
        None => Packet::Connect(Connect::decode(&mut r)?),
        Some(v) => decode_body(header.packet_type, header.flags, v, &mut r)?,
    };
    Ok(Some(packet))
}

fn decode_body(ty: u8, flags: u8, v: Version, r: &mut Reader) -> Result<Packet, DecodeError> {
    use PropertyContext as C;
    Ok(match ty {
        pt::CONNACK => Packet::ConnAck(ConnAck::decode(r, v)?),
        pt::PUBLISH => Packet::Publish(Publish::decode(r, flags, v)?),
        pt::PUBACK => Packet::PubAck(Ack::decode(r, v, C::PubAck)?),
        pt::PUBREC => Packet::PubRec(Ack::decode(r, v, C::PubRec)?),
        pt::PUBREL => Packet::PubRel(Ack::decode(r, v, C::PubRel)?),
        pt::PUBCOMP => Packet::PubComp(Ack::decode(r, v, C::PubComp)?),
        pt::SUBSCRIBE => Packet::Subscribe(Subscribe::decode(r, v)?),
        pt::SUBACK => Packet::SubAck(SubAck::decode(r, v)?),
        pt::UNSUBSCRIBE => Packet::Unsubscribe(Unsubscribe::decode(r, v)?),
        pt::UNSUBACK => Packet::UnsubAck(UnsubAck::decode(r, v)?),
        // 3.12 / 3.13: no variable header or payload.
        pt::PINGREQ => {
            r.finish()?;
            Packet::PingReq
        }
        pt::PINGRESP => {
            r.finish()?;
            Packet::PingResp
        }
        pt::DISCONNECT => Packet::Disconnect(Disconnect::decode(r, v)?),
        pt::AUTH => Packet::Auth(Auth::decode(r)?),
        // CONNECT and reserved types were rejected by check_first_byte.
        _ => unreachable!("packet type {ty} rejected by check_first_byte"),
    })
}

/// Result of the sizing pass: remaining length plus the property block
/// content lengths the write pass needs (so they are computed once).
#[derive(Debug, Clone, Copy, Default)]
struct Plan {
    remaining: usize,
    props: usize,
    will_props: usize,
}

fn plan(packet: &Packet, v: Version) -> Result<Plan, EncodeError> {
    use PropertyContext as C;
    let plan = match packet {
        Packet::Connect(p) => {
            // The CONNECT itself says which version it speaks.
            if p.version != v {
                return Err(EncodeError::Invalid(
                    "CONNECT version differs from encode version",
                ));
            }
            p.plan()?
        }
        Packet::ConnAck(p) => p.plan(v)?,
        Packet::Publish(p) => p.plan(&Delivery::of(p), v)?,
        Packet::PubAck(p) => p.plan(v, C::PubAck)?,
        Packet::PubRec(p) => p.plan(v, C::PubRec)?,
        Packet::PubRel(p) => p.plan(v, C::PubRel)?,
        Packet::PubComp(p) => p.plan(v, C::PubComp)?,
        Packet::Subscribe(p) => p.plan(v)?,
        Packet::SubAck(p) => p.plan(v)?,
        Packet::Unsubscribe(p) => p.plan(v)?,
        Packet::UnsubAck(p) => p.plan(v)?,
        Packet::PingReq | Packet::PingResp => Plan::default(),
        Packet::Disconnect(p) => p.plan(v)?,
        Packet::Auth(p) => p.plan(v)?,
    };
    frame_len(plan.remaining)?;
    Ok(plan)
}

/// Append `packet` encoded for `version` to `out` (which may already hold
/// data). Nothing is written on error.
pub fn encode(packet: &Packet, version: Version, out: &mut BytesMut) -> Result<(), EncodeError> {
    let plan = plan(packet, version)?;
    let v = version;
    let start = out.len();
    match packet {
        Packet::Connect(p) => p.write(&plan, out),
        Packet::ConnAck(p) => p.write(v, &plan, out),
        Packet::Publish(p) => p.write(&Delivery::of(p), v, &plan, out),
        Packet::PubAck(p) => p.write(pt::PUBACK << 4, v, &plan, out),
        Packet::PubRec(p) => p.write(pt::PUBREC << 4, v, &plan, out),
        // 2.1.3: PUBREL, SUBSCRIBE and UNSUBSCRIBE have flags 0010.
        Packet::PubRel(p) => p.write(pt::PUBREL << 4 | 0b0010, v, &plan, out),
        Packet::PubComp(p) => p.write(pt::PUBCOMP << 4, v, &plan, out),
        Packet::Subscribe(p) => p.write(v, &plan, out),
        Packet::SubAck(p) => p.write(v, &plan, out),
        Packet::Unsubscribe(p) => p.write(v, &plan, out),
        Packet::UnsubAck(p) => p.write(v, &plan, out),
        Packet::PingReq => put_fixed_header(out, pt::PINGREQ << 4, 0),
        Packet::PingResp => put_fixed_header(out, pt::PINGRESP << 4, 0),
        Packet::Disconnect(p) => p.write(v, &plan, out),
        Packet::Auth(p) => p.write(&plan, out),
    }
    debug_assert_eq!(
        out.len() - start,
        wire::frame_len(plan.remaining).unwrap_or(0)
    );
    Ok(())
}

/// Exact number of bytes [`encode`] would append (fixed header included),
/// e.g. to compare with a client's Maximum Packet Size (3.1.2.11.4) before
/// sending. Validates like `encode`.
pub fn encoded_len(packet: &Packet, version: Version) -> Result<usize, EncodeError> {
    frame_len(plan(packet, version)?.remaining)
}

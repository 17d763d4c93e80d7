//! Decode and encode errors, plus the MQTT 5 reason code values the codec
//! and its callers need.

use thiserror::Error;

/// MQTT 5 reason codes (spec 2.4) used by this codec and useful to callers.
/// Kept as plain `u8` constants because packets carry reason codes as `u8`:
/// the set of valid values depends on the packet type.
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const GRANTED_QOS_1: u8 = 0x01;
    pub const GRANTED_QOS_2: u8 = 0x02;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const CONTINUE_AUTHENTICATION: u8 = 0x18;
    pub const RE_AUTHENTICATE: u8 = 0x19;
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const BANNED: u8 = 0x8A;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_IDENTIFIER_IN_USE: u8 = 0x91;
    pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const USE_ANOTHER_SERVER: u8 = 0x9C;
    pub const SERVER_MOVED: u8 = 0x9D;
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
    pub const MAXIMUM_CONNECT_TIME: u8 = 0xA0;
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: u8 = 0xA1;
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0xA2;
}

/// Why a frame could not be decoded. Every variant maps to the MQTT 5 reason
/// code the server should put in its CONNACK (before CONNECT completed) or
/// DISCONNECT before closing the connection (spec 4.13). Messages are
/// `&'static str` so that rejecting hostile input never allocates.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes cannot be parsed as the packet they claim to be (spec 1.2
    /// "Malformed Packet"): bad varint, truncated field, bad UTF-8, reserved
    /// bits set, property not allowed in this packet, trailing bytes...
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet parses but carries something the protocol forbids (spec 1.2
    /// "Protocol Error"): packet id 0, duplicate property, first packet not
    /// CONNECT, topic alias 0, SUBSCRIBE without filters...
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A PUBLISH or Will topic name that is well formed but not a valid topic
    /// name (wildcards; spec 3.3.2.1, 3.1.3.3).
    #[error("topic name invalid: {0}")]
    TopicNameInvalid(&'static str),
    /// Fixed header announces more than the allowed maximum packet size
    /// (spec 3.1.2.11.4 / 3.2.2.3.6). Detected from the header alone.
    #[error("packet too large: at least {size} bytes, maximum {max}")]
    PacketTooLarge { size: usize, max: usize },
    /// CONNECT with a protocol name other than "MQTT" or a level other than 4
    /// or 5 (spec 3.1.2.1, 3.1.2.2). `level` lets the server pick the CONNACK
    /// form: for levels 3 and 4 a v3.1.1 CONNACK with return code 1 (3.1.1
    /// spec 3.1.2.2 [MQTT-3.1.2-2]), otherwise a v5 CONNACK with 0x84.
    #[error("unsupported protocol name or version (level {level})")]
    UnsupportedProtocolVersion { level: u8 },
}

impl DecodeError {
    /// MQTT 5 reason code to send (in CONNACK or DISCONNECT) before closing.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::Malformed(_) => reason::MALFORMED_PACKET,
            DecodeError::Protocol(_) => reason::PROTOCOL_ERROR,
            DecodeError::TopicNameInvalid(_) => reason::TOPIC_NAME_INVALID,
            DecodeError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolVersion { .. } => reason::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }

    /// MQTT 3.1.1 CONNACK return code for a failed CONNECT, if 3.1.1 defines
    /// one. 3.1.1 only answers an unsupported protocol level (code 1); every
    /// other decode failure closes the connection without CONNACK (3.1.1
    /// spec 4.8).
    pub fn v311_connack_return_code(&self) -> Option<u8> {
        match self {
            DecodeError::UnsupportedProtocolVersion { .. } => Some(1),
            _ => None,
        }
    }
}

/// Why a packet could not be encoded. Encoding validates sizes before
/// writing anything, so on error the output buffer is left untouched.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A string or binary field exceeds 65535 bytes (spec 1.5.4, 1.5.6).
    #[error("string or binary field longer than 65535 bytes")]
    FieldTooLong,
    /// Remaining length exceeds 268 435 455, the largest varint (spec 1.5.5).
    #[error("packet larger than the MQTT maximum of 268435455 remaining bytes")]
    PacketTooLarge,
    /// PUBLISH with QoS > 0, SUBSCRIBE, UNSUBSCRIBE and all acks need a
    /// non-zero packet identifier (spec 2.2.1).
    #[error("packet identifier must be non-zero")]
    ZeroPacketId,
    /// The packet cannot be expressed validly in the target version (e.g.
    /// AUTH in 3.1.1, a property not allowed in this packet, empty SUBSCRIBE).
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}

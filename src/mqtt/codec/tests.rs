//! Cross-cutting decoder tests: framing, state gate, buffers, robustness.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn props_v5() -> Properties {
    Properties {
        reason_string: Some("why".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    }
}

/// One sample of every packet type, with the version to encode it in.
fn samples() -> Vec<(Packet, Version)> {
    let will = LastWill {
        topic: "w".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: Properties {
            content_type: Some("text".into()),
            ..Default::default()
        },
    };
    let connect = Connect {
        version: Version::V5,
        clean_start: false,
        keep_alive: 60,
        properties: Properties {
            receive_maximum: Some(20),
            ..Default::default()
        },
        client_id: "client".into(),
        will: Some(Box::new(will)),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"pw")),
    };
    let connect311 = Connect {
        version: Version::V311,
        properties: Properties::default(),
        will: None,
        ..connect.clone()
    };
    let publish = Publish {
        dup: true,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "sport/tennis".into(),
        packet_id: 10,
        properties: Properties {
            content_type: Some("json".into()),
            ..Default::default()
        },
        payload: Bytes::from_static(b"{}"),
    };
    let ack = Ack {
        packet_id: 10,
        reason_code: 0x10,
        properties: props_v5(),
    };
    let ack_rel = Ack {
        packet_id: 10,
        reason_code: 0x92,
        properties: props_v5(),
    };
    let subscribe = Subscribe {
        packet_id: 2,
        properties: Properties {
            subscription_identifiers: vec![5],
            ..Default::default()
        },
        filters: vec![
            (
                "a/+".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            ),
            (
                "b/#".into(),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            ),
        ],
    };
    let mut sub311 = subscribe.clone();
    sub311.properties = Properties::default();
    sub311.filters[1].1 = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        ..Default::default()
    };
    let suback = SubAck {
        packet_id: 2,
        properties: props_v5(),
        reason_codes: vec![1, 0x80],
    };
    let unsub = Unsubscribe {
        packet_id: 3,
        properties: Properties::default(),
        filters: vec!["a/+".into(), "x".into()],
    };
    let unsuback = UnsubAck {
        packet_id: 3,
        properties: props_v5(),
        reason_codes: vec![0, 0x11],
    };
    let disconnect = Disconnect {
        reason_code: 0x04,
        properties: Properties {
            session_expiry_interval: Some(0),
            ..Default::default()
        },
    };
    let auth = Auth {
        reason_code: 0x19,
        properties: Properties {
            authentication_method: Some("m".into()),
            ..Default::default()
        },
    };
    use Version::*;
    vec![
        (Packet::Connect(connect), V5),
        (Packet::Connect(connect311), V311),
        (
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason_code: 0,
                properties: props_v5(),
            }),
            V5,
        ),
        (
            Packet::ConnAck(ConnAck {
                session_present: true,
                ..Default::default()
            }),
            V311,
        ),
        (Packet::Publish(publish.clone()), V5),
        (
            Packet::Publish(Publish {
                properties: Properties::default(),
                ..publish
            }),
            V311,
        ),
        (Packet::PubAck(ack.clone()), V5),
        (Packet::PubRec(ack), V5),
        (Packet::PubRel(ack_rel.clone()), V5),
        (Packet::PubComp(ack_rel), V5),
        (
            Packet::PubAck(Ack {
                packet_id: 1,
                ..Default::default()
            }),
            V311,
        ),
        (Packet::Subscribe(subscribe), V5),
        (Packet::Subscribe(sub311), V311),
        (Packet::SubAck(suback), V5),
        (Packet::Unsubscribe(unsub.clone()), V5),
        (Packet::Unsubscribe(unsub), V311),
        (Packet::UnsubAck(unsuback), V5),
        (
            Packet::UnsubAck(UnsubAck {
                packet_id: 4,
                ..Default::default()
            }),
            V311,
        ),
        (Packet::PingReq, V5),
        (Packet::PingResp, V311),
        (Packet::Disconnect(disconnect), V5),
        (Packet::Disconnect(Disconnect::default()), V311),
        (Packet::Auth(auth), V5),
    ]
}

/// The version to pass to `decode` for a sample: CONNECT comes first.
fn state(p: &Packet, v: Version) -> Option<Version> {
    match p {
        Packet::Connect(_) => None,
        _ => Some(v),
    }
}

#[test]
fn every_sample_round_trips_and_sizes_exactly() {
    for (p, v) in samples() {
        let mut buf = BytesMut::new();
        encode(&p, v, &mut buf).unwrap();
        assert_eq!(buf.len(), encoded_len(&p, v).unwrap(), "{p:?}");
        let got = decode(&mut buf, state(&p, v), usize::MAX).unwrap();
        assert_eq!(got, Some(p), "{v:?}");
        assert!(buf.is_empty());
    }
}

#[test]
fn truncated_frame_waits_at_every_split_point() {
    for (p, v) in samples() {
        let mut full = BytesMut::new();
        encode(&p, v, &mut full).unwrap();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(
                decode(&mut part, state(&p, v), usize::MAX),
                Ok(None),
                "{p:?} cut at {cut}"
            );
            // Nothing consumed while waiting.
            assert_eq!(part.len(), cut);
        }
        // Feeding the rest byte by byte into the same buffer completes it.
        let mut buf = BytesMut::new();
        for (i, b) in full.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = decode(&mut buf, state(&p, v), usize::MAX).unwrap();
            assert_eq!(got.is_some(), i == full.len() - 1);
        }
    }
}

#[test]
fn two_frames_in_one_buffer() {
    let mut buf = BytesMut::new();
    let a = Packet::Publish(Publish {
        topic: "a".into(),
        payload: Bytes::from_static(b"1"),
        ..Default::default()
    });
    encode(&a, Version::V5, &mut buf).unwrap();
    encode(&Packet::PingReq, Version::V5, &mut buf).unwrap();
    buf.extend_from_slice(&[0x30]); // start of a third frame
    assert_eq!(decode(&mut buf, Some(Version::V5), 1000).unwrap(), Some(a));
    assert_eq!(
        decode(&mut buf, Some(Version::V5), 1000).unwrap(),
        Some(Packet::PingReq)
    );
    assert_eq!(decode(&mut buf, Some(Version::V5), 1000).unwrap(), None);
    assert_eq!(&buf[..], &[0x30]);
}

#[test]
fn encode_appends_to_non_empty_buffer() {
    for (p, v) in samples() {
        let mut alone = BytesMut::new();
        encode(&p, v, &mut alone).unwrap();
        let mut buf = BytesMut::from(&b"\x30\x03\x00\x01xprefix"[..]);
        let before = buf.clone();
        encode(&p, v, &mut buf).unwrap();
        assert_eq!(&buf[..before.len()], &before[..]);
        assert_eq!(&buf[before.len()..], &alone[..], "{p:?}");
    }
    // A failing encode leaves the buffer untouched.
    let mut buf = BytesMut::from(&b"keep"[..]);
    let bad = Packet::Subscribe(Subscribe::default());
    assert!(encode(&bad, Version::V5, &mut buf).is_err());
    assert_eq!(&buf[..], b"keep");
}

#[test]
fn oversize_rejected_from_header_alone() {
    // Only the fixed header of a 300-byte PUBLISH has arrived.
    let mut buf = BytesMut::from(&[0x30, 0xAC, 0x02][..]);
    let e = decode(&mut buf, Some(Version::V5), 256).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 303,
            max: 256
        }
    );
    assert_eq!(e.reason_code(), 0x95);
    // Even a partial length can be judged: 0x80 0x80 means >= 16384.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80][..]);
    assert_eq!(
        decode(&mut buf, Some(Version::V5), 1024)
            .unwrap_err()
            .reason_code(),
        0x95
    );
    // The limit counts the fixed header: 2 + 254 = 256 is accepted (waits).
    let mut buf = BytesMut::from(&[0x30, 0xFE, 0x01][..]);
    assert_eq!(decode(&mut buf, Some(Version::V5), 257), Ok(None));
}

#[test]
fn bad_remaining_length_varint() {
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
    assert_eq!(
        decode(&mut buf, Some(Version::V5), usize::MAX)
            .unwrap_err()
            .reason_code(),
        0x81
    );
}

#[test]
fn first_packet_must_be_connect() {
    for first in [0x30u8, 0x82, 0xC0, 0xE0, 0xF0, 0x20] {
        let mut buf = BytesMut::from(&[first][..]);
        let e = decode(&mut buf, None, usize::MAX).unwrap_err();
        assert_eq!(e.reason_code(), 0x82, "{first:#x}");
    }
    // And a second CONNECT is a protocol error too.
    let mut buf = BytesMut::from(&[0x10][..]);
    assert_eq!(
        decode(&mut buf, Some(Version::V5), 100)
            .unwrap_err()
            .reason_code(),
        0x82
    );
}

#[test]
fn reserved_type_and_flags() {
    for (bytes, v) in [
        (&[0x00, 0][..], Some(Version::V5)),
        (&[0x11, 0][..], None),
        (&[0x21, 0][..], Some(Version::V5)),
        (&[0x6F, 0][..], Some(Version::V5)),
        (&[0xC1, 0][..], Some(Version::V5)),
        (&[0xE8, 0][..], Some(Version::V5)),
        (&[0xF2, 0][..], Some(Version::V5)),
        (&[0x36, 0][..], Some(Version::V311)),
    ] {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(
            decode(&mut buf, v, 100).unwrap_err().reason_code(),
            0x81,
            "{bytes:?}"
        );
    }
    // PINGREQ with a body.
    let mut buf = BytesMut::from(&[0xC0, 1, 0][..]);
    assert_eq!(
        decode(&mut buf, Some(Version::V5), 100)
            .unwrap_err()
            .reason_code(),
        0x81
    );
}

#[test]
fn invalid_utf8_and_nul_in_topic() {
    let mut buf = BytesMut::from(&[0x30, 5, 0, 3, b'a', 0xFF, b'b'][..]);
    assert_eq!(
        decode(&mut buf, Some(Version::V311), 100)
            .unwrap_err()
            .reason_code(),
        0x81
    );
    let mut buf = BytesMut::from(&[0x30, 5, 0, 3, b'a', 0, b'b'][..]);
    assert_eq!(
        decode(&mut buf, Some(Version::V311), 100)
            .unwrap_err()
            .reason_code(),
        0x81
    );
}

#[test]
fn trailing_bytes_and_truncated_fields_inside_frame() {
    // CONNACK v5 with an extra byte after the properties.
    let mut buf = BytesMut::from(&[0x20, 4, 0, 0, 0, 9][..]);
    assert_eq!(
        decode(&mut buf, Some(Version::V5), 100)
            .unwrap_err()
            .reason_code(),
        0x81
    );
    // PUBLISH whose topic length runs past the frame.
    let mut buf = BytesMut::from(&[0x30, 3, 0, 9, b'a'][..]);
    assert_eq!(
        decode(&mut buf, Some(Version::V5), 100)
            .unwrap_err()
            .reason_code(),
        0x81
    );
}

#[test]
fn encoded_len_matches_for_large_packets() {
    // Remaining lengths straddling varint size boundaries.
    for n in [120usize, 127, 128, 16_380, 16_384, 2_097_150, 2_097_152] {
        let p = Packet::Publish(Publish {
            topic: "t".into(),
            payload: Bytes::from(vec![0u8; n]),
            ..Default::default()
        });
        let mut out = BytesMut::new();
        encode(&p, Version::V5, &mut out).unwrap();
        assert_eq!(out.len(), encoded_len(&p, Version::V5).unwrap());
        assert_eq!(
            decode(&mut out, Some(Version::V5), usize::MAX).unwrap(),
            Some(p)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Decoding never panics, whatever the bytes and state; and whatever it
    /// returns is consistent with the buffer.
    #[test]
    fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), which in 0u8..3, max in 0usize..400) {
        let version = [None, Some(Version::V311), Some(Version::V5)][which as usize];
        let mut buf = BytesMut::from(&data[..]);
        loop {
            let before = buf.len();
            match decode(&mut buf, version, max) {
                Ok(Some(p)) => {
                    prop_assert!(buf.len() < before);
                    // Anything we accept we can encode again.
                    let v = version.unwrap_or(match &p { Packet::Connect(c) => c.version, _ => Version::V5 });
                    let mut out = BytesMut::new();
                    prop_assert!(encode(&p, v, &mut out).is_ok());
                    if version.is_none() { break; }
                }
                Ok(None) => { prop_assert_eq!(buf.len(), before); break; }
                Err(e) => { let _ = e.reason_code(); break; }
            }
        }
    }

    /// Random packet-shaped input: a valid header with a random body, so the
    /// body parsers are exercised more than by fully random bytes.
    #[test]
    fn decode_random_bodies_never_panics(ty in 1u8..16, flags in 0u8..16, body in proptest::collection::vec(any::<u8>(), 0..120), v5 in any::<bool>()) {
        let version = if ty == 1 { None } else if v5 { Some(Version::V5) } else { Some(Version::V311) };
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[ty << 4 | flags, body.len() as u8]);
        buf.extend_from_slice(&body);
        let _ = decode(&mut buf, version, usize::MAX);
    }
}

/// A CONNECT printed (a log line, a panic) shows neither its password nor
/// its authentication data: both often carry a token.
#[test]
fn connect_debug_hides_secrets() {
    let props = Properties {
        authentication_method: Some("X-OAUTH2".into()),
        authentication_data: Some(Bytes::from_static(b"secret-token-1")),
        ..Properties::default()
    };
    let c = Connect {
        version: Version::V5,
        clean_start: true,
        keep_alive: 60,
        properties: props,
        client_id: "dev".into(),
        will: None,
        username: Some("alice".into()),
        password: Some(Bytes::from_static(b"secret-token-2")),
    };
    let shown = format!("{:?} {:#?}", Packet::Connect(c.clone()), c);
    assert!(!shown.contains("secret-token"), "{shown}");
    assert!(
        shown.contains("X-OAUTH2") && shown.contains("alice"),
        "{shown}"
    );
}

#[test]
fn holds_publish_walks_fixed_headers() {
    // PINGREQ, then PUBACK (4 bytes), then a PUBLISH.
    let ping = [0xC0, 0x00];
    let puback = [0x40, 0x02, 0x00, 0x01];
    let publish = [0x30, 0x03, 0x00, 0x01, b'a'];
    assert!(!holds_publish(&ping));
    assert!(!holds_publish(&[ping.as_slice(), &puback].concat()));
    assert!(holds_publish(
        &[ping.as_slice(), &puback, &publish].concat()
    ));
    assert!(holds_publish(&publish[..1]), "the type byte is enough");
    // A long SUBSCRIBE (two-byte length) followed by a PUBLISH.
    let mut sub = vec![0x82, 0x80, 0x01];
    sub.extend(std::iter::repeat_n(0u8, 128));
    assert!(!holds_publish(&sub));
    assert!(holds_subscribe(&sub));
    sub.extend(publish);
    assert!(holds_publish(&sub));
    assert!(
        !holds_publish(&[0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0x30]),
        "bad length"
    );
    assert!(!holds_publish(&[]));
}

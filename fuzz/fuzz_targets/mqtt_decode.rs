//! Feed arbitrary bytes to the MQTT decoder the way a connection does, and
//! check that every packet it accepts survives encode -> decode unchanged.
//!
//! Input layout: the first byte selects the decoder state, the rest is the
//! byte stream read from the socket.
//!
//! * bits 0-1: protocol version: 0 = `None` (before CONNECT), 1 = 3.1.1,
//!   2 or 3 = 5.0. Starting from `None`, a decoded CONNECT switches the
//!   stream to that CONNECT's version, as a connection does.
//! * bits 2-3: our Maximum Packet Size: unlimited, 1 MiB, 256 or 16 bytes
//!   (the small ones exercise the early size check on the fixed header).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use petrel::mqtt::codec::{decode, encode, encoded_len, Packet, Version};

const MAX_PACKET_SIZES: [usize; 4] = [usize::MAX, 1 << 20, 256, 16];

/// Bytes already queued in the output buffer: `encode` must append after
/// them and, on error, leave them alone.
const QUEUED: &[u8] = &[0xD0, 0x00];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let mut version = match selector & 0b11 {
        0 => None,
        1 => Some(Version::V311),
        _ => Some(Version::V5),
    };
    let max_packet_size = MAX_PACKET_SIZES[usize::from((selector >> 2) & 0b11)];

    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.len();
        match decode(&mut buf, version, max_packet_size) {
            Ok(Some(packet)) => {
                let consumed = before - buf.len();
                assert!(consumed >= 2, "a frame is at least 2 bytes");
                assert!(consumed <= max_packet_size, "frame over the maximum");
                let packet_version = match (&packet, version) {
                    (Packet::Connect(c), None) => c.version,
                    (Packet::Connect(_), Some(_)) => panic!("second CONNECT decoded"),
                    (_, None) => panic!("non-CONNECT decoded before CONNECT"),
                    (_, Some(v)) => v,
                };
                round_trip(&packet, version, packet_version);
                version = Some(packet_version);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                break;
            }
            Err(_) => break,
        }
    }
});

/// Encode `packet` for `v`; if that succeeds, decode it again (in the
/// decoder state it was decoded in) and require the same packet, and the
/// same bytes when it is encoded once more.
fn round_trip(packet: &Packet, state: Option<Version>, v: Version) {
    let mut out = BytesMut::from(QUEUED);
    let len = encoded_len(packet, v);
    if let Err(e) = encode(packet, v, &mut out) {
        assert_eq!(&out[..], QUEUED, "encode wrote bytes before failing");
        assert!(len.is_err(), "encoded_len Ok but encode failed: {e:?}");
        return;
    }
    let mut frame = out.split_off(QUEUED.len());
    assert_eq!(&out[..], QUEUED, "encode changed queued bytes");
    assert_eq!(
        len.ok(),
        Some(frame.len()),
        "encoded_len differs from encode"
    );
    let encoded = frame.clone().freeze();

    let again = match decode(&mut frame, state, usize::MAX) {
        Ok(Some(p)) => p,
        other => panic!(
            "re-encoded {packet:?} as {:02x?} ({v:?}), which decodes as {other:?}",
            &encoded[..]
        ),
    };
    assert!(
        frame.is_empty(),
        "decode left {} bytes of one frame",
        frame.len()
    );
    assert_eq!(&again, packet, "round trip changed the packet ({v:?})");

    let mut out2 = BytesMut::new();
    encode(&again, v, &mut out2).expect("re-decoded packet encodes");
    assert_eq!(&out2[..], &encoded[..], "second encoding differs");
}

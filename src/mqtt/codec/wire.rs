//! Wire primitives: the fixed header, Variable Byte Integers (spec 1.5.5),
//! UTF-8 strings (1.5.4) and binary data (1.5.6), for both directions.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};

/// Largest value a Variable Byte Integer can carry (spec 1.5.5).
pub const MAX_VARINT: usize = 268_435_455;

/// Largest string / binary field (two-byte length prefix, spec 1.5.4/1.5.6).
pub const MAX_FIELD: usize = 65_535;

/// Parsed fixed header (spec 2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type (high nibble of byte 1).
    pub packet_type: u8,
    /// Flags (low nibble of byte 1).
    pub flags: u8,
    /// Remaining length.
    pub remaining: usize,
    /// Bytes taken by the fixed header itself (2..=5).
    pub header_len: usize,
}

impl FixedHeader {
    /// Whole frame size: what Maximum Packet Size limits (spec 3.1.2.11.4).
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Parse the fixed header at the start of `buf`. `Ok(None)` means more bytes
/// are needed. The size limit is checked as soon as it can be: even a
/// partial remaining length has a lower bound, so a hostile peer cannot make
/// us wait for (and buffer) an oversized body.
pub fn parse_fixed_header(
    buf: &[u8],
    max_packet_size: usize,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut value = 0usize;
    let mut multiplier = 1usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            if i > 0 {
                // A further byte is still to come, and with a minimal encoding
                // it adds at least `multiplier` to the value.
                let lower = 1 + (i + 1) + value + multiplier;
                if lower > max_packet_size {
                    return Err(DecodeError::PacketTooLarge {
                        size: lower,
                        max: max_packet_size,
                    });
                }
            }
            return Ok(None);
        };
        value += usize::from(byte & 0x7F) * multiplier;
        if byte & 0x80 == 0 {
            // Spec 1.5.5 [MQTT-1.5.5-1]: minimum number of bytes; a trailing
            // zero byte after a continuation is a non-minimal encoding.
            if i > 0 && byte == 0 {
                return Err(DecodeError::Malformed(
                    "non-minimal remaining length (1.5.5)",
                ));
            }
            let header = FixedHeader {
                packet_type: first >> 4,
                flags: first & 0x0F,
                remaining: value,
                header_len: 2 + i,
            };
            if header.frame_len() > max_packet_size {
                return Err(DecodeError::PacketTooLarge {
                    size: header.frame_len(),
                    max: max_packet_size,
                });
            }
            return Ok(Some(header));
        }
        multiplier *= 128;
    }
    // Spec 1.5.5: at most four bytes; a fifth is malformed.
    Err(DecodeError::Malformed(
        "remaining length longer than 4 bytes (1.5.5)",
    ))
}

const TRUNCATED: DecodeError = DecodeError::Malformed("field extends past the end of the packet");

/// Cursor over one frame. Owns a `Bytes` so binary fields and payloads are
/// handed out as zero-copy slices of the frame.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u8())
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u16())
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(TRUNCATED);
        }
        Ok(self.buf.get_u32())
    }

    /// Variable Byte Integer inside a packet (property length, property id,
    /// subscription identifier). Same rules as the remaining length.
    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(DecodeError::Malformed(
                        "non-minimal variable byte integer (1.5.5)",
                    ));
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes (1.5.5)",
        ))
    }

    /// `n` raw bytes as a zero-copy slice.
    pub fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(TRUNCATED);
        }
        Ok(self.buf.split_to(n))
    }

    /// A sub-reader over the next `n` bytes (used for the property block).
    pub fn sub(&mut self, n: usize) -> Result<Reader, DecodeError> {
        self.take(n).map(Reader::new)
    }

    /// Binary Data (spec 1.5.6): two-byte length then bytes; zero-copy.
    pub fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }

    /// UTF-8 Encoded String (spec 1.5.4), validated: well-formed UTF-8, which
    /// in Rust already excludes encoded UTF-16 surrogates U+D800..U+DFFF
    /// [MQTT-1.5.4-1], and no U+0000 [MQTT-1.5.4-2]. Both are malformed.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let n = usize::from(self.u16()?);
        if self.buf.len() < n {
            return Err(TRUNCATED);
        }
        let raw = &self.buf[..n];
        let s = std::str::from_utf8(raw)
            .map_err(|_| DecodeError::Malformed("invalid UTF-8 in string (1.5.4)"))?;
        if raw.contains(&0) {
            return Err(DecodeError::Malformed("U+0000 in string (1.5.4)"));
        }
        let owned = s.to_owned();
        self.buf.advance(n);
        Ok(owned)
    }

    /// Everything left (PUBLISH payload); zero-copy.
    pub fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    /// Spec 4.13 / 1.2: bytes beyond what the packet defines are malformed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "unexpected trailing bytes in packet",
            ))
        }
    }
}

/// Encoded size of a Variable Byte Integer.
pub fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Write a Variable Byte Integer. Callers guarantee `v <= MAX_VARINT`.
pub fn put_varint(out: &mut BytesMut, mut v: usize) {
    debug_assert!(v <= MAX_VARINT);
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if v == 0 {
            return;
        }
    }
}

/// Size of a length-prefixed string or binary field, checking the limit.
pub fn field_len(n: usize) -> Result<usize, EncodeError> {
    if n > MAX_FIELD {
        Err(EncodeError::FieldTooLong)
    } else {
        Ok(2 + n)
    }
}

/// Write a length-prefixed field. Callers checked the length via `field_len`.
pub fn put_field(out: &mut BytesMut, data: &[u8]) {
    debug_assert!(data.len() <= MAX_FIELD);
    out.put_u16(data.len() as u16);
    out.put_slice(data);
}

/// Check the remaining length fits a varint and return the whole frame size.
pub fn frame_len(remaining: usize) -> Result<usize, EncodeError> {
    if remaining > MAX_VARINT {
        return Err(EncodeError::PacketTooLarge);
    }
    Ok(1 + varint_len(remaining) + remaining)
}

/// Reserve room for the frame and write the fixed header.
pub fn put_fixed_header(out: &mut BytesMut, first: u8, remaining: usize) {
    out.reserve(1 + varint_len(remaining) + remaining);
    out.put_u8(first);
    put_varint(out, remaining);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        parse_fixed_header(bytes, usize::MAX)
    }

    #[test]
    fn varint_boundaries_round_trip() {
        for v in [
            0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VARINT,
        ] {
            let mut out = BytesMut::new();
            out.put_u8(0x30);
            put_varint(&mut out, v);
            assert_eq!(out.len() - 1, varint_len(v));
            let h = header(&out).unwrap().unwrap();
            assert_eq!(h.remaining, v);
            assert_eq!(h.header_len, 1 + varint_len(v));
            let mut r = Reader::new(Bytes::copy_from_slice(&out[1..]));
            assert_eq!(r.varint().unwrap() as usize, v);
        }
    }

    #[test]
    fn five_byte_varint_is_malformed() {
        let e = header(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).unwrap_err();
        assert_eq!(e.reason_code(), 0x81);
        // Decided as soon as the fourth byte still has the continuation bit.
        assert!(header(&[0x30, 0x80, 0x80, 0x80, 0x80]).is_err());
        let mut r = Reader::new(Bytes::from_static(&[0x80, 0x80, 0x80, 0x80, 0x01]));
        assert!(r.varint().is_err());
    }

    #[test]
    fn non_minimal_varint_is_malformed() {
        assert!(header(&[0x30, 0x80, 0x00]).is_err());
        let mut r = Reader::new(Bytes::from_static(&[0x81, 0x00]));
        assert!(r.varint().is_err());
    }

    #[test]
    fn incomplete_header_waits() {
        assert_eq!(header(&[]), Ok(None));
        assert_eq!(header(&[0x30]), Ok(None));
        assert_eq!(header(&[0x30, 0x80]), Ok(None));
        assert_eq!(header(&[0x30, 0xFF, 0xFF, 0xFF]), Ok(None));
    }

    #[test]
    fn oversize_detected_from_partial_header() {
        // 0x80 0x80: remaining is at least 16384 whatever follows.
        let e = parse_fixed_header(&[0x30, 0x80, 0x80], 1000).unwrap_err();
        assert!(matches!(e, DecodeError::PacketTooLarge { .. }));
        assert_eq!(e.reason_code(), 0x95);
        // Exactly at the limit is fine: 2 header bytes + 8.
        assert!(parse_fixed_header(&[0x30, 0x08], 10).unwrap().is_some());
        assert!(parse_fixed_header(&[0x30, 0x09], 10).is_err());
    }

    #[test]
    fn strings_are_validated() {
        let mut r = Reader::new(Bytes::from_static(&[0, 2, 0xC3, 0x28]));
        assert_eq!(r.string().unwrap_err().reason_code(), 0x81);
        let mut r = Reader::new(Bytes::from_static(&[0, 3, b'a', 0, b'b']));
        assert_eq!(r.string().unwrap_err().reason_code(), 0x81);
        // U+D800 encoded as CESU-style UTF-8 is rejected as invalid UTF-8.
        let mut r = Reader::new(Bytes::from_static(&[0, 3, 0xED, 0xA0, 0x80]));
        assert_eq!(r.string().unwrap_err().reason_code(), 0x81);
        let mut r = Reader::new(Bytes::from_static(&[0, 5, b'a', b'b']));
        assert_eq!(r.string().unwrap_err().reason_code(), 0x81);
        let mut r = Reader::new(Bytes::from_static(&[0, 2, b'h', b'i', 7]));
        assert_eq!(r.string().unwrap(), "hi");
        assert!(r.finish().is_err());
    }
}

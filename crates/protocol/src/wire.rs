//! Little-endian primitives and the fixed frame header.
//!
//! The [`Reader`] never trusts a length: every length prefix is compared with
//! its cap *and* with the bytes actually left in the payload before anything
//! is allocated, with checked arithmetic throughout.

use crate::error::{ProtocolError, Result};
use crate::{HEADER_LEN, MAGIC, MAX_PACKET, PROTOCOL_VERSION};

/// The decoded fixed header of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: u16,
    pub request_id: u64,
}

/// Splits a packet into header and payload, checking magic, version and that
/// `payload_len` matches the packet exactly.
pub(crate) fn split_packet(packet: &[u8]) -> Result<(Header, &[u8])> {
    if packet.len() > MAX_PACKET {
        return Err(ProtocolError::PacketTooLarge {
            len: packet.len(),
            max: MAX_PACKET,
        });
    }
    let Some((head, payload)) = packet.split_first_chunk::<HEADER_LEN>() else {
        return Err(ProtocolError::ShortPacket { len: packet.len() });
    };
    let mut r = Reader::new(head);
    let magic = r.array::<4>("header.magic")?;
    if magic != MAGIC {
        return Err(ProtocolError::BadMagic { found: magic });
    }
    let version = r.u16("header.version")?;
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion {
            field: "header.version",
            found: version.into(),
            expected: PROTOCOL_VERSION,
        });
    }
    let kind = r.u16("header.kind")?;
    let request_id = r.u64("header.request_id")?;
    let declared = r.u32("header.payload_len")?;
    if usize::try_from(declared).ok() != Some(payload.len()) {
        return Err(ProtocolError::PayloadLenMismatch {
            declared,
            actual: payload.len(),
        });
    }
    Ok((Header { kind, request_id }, payload))
}

/// Builds a packet: header followed by `payload`.
pub(crate) fn build_packet(kind: u16, request_id: u64, payload: &[u8]) -> Result<Vec<u8>> {
    let len = HEADER_LEN
        .checked_add(payload.len())
        .filter(|&l| l <= MAX_PACKET)
        .ok_or(ProtocolError::PacketTooLarge {
            len: payload.len().saturating_add(HEADER_LEN),
            max: MAX_PACKET,
        })?;
    let mut w = Writer::with_capacity(len);
    w.bytes_raw(&MAGIC);
    w.u16(PROTOCOL_VERSION);
    w.u16(kind);
    w.u64(request_id);
    // Cannot fail: len <= MAX_PACKET.
    w.u32(payload.len() as u32);
    w.bytes_raw(payload);
    Ok(w.into_inner())
}

/// Bounds-checked little-endian reader over a payload.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn truncated(&self, field: &str, needed: u64) -> ProtocolError {
        ProtocolError::Truncated {
            field: field.to_owned(),
            needed,
            remaining: self.buf.len(),
        }
    }

    pub fn take(&mut self, field: &str, n: u64) -> Result<&'a [u8]> {
        let len = usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.buf.len())
            .ok_or_else(|| self.truncated(field, n))?;
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let bytes = self.take(field, N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub fn bool(&mut self, field: &str) -> Result<bool> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(ProtocolError::InvalidValue {
                field: field.to_owned(),
                value: v.into(),
                expected: "0 or 1",
            }),
        }
    }

    /// `u32` length prefix, then that many bytes; the length must be `<= max`.
    pub fn bytes(&mut self, field: &str, max: usize) -> Result<&'a [u8]> {
        let len = self.u32(field)?;
        if u64::from(len) > max as u64 {
            return Err(ProtocolError::TooLong {
                field: field.to_owned(),
                len: len.into(),
                max,
            });
        }
        self.take(field, len.into())
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, field: &str, max: usize) -> Result<&'a str> {
        let bytes = self.bytes(field, max)?;
        std::str::from_utf8(bytes).map_err(|e| ProtocolError::InvalidUtf8 {
            field: field.to_owned(),
            valid_up_to: e.valid_up_to(),
        })
    }

    /// A `u32` element count, checked against `max` and against the bytes
    /// left (each element needs at least `min_elem_size` bytes), so a hostile
    /// count can never cause a large allocation.
    pub fn count(&mut self, field: &str, max: usize, min_elem_size: usize) -> Result<usize> {
        let n = self.u32(field)?;
        if u64::from(n) > max as u64 {
            return Err(ProtocolError::TooMany {
                field: field.to_owned(),
                count: n.into(),
                max,
            });
        }
        let needed = u64::from(n)
            .checked_mul(min_elem_size as u64)
            .ok_or_else(|| self.truncated(field, u64::MAX))?;
        if needed > self.buf.len() as u64 {
            return Err(self.truncated(field, needed));
        }
        // n <= max, and max is a usize.
        Ok(n as usize)
    }

    /// `u8` tag: 0 = `None`, 1 = `Some`.
    pub fn option_tag(&mut self, field: &str) -> Result<bool> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(ProtocolError::InvalidValue {
                field: field.to_owned(),
                value: v.into(),
                expected: "0 (None) or 1 (Some)",
            }),
        }
    }
}

/// Little-endian writer. Length prefixes that do not fit are reported as
/// [`ProtocolError::TooLong`]/[`ProtocolError::TooMany`] by the callers'
/// `len32` checks; the packet size is checked in [`build_packet`].
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub fn bytes_raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.bytes_raw(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.bytes_raw(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.bytes_raw(&v.to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// Writes a `u32` length/count prefix, failing if `n > max`.
    pub fn len32(&mut self, field: &str, n: usize, max: usize) -> Result<()> {
        if n > max {
            return Err(ProtocolError::TooLong {
                field: field.to_owned(),
                len: n as u64,
                max,
            });
        }
        let n = u32::try_from(n).map_err(|_| ProtocolError::TooLong {
            field: field.to_owned(),
            len: n as u64,
            max: u32::MAX as usize,
        })?;
        self.u32(n);
        Ok(())
    }

    pub fn bytes(&mut self, field: &str, b: &[u8], max: usize) -> Result<()> {
        self.len32(field, b.len(), max)?;
        self.bytes_raw(b);
        Ok(())
    }

    pub fn str(&mut self, field: &str, s: &str, max: usize) -> Result<()> {
        self.bytes(field, s.as_bytes(), max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u16, kind: u16, payload_len: u32) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes_raw(&MAGIC);
        w.u16(version);
        w.u16(kind);
        w.u64(7);
        w.u32(payload_len);
        w.into_inner()
    }

    #[test]
    fn header_round_trip() {
        let p = build_packet(0x8001, 42, b"abc").unwrap();
        assert_eq!(p.len(), HEADER_LEN + 3);
        let (h, payload) = split_packet(&p).unwrap();
        assert_eq!(
            h,
            Header {
                kind: 0x8001,
                request_id: 42
            }
        );
        assert_eq!(payload, b"abc");
    }

    #[test]
    fn payload_len_near_u32_max_is_rejected() {
        let mut p = header(PROTOCOL_VERSION, 1, u32::MAX);
        p.extend_from_slice(&[0; 16]);
        let err = split_packet(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "header payload_len = 4294967295 does not match the 16 payload bytes in the packet"
        );
    }

    #[test]
    fn payload_len_mismatch_both_ways() {
        let mut p = header(PROTOCOL_VERSION, 1, 3);
        p.extend_from_slice(&[0; 4]);
        assert!(matches!(
            split_packet(&p),
            Err(ProtocolError::PayloadLenMismatch {
                declared: 3,
                actual: 4
            })
        ));
        let mut p = header(PROTOCOL_VERSION, 1, 5);
        p.extend_from_slice(&[0; 4]);
        assert!(matches!(
            split_packet(&p),
            Err(ProtocolError::PayloadLenMismatch {
                declared: 5,
                actual: 4
            })
        ));
    }

    #[test]
    fn short_bad_magic_wrong_version() {
        assert!(matches!(
            split_packet(&[]),
            Err(ProtocolError::ShortPacket { len: 0 })
        ));
        assert!(matches!(
            split_packet(&header(1, 1, 0)[..HEADER_LEN - 1]),
            Err(ProtocolError::ShortPacket { .. })
        ));
        let mut p = header(PROTOCOL_VERSION, 1, 0);
        p[0] = b'X';
        assert!(matches!(
            split_packet(&p),
            Err(ProtocolError::BadMagic { .. })
        ));
        let p = header(PROTOCOL_VERSION + 1, 1, 0);
        let err = split_packet(&p).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "header.version: protocol version {} unsupported (expected {PROTOCOL_VERSION})",
                PROTOCOL_VERSION + 1
            )
        );
        let p = header(0, 1, 0);
        assert!(matches!(
            split_packet(&p),
            Err(ProtocolError::UnsupportedVersion { found: 0, .. })
        ));
    }

    #[test]
    fn oversized_packet_rejected_both_ways() {
        let payload = vec![0u8; MAX_PACKET];
        assert!(matches!(
            build_packet(1, 1, &payload),
            Err(ProtocolError::PacketTooLarge { .. })
        ));
        let mut p = header(PROTOCOL_VERSION, 1, (MAX_PACKET - HEADER_LEN + 1) as u32);
        p.resize(MAX_PACKET + 1, 0);
        assert!(matches!(
            split_packet(&p),
            Err(ProtocolError::PacketTooLarge { .. })
        ));
        // exactly MAX_PACKET is fine
        let payload = vec![0u8; MAX_PACKET - HEADER_LEN];
        let p = build_packet(1, 1, &payload).unwrap();
        assert_eq!(split_packet(&p).unwrap().1.len(), payload.len());
    }

    #[test]
    fn hostile_length_prefixes() {
        // String length u32::MAX with 4 bytes left.
        let mut w = Writer::new();
        w.u32(u32::MAX);
        w.bytes_raw(b"abcd");
        let buf = w.into_inner();
        let err = Reader::new(&buf).str("Error.message", 4096).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Error.message: length 4294967295 exceeds the limit of 4096 bytes"
        );
        // Within the cap but beyond the payload.
        let mut w = Writer::new();
        w.u32(100);
        w.bytes_raw(b"abcd");
        let buf = w.into_inner();
        let err = Reader::new(&buf).str("f", 4096).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f: needs 100 bytes but only 4 remain in the payload"
        );
        // Element count huge, and count within cap but too big for payload.
        let buf = u32::MAX.to_le_bytes();
        assert!(matches!(
            Reader::new(&buf).count("f", 8, 4),
            Err(ProtocolError::TooMany {
                count: 0xffff_ffff,
                max: 8,
                ..
            })
        ));
        let buf = 8u32.to_le_bytes();
        assert!(matches!(
            Reader::new(&buf).count("f", 8, 4),
            Err(ProtocolError::Truncated {
                needed: 32,
                remaining: 0,
                ..
            })
        ));
        // take() with a length near 2^64.
        assert!(matches!(
            Reader::new(b"ab").take("f", u64::MAX - 1),
            Err(ProtocolError::Truncated { .. })
        ));
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let mut w = Writer::new();
        w.bytes("s", b"ok\xff\xfe", 10).unwrap();
        let buf = w.into_inner();
        let err = Reader::new(&buf).str("Error.message", 4096).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Error.message: invalid UTF-8 (valid up to byte 2)"
        );
    }

    #[test]
    fn bool_and_option_tags_are_strict() {
        assert!(Reader::new(&[2]).bool("b").is_err());
        assert!(Reader::new(&[2]).option_tag("o").is_err());
        assert!(Reader::new(&[1]).bool("b").unwrap());
    }
}

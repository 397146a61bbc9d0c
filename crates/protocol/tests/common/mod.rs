//! Helpers to craft raw (possibly hostile) packets.
#![allow(dead_code)]

use caffe_sandbox_protocol::{MAGIC, PROTOCOL_VERSION};

/// A payload builder mirroring the wire primitives.
#[derive(Default)]
pub struct Payload(pub Vec<u8>);

impl Payload {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// `u32` length + bytes.
    pub fn bytes(self, b: &[u8]) -> Self {
        self.u32(b.len() as u32).raw(b)
    }
    pub fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }
    pub fn dims(self, dims: &[u32]) -> Self {
        let mut p = self.u32(dims.len() as u32);
        for &d in dims {
            p = p.u32(d);
        }
        p
    }
}

/// Header with an explicit payload_len followed by `payload`.
pub fn packet_with_len(kind: u16, request_id: u64, payload_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    p.extend_from_slice(&kind.to_le_bytes());
    p.extend_from_slice(&request_id.to_le_bytes());
    p.extend_from_slice(&payload_len.to_le_bytes());
    p.extend_from_slice(payload);
    p
}

/// A well-formed header for `payload`.
pub fn packet(kind: u16, request_id: u64, payload: &Payload) -> Vec<u8> {
    packet_with_len(kind, request_id, payload.0.len() as u32, &payload.0)
}

pub const LOAD_MODEL: u16 = 0x0001;
pub const INFER: u16 = 0x0002;
pub const SHUTDOWN: u16 = 0x0003;
pub const HELLO: u16 = 0x8001;
pub const LOADED: u16 = 0x8002;
pub const INFER_RESULT: u16 = 0x8003;
pub const ERROR: u16 = 0x8004;

/// An `InferResult` payload with the given outputs.
pub fn infer_result(outputs: &[(&str, &[u32])]) -> Payload {
    let mut p = Payload::new().u32(outputs.len() as u32);
    for (name, dims) in outputs {
        p = p.str(name).dims(dims);
    }
    p
}

/// An `Error` payload.
pub fn error_payload(kind: u8, message: &[u8], layer: Option<&[u8]>) -> Payload {
    let p = Payload::new().u8(kind).bytes(message);
    match layer {
        None => p.u8(0),
        Some(l) => p.u8(1).bytes(l),
    }
}

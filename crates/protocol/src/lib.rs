//! Supervisor↔worker protocol of caffe-sandbox.
//!
//! The supervisor and the sandboxed worker talk over one
//! `socketpair(AF_UNIX, SOCK_SEQPACKET)`; **one message is one packet**, and
//! file descriptors (model files, tensors in sealed memfds, the seccomp
//! listener) travel as `SCM_RIGHTS` ancillary data of that packet. The
//! supervisor treats everything the worker sends as hostile: the decoder
//! validates every field with checked arithmetic and hard caps *before*
//! anything is allocated or used.
//!
//! # Wire format
//! Every packet is a fixed 20-byte header followed by the payload; all
//! integers are little-endian:
//!
//! | offset | size | field | rule |
//! |---|---|---|---|
//! | 0 | 4 | magic | `b"CFSB"` ([`MAGIC`]) |
//! | 4 | 2 | version | must be [`PROTOCOL_VERSION`] (1) |
//! | 6 | 2 | kind | a [`MessageKind`] of the direction the receiver accepts |
//! | 8 | 8 | request_id | correlates replies with requests |
//! | 16 | 4 | payload_len | must equal packet length − 20 exactly |
//!
//! The payload layout of each kind is documented in [`codec`](crate::decode)
//! terms on [`encode`]'s module; in short, strings are `u32` length + UTF-8,
//! lists are `u32` count + items, options are a `u8` 0/1 tag, shapes are a
//! `u32` axis count + `u32` dims. No trailing bytes are allowed. The codec is
//! hand-written rather than serde/postcard so that each length prefix is
//! checked against its cap and against the remaining bytes at the point it
//! is read, and each error names the field.
//!
//! Length prefixes are `u32`, so a "length near 2^64" cannot even be
//! expressed; a `u32::MAX` prefix fails its cap (or the remaining-bytes
//! check) before anything is allocated.
//!
//! # Caps
//! | what | cap | where |
//! |---|---|---|
//! | packet (header + payload) | [`MAX_PACKET`] = 64 KiB | larger packets arrive with `MSG_TRUNC` and are refused |
//! | fds per packet | [`MAX_FDS_PER_MESSAGE`] = 8 | more → `MSG_CTRUNC`, refused; all fds closed |
//! | fds per kind | exact: `LoadModel` 2, `Infer` one per input, `InferResult` one per output, `Hello` 1 iff `seccomp_listener`, others 0 | any mismatch refused, fds closed |
//! | free text (`Error.message`, `Error.layer`, `Hello.caffe_version`) | [`MAX_TEXT_LEN`] = 4 KiB, strict UTF-8, then [`sanitize_text`] | |
//! | names (blob/tensor/input) | [`MAX_NAME_LEN`] = 256 bytes, non-empty, no control/escape/bidi chars, unique within a list | |
//! | `LoadModel.preprocess` | [`MAX_PREPROCESS_LEN`] = 16 KiB | |
//! | `Loaded.inputs`/`outputs` | [`MAX_BLOBS`] = 256 each | |
//! | `Infer.inputs`, `InferResult.outputs` | [`MAX_FDS_PER_MESSAGE`] | one fd each |
//! | shapes | [`Limits`]: ≤ 8 axes, each dim in `1..=65536`, ≤ 2^26 elements, checked product | decoder and tensor readers |
//! | tensor data | sealed memfd, size == `product(dims) * 4`, finite values | [`read_sealed_tensor`] |
//!
//! Strings with invalid UTF-8 are *rejected*, not lossily converted (see
//! [`text`](crate::sanitize_text)): only a broken or compromised worker can
//! produce them.
//!
//! # Using it
//! ```no_run
//! use caffe_sandbox_protocol::*;
//! use std::time::Duration;
//! # fn main() -> Result<(), ProtocolError> {
//! let (sup, _worker) = channel_pair()?;
//! let (hello, fds) = sup.recv(Some(Duration::from_secs(10)))?;
//! let FromWorker::Hello { .. } = hello.expect_reply(HELLO_REQUEST_ID)? else {
//!     return Err(ProtocolError::Closed); // the supervisor would kill the worker
//! };
//! # drop(fds);
//! sup.send(&Message::new(1, ToWorker::Shutdown), &[])?;
//! # Ok(()) }
//! ```

mod channel;
mod codec;
mod error;
mod limits;
mod memfd;
mod message;
mod text;
mod wire;

pub use channel::{
    channel_pair, socketpair, Channel, Received, Role, SupervisorChannel, SupervisorSide,
    WorkerChannel, WorkerSide,
};
pub use codec::{decode, decode_from_worker, decode_to_worker, encode};
pub use error::{ProtocolError, Result};
pub use limits::Limits;
pub use memfd::{
    create_sealed_memfd, read_sealed_bytes, read_sealed_tensor, Tensor, REQUIRED_SEALS,
};
pub use message::{
    BlobInfo, Body, Direction, FdSlot, FromWorker, InputSpec, Message, MessageKind, TensorHeader,
    ToWorker, WorkerErrorKind,
};
pub use text::sanitize_text;

/// First four bytes of every packet.
pub const MAGIC: [u8; 4] = *b"CFSB";
/// The protocol version in every header and in `Hello`.
pub const PROTOCOL_VERSION: u16 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 20;
/// Largest packet (header + payload) accepted or sent.
pub const MAX_PACKET: usize = 64 * 1024;
/// Most fds attached to one packet.
pub const MAX_FDS_PER_MESSAGE: usize = 8;
/// Longest free-text string (bytes, before sanitizing).
pub const MAX_TEXT_LEN: usize = 4096;
/// Longest blob/tensor name (bytes).
pub const MAX_NAME_LEN: usize = 256;
/// Longest `LoadModel.preprocess` blob.
pub const MAX_PREPROCESS_LEN: usize = 16 * 1024;
/// Most blobs in each list of `Loaded`.
pub const MAX_BLOBS: usize = 256;
/// Request id of the unsolicited `Hello`; the supervisor numbers its requests
/// from 1.
pub const HELLO_REQUEST_ID: u64 = 0;

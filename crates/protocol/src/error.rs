//! [`ProtocolError`]: every way a packet, a message or a tensor can be refused.
//!
//! Display strings name the field and the limit that was violated, e.g.
//! `output 'prob': dim 3 = 0 outside 1..=65536`. Any peer-supplied name that
//! appears in a message has passed name validation (no control characters),
//! or has been run through [`crate::sanitize_text`] and shortened, so the
//! errors are safe to print on a terminal or write to a log.

use std::io;

use crate::message::{Direction, MessageKind};
use crate::HEADER_LEN;

/// Errors of the channel, the codec and the shared-memory tensor readers.
///
/// Every variant other than [`ProtocolError::Io`], [`ProtocolError::Closed`]
/// and [`ProtocolError::Timeout`] means the peer broke the protocol (or, on
/// the sending side, that the caller tried to send something the peer would
/// refuse). The supervisor should treat a violation by the worker as fatal
/// for that worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A system call on the channel or on a memfd failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// The peer closed its end (0-byte read with the peer hung up, or EPIPE
    /// on send).
    #[error("the peer closed the channel")]
    Closed,

    /// No packet arrived before the timeout or deadline.
    #[error("timed out waiting for the peer")]
    Timeout,

    /// The fd handed to [`crate::Channel::new`] is not a `SOCK_SEQPACKET`
    /// unix socket, so message boundaries would not be preserved.
    #[error("channel fd is not an AF_UNIX SOCK_SEQPACKET socket")]
    NotSeqpacket,

    /// The packet is larger than [`crate::MAX_PACKET`]. It was discarded by
    /// the kernel (MSG_TRUNC) and its fds were closed.
    #[error("packet of {len} bytes exceeds MAX_PACKET = {max} bytes")]
    PacketTooLarge {
        /// Length of the packet as reported by the kernel (or to be sent).
        len: usize,
        /// The cap.
        max: usize,
    },

    /// The ancillary data did not fit (MSG_CTRUNC): more fds than
    /// [`crate::MAX_FDS_PER_MESSAGE`] were attached. The packet was discarded
    /// and every fd that did arrive was closed.
    #[error("control data truncated: more than MAX_FDS_PER_MESSAGE = {max} fds attached")]
    ControlTruncated {
        /// The cap.
        max: usize,
    },

    /// More fds than [`crate::MAX_FDS_PER_MESSAGE`] were received or are to
    /// be sent. Received fds were closed.
    #[error("{got} fds exceed MAX_FDS_PER_MESSAGE = {max}")]
    TooManyFds {
        /// Number of fds.
        got: usize,
        /// The cap.
        max: usize,
    },

    /// The packet is shorter than the fixed header.
    #[error("packet of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    ShortPacket {
        /// Length of the packet.
        len: usize,
    },

    /// The first four bytes are not `b"CFSB"`.
    #[error("bad magic {found:02x?}, expected \"CFSB\"")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },

    /// The header (or `Hello.protocol_version`) names another version.
    #[error("{field}: protocol version {found} unsupported (expected {expected})")]
    UnsupportedVersion {
        /// Where the version was found.
        field: &'static str,
        /// The version found.
        found: u64,
        /// [`crate::PROTOCOL_VERSION`].
        expected: u16,
    },

    /// `payload_len` in the header disagrees with the packet length.
    #[error(
        "header payload_len = {declared} does not match the {actual} payload bytes in the packet"
    )]
    PayloadLenMismatch {
        /// `payload_len` from the header.
        declared: u32,
        /// Bytes after the header in the packet.
        actual: usize,
    },

    /// The `kind` field names no message.
    #[error("unknown message kind {0:#06x}")]
    UnknownKind(u16),

    /// A known message kind that does not travel in this direction (e.g. a
    /// worker sending `Shutdown` to the supervisor).
    #[error("message kind {kind} received, but this end only accepts {expected} messages")]
    WrongDirection {
        /// The kind received.
        kind: MessageKind,
        /// The direction the receiver accepts.
        expected: Direction,
    },

    /// A field runs past the end of the payload.
    #[error("{field}: needs {needed} bytes but only {remaining} remain in the payload")]
    Truncated {
        /// The field being decoded.
        field: String,
        /// Bytes it needs (from a length prefix or its fixed size).
        needed: u64,
        /// Bytes left.
        remaining: usize,
    },

    /// The payload has bytes after the last field.
    #[error("{kind}: {count} unexpected trailing bytes after the last field")]
    TrailingBytes {
        /// The message kind.
        kind: MessageKind,
        /// Number of extra bytes.
        count: usize,
    },

    /// A string or byte field is longer than its cap.
    #[error("{field}: length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// The field.
        field: String,
        /// The declared length (possibly a hostile length prefix).
        len: u64,
        /// The cap.
        max: usize,
    },

    /// A list has more entries than its cap.
    #[error("{field}: {count} entries exceed the limit of {max}")]
    TooMany {
        /// The field.
        field: String,
        /// The declared count.
        count: u64,
        /// The cap.
        max: usize,
    },

    /// A string field is not valid UTF-8 (strings are rejected, never lossily
    /// converted: a peer that sends invalid UTF-8 is broken or hostile).
    #[error("{field}: invalid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// The field.
        field: String,
        /// Offset of the first invalid byte.
        valid_up_to: usize,
    },

    /// A blob/tensor name is empty or contains control, escape or
    /// bidirectional-formatting characters.
    #[error("{field}: invalid name: {reason}")]
    InvalidName {
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Two entries of one list carry the same name.
    #[error("{field}: duplicate name '{name}'")]
    DuplicateName {
        /// The field.
        field: String,
        /// The (validated) name.
        name: String,
    },

    /// An enum tag, bool or fd slot holds a value outside its range.
    #[error("{field}: invalid value {value} (expected {expected})")]
    InvalidValue {
        /// The field.
        field: String,
        /// The value found.
        value: u64,
        /// What was allowed.
        expected: &'static str,
    },

    /// A shape has more axes than [`crate::Limits::max_axes`].
    #[error("{what}: {axes} axes exceed the limit of {max}")]
    TooManyAxes {
        /// The blob or tensor.
        what: String,
        /// Declared number of axes.
        axes: u64,
        /// The cap.
        max: usize,
    },

    /// A dimension is zero or larger than [`crate::Limits::max_dim`]
    /// (negative values sent as huge unsigned numbers land here too).
    #[error("{what}: dim {axis} = {value} outside 1..={max}")]
    DimOutOfRange {
        /// The blob or tensor.
        what: String,
        /// Index of the axis.
        axis: usize,
        /// The value found.
        value: u64,
        /// [`crate::Limits::max_dim`].
        max: u32,
    },

    /// The product of the dims (or the byte size) overflows `usize`.
    #[error("{what}: element count of shape {dims:?} overflows")]
    ShapeOverflow {
        /// The blob or tensor.
        what: String,
        /// The shape.
        dims: Vec<u64>,
    },

    /// The product of the dims exceeds [`crate::Limits::max_elements`].
    #[error("{what}: {elements} elements exceed the limit of {max}")]
    TooManyElements {
        /// The blob or tensor.
        what: String,
        /// Number of elements.
        elements: u64,
        /// The cap.
        max: usize,
    },

    /// The shared-memory data does not have the length the shape requires.
    #[error("{what}: memfd holds {actual} bytes, shape requires {expected}")]
    DataSizeMismatch {
        /// The tensor.
        what: String,
        /// Size of the memfd (or bytes actually read, or data length).
        actual: u64,
        /// `product(dims) * 4`.
        expected: u64,
    },

    /// A NaN or infinity in a tensor while [`crate::Limits::reject_non_finite`]
    /// is set.
    #[error("{what}: element {index} is {value} (non-finite values are rejected)")]
    NonFinite {
        /// The tensor.
        what: String,
        /// Flat index of the first offending element.
        index: usize,
        /// The value.
        value: f32,
    },

    /// The fd is not a sealable memfd (F_GET_SEALS failed) or not a regular
    /// file.
    #[error("{what}: fd is not a sealed memfd: {reason}")]
    NotMemfd {
        /// The tensor or blob.
        what: String,
        /// Why.
        reason: String,
    },

    /// The memfd lacks some of `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
    /// F_SEAL_SEAL`, so the peer could still change or truncate it.
    #[error("{what}: memfd is missing seals {missing}")]
    MissingSeals {
        /// The tensor or blob.
        what: String,
        /// The missing seals, e.g. `F_SEAL_SHRINK|F_SEAL_WRITE`.
        missing: String,
    },

    /// The number of fds attached does not match what the message kind
    /// expects. All received fds were closed.
    #[error("{kind} carries {got} fds but expects {expected}")]
    UnexpectedFds {
        /// The message kind.
        kind: MessageKind,
        /// Fds the kind expects.
        expected: usize,
        /// Fds attached.
        got: usize,
    },

    /// [`crate::Message::expect_reply`]: the reply is for another request
    /// (late, duplicate or forged).
    #[error("reply carries request id {got}, expected {expected}")]
    UnexpectedRequestId {
        /// The id the caller waits for.
        expected: u64,
        /// The id received.
        got: u64,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;

impl From<rustix::io::Errno> for ProtocolError {
    fn from(e: rustix::io::Errno) -> Self {
        ProtocolError::Io(e.into())
    }
}

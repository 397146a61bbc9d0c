//! The messages of the protocol and their envelope.

use std::fmt;

use crate::error::{ProtocolError, Result};

/// Which way a message kind travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Supervisor → worker ([`ToWorker`]).
    ToWorker,
    /// Worker → supervisor ([`FromWorker`]).
    FromWorker,
    /// Supervisor → fork server, and supervisor → freshly forked worker before its `Hello` ([`ToZygote`]).
    ToZygote,
    /// Fork server → supervisor ([`FromZygote`]).
    FromZygote,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::ToWorker => "supervisor->worker",
            Direction::FromWorker => "worker->supervisor",
            Direction::ToZygote => "supervisor->zygote",
            Direction::FromZygote => "zygote->supervisor",
        })
    }
}

/// The `kind` field of the header. The high bit is set for kinds that travel
/// towards the supervisor; bit 4 (`0x0010`) marks the fork-server (zygote)
/// kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MessageKind {
    /// [`ToWorker::LoadModel`].
    LoadModel = 0x0001,
    /// [`ToWorker::Infer`].
    Infer = 0x0002,
    /// [`ToWorker::Shutdown`].
    Shutdown = 0x0003,
    /// [`FromWorker::Hello`].
    Hello = 0x8001,
    /// [`FromWorker::Loaded`].
    Loaded = 0x8002,
    /// [`FromWorker::InferResult`].
    InferResult = 0x8003,
    /// [`FromWorker::Error`].
    Error = 0x8004,
    /// [`ToZygote::Fork`].
    Fork = 0x0011,
    /// [`ToZygote::InstallSeccomp`].
    InstallSeccomp = 0x0012,
    /// [`FromZygote::Ready`].
    ZygoteReady = 0x8011,
    /// [`FromZygote::Forked`].
    Forked = 0x8012,
    /// [`FromZygote::ChildExited`].
    ChildExited = 0x8013,
    /// [`FromZygote::ForkFailed`].
    ForkFailed = 0x8014,
}

impl MessageKind {
    /// All kinds, in code order.
    pub const ALL: [MessageKind; 13] = [
        MessageKind::LoadModel,
        MessageKind::Infer,
        MessageKind::Shutdown,
        MessageKind::Fork,
        MessageKind::InstallSeccomp,
        MessageKind::Hello,
        MessageKind::Loaded,
        MessageKind::InferResult,
        MessageKind::Error,
        MessageKind::ZygoteReady,
        MessageKind::Forked,
        MessageKind::ChildExited,
        MessageKind::ForkFailed,
    ];

    /// The wire code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The kind for a wire code, if any.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The direction this kind travels in.
    pub fn direction(self) -> Direction {
        match (self.code() & 0x8000 != 0, self.code() & 0x0010 != 0) {
            (false, false) => Direction::ToWorker,
            (true, false) => Direction::FromWorker,
            (false, true) => Direction::ToZygote,
            (true, true) => Direction::FromZygote,
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Index of an fd among the fds attached to a message.
///
/// The decoder guarantees that every slot of a received message is
/// `< fds.len()` and that the slots of one message are distinct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdSlot(pub u8);

impl FdSlot {
    /// The index into the `Vec<OwnedFd>` returned with the message.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Where an input's bytes lie in the worker's input arena (see [`crate::InputArena`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaRange {
    /// Byte offset into the arena.
    pub offset: u64,
    /// Length in bytes (`offset + len` does not overflow; the worker checks it against the arena's size).
    pub len: u64,
}

/// One input of [`ToWorker::Infer`]; its bytes lie in the worker's input arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    /// Raw data: `product(dims)` little-endian `f32`s (`at.len` is exactly `product(dims) * 4`; read it with
    /// [`crate::tensor_from_le_bytes`]).
    Tensor {
        /// Input blob name.
        name: String,
        /// Shape.
        dims: Vec<u32>,
        /// The data.
        at: ArenaRange,
    },
    /// Encoded JPEG/PNG bytes, decoded and preprocessed in the worker.
    EncodedImage {
        /// Input blob name.
        name: String,
        /// The encoded bytes.
        at: ArenaRange,
    },
}

impl InputSpec {
    /// The input blob name.
    pub fn name(&self) -> &str {
        match self {
            InputSpec::Tensor { name, .. } | InputSpec::EncodedImage { name, .. } => name,
        }
    }

    /// Where its bytes are.
    pub fn at(&self) -> ArenaRange {
        match self {
            InputSpec::Tensor { at, .. } | InputSpec::EncodedImage { at, .. } => *at,
        }
    }
}

/// Supervisor → worker messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    /// Load a net. Carries exactly 2 fds (read-only memfds or files).
    LoadModel {
        /// Slot of the `deploy.prototxt` fd.
        net: FdSlot,
        /// Slot of the `.caffemodel` fd.
        weights: FdSlot,
        /// Preprocessing configuration, opaque to this crate, at most
        /// [`crate::MAX_PREPROCESS_LEN`] bytes.
        preprocess: Option<Vec<u8>>,
    },
    /// Run one forward pass on inputs placed in the input arena; at most
    /// [`crate::MAX_FDS_PER_MESSAGE`] inputs. Carries one fd (a new arena, read-only, replacing the previous one)
    /// when `new_arena`, else none.
    Infer {
        /// The inputs.
        inputs: Vec<InputSpec>,
        /// Whether the attached fd is a new input arena (the first request always brings one).
        new_arena: bool,
        /// Worker-side time budget in milliseconds (0 = none); the
        /// supervisor enforces its own deadline regardless.
        deadline_ms: u32,
    },
    /// Exit cleanly. No fds.
    Shutdown,
}

/// Name and shape of a net input or output blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Blob name (validated: see [`crate::MAX_NAME_LEN`]).
    pub name: String,
    /// Shape (validated against [`crate::Limits`]).
    pub dims: Vec<u32>,
}

/// Name and shape of an output tensor of [`FromWorker::InferResult`]; its
/// data is in the matching sealed memfd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorHeader {
    /// Output blob name (validated: see [`crate::MAX_NAME_LEN`]).
    pub name: String,
    /// Shape (validated against [`crate::Limits`]).
    pub dims: Vec<u32>,
}

/// Category of a worker-side failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum WorkerErrorKind {
    /// The net definition was refused or could not be built.
    BadModel = 1,
    /// The weights could not be loaded or do not match.
    BadWeights = 2,
    /// An input is missing, misnamed or has the wrong shape.
    BadInput = 3,
    /// Caffe reported a failed CHECK (caught in the shim).
    CaffeCheckFailed = 4,
    /// An encoded image could not be decoded.
    ImageDecode = 5,
    /// A feature the worker does not support.
    Unsupported = 6,
    /// Anything else.
    Internal = 7,
}

impl WorkerErrorKind {
    /// All kinds, in code order.
    pub const ALL: [WorkerErrorKind; 7] = [
        WorkerErrorKind::BadModel,
        WorkerErrorKind::BadWeights,
        WorkerErrorKind::BadInput,
        WorkerErrorKind::CaffeCheckFailed,
        WorkerErrorKind::ImageDecode,
        WorkerErrorKind::Unsupported,
        WorkerErrorKind::Internal,
    ];

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind for a wire code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl fmt::Display for WorkerErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Worker → supervisor messages. Every string in a decoded `FromWorker` is
/// safe to print: names are validated, free text is sanitized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromWorker {
    /// First message, sent with [`crate::HELLO_REQUEST_ID`] after the worker
    /// installed its seccomp filter. Carries 1 fd (the seccomp
    /// user-notification listener) iff `seccomp_listener`.
    Hello {
        /// Must equal [`crate::PROTOCOL_VERSION`].
        protocol_version: u16,
        /// The worker's pid inside its pid namespace.
        worker_pid_in_ns: u32,
        /// Whether a listener fd is attached.
        seccomp_listener: bool,
        /// Caffe version string (sanitized free text).
        caffe_version: String,
    },
    /// Reply to `LoadModel`. No fds.
    Loaded {
        /// Net inputs (at most [`crate::MAX_BLOBS`]).
        inputs: Vec<BlobInfo>,
        /// Net outputs (at most [`crate::MAX_BLOBS`]).
        outputs: Vec<BlobInfo>,
    },
    /// Reply to `Infer`. One sealed memfd per output, in order; at most
    /// [`crate::MAX_FDS_PER_MESSAGE`] outputs.
    InferResult {
        /// The outputs.
        outputs: Vec<TensorHeader>,
    },
    /// Failure reply to any request. No fds.
    Error {
        /// Category.
        kind: WorkerErrorKind,
        /// Sanitized message.
        message: String,
        /// Sanitized name of the layer involved, if known.
        layer: Option<String>,
    },
}

/// Supervisor → fork server (zygote) messages, on the zygote's control
/// channel; [`ToZygote::InstallSeccomp`] instead travels on a freshly forked
/// worker's own channel, as the only message it accepts before its `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToZygote {
    /// Fork one worker. Carries exactly 2 fds: the worker's end of its new
    /// channel, then the write end of its stderr pipe.
    Fork,
    /// The seccomp programs compiled for this worker (its pid pinned).
    /// Carries exactly 1 fd (a sealed memfd).
    InstallSeccomp,
}

/// How a forked worker ended, as reported by the zygote that reaped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    /// Normal exit with this code (0..=255).
    Exited(u8),
    /// Killed by this signal (1..=64).
    Signaled(u8),
}

/// Fork server (zygote) → supervisor messages. `Ready` is unsolicited
/// ([`crate::HELLO_REQUEST_ID`]); `Forked`/`ForkFailed` answer a `Fork` with
/// its id; `ChildExited` is sent later with the id of the `Fork` that made
/// the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromZygote {
    /// Initialised and waiting for `Fork`. No fds.
    Ready {
        /// Must equal [`crate::PROTOCOL_VERSION`].
        protocol_version: u16,
        /// The zygote's pid inside its pid namespace.
        pid_in_ns: u32,
        /// Caffe version string (sanitized free text).
        caffe_version: String,
    },
    /// The child exists. Carries exactly 1 fd: a pidfd of the child.
    Forked {
        /// The child's pid inside the zygote's pid namespace (≥ 2).
        pid_in_ns: u32,
    },
    /// The child of that `Fork` ended and was reaped. No fds.
    ChildExited {
        /// The child's pid inside the pid namespace.
        pid_in_ns: u32,
        /// How it ended.
        status: ChildStatus,
    },
    /// The fork failed. No fds.
    ForkFailed {
        /// Sanitized message.
        message: String,
    },
}

impl ToZygote {
    /// The message kind.
    pub fn kind(&self) -> MessageKind {
        <Self as Body>::kind(self)
    }
}

impl FromZygote {
    /// The message kind.
    pub fn kind(&self) -> MessageKind {
        <Self as Body>::kind(self)
    }
}

impl ToWorker {
    /// The message kind (same as [`Body::kind`], without importing the trait).
    pub fn kind(&self) -> MessageKind {
        <Self as Body>::kind(self)
    }

    /// How many fds this message carries.
    pub fn expected_fds(&self) -> usize {
        <Self as Body>::expected_fds(self)
    }
}

impl FromWorker {
    /// The message kind (same as [`Body::kind`], without importing the trait).
    pub fn kind(&self) -> MessageKind {
        <Self as Body>::kind(self)
    }

    /// How many fds this message carries.
    pub fn expected_fds(&self) -> usize {
        <Self as Body>::expected_fds(self)
    }
}

/// A message body of one direction: [`ToWorker`] or [`FromWorker`].
///
/// Sealed: implemented only by this crate's message enums.
pub trait Body: private::Sealed + Sized + fmt::Debug {
    /// The direction all kinds of this body travel in.
    const DIRECTION: Direction;

    /// The message kind.
    fn kind(&self) -> MessageKind;

    /// How many fds must be attached to this message.
    fn expected_fds(&self) -> usize;

    /// Encodes the payload (without header).
    #[doc(hidden)]
    fn encode_payload(&self) -> Result<Vec<u8>>;

    /// Decodes and validates a payload of `kind` (whose direction is
    /// already checked).
    #[doc(hidden)]
    fn decode_payload(kind: MessageKind, payload: &[u8], limits: &crate::Limits) -> Result<Self>;
}

pub(crate) mod private {
    pub trait Sealed {}
    impl Sealed for super::ToWorker {}
    impl Sealed for super::FromWorker {}
    impl Sealed for super::ToZygote {}
    impl Sealed for super::FromZygote {}
}

/// A message with its request id (the envelope of one packet).
///
/// The supervisor numbers its requests (starting at 1); the worker answers
/// each with exactly one reply carrying the same id. [`FromWorker::Hello`]
/// is unsolicited and uses [`crate::HELLO_REQUEST_ID`] (0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<B> {
    /// Correlates a reply with its request.
    pub request_id: u64,
    /// The message.
    pub body: B,
}

impl<B> Message<B> {
    /// Wraps `body` with `request_id`.
    pub fn new(request_id: u64, body: B) -> Self {
        Message { request_id, body }
    }

    /// Returns the body if this message answers `request_id`, else
    /// [`ProtocolError::UnexpectedRequestId`] (a late, duplicate or forged
    /// reply: the supervisor should treat it as a violation).
    pub fn expect_reply(self, request_id: u64) -> Result<B> {
        if self.request_id == request_id {
            Ok(self.body)
        } else {
            Err(ProtocolError::UnexpectedRequestId {
                expected: request_id,
                got: self.request_id,
            })
        }
    }
}

impl<B: Body> Message<B> {
    /// Checks that `got` fds is what this message expects; the caller drops
    /// (closes) the fds on error.
    pub fn check_fd_count(&self, got: usize) -> Result<()> {
        let expected = self.body.expected_fds();
        if got == expected {
            Ok(())
        } else {
            Err(ProtocolError::UnexpectedFds {
                kind: self.body.kind(),
                expected,
                got,
            })
        }
    }
}

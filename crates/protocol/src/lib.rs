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
//! | 4 | 2 | version | must be [`PROTOCOL_VERSION`] (2) |
//! | 6 | 2 | kind | a [`MessageKind`] of the direction the receiver accepts |
//! | 8 | 8 | request_id | correlates replies with requests |
//! | 16 | 4 | payload_len | must equal packet length − 20 exactly |
//!
//! Payloads (`str` = `u32` length + UTF-8 bytes; `list<T>` = `u32` count +
//! items; `option<T>` = `u8` 0/1 tag + `T`; `dims` = `u32` axis count + one
//! `u32` per axis; no trailing bytes allowed):
//!
//! | kind (code) | direction | payload | fds |
//! |---|---|---|---|
//! | `LoadModel` (0x0001) | → worker | `u8` net slot, `u8` weights slot, `option<bytes>` preprocess | 2 |
//! | `Infer` (0x0002) | → worker | `u32` deadline_ms, `list<input>`; input = `u8` tag (1 = tensor: `str` name, `dims`; 2 = encoded image: `str` name) | one per input |
//! | `Shutdown` (0x0003) | → worker | empty | 0 |
//! | `Hello` (0x8001) | → supervisor | `u16` protocol_version, `u32` pid in namespace, `u8` seccomp_listener, `str` caffe_version | 1 iff seccomp_listener |
//! | `Loaded` (0x8002) | → supervisor | `list<blob>` inputs, `list<blob>` outputs; blob = `str` name, `dims` | 0 |
//! | `InferResult` (0x8003) | → supervisor | `list<tensor>`; tensor = `str` name, `dims` | one sealed memfd per output |
//! | `Error` (0x8004) | → supervisor | `u8` [`WorkerErrorKind`] code 1..=7, `str` message, `option<str>` layer | 0 |
//!
//! Fork-server (zygote) kinds ([`ToZygote`], [`FromZygote`]; bit `0x0010` set) travel on the zygote's control
//! channel ([`ZygoteControl`] / [`ZygoteChannel`]), never on a worker channel (a worker channel refuses them
//! as [`ProtocolError::WrongDirection`], and the other way round):
//!
//! | kind (code) | direction | payload | fds |
//! |---|---|---|---|
//! | `Fork` (0x0011) | → zygote | empty | 2: the worker's channel end, its stderr pipe's write end |
//! | `InstallSeccomp` (0x0012) | → forked worker, on its own channel, before `Hello` | empty | 1: sealed memfd of the compiled programs |
//! | `ZygoteReady` (0x8011) | → supervisor | `u16` protocol_version, `u32` pid in namespace, `str` caffe_version | 0 |
//! | `Forked` (0x8012) | → supervisor | `u32` child pid in namespace (≥ 2) | 1: a pidfd of the child |
//! | `ChildExited` (0x8013) | → supervisor, with the `Fork`'s id | `u32` pid (≥ 2), `u8` 1 exited / 2 signaled, `u8` code or signal 1..=64 | 0 |
//! | `ForkFailed` (0x8014) | → supervisor | `str` message | 0 |
//!
//! The codec is hand-written rather than serde/postcard so that each length
//! prefix is checked against its cap *and* against the bytes remaining at
//! the point it is read (a hostile count can never drive an allocation), and
//! so that each error names the field it is about.
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
//! | fds per kind | exact: `LoadModel` 2, `Infer` one per input, `InferResult` one per output, `Hello` 1 iff `seccomp_listener`, `Fork` 2, `InstallSeccomp` 1, `Forked` 1, others 0 | any mismatch refused, fds closed |
//! | free text (`Error.message`, `Error.layer`, `Hello.caffe_version`) | [`MAX_TEXT_LEN`] = 4 KiB, strict UTF-8, then [`sanitize_text`] | |
//! | names (blob/tensor/input) | [`MAX_NAME_LEN`] = 256 bytes, non-empty, no control/escape/bidi chars, unique within a list | |
//! | `LoadModel.preprocess` | [`MAX_PREPROCESS_LEN`] = 16 KiB | |
//! | `Loaded.inputs`/`outputs` | [`MAX_BLOBS`] = 256 each | |
//! | `Infer.inputs`, `InferResult.outputs` | [`MAX_FDS_PER_MESSAGE`] | one fd each |
//! | shapes | [`Limits`]: ≤ 8 axes, each dim in `1..=65536`, ≤ 2^26 elements, checked product | decoder and tensor readers |
//! | all tensors of one message | [`Limits::max_total_elements`] = 2^26 | decoder |
//! | tensor data | sealed memfd, size == `product(dims) * 4`, finite values | [`read_sealed_tensor`] |
//!
//! Strings with invalid UTF-8 are *rejected*, not lossily converted: only a
//! broken or compromised worker can produce them (the worker builds Rust
//! `String`s, lossily converting Caffe's bytes itself).
//!
//! # Conversation rules (enforced by the caller, helped by this crate)
//! - The worker sends `Hello` first, with [`HELLO_REQUEST_ID`] (0). The
//!   supervisor numbers its requests from 1; each gets exactly one reply
//!   with the same id (`Loaded`/`InferResult` or `Error`).
//! - Wrong, late or duplicate reply ids: [`Message::expect_reply`] turns them
//!   into [`ProtocolError::UnexpectedRequestId`]. After a timeout the
//!   supervisor should kill the worker rather than reuse the channel, since
//!   the late reply could arrive later.
//! - Floods: every `recv` returns one packet; with one reply expected per
//!   request, any extra packet is a violation, so the supervisor never needs
//!   to buffer. Use one overall deadline per request
//!   ([`Channel::recv_deadline`]) so a stream of packets cannot extend it.
//! - Partial frames cannot happen on `SOCK_SEQPACKET` (see [`Channel`]):
//!   "half a frame then silence" is just silence, i.e. a timeout.
//! - EOF ([`ProtocolError::Closed`]) arrives only when *every* copy of the
//!   worker's end is closed; a grandchild holding it keeps the channel open,
//!   so the supervisor must rely on its own deadlines and the worker's pidfd,
//!   never on EOF alone.
//! - Every string in a decoded [`FromWorker`] is safe to print; anything
//!   else that reaches a terminal or log (stderr of the worker, file names)
//!   should go through [`sanitize_text`].
//!
//! # System calls
//! All kernel access goes through `rustix` (this crate has no `unsafe`).
//! On x86_64 the channel uses `recvmsg` (with `MSG_CMSG_CLOEXEC |
//! MSG_DONTWAIT | MSG_TRUNC`), `sendmsg` (`MSG_NOSIGNAL | MSG_DONTWAIT`),
//! `ppoll` and, in [`Channel::new`], `getsockopt(SO_TYPE, SO_DOMAIN)`; the
//! memfd helpers use `memfd_create`, `ftruncate`, `pwrite64`, `pread64`,
//! `fcntl(F_ADD_SEALS, F_GET_SEALS)` and `fstat`; [`InputArena::new`] also
//! opens `/proc/self/fd/N` (supervisor side). A worker's seccomp policy must
//! allow what its side uses.
//!
//! # Using it
//! A whole exchange, with the worker side in a thread instead of a sandboxed
//! process:
//! ```
//! use caffe_sandbox_protocol::*;
//! use std::os::fd::AsFd;
//! use std::time::Duration;
//! # fn main() -> Result<(), ProtocolError> {
//! let (sup, worker) = channel_pair()?;
//!
//! // Worker: Hello, then answer one Infer by doubling its input.
//! let w = std::thread::spawn(move || -> Result<(), ProtocolError> {
//!     let hello = FromWorker::Hello {
//!         protocol_version: PROTOCOL_VERSION,
//!         worker_pid_in_ns: 1,
//!         seccomp_listener: false,
//!         caffe_version: "1.0.0".into(),
//!     };
//!     worker.send(&Message::new(HELLO_REQUEST_ID, hello), &[])?;
//!     let (req, fds) = worker.recv(None)?;
//!     let ToWorker::Infer { inputs, new_arena: true, .. } = req.body else { unreachable!() };
//!     let InputSpec::Tensor { name, dims, at } = &inputs[0] else { unreachable!() };
//!     let header = TensorHeader { name: name.clone(), dims: dims.clone() };
//!     let bytes = read_arena_range(fds[0].as_fd(), *at)?; // a real worker maps the arena once
//!     let x = tensor_from_le_bytes(&header, worker.limits(), &bytes)?;
//!     let y = Tensor::new(x.dims.clone(), x.data.iter().map(|v| v * 2.0).collect())?;
//!     let fd = y.to_sealed_memfd("prob")?;
//!     let reply = FromWorker::InferResult { outputs: vec![y.header("prob")?] };
//!     worker.send(&Message::new(req.request_id, reply), &[fd.as_fd()])
//! });
//!
//! // Supervisor.
//! let timeout = Some(Duration::from_secs(10));
//! let (hello, _fds) = sup.recv(timeout)?;
//! let FromWorker::Hello { .. } = hello.expect_reply(HELLO_REQUEST_ID)? else {
//!     panic!("protocol violation: kill the worker");
//! };
//! let x = Tensor::new(vec![1, 2], vec![0.5, 1.5])?;
//! let arena = InputArena::new(1 << 20)?;
//! arena.write_at(0, &x.to_le_bytes())?;
//! let at = ArenaRange { offset: 0, len: 8 };
//! let inputs = vec![InputSpec::Tensor { name: "data".into(), dims: vec![1, 2], at }];
//! let infer = ToWorker::Infer { inputs, new_arena: true, deadline_ms: 1000 };
//! sup.send(&Message::new(1, infer), &[arena.reader()])?;
//! let (reply, fds) = sup.recv(timeout)?;
//! let FromWorker::InferResult { outputs } = reply.expect_reply(1)? else {
//!     panic!("worker error or violation");
//! };
//! let y = read_sealed_tensor(&fds[0], &outputs[0], sup.limits())?;
//! assert_eq!(y.data, vec![1.0, 3.0]);
//! w.join().unwrap()?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod arena;
mod channel;
mod codec;
mod error;
mod limits;
mod memfd;
mod message;
mod text;
mod wire;

pub use arena::{arena_size, read_arena_range, InputArena, ARENA_SEALS};
pub use channel::{
    channel_pair, socketpair, Channel, Received, Role, SupervisorChannel, SupervisorSide,
    WorkerChannel, WorkerSide, ZygoteChannel, ZygoteClientSide, ZygoteControl, ZygoteSide,
};
pub use codec::{decode, decode_from_worker, decode_to_worker, encode};
pub use error::{ProtocolError, Result};
pub use limits::Limits;
pub use memfd::{
    create_sealed_memfd, read_sealed_bytes, read_sealed_tensor, sealed_size, tensor_from_le_bytes,
    Tensor, REQUIRED_SEALS,
};
pub use message::{
    ArenaRange, BlobInfo, Body, ChildStatus, Direction, FdSlot, FromWorker, FromZygote, InputSpec,
    Message, MessageKind, TensorHeader, ToWorker, ToZygote, WorkerErrorKind,
};
pub use text::sanitize_text;

/// First four bytes of every packet.
pub const MAGIC: [u8; 4] = *b"CFSB";
/// The protocol version in every header and in `Hello`.
pub const PROTOCOL_VERSION: u16 = 2;
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
/// Largest input arena (bytes), and the end of every arena range a request may name.
pub const MAX_INPUT_ARENA: u64 = 1 << 31;
/// Longest `LoadModel.preprocess` blob.
pub const MAX_PREPROCESS_LEN: usize = 16 * 1024;
/// Most blobs in each list of `Loaded`.
pub const MAX_BLOBS: usize = 256;
/// Request id of the unsolicited `Hello`; the supervisor numbers its requests
/// from 1.
pub const HELLO_REQUEST_ID: u64 = 0;

/// Exit codes of `caffe-sandbox-worker`: the one place both sides take them from. The supervisor never trusts
/// them alone (it has the wait status, its own timers and the seccomp monitor); they only refine a cause.
pub mod exit_code {
    /// A Caffe CHECK failed; the worker reported it (if it could) and exited.
    pub const CAFFE_CHECK_FAILED: i32 = 70;
    /// The worker saw a protocol error from the supervisor's side (should not happen).
    pub const PROTOCOL: i32 = 71;
    /// The worker could not initialise (libraries, seccomp filter installation).
    pub const INIT: i32 = 72;
}

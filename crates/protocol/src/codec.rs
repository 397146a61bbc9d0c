//! Payload encoding and the validating decoders.
//!
//! Layout of each payload (all integers little-endian; `str` = `u32` length +
//! UTF-8 bytes; `list<T>` = `u32` count + items; `option<T>` = `u8` 0/1 +
//! `T`; `dims` = `u32` count + `u32` each):
//!
//! | kind | payload |
//! |---|---|
//! | `LoadModel` | `u8` net slot, `u8` weights slot, `option<bytes>` preprocess |
//! | `Infer` | `u32` deadline_ms, `u8` new_arena (0/1), `list<input>`; input = `u8` tag (1 tensor: `str` name, `dims`; 2 image: `str` name), `u64` offset, `u64` len |
//! | `Shutdown` | empty |
//! | `Hello` | `u16` protocol_version, `u32` pid, `u8` bool seccomp_listener, `str` caffe_version |
//! | `Loaded` | `list<blob>` inputs, `list<blob>` outputs; blob = `str` name, `dims` |
//! | `InferResult` | `list<tensor>`; tensor = `str` name, `dims` |
//! | `Error` | `u8` kind, `str` message, `option<str>` layer |
//! | `Fork`, `InstallSeccomp` | empty |
//! | `ZygoteReady` | `u16` protocol_version, `u32` pid, `str` caffe_version |
//! | `Forked` | `u32` pid (≥ 2) |
//! | `ChildExited` | `u32` pid (≥ 2), `u8` tag (1 exited, 2 signaled), `u8` code (any) or signal (1..=64) |
//! | `ForkFailed` | `str` message |

use std::collections::HashSet;

use crate::error::{ProtocolError, Result};
use crate::limits::{Limits, TotalElements};
use crate::message::{
    ArenaRange, BlobInfo, Body, ChildStatus, Direction, FdSlot, FromWorker, FromZygote, InputSpec,
    Message, MessageKind, TensorHeader, ToWorker, ToZygote, WorkerErrorKind,
};
use crate::text::{display_name, sanitize_text, validate_name};
use crate::wire::{build_packet, split_packet, Reader, Writer};
use crate::{
    MAX_BLOBS, MAX_FDS_PER_MESSAGE, MAX_INPUT_ARENA, MAX_NAME_LEN, MAX_PACKET, MAX_PREPROCESS_LEN,
    MAX_TEXT_LEN, PROTOCOL_VERSION,
};

const TAG_TENSOR: u8 = 1;
const TAG_IMAGE: u8 = 2;

/// Encodes a message into one packet (header + payload).
///
/// Fails with [`ProtocolError::PacketTooLarge`] if it would exceed
/// [`MAX_PACKET`], or with a length error if a list or string exceeds its
/// cap. Semantic checks (names, shapes) are done by the receiver; the
/// [`crate::Channel`] also runs them before sending.
pub fn encode<B: Body>(msg: &Message<B>) -> Result<Vec<u8>> {
    let payload = msg.body.encode_payload()?;
    build_packet(msg.body.kind().code(), msg.request_id, &payload)
}

/// Decodes and fully validates one packet of direction `B::DIRECTION`.
///
/// Unknown kinds, kinds of the other direction, trailing bytes and every cap
/// violation are errors. Nothing is allocated beyond what the (≤ 64 KiB)
/// packet itself justifies.
pub fn decode<B: Body>(packet: &[u8], limits: &Limits) -> Result<Message<B>> {
    let (header, payload) = split_packet(packet)?;
    let kind =
        MessageKind::from_code(header.kind).ok_or(ProtocolError::UnknownKind(header.kind))?;
    if kind.direction() != B::DIRECTION {
        return Err(ProtocolError::WrongDirection {
            kind,
            expected: B::DIRECTION,
        });
    }
    let body = B::decode_payload(kind, payload, limits)?;
    Ok(Message::new(header.request_id, body))
}

/// Supervisor side: decodes a packet from the worker.
pub fn decode_from_worker(packet: &[u8], limits: &Limits) -> Result<Message<FromWorker>> {
    decode(packet, limits)
}

/// Worker side: decodes a packet from the supervisor.
pub fn decode_to_worker(packet: &[u8], limits: &Limits) -> Result<Message<ToWorker>> {
    decode(packet, limits)
}

fn finish(r: &Reader<'_>, kind: MessageKind) -> Result<()> {
    match r.remaining() {
        0 => Ok(()),
        count => Err(ProtocolError::TrailingBytes { kind, count }),
    }
}

fn read_name(r: &mut Reader<'_>, field: &str) -> Result<String> {
    let s = r.str(field, MAX_NAME_LEN)?;
    validate_name(field, s, MAX_NAME_LEN)?;
    Ok(s.to_owned())
}

fn read_text(r: &mut Reader<'_>, field: &str) -> Result<String> {
    Ok(sanitize_text(r.str(field, MAX_TEXT_LEN)?))
}

/// Reads `dims`, rejecting too many axes before reading them, then checks
/// the whole shape against `limits`.
fn read_dims(r: &mut Reader<'_>, what: &str, limits: &Limits) -> Result<Vec<u32>> {
    read_dims_counted(r, what, limits).map(|(dims, _)| dims)
}

/// [`read_dims`] that also returns the element count.
fn read_dims_counted(r: &mut Reader<'_>, what: &str, limits: &Limits) -> Result<(Vec<u32>, usize)> {
    let field = format!("{what}: dims");
    let n = r.u32(&field)?;
    if u64::from(n) > limits.max_axes as u64 {
        return Err(ProtocolError::TooManyAxes {
            what: what.to_owned(),
            axes: n.into(),
            max: limits.max_axes,
        });
    }
    let raw = r.take(&field, u64::from(n) * 4)?;
    let dims: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let elements = limits.check_shape(what, &dims)?;
    Ok((dims, elements))
}

fn write_dims(w: &mut Writer, field: &str, dims: &[u32]) -> Result<()> {
    w.len32(field, dims.len(), u32::MAX as usize)?;
    for &d in dims {
        w.u32(d);
    }
    Ok(())
}

/// Rejects duplicate names within one list.
fn check_unique<'a>(field: &str, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(ProtocolError::DuplicateName {
                field: field.to_owned(),
                name: display_name(name),
            });
        }
    }
    Ok(())
}

/// An arena range whose end does not overflow and lies within [`MAX_INPUT_ARENA`].
fn read_range(r: &mut Reader<'_>, what: &str) -> Result<ArenaRange> {
    let offset = r.u64(&format!("{what} offset"))?;
    let len = r.u64(&format!("{what} length"))?;
    match offset.checked_add(len) {
        Some(end) if end <= MAX_INPUT_ARENA => Ok(ArenaRange { offset, len }),
        _ => Err(ProtocolError::TooLong {
            field: format!("{what}: arena range {offset}+{len}"),
            len: offset.saturating_add(len),
            max: MAX_INPUT_ARENA as usize,
        }),
    }
}

fn read_slot(r: &mut Reader<'_>, field: &str, fds: usize) -> Result<FdSlot> {
    let v = r.u8(field)?;
    if usize::from(v) >= fds {
        return Err(ProtocolError::InvalidValue {
            field: field.to_owned(),
            value: v.into(),
            expected: "an fd slot < 2",
        });
    }
    Ok(FdSlot(v))
}

impl Body for ToWorker {
    const DIRECTION: Direction = Direction::ToWorker;

    fn kind(&self) -> MessageKind {
        match self {
            ToWorker::LoadModel { .. } => MessageKind::LoadModel,
            ToWorker::Infer { .. } => MessageKind::Infer,
            ToWorker::Shutdown => MessageKind::Shutdown,
        }
    }

    fn expected_fds(&self) -> usize {
        match self {
            ToWorker::LoadModel { .. } => 2,
            ToWorker::Infer { new_arena, .. } => usize::from(*new_arena),
            ToWorker::Shutdown => 0,
        }
    }

    fn encode_payload(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        match self {
            ToWorker::LoadModel {
                net,
                weights,
                preprocess,
            } => {
                w.u8(net.0);
                w.u8(weights.0);
                match preprocess {
                    None => w.u8(0),
                    Some(p) => {
                        w.u8(1);
                        w.bytes("LoadModel.preprocess", p, MAX_PREPROCESS_LEN)?;
                    }
                }
            }
            ToWorker::Infer {
                inputs,
                new_arena,
                deadline_ms,
            } => {
                w.u32(*deadline_ms);
                w.u8(u8::from(*new_arena));
                w.len32("Infer.inputs", inputs.len(), MAX_FDS_PER_MESSAGE)?;
                for input in inputs {
                    match input {
                        InputSpec::Tensor { name, dims, .. } => {
                            w.u8(TAG_TENSOR);
                            w.str("Infer input name", name, MAX_NAME_LEN)?;
                            write_dims(&mut w, "Infer input dims", dims)?;
                        }
                        InputSpec::EncodedImage { name, .. } => {
                            w.u8(TAG_IMAGE);
                            w.str("Infer input name", name, MAX_NAME_LEN)?;
                        }
                    }
                    let at = input.at();
                    w.u64(at.offset);
                    w.u64(at.len);
                }
            }
            ToWorker::Shutdown => {}
        }
        Ok(w.into_inner())
    }

    fn decode_payload(kind: MessageKind, payload: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(payload);
        let body = match kind {
            MessageKind::LoadModel => {
                let net = read_slot(&mut r, "LoadModel.net", 2)?;
                let weights = read_slot(&mut r, "LoadModel.weights", 2)?;
                if net == weights {
                    return Err(ProtocolError::InvalidValue {
                        field: "LoadModel.weights".into(),
                        value: weights.0.into(),
                        expected: "a slot different from LoadModel.net",
                    });
                }
                let preprocess = if r.option_tag("LoadModel.preprocess")? {
                    Some(
                        r.bytes("LoadModel.preprocess", MAX_PREPROCESS_LEN)?
                            .to_vec(),
                    )
                } else {
                    None
                };
                ToWorker::LoadModel {
                    net,
                    weights,
                    preprocess,
                }
            }
            MessageKind::Infer => {
                let deadline_ms = r.u32("Infer.deadline_ms")?;
                let new_arena = match r.u8("Infer.new_arena")? {
                    0 => false,
                    1 => true,
                    v => {
                        return Err(ProtocolError::InvalidValue {
                            field: "Infer.new_arena".into(),
                            value: v.into(),
                            expected: "0 or 1",
                        })
                    }
                };
                // Smallest input: tag + empty name prefix + offset + len.
                let n = r.count("Infer.inputs", MAX_FDS_PER_MESSAGE, 21)?;
                let mut inputs = Vec::with_capacity(n);
                let mut total = TotalElements::new(limits, "Infer.inputs");
                for i in 0..n {
                    let tag = r.u8(&format!("Infer.inputs[{i}].tag"))?;
                    let name = read_name(&mut r, &format!("Infer.inputs[{i}].name"))?;
                    let what = format!("input '{name}'");
                    let tensor = match tag {
                        TAG_TENSOR => {
                            let (dims, elements) = read_dims_counted(&mut r, &what, limits)?;
                            total.add(elements)?;
                            Some((dims, elements))
                        }
                        TAG_IMAGE => None,
                        v => {
                            return Err(ProtocolError::InvalidValue {
                                field: format!("Infer.inputs[{i}].tag"),
                                value: v.into(),
                                expected: "1 (tensor) or 2 (encoded image)",
                            })
                        }
                    };
                    let at = read_range(&mut r, &what)?;
                    inputs.push(match tensor {
                        Some((dims, elements)) => {
                            // check_shape bounded the byte size, so this product cannot overflow.
                            if at.len != elements as u64 * 4 {
                                return Err(ProtocolError::DataSizeMismatch {
                                    what,
                                    actual: at.len,
                                    expected: elements as u64 * 4,
                                });
                            }
                            InputSpec::Tensor { name, dims, at }
                        }
                        None => InputSpec::EncodedImage { name, at },
                    });
                }
                check_unique("Infer.inputs", inputs.iter().map(InputSpec::name))?;
                ToWorker::Infer {
                    inputs,
                    new_arena,
                    deadline_ms,
                }
            }
            MessageKind::Shutdown => ToWorker::Shutdown,
            other => {
                return Err(ProtocolError::WrongDirection {
                    kind: other,
                    expected: Direction::ToWorker,
                })
            }
        };
        finish(&r, kind)?;
        Ok(body)
    }
}

fn write_named_dims(w: &mut Writer, field: &str, name: &str, dims: &[u32]) -> Result<()> {
    w.str(field, name, MAX_NAME_LEN)?;
    write_dims(w, field, dims)
}

fn read_blobs(
    r: &mut Reader<'_>,
    field: &str,
    label: &str,
    limits: &Limits,
) -> Result<Vec<BlobInfo>> {
    // Smallest blob: empty name prefix + zero-axes dims prefix.
    let n = r.count(field, MAX_BLOBS, 8)?;
    let mut blobs = Vec::with_capacity(n);
    for i in 0..n {
        let name = read_name(r, &format!("{field}[{i}].name"))?;
        let dims = read_dims(r, &format!("{label} '{name}'"), limits)?;
        blobs.push(BlobInfo { name, dims });
    }
    check_unique(field, blobs.iter().map(|b| b.name.as_str()))?;
    Ok(blobs)
}

impl Body for FromWorker {
    const DIRECTION: Direction = Direction::FromWorker;

    fn kind(&self) -> MessageKind {
        match self {
            FromWorker::Hello { .. } => MessageKind::Hello,
            FromWorker::Loaded { .. } => MessageKind::Loaded,
            FromWorker::InferResult { .. } => MessageKind::InferResult,
            FromWorker::Error { .. } => MessageKind::Error,
        }
    }

    fn expected_fds(&self) -> usize {
        match self {
            FromWorker::Hello {
                seccomp_listener, ..
            } => usize::from(*seccomp_listener),
            FromWorker::Loaded { .. } | FromWorker::Error { .. } => 0,
            FromWorker::InferResult { outputs } => outputs.len(),
        }
    }

    fn encode_payload(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        match self {
            FromWorker::Hello {
                protocol_version,
                worker_pid_in_ns,
                seccomp_listener,
                caffe_version,
            } => {
                w.u16(*protocol_version);
                w.u32(*worker_pid_in_ns);
                w.bool(*seccomp_listener);
                w.str("Hello.caffe_version", caffe_version, MAX_TEXT_LEN)?;
            }
            FromWorker::Loaded { inputs, outputs } => {
                for (field, blobs) in [("Loaded.inputs", inputs), ("Loaded.outputs", outputs)] {
                    w.len32(field, blobs.len(), MAX_BLOBS)?;
                    for b in blobs {
                        write_named_dims(&mut w, field, &b.name, &b.dims)?;
                    }
                }
            }
            FromWorker::InferResult { outputs } => {
                w.len32("InferResult.outputs", outputs.len(), MAX_FDS_PER_MESSAGE)?;
                for t in outputs {
                    write_named_dims(&mut w, "InferResult.outputs", &t.name, &t.dims)?;
                }
            }
            FromWorker::Error {
                kind,
                message,
                layer,
            } => {
                w.u8(kind.code());
                w.str("Error.message", message, MAX_TEXT_LEN)?;
                match layer {
                    None => w.u8(0),
                    Some(l) => {
                        w.u8(1);
                        w.str("Error.layer", l, MAX_TEXT_LEN)?;
                    }
                }
            }
        }
        Ok(w.into_inner())
    }

    fn decode_payload(kind: MessageKind, payload: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(payload);
        let body = match kind {
            MessageKind::Hello => {
                let protocol_version = r.u16("Hello.protocol_version")?;
                if protocol_version != PROTOCOL_VERSION {
                    return Err(ProtocolError::UnsupportedVersion {
                        field: "Hello.protocol_version",
                        found: protocol_version.into(),
                        expected: PROTOCOL_VERSION,
                    });
                }
                FromWorker::Hello {
                    protocol_version,
                    worker_pid_in_ns: r.u32("Hello.worker_pid_in_ns")?,
                    seccomp_listener: r.bool("Hello.seccomp_listener")?,
                    caffe_version: read_text(&mut r, "Hello.caffe_version")?,
                }
            }
            MessageKind::Loaded => FromWorker::Loaded {
                inputs: read_blobs(&mut r, "Loaded.inputs", "Loaded input", limits)?,
                outputs: read_blobs(&mut r, "Loaded.outputs", "Loaded output", limits)?,
            },
            MessageKind::InferResult => {
                let n = r.count("InferResult.outputs", MAX_FDS_PER_MESSAGE, 8)?;
                let mut outputs = Vec::with_capacity(n);
                let mut total = TotalElements::new(limits, "InferResult.outputs");
                for i in 0..n {
                    let name = read_name(&mut r, &format!("InferResult.outputs[{i}].name"))?;
                    let (dims, elements) =
                        read_dims_counted(&mut r, &format!("output '{name}'"), limits)?;
                    total.add(elements)?;
                    outputs.push(TensorHeader { name, dims });
                }
                check_unique(
                    "InferResult.outputs",
                    outputs.iter().map(|t| t.name.as_str()),
                )?;
                FromWorker::InferResult { outputs }
            }
            MessageKind::Error => {
                let code = r.u8("Error.kind")?;
                let kind = WorkerErrorKind::from_code(code).ok_or_else(|| {
                    ProtocolError::InvalidValue {
                        field: "Error.kind".into(),
                        value: code.into(),
                        expected: "a WorkerErrorKind code 1..=7",
                    }
                })?;
                let message = read_text(&mut r, "Error.message")?;
                let layer = if r.option_tag("Error.layer")? {
                    Some(read_text(&mut r, "Error.layer")?)
                } else {
                    None
                };
                FromWorker::Error {
                    kind,
                    message,
                    layer,
                }
            }
            other => {
                return Err(ProtocolError::WrongDirection {
                    kind: other,
                    expected: Direction::FromWorker,
                })
            }
        };
        finish(&r, kind)?;
        Ok(body)
    }
}

impl Body for ToZygote {
    const DIRECTION: Direction = Direction::ToZygote;

    fn kind(&self) -> MessageKind {
        match self {
            ToZygote::Fork => MessageKind::Fork,
            ToZygote::InstallSeccomp => MessageKind::InstallSeccomp,
        }
    }

    fn expected_fds(&self) -> usize {
        match self {
            ToZygote::Fork => 2,
            ToZygote::InstallSeccomp => 1,
        }
    }

    fn encode_payload(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn decode_payload(kind: MessageKind, payload: &[u8], _limits: &Limits) -> Result<Self> {
        let r = Reader::new(payload);
        let body = match kind {
            MessageKind::Fork => ToZygote::Fork,
            MessageKind::InstallSeccomp => ToZygote::InstallSeccomp,
            other => {
                return Err(ProtocolError::WrongDirection {
                    kind: other,
                    expected: Direction::ToZygote,
                })
            }
        };
        finish(&r, kind)?;
        Ok(body)
    }
}

const TAG_EXITED: u8 = 1;
const TAG_SIGNALED: u8 = 2;

/// A forked child is never pid 1 (that is the zygote) nor 0.
fn read_child_pid(r: &mut Reader<'_>, field: &str) -> Result<u32> {
    let pid = r.u32(field)?;
    if pid < 2 {
        return Err(ProtocolError::InvalidValue {
            field: field.into(),
            value: pid.into(),
            expected: "a child pid >= 2",
        });
    }
    Ok(pid)
}

impl Body for FromZygote {
    const DIRECTION: Direction = Direction::FromZygote;

    fn kind(&self) -> MessageKind {
        match self {
            FromZygote::Ready { .. } => MessageKind::ZygoteReady,
            FromZygote::Forked { .. } => MessageKind::Forked,
            FromZygote::ChildExited { .. } => MessageKind::ChildExited,
            FromZygote::ForkFailed { .. } => MessageKind::ForkFailed,
        }
    }

    fn expected_fds(&self) -> usize {
        match self {
            FromZygote::Forked { .. } => 1,
            _ => 0,
        }
    }

    fn encode_payload(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        match self {
            FromZygote::Ready {
                protocol_version,
                pid_in_ns,
                caffe_version,
            } => {
                w.u16(*protocol_version);
                w.u32(*pid_in_ns);
                w.str("ZygoteReady.caffe_version", caffe_version, MAX_TEXT_LEN)?;
            }
            FromZygote::Forked { pid_in_ns } => w.u32(*pid_in_ns),
            FromZygote::ChildExited { pid_in_ns, status } => {
                w.u32(*pid_in_ns);
                match status {
                    ChildStatus::Exited(c) => {
                        w.u8(TAG_EXITED);
                        w.u8(*c);
                    }
                    ChildStatus::Signaled(s) => {
                        w.u8(TAG_SIGNALED);
                        w.u8(*s);
                    }
                }
            }
            FromZygote::ForkFailed { message } => {
                w.str("ForkFailed.message", message, MAX_TEXT_LEN)?
            }
        }
        Ok(w.into_inner())
    }

    fn decode_payload(kind: MessageKind, payload: &[u8], _limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(payload);
        let body = match kind {
            MessageKind::ZygoteReady => {
                let protocol_version = r.u16("ZygoteReady.protocol_version")?;
                if protocol_version != PROTOCOL_VERSION {
                    return Err(ProtocolError::UnsupportedVersion {
                        field: "ZygoteReady.protocol_version",
                        found: protocol_version.into(),
                        expected: PROTOCOL_VERSION,
                    });
                }
                FromZygote::Ready {
                    protocol_version,
                    pid_in_ns: r.u32("ZygoteReady.pid_in_ns")?,
                    caffe_version: read_text(&mut r, "ZygoteReady.caffe_version")?,
                }
            }
            MessageKind::Forked => FromZygote::Forked {
                pid_in_ns: read_child_pid(&mut r, "Forked.pid_in_ns")?,
            },
            MessageKind::ChildExited => {
                let pid_in_ns = read_child_pid(&mut r, "ChildExited.pid_in_ns")?;
                let tag = r.u8("ChildExited.status")?;
                let value = r.u8("ChildExited.value")?;
                let status = match tag {
                    TAG_EXITED => ChildStatus::Exited(value),
                    TAG_SIGNALED if (1..=64).contains(&value) => ChildStatus::Signaled(value),
                    TAG_SIGNALED => {
                        return Err(ProtocolError::InvalidValue {
                            field: "ChildExited.value".into(),
                            value: value.into(),
                            expected: "a signal number 1..=64",
                        })
                    }
                    _ => {
                        return Err(ProtocolError::InvalidValue {
                            field: "ChildExited.status".into(),
                            value: tag.into(),
                            expected: "1 (exited) or 2 (signaled)",
                        })
                    }
                };
                FromZygote::ChildExited { pid_in_ns, status }
            }
            MessageKind::ForkFailed => FromZygote::ForkFailed {
                message: read_text(&mut r, "ForkFailed.message")?,
            },
            other => {
                return Err(ProtocolError::WrongDirection {
                    kind: other,
                    expected: Direction::FromZygote,
                })
            }
        };
        finish(&r, kind)?;
        Ok(body)
    }
}

// Keep the packet cap and the per-list caps consistent: a full list of
// maximal entries may exceed MAX_PACKET (then encoding fails cleanly), but
// a count prefix can never make the decoder allocate more than the packet.
const _: () = assert!(MAX_PACKET <= u32::MAX as usize);

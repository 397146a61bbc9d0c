//! Real socketpair round trips, fd passing, and the packet-level attacks.

mod common;

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use caffe_sandbox_protocol::{
    channel_pair, create_sealed_memfd, read_arena_range, read_sealed_bytes, read_sealed_tensor,
    socketpair, tensor_from_le_bytes, ArenaRange, Channel, FdSlot, FromWorker, InputArena,
    InputSpec, Limits, Message, MessageKind, ProtocolError, SupervisorChannel, Tensor,
    TensorHeader, ToWorker, WorkerChannel, WorkerErrorKind, HELLO_REQUEST_ID, MAX_PACKET,
    PROTOCOL_VERSION,
};
use common::*;
use rustix::io::Errno;
use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

const T: Option<Duration> = Some(Duration::from_secs(5));

/// Sends `packet` with `fds` on a raw socket, bypassing all checks.
fn raw_send(sock: &OwnedFd, packet: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let n = sendmsg(
        sock,
        &[rustix::io::IoSlice::new(packet)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .unwrap();
    assert_eq!(n, packet.len());
}

/// A supervisor channel and the raw worker end.
fn supervisor_and_raw() -> (SupervisorChannel, OwnedFd) {
    let (a, b) = socketpair().unwrap();
    (Channel::new(a).unwrap(), b)
}

/// A pipe whose write end is to be sent; `read_end_sees_eof` proves that
/// every copy of the write end (including the receiver's) was closed.
struct Probe {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl Probe {
    fn new() -> Self {
        let (read, write) = rustix::pipe::pipe().unwrap();
        Probe {
            read,
            write: Some(write),
        }
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.write.as_ref().unwrap().as_fd()
    }
    fn drop_ours(&mut self) {
        self.write = None;
    }
    fn read_end_sees_eof(&self) -> bool {
        rustix::fs::fcntl_setfl(&self.read, rustix::fs::OFlags::NONBLOCK).unwrap();
        let mut b = [0u8; 1];
        rustix::io::read(&self.read, &mut b) == Ok(0)
    }
}

#[test]
fn full_session_round_trip_with_fds() {
    let (sup, worker) = channel_pair().unwrap();

    let worker_thread = std::thread::spawn(move || worker_main(worker));

    // Hello with the "seccomp listener" (any fd: here a memfd).
    let (hello, fds) = sup.recv(T).unwrap();
    assert_eq!(fds.len(), 1);
    match hello.expect_reply(HELLO_REQUEST_ID).unwrap() {
        FromWorker::Hello {
            protocol_version,
            seccomp_listener,
            caffe_version,
            ..
        } => {
            assert_eq!(protocol_version, PROTOCOL_VERSION);
            assert!(seccomp_listener);
            assert_eq!(caffe_version, "1.0.0");
        }
        other => panic!("{other:?}"),
    }

    // LoadModel with two memfds.
    let net = create_sealed_memfd("net", b"name: \"tiny\"").unwrap();
    let weights = create_sealed_memfd("weights", &[1, 2, 3]).unwrap();
    let load = Message::new(
        1,
        ToWorker::LoadModel {
            net: FdSlot(0),
            weights: FdSlot(1),
            preprocess: None,
        },
    );
    sup.send(&load, &[net.as_fd(), weights.as_fd()]).unwrap();
    let (loaded, fds) = sup.recv(T).unwrap();
    assert!(fds.is_empty());
    match loaded.expect_reply(1).unwrap() {
        FromWorker::Loaded { inputs, outputs } => {
            assert_eq!(inputs[0].name, "data");
            assert_eq!(outputs[0].dims, vec![1, 2]);
        }
        other => panic!("{other:?}"),
    }

    // Infer with one tensor input; the worker echoes it and a second output.
    let input = Tensor::new(vec![1, 2], vec![0.25, 0.75]).unwrap();
    let arena = InputArena::new(1 << 20).unwrap();
    arena.write_at(64, &input.to_le_bytes()).unwrap();
    let infer = Message::new(
        2,
        ToWorker::Infer {
            inputs: vec![InputSpec::Tensor {
                name: "data".into(),
                dims: vec![1, 2],
                at: ArenaRange { offset: 64, len: 8 },
            }],
            new_arena: true,
            deadline_ms: 1000,
        },
    );
    sup.send(&infer, &[arena.reader()]).unwrap();
    let (result, fds) = sup.recv(T).unwrap();
    let FromWorker::InferResult { outputs } = result.expect_reply(2).unwrap() else {
        panic!("not an InferResult")
    };
    assert_eq!(outputs.len(), 2);
    assert_eq!(fds.len(), 2);
    let prob = read_sealed_tensor(&fds[0], &outputs[0], sup.limits()).unwrap();
    assert_eq!(prob, input);
    let other = read_sealed_tensor(&fds[1], &outputs[1], sup.limits()).unwrap();
    assert_eq!(other.data, vec![1.0, 2.0, 3.0]);

    sup.send(&Message::new(3, ToWorker::Shutdown), &[]).unwrap();
    worker_thread.join().unwrap();
    // The worker dropped its end: EOF.
    assert!(matches!(sup.recv(T), Err(ProtocolError::Closed)));
}

fn worker_main(ch: WorkerChannel) {
    let listener = create_sealed_memfd("listener", b"").unwrap();
    let hello = FromWorker::Hello {
        protocol_version: PROTOCOL_VERSION,
        worker_pid_in_ns: 1,
        seccomp_listener: true,
        caffe_version: "1.0.0".into(),
    };
    ch.send(&Message::new(HELLO_REQUEST_ID, hello), &[listener.as_fd()])
        .unwrap();
    loop {
        let (msg, fds) = ch.recv(T).unwrap();
        let reply = match msg.body {
            ToWorker::LoadModel { net, weights, .. } => {
                let net = read_sealed_bytes(&fds[net.index()], "net", 1 << 20).unwrap();
                assert_eq!(net, b"name: \"tiny\"");
                let w = read_sealed_bytes(&fds[weights.index()], "weights", 1 << 20).unwrap();
                assert_eq!(w, [1, 2, 3]);
                FromWorker::Loaded {
                    inputs: vec![caffe_sandbox_protocol::BlobInfo {
                        name: "data".into(),
                        dims: vec![1, 2],
                    }],
                    outputs: vec![caffe_sandbox_protocol::BlobInfo {
                        name: "prob".into(),
                        dims: vec![1, 2],
                    }],
                }
            }
            ToWorker::Infer { inputs, .. } => {
                let InputSpec::Tensor { name, dims, at } = &inputs[0] else {
                    panic!()
                };
                let h = TensorHeader {
                    name: name.clone(),
                    dims: dims.clone(),
                };
                let bytes = read_arena_range(fds[0].as_fd(), *at).unwrap();
                let t = tensor_from_le_bytes(&h, ch.limits(), &bytes).unwrap();
                let extra = Tensor::new(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
                let fd0 = t.to_sealed_memfd("prob").unwrap();
                let fd1 = extra.to_sealed_memfd("extra").unwrap();
                let body = FromWorker::InferResult {
                    outputs: vec![t.header("prob").unwrap(), extra.header("extra").unwrap()],
                };
                ch.send(
                    &Message::new(msg.request_id, body),
                    &[fd0.as_fd(), fd1.as_fd()],
                )
                .unwrap();
                continue;
            }
            ToWorker::Shutdown => return,
        };
        ch.send(&Message::new(msg.request_id, reply), &[]).unwrap();
    }
}

#[test]
fn timeout_and_eof() {
    let (sup, worker) = channel_pair().unwrap();
    let t0 = Instant::now();
    assert!(matches!(
        sup.recv(Some(Duration::from_millis(50))),
        Err(ProtocolError::Timeout)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(50));
    assert!(matches!(sup.try_recv(), Ok(None)));
    assert!(matches!(
        sup.recv(Some(Duration::ZERO)),
        Err(ProtocolError::Timeout)
    ));
    // Queued messages are delivered before EOF.
    let err = FromWorker::Error {
        kind: WorkerErrorKind::Internal,
        message: "bye".into(),
        layer: None,
    };
    worker.send(&Message::new(1, err), &[]).unwrap();
    drop(worker);
    // A timeout too large for Instant means "no deadline", not a panic.
    assert!(sup.recv(Some(Duration::MAX)).is_ok());
    assert!(matches!(sup.recv(T), Err(ProtocolError::Closed)));
    assert!(matches!(sup.recv(None), Err(ProtocolError::Closed)));
    // Sending to a dead peer: Closed, and no SIGPIPE kills the test.
    assert!(matches!(
        sup.send(&Message::new(2, ToWorker::Shutdown), &[]),
        Err(ProtocolError::Closed)
    ));
}

#[test]
fn one_packet_per_recv_in_order() {
    let (sup, worker) = channel_pair().unwrap();
    for id in 1..=3u64 {
        let body = FromWorker::InferResult { outputs: vec![] };
        worker.send(&Message::new(id, body), &[]).unwrap();
    }
    for id in 1..=3u64 {
        assert_eq!(sup.recv(T).unwrap().0.request_id, id);
    }
    assert!(matches!(sup.try_recv(), Ok(None)));
}

#[test]
fn empty_packet_from_live_peer_is_not_eof() {
    let (sup, raw) = supervisor_and_raw();
    raw_send(&raw, &[], &[]);
    assert!(matches!(
        sup.recv(T),
        Err(ProtocolError::ShortPacket { len: 0 })
    ));
    raw_send(&raw, b"CFSB", &[]);
    assert!(matches!(
        sup.recv(T),
        Err(ProtocolError::ShortPacket { len: 4 })
    ));
}

#[test]
fn oversized_packet_is_refused_and_the_channel_stays_in_sync() {
    let (sup, raw) = supervisor_and_raw();
    let mut probe = Probe::new();
    let big = packet(ERROR, 1, &error_payload(7, &vec![b'a'; 100_000], None));
    raw_send(&raw, &big, &[probe.fd()]);
    probe.drop_ours();
    match sup.recv(T) {
        Err(ProtocolError::PacketTooLarge { len, max }) => {
            assert_eq!(len, big.len());
            assert_eq!(max, MAX_PACKET);
        }
        other => panic!("{other:?}"),
    }
    assert!(probe.read_end_sees_eof(), "fd of the refused packet leaked");
    // The next packet is read whole: no leftover of the big one.
    raw_send(&raw, &packet(INFER_RESULT, 2, &infer_result(&[])), &[]);
    assert_eq!(sup.recv(T).unwrap().0.request_id, 2);
    // Exactly MAX_PACKET is accepted at the packet level.
    let payload = vec![0u8; MAX_PACKET - 20];
    raw_send(
        &raw,
        &packet_with_len(ERROR, 3, payload.len() as u32, &payload),
        &[],
    );
    assert!(matches!(
        sup.recv(T),
        Err(ProtocolError::InvalidValue { .. })
    ));
}

#[test]
fn unexpected_fds_are_closed_and_reported() {
    let (sup, raw) = supervisor_and_raw();
    // Loaded expects no fds.
    let mut probe = Probe::new();
    raw_send(
        &raw,
        &packet(LOADED, 1, &Payload::new().u32(0).u32(0)),
        &[probe.fd()],
    );
    probe.drop_ours();
    match sup.recv(T) {
        Err(e @ ProtocolError::UnexpectedFds { .. }) => {
            assert_eq!(e.to_string(), "Loaded carries 1 fds but expects 0")
        }
        other => panic!("{other:?}"),
    }
    assert!(probe.read_end_sees_eof(), "unexpected fd was not closed");

    // InferResult with one output but two fds.
    let mut probe = Probe::new();
    let memfd = create_sealed_memfd("o", &0f32.to_le_bytes()).unwrap();
    raw_send(
        &raw,
        &packet(INFER_RESULT, 2, &infer_result(&[("prob", &[1])])),
        &[memfd.as_fd(), probe.fd()],
    );
    probe.drop_ours();
    assert!(matches!(
        sup.recv(T),
        Err(ProtocolError::UnexpectedFds {
            kind: MessageKind::InferResult,
            expected: 1,
            got: 2
        })
    ));
    assert!(probe.read_end_sees_eof());

    // Hello claiming no listener but attaching one.
    let mut probe = Probe::new();
    raw_send(
        &raw,
        &packet(
            HELLO,
            0,
            &Payload::new()
                .u16(PROTOCOL_VERSION)
                .u32(1)
                .u8(0)
                .str("1.0.0"),
        ),
        &[probe.fd()],
    );
    probe.drop_ours();
    assert!(matches!(
        sup.recv(T),
        Err(ProtocolError::UnexpectedFds { .. })
    ));
    assert!(probe.read_end_sees_eof());

    // fds attached to an undecodable packet are closed too.
    let mut probe = Probe::new();
    raw_send(&raw, b"garbage that is not a frame", &[probe.fd()]);
    probe.drop_ours();
    assert!(matches!(sup.recv(T), Err(ProtocolError::BadMagic { .. })));
    assert!(probe.read_end_sees_eof());
}

#[test]
fn more_than_eight_fds_are_refused_and_closed() {
    for n in [9usize, 10, 11, 64] {
        let (sup, raw) = supervisor_and_raw();
        let mut probe = Probe::new();
        {
            let fds: Vec<BorrowedFd<'_>> = (0..n).map(|_| probe.fd()).collect();
            raw_send(&raw, &packet(INFER_RESULT, 1, &infer_result(&[])), &fds);
        }
        probe.drop_ours();
        match sup.recv(T) {
            Err(ProtocolError::ControlTruncated { max: 8 })
            | Err(ProtocolError::TooManyFds { max: 8, .. }) => {}
            other => panic!("{n} fds: {other:?}"),
        }
        assert!(probe.read_end_sees_eof(), "{n} fds: some were not closed");
    }
}

#[test]
fn wrong_direction_over_the_socket() {
    let (sup, raw) = supervisor_and_raw();
    raw_send(&raw, &packet(SHUTDOWN, 1, &Payload::new()), &[]);
    assert!(matches!(
        sup.recv(T),
        Err(ProtocolError::WrongDirection { .. })
    ));
    let (a, b) = socketpair().unwrap();
    let worker: WorkerChannel = Channel::new(a).unwrap();
    raw_send(&b, &packet(ERROR, 1, &error_payload(1, b"x", None)), &[]);
    assert!(matches!(
        worker.recv(T),
        Err(ProtocolError::WrongDirection { .. })
    ));
}

#[test]
fn sender_refuses_what_the_peer_would_refuse() {
    let (sup, worker) = channel_pair().unwrap();
    // fd count must match the kind.
    let fd = create_sealed_memfd("x", b"").unwrap();
    assert!(matches!(
        sup.send(&Message::new(1, ToWorker::Shutdown), &[fd.as_fd()]),
        Err(ProtocolError::UnexpectedFds { .. })
    ));
    let body = ToWorker::LoadModel {
        net: FdSlot(0),
        weights: FdSlot(1),
        preprocess: None,
    };
    assert!(matches!(
        sup.send(&Message::new(1, body), &[fd.as_fd()]),
        Err(ProtocolError::UnexpectedFds { .. })
    ));
    // Invalid names and shapes are caught before sending.
    let bad = FromWorker::InferResult {
        outputs: vec![TensorHeader {
            name: "a\u{1b}[2J".into(),
            dims: vec![1],
        }],
    };
    assert!(matches!(
        worker.send(&Message::new(1, bad), &[fd.as_fd()]),
        Err(ProtocolError::InvalidName { .. })
    ));
    let bad = FromWorker::InferResult {
        outputs: vec![TensorHeader {
            name: "prob".into(),
            dims: vec![0],
        }],
    };
    assert!(matches!(
        worker.send(&Message::new(1, bad), &[fd.as_fd()]),
        Err(ProtocolError::DimOutOfRange { .. })
    ));
    let nine: Vec<BorrowedFd<'_>> = (0..9).map(|_| fd.as_fd()).collect();
    assert!(matches!(
        sup.send(&Message::new(1, ToWorker::Shutdown), &nine),
        Err(ProtocolError::TooManyFds { .. })
    ));
    // Nothing was sent.
    assert!(matches!(sup.try_recv(), Ok(None)));
    assert!(matches!(worker.try_recv(), Ok(None)));
}

#[test]
fn non_seqpacket_fds_are_refused() {
    let (a, _b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    assert!(matches!(
        SupervisorChannel::new(a),
        Err(ProtocolError::NotSeqpacket)
    ));
    let (r, _w) = rustix::pipe::pipe().unwrap();
    assert!(matches!(
        SupervisorChannel::new(r),
        Err(ProtocolError::NotSeqpacket)
    ));
}

#[test]
fn received_fds_are_cloexec() {
    let (sup, worker) = channel_pair().unwrap();
    let listener = create_sealed_memfd("l", b"").unwrap();
    let hello = FromWorker::Hello {
        protocol_version: PROTOCOL_VERSION,
        worker_pid_in_ns: 1,
        seccomp_listener: true,
        caffe_version: "1.0.0".into(),
    };
    worker
        .send(&Message::new(0, hello), &[listener.as_fd()])
        .unwrap();
    let (_, fds) = sup.recv(T).unwrap();
    assert!(rustix::io::fcntl_getfd(&fds[0])
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
}

#[test]
fn send_times_out_when_the_peer_does_not_read() {
    let (sup, _worker) = channel_pair().unwrap();
    let infer = |id| {
        Message::new(
            id,
            ToWorker::Infer {
                inputs: vec![],
                new_arena: false,
                deadline_ms: 0,
            },
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 1;
    loop {
        match sup.send_timeout(&infer(id), &[], Some(Duration::from_millis(20))) {
            Ok(()) => id += 1,
            Err(ProtocolError::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "socket buffer never filled");
    }
    assert!(id > 1);
}

#[test]
fn limits_are_per_channel() {
    let (a, b) = socketpair().unwrap();
    let strict = Limits {
        max_elements: 10,
        ..Limits::default()
    };
    let sup = SupervisorChannel::with_limits(a, strict).unwrap();
    raw_send(
        &b,
        &packet(INFER_RESULT, 1, &infer_result(&[("prob", &[11])])),
        &[],
    );
    let _ = Errno::AGAIN;
    // One fd expected but none attached: the shape error comes first.
    assert!(matches!(
        sup.recv(T),
        Err(ProtocolError::TooManyElements {
            elements: 11,
            max: 10,
            ..
        })
    ));
}

#[test]
fn partial_frame_then_silence_is_an_error_then_a_timeout() {
    let (sup, raw) = supervisor_and_raw();
    let full = packet(INFER_RESULT, 1, &infer_result(&[("prob", &[1, 2])]));
    // The first bytes of a frame, as one packet: never glued to what follows.
    raw_send(&raw, &full[..10], &[]);
    assert!(matches!(
        sup.recv(T),
        Err(ProtocolError::ShortPacket { len: 10 })
    ));
    // A header promising more payload than the packet carries.
    raw_send(&raw, &full[..full.len() - 3], &[]);
    assert!(matches!(
        sup.recv(T),
        Err(ProtocolError::PayloadLenMismatch { .. })
    ));
    // The rest of the frame arriving later is just another bad packet.
    raw_send(&raw, &full[full.len() - 3..], &[]);
    assert!(matches!(
        sup.recv(T),
        Err(ProtocolError::ShortPacket { len: 3 })
    ));
    // Then silence: a timeout, never a hang.
    assert!(matches!(
        sup.recv(Some(Duration::from_millis(30))),
        Err(ProtocolError::Timeout)
    ));
}

#[test]
fn a_surviving_copy_of_the_worker_end_means_timeout_not_eof() {
    // E.g. a grandchild kept the socket open after the worker died.
    let (sup, raw) = supervisor_and_raw();
    let grandchild_copy = raw.try_clone().unwrap();
    drop(raw);
    assert!(matches!(
        sup.recv(Some(Duration::from_millis(30))),
        Err(ProtocolError::Timeout)
    ));
    drop(grandchild_copy);
    assert!(matches!(sup.recv(T), Err(ProtocolError::Closed)));
}

#[test]
fn duplicate_and_late_replies_are_detected_by_id() {
    let (sup, worker) = channel_pair().unwrap();
    let reply = || FromWorker::InferResult { outputs: vec![] };
    worker.send(&Message::new(1, reply()), &[]).unwrap();
    worker.send(&Message::new(1, reply()), &[]).unwrap();
    assert!(sup.recv(T).unwrap().0.expect_reply(1).is_ok());
    // The duplicate arrives while the supervisor waits for request 2.
    assert!(matches!(
        sup.recv(T).unwrap().0.expect_reply(2),
        Err(ProtocolError::UnexpectedRequestId {
            expected: 2,
            got: 1
        })
    ));
}

#[test]
fn a_flood_of_small_frames_is_read_one_bounded_packet_at_a_time() {
    let (sup, raw) = supervisor_and_raw();
    let sender = std::thread::spawn(move || {
        let p = packet(INFER_RESULT, 9, &infer_result(&[]));
        // Bounded: the socket buffer fills and the sender blocks until the
        // receiver drains; dropping the socket ends the flood.
        for _ in 0..5000 {
            if sendmsg(
                &raw,
                &[rustix::io::IoSlice::new(&p)],
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
            .is_err()
            {
                return;
            }
        }
    });
    // The caller's policy: one reply per request, one deadline per request.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (msg, _) = sup.recv_deadline(Some(deadline)).unwrap();
    assert!(matches!(
        msg.expect_reply(1),
        Err(ProtocolError::UnexpectedRequestId { got: 9, .. })
    ));
    // A caller that does keep reading gets each packet separately.
    for _ in 0..100 {
        assert_eq!(sup.recv_deadline(Some(deadline)).unwrap().0.request_id, 9);
    }
    drop(sup);
    sender.join().unwrap();
}

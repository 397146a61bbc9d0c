//! The fork-server (zygote) messages: round trips with fds over a real socketpair, and the refusals that keep
//! them apart from the worker protocol.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use caffe_sandbox_protocol::{
    create_sealed_memfd, decode, decode_from_worker, decode_to_worker, encode, socketpair, Channel,
    ChildStatus, Direction, FromWorker, FromZygote, Limits, Message, MessageKind, ProtocolError,
    ToWorker, ToZygote, ZygoteChannel, ZygoteControl, HELLO_REQUEST_ID, PROTOCOL_VERSION,
};
use common::*;

const T: Option<Duration> = Some(Duration::from_secs(5));

fn pair() -> (ZygoteControl, ZygoteChannel) {
    let (a, b) = socketpair().unwrap();
    (Channel::new(a).unwrap(), Channel::new(b).unwrap())
}

fn memfd() -> OwnedFd {
    create_sealed_memfd("t", b"x").unwrap()
}

#[test]
fn kinds_have_their_own_directions() {
    for k in MessageKind::ALL {
        let zygote = matches!(
            k,
            MessageKind::Fork
                | MessageKind::InstallSeccomp
                | MessageKind::ZygoteReady
                | MessageKind::Forked
                | MessageKind::ChildExited
                | MessageKind::ForkFailed
        );
        let d = k.direction();
        assert_eq!(
            zygote,
            matches!(d, Direction::ToZygote | Direction::FromZygote),
            "{k}"
        );
        assert_eq!(MessageKind::from_code(k.code()), Some(k));
    }
    assert_eq!(MessageKind::Fork.direction(), Direction::ToZygote);
    assert_eq!(MessageKind::Forked.direction(), Direction::FromZygote);
}

#[test]
fn fork_round_trip_with_fds_and_replies() {
    let (sup, zyg) = pair();
    let (chan_a, _chan_b) = socketpair().unwrap();
    let err = memfd();
    sup.send(
        &Message::new(7, ToZygote::Fork),
        &[chan_a.as_fd(), err.as_fd()],
    )
    .unwrap();
    let (msg, fds) = zyg.recv(T).unwrap();
    assert_eq!(msg, Message::new(7, ToZygote::Fork));
    assert_eq!(fds.len(), 2);

    let ready = FromZygote::Ready {
        protocol_version: PROTOCOL_VERSION,
        pid_in_ns: 1,
        caffe_version: "1.0.0".into(),
    };
    zyg.send(&Message::new(HELLO_REQUEST_ID, ready.clone()), &[])
        .unwrap();
    let pidfd = memfd(); // any fd: the channel only counts them
    zyg.send(
        &Message::new(7, FromZygote::Forked { pid_in_ns: 5 }),
        &[pidfd.as_fd()],
    )
    .unwrap();
    for status in [
        ChildStatus::Exited(0),
        ChildStatus::Exited(255),
        ChildStatus::Signaled(11),
    ] {
        zyg.send(
            &Message::new(
                7,
                FromZygote::ChildExited {
                    pid_in_ns: 5,
                    status,
                },
            ),
            &[],
        )
        .unwrap();
    }
    zyg.send(
        &Message::new(
            8,
            FromZygote::ForkFailed {
                message: "EAGAIN\u{1b}[31m".into(),
            },
        ),
        &[],
    )
    .unwrap();

    assert_eq!(sup.recv(T).unwrap().0.body, ready);
    let (m, fds) = sup.recv(T).unwrap();
    assert_eq!(
        (m.request_id, m.body, fds.len()),
        (7, FromZygote::Forked { pid_in_ns: 5 }, 1)
    );
    for status in [
        ChildStatus::Exited(0),
        ChildStatus::Exited(255),
        ChildStatus::Signaled(11),
    ] {
        let (m, _) = sup.recv(T).unwrap();
        assert_eq!(
            m.body,
            FromZygote::ChildExited {
                pid_in_ns: 5,
                status
            }
        );
    }
    let (m, _) = sup.recv(T).unwrap();
    match m.body {
        FromZygote::ForkFailed { message } => assert!(!message.contains('\u{1b}'), "{message:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn install_seccomp_needs_exactly_one_fd() {
    let (sup, zyg) = pair();
    let a = memfd();
    assert!(matches!(
        sup.send(&Message::new(1, ToZygote::InstallSeccomp), &[]),
        Err(ProtocolError::UnexpectedFds { .. })
    ));
    sup.send(&Message::new(1, ToZygote::InstallSeccomp), &[a.as_fd()])
        .unwrap();
    let (m, fds) = zyg.recv(T).unwrap();
    assert_eq!((m.body, fds.len()), (ToZygote::InstallSeccomp, 1));
}

#[test]
fn worker_and_zygote_channels_refuse_each_others_kinds() {
    let l = Limits::default();
    let fork = encode(&Message::new(1, ToZygote::Fork)).unwrap();
    assert!(matches!(
        decode_to_worker(&fork, &l),
        Err(ProtocolError::WrongDirection { .. })
    ));
    let shutdown = encode(&Message::new(1, ToWorker::Shutdown)).unwrap();
    assert!(matches!(
        decode::<ToZygote>(&shutdown, &l),
        Err(ProtocolError::WrongDirection { .. })
    ));
    let forked = encode(&Message::new(1, FromZygote::Forked { pid_in_ns: 3 })).unwrap();
    assert!(matches!(
        decode_from_worker(&forked, &l),
        Err(ProtocolError::WrongDirection { .. })
    ));
    let hello = encode(&Message::new(
        0,
        FromWorker::Hello {
            protocol_version: PROTOCOL_VERSION,
            worker_pid_in_ns: 1,
            seccomp_listener: false,
            caffe_version: "x".into(),
        },
    ))
    .unwrap();
    assert!(matches!(
        decode::<FromZygote>(&hello, &l),
        Err(ProtocolError::WrongDirection { .. })
    ));
}

#[test]
fn hostile_zygote_payloads_are_refused() {
    let l = Limits::default();
    let bad = |kind: MessageKind, p: Payload| decode::<FromZygote>(&packet(kind.code(), 1, &p), &l);
    // pid 0 and 1 are never a forked child.
    for pid in [0, 1] {
        assert!(matches!(
            bad(MessageKind::Forked, Payload::new().u32(pid)),
            Err(ProtocolError::InvalidValue { .. })
        ));
    }
    assert!(bad(MessageKind::Forked, Payload::new().u32(2)).is_ok());
    // Unknown status tag, signal 0 and > 64.
    for (tag, v) in [(0u8, 0u8), (3, 1), (2, 0), (2, 65)] {
        assert!(
            matches!(
                bad(
                    MessageKind::ChildExited,
                    Payload::new().u32(9).u8(tag).u8(v)
                ),
                Err(ProtocolError::InvalidValue { .. })
            ),
            "tag {tag} value {v}"
        );
    }
    // Trailing bytes and short payloads.
    assert!(matches!(
        bad(MessageKind::Forked, Payload::new().u32(2).u8(0)),
        Err(ProtocolError::TrailingBytes { .. })
    ));
    assert!(bad(MessageKind::ChildExited, Payload::new().u32(9).u8(1)).is_err());
    // Wrong protocol version in Ready.
    assert!(matches!(
        bad(
            MessageKind::ZygoteReady,
            Payload::new().u16(PROTOCOL_VERSION + 1).u32(1).u32(0)
        ),
        Err(ProtocolError::UnsupportedVersion { .. })
    ));
    // Fork with a payload.
    assert!(matches!(
        decode::<ToZygote>(
            &packet(MessageKind::Fork.code(), 1, &Payload::new().u8(0)),
            &l
        ),
        Err(ProtocolError::TrailingBytes { .. })
    ));
}

#[test]
fn a_forked_pid_without_its_pidfd_is_refused() {
    let (raw_sup, raw_zyg) = socketpair().unwrap();
    let sup2: ZygoteControl = Channel::new(raw_sup).unwrap();
    let p = packet(MessageKind::Forked.code(), 3, &Payload::new().u32(4));
    rustix::net::send(&raw_zyg, &p, rustix::net::SendFlags::empty()).unwrap();
    assert!(matches!(
        sup2.recv(T),
        Err(ProtocolError::UnexpectedFds { .. })
    ));
}

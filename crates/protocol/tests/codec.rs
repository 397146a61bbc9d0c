//! Decoder caps, one test per attack on the supervisor through the channel.

mod common;

use caffe_sandbox_protocol::{
    decode_from_worker, decode_to_worker, encode, ArenaRange, BlobInfo, Direction, FdSlot,
    FromWorker, InputSpec, Limits, Message, MessageKind, ProtocolError, TensorHeader, ToWorker,
    WorkerErrorKind, MAX_PACKET, PROTOCOL_VERSION,
};
use common::*;

fn from_worker(p: &[u8]) -> Result<Message<FromWorker>, ProtocolError> {
    decode_from_worker(p, &Limits::default())
}

fn err_string(p: &[u8]) -> String {
    from_worker(p).unwrap_err().to_string()
}

#[test]
fn every_kind_round_trips() {
    let to_worker = [
        ToWorker::LoadModel {
            net: FdSlot(0),
            weights: FdSlot(1),
            preprocess: Some(b"mean = [104, 117, 123]".to_vec()),
        },
        ToWorker::LoadModel {
            net: FdSlot(1),
            weights: FdSlot(0),
            preprocess: None,
        },
        ToWorker::Infer {
            inputs: vec![
                InputSpec::Tensor {
                    name: "data".into(),
                    dims: vec![1, 3, 224, 224],
                    at: ArenaRange {
                        offset: 0,
                        len: 3 * 224 * 224 * 4,
                    },
                },
                InputSpec::EncodedImage {
                    name: "image".into(),
                    at: ArenaRange {
                        offset: 602_112,
                        len: 240_512,
                    },
                },
            ],
            new_arena: true,
            deadline_ms: 5000,
        },
        ToWorker::Shutdown,
    ];
    for (i, body) in to_worker.into_iter().enumerate() {
        let msg = Message::new(i as u64 + 1, body);
        let packet = encode(&msg).unwrap();
        assert_eq!(decode_to_worker(&packet, &Limits::default()).unwrap(), msg);
    }
    let from = [
        FromWorker::Hello {
            protocol_version: PROTOCOL_VERSION,
            worker_pid_in_ns: 1,
            seccomp_listener: true,
            caffe_version: "1.0.0".into(),
        },
        FromWorker::Loaded {
            inputs: vec![BlobInfo {
                name: "data".into(),
                dims: vec![1, 3, 224, 224],
            }],
            outputs: vec![BlobInfo {
                name: "prob".into(),
                dims: vec![1, 2],
            }],
        },
        FromWorker::InferResult {
            outputs: vec![TensorHeader {
                name: "prob".into(),
                dims: vec![1, 2],
            }],
        },
        FromWorker::Error {
            kind: WorkerErrorKind::CaffeCheckFailed,
            message: "Check failed: shape\n\tat layer conv1".into(),
            layer: Some("conv1".into()),
        },
    ];
    for (i, body) in from.into_iter().enumerate() {
        let msg = Message::new(u64::MAX - i as u64, body);
        let packet = encode(&msg).unwrap();
        assert_eq!(from_worker(&packet).unwrap(), msg);
    }
}

#[test]
fn unknown_kinds_are_rejected() {
    for kind in [0x0000, 0x0004, 0x7fff, 0x8000, 0x8005, 0xffff] {
        let p = packet(kind, 1, &Payload::new());
        assert!(
            matches!(from_worker(&p), Err(ProtocolError::UnknownKind(k)) if k == kind),
            "{kind:#x}"
        );
        assert!(matches!(
            decode_to_worker(&p, &Limits::default()),
            Err(ProtocolError::UnknownKind(_))
        ));
    }
}

#[test]
fn wrong_direction_is_rejected_both_ways() {
    // A worker sending supervisor kinds.
    for kind in [LOAD_MODEL, INFER, SHUTDOWN] {
        let p = packet(kind, 1, &Payload::new());
        match from_worker(&p) {
            Err(ProtocolError::WrongDirection { kind: k, expected }) => {
                assert_eq!(k.code(), kind);
                assert_eq!(expected, Direction::FromWorker);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        err_string(&packet(SHUTDOWN, 1, &Payload::new())),
        "message kind Shutdown received, but this end only accepts worker->supervisor messages"
    );
    // A supervisor-side packet reaching the worker decoder with a worker kind.
    let hello = encode(&Message::new(
        0,
        FromWorker::Hello {
            protocol_version: 1,
            worker_pid_in_ns: 2,
            seccomp_listener: false,
            caffe_version: "1.0.0".into(),
        },
    ))
    .unwrap();
    assert!(matches!(
        decode_to_worker(&hello, &Limits::default()),
        Err(ProtocolError::WrongDirection {
            kind: MessageKind::Hello,
            expected: Direction::ToWorker
        })
    ));
}

#[test]
fn hello_with_other_protocol_version_is_rejected() {
    let p = packet(HELLO, 0, &Payload::new().u16(1).u32(1).u8(0).str("1.0.0"));
    assert_eq!(
        err_string(&p),
        "Hello.protocol_version: protocol version 1 unsupported (expected 2)"
    );
}

#[test]
fn payload_len_mismatch_and_huge_length_prefixes() {
    let body = infer_result(&[("prob", &[1, 2])]);
    for declared in [
        0,
        body.0.len() as u32 - 1,
        body.0.len() as u32 + 1,
        u32::MAX,
    ] {
        let p = packet_with_len(INFER_RESULT, 1, declared, &body.0);
        assert!(matches!(
            from_worker(&p),
            Err(ProtocolError::PayloadLenMismatch { .. })
        ));
    }
    // Name length prefix near 2^32 (the widest prefix on the wire).
    let p = packet(
        INFER_RESULT,
        1,
        &Payload::new().u32(1).u32(u32::MAX - 3).raw(b"prob"),
    );
    assert_eq!(
        err_string(&p),
        "InferResult.outputs[0].name: length 4294967292 exceeds the limit of 256 bytes"
    );
    // List count near 2^32.
    let p = packet(INFER_RESULT, 1, &Payload::new().u32(u32::MAX));
    assert_eq!(
        err_string(&p),
        "InferResult.outputs: 4294967295 entries exceed the limit of 8"
    );
    // Text length prefix of u32::MAX in an error message.
    let p = packet(ERROR, 1, &Payload::new().u8(1).u32(u32::MAX).raw(b"x"));
    assert!(matches!(
        from_worker(&p),
        Err(ProtocolError::TooLong {
            len: 0xffff_ffff,
            max: 4096,
            ..
        })
    ));
    // Count within the cap but larger than the bytes that follow.
    let p = packet(LOADED, 1, &Payload::new().u32(200).u32(0));
    assert!(matches!(
        from_worker(&p),
        Err(ProtocolError::Truncated { .. })
    ));
}

#[test]
fn truncated_fields_and_trailing_bytes() {
    let full = infer_result(&[("prob", &[1, 2])]).0;
    for cut in 0..full.len() {
        let p = packet_with_len(INFER_RESULT, 1, cut as u32, &full[..cut]);
        assert!(
            matches!(from_worker(&p), Err(ProtocolError::Truncated { .. })),
            "cut at {cut}"
        );
    }
    let p = packet(INFER_RESULT, 1, &Payload(full).u8(0));
    assert_eq!(
        err_string(&p),
        "InferResult: 1 unexpected trailing bytes after the last field"
    );
    let p = packet(SHUTDOWN, 1, &Payload::new().u8(0));
    assert!(matches!(
        decode_to_worker(&p, &Limits::default()),
        Err(ProtocolError::TrailingBytes { count: 1, .. })
    ));
}

#[test]
fn zero_and_negative_dims_are_rejected() {
    let p = packet(INFER_RESULT, 1, &infer_result(&[("prob", &[1, 2, 3, 0])]));
    assert_eq!(err_string(&p), "output 'prob': dim 3 = 0 outside 1..=65536");
    // -1 as an int32 dim.
    let p = packet(INFER_RESULT, 1, &infer_result(&[("prob", &[1, u32::MAX])]));
    assert_eq!(
        err_string(&p),
        "output 'prob': dim 1 = 4294967295 outside 1..=65536"
    );
    let p = packet(
        LOADED,
        1,
        &Payload::new().u32(1).str("data").dims(&[0]).u32(0),
    );
    assert_eq!(
        err_string(&p),
        "Loaded input 'data': dim 0 = 0 outside 1..=65536"
    );
}

#[test]
fn too_many_axes_is_rejected_before_reading_them() {
    let p = packet(INFER_RESULT, 1, &infer_result(&[("prob", &[1; 9])]));
    assert_eq!(
        err_string(&p),
        "output 'prob': 9 axes exceed the limit of 8"
    );
    // An axis count of u32::MAX with nothing behind it.
    let p = packet(
        INFER_RESULT,
        1,
        &Payload::new().u32(1).str("prob").u32(u32::MAX),
    );
    assert!(matches!(
        from_worker(&p),
        Err(ProtocolError::TooManyAxes {
            axes: 0xffff_ffff,
            max: 8,
            ..
        })
    ));
}

#[test]
fn dims_whose_product_overflows_are_rejected() {
    // Default limits: stopped by the element cap (65536^4 = 2^64 would wrap to 0).
    let p = packet(
        INFER_RESULT,
        1,
        &infer_result(&[("prob", &[65536, 65536, 65536, 65536])]),
    );
    assert!(matches!(
        from_worker(&p),
        Err(ProtocolError::TooManyElements { .. } | ProtocolError::ShapeOverflow { .. })
    ));
    // Per-dim limit opened wide: only the checked product can stop it.
    let wide = Limits {
        max_dim: u32::MAX,
        max_elements: usize::MAX,
        ..Limits::default()
    };
    let p = packet(
        INFER_RESULT,
        1,
        &infer_result(&[("prob", &[u32::MAX, u32::MAX, u32::MAX, 2])]),
    );
    assert!(matches!(
        decode_from_worker(&p, &wide),
        Err(ProtocolError::ShapeOverflow { .. })
    ));
    // Element cap with default limits.
    let p = packet(INFER_RESULT, 1, &infer_result(&[("prob", &[65536, 65536])]));
    assert_eq!(
        err_string(&p),
        "output 'prob': 4294967296 elements exceed the limit of 67108864"
    );
}

#[test]
fn invalid_utf8_is_rejected() {
    let p = packet(ERROR, 1, &error_payload(7, b"bad \xff\xfe bytes", None));
    assert_eq!(
        err_string(&p),
        "Error.message: invalid UTF-8 (valid up to byte 4)"
    );
    let p = packet(ERROR, 1, &error_payload(7, b"ok", Some(b"\xc3")));
    assert!(matches!(
        from_worker(&p),
        Err(ProtocolError::InvalidUtf8 { .. })
    ));
    let p = packet(
        INFER_RESULT,
        1,
        &Payload::new().u32(1).bytes(b"pr\x80b").dims(&[1]),
    );
    assert!(matches!(
        from_worker(&p),
        Err(ProtocolError::InvalidUtf8 { .. })
    ));
}

#[test]
fn terminal_escapes_in_error_text_are_stripped() {
    // OSC title, clear screen, colours, CR, and the 8-bit CSI U+009B.
    let msg = "\x1b]0;owned\x07\x1b[2J\x1b[31mCheck failed\x1b[0m\r\n\tdetail\u{9b}2J";
    let p = packet(
        ERROR,
        9,
        &error_payload(4, msg.as_bytes(), Some(b"conv\x1b[1m1")),
    );
    let m = from_worker(&p).unwrap();
    assert_eq!(
        m.body,
        FromWorker::Error {
            kind: WorkerErrorKind::CaffeCheckFailed,
            message: "Check failed\n\tdetail".into(),
            layer: Some("conv1".into()),
        }
    );
    // Also in the version string of Hello.
    let p = packet(
        HELLO,
        0,
        &Payload::new()
            .u16(PROTOCOL_VERSION)
            .u32(1)
            .u8(0)
            .str("1.0\x1b[8m hidden"),
    );
    match from_worker(&p).unwrap().body {
        FromWorker::Hello { caffe_version, .. } => assert_eq!(caffe_version, "1.0 hidden"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn escapes_in_names_are_rejected_not_altered() {
    let p = packet(INFER_RESULT, 1, &infer_result(&[("pr\x1b[31mob", &[1])]));
    assert_eq!(
        err_string(&p),
        "InferResult.outputs[0].name: invalid name: contains control, escape or \
         bidirectional-formatting characters"
    );
    let p = packet(INFER_RESULT, 1, &infer_result(&[("", &[1])]));
    assert!(matches!(
        from_worker(&p),
        Err(ProtocolError::InvalidName {
            reason: "empty",
            ..
        })
    ));
    let long = "n".repeat(257);
    let p = packet(INFER_RESULT, 1, &infer_result(&[(&long, &[1])]));
    assert!(matches!(
        from_worker(&p),
        Err(ProtocolError::TooLong {
            len: 257,
            max: 256,
            ..
        })
    ));
    let ok = "n".repeat(256);
    let p = packet(INFER_RESULT, 1, &infer_result(&[(&ok, &[1])]));
    assert!(from_worker(&p).is_ok());
}

#[test]
fn text_over_4k_is_rejected() {
    let p = packet(ERROR, 1, &error_payload(7, &[b'a'; 4097], None));
    assert_eq!(
        err_string(&p),
        "Error.message: length 4097 exceeds the limit of 4096 bytes"
    );
    let p = packet(ERROR, 1, &error_payload(7, &[b'a'; 4096], None));
    assert!(from_worker(&p).is_ok());
}

#[test]
fn duplicate_names_are_rejected() {
    let p = packet(
        INFER_RESULT,
        1,
        &infer_result(&[("prob", &[1]), ("prob", &[2])]),
    );
    assert_eq!(err_string(&p), "InferResult.outputs: duplicate name 'prob'");
}

#[test]
fn list_caps() {
    let nine: Vec<(String, Vec<u32>)> = (0..9).map(|i| (format!("o{i}"), vec![1])).collect();
    let refs: Vec<(&str, &[u32])> = nine
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let p = packet(INFER_RESULT, 1, &infer_result(&refs));
    assert!(matches!(
        from_worker(&p),
        Err(ProtocolError::TooMany {
            count: 9,
            max: 8,
            ..
        })
    ));
    let p = packet(LOADED, 1, &Payload::new().u32(257).raw(&[0; 257 * 8]));
    assert!(matches!(
        from_worker(&p),
        Err(ProtocolError::TooMany {
            count: 257,
            max: 256,
            ..
        })
    ));
}

#[test]
fn bad_tags_and_kinds() {
    for code in [0u8, 8, 255] {
        let p = packet(ERROR, 1, &error_payload(code, b"x", None));
        assert!(matches!(
            from_worker(&p),
            Err(ProtocolError::InvalidValue { value, .. }) if value == u64::from(code)
        ));
    }
    let p = packet(ERROR, 1, &Payload::new().u8(1).str("x").u8(2));
    assert!(matches!(
        from_worker(&p),
        Err(ProtocolError::InvalidValue { value: 2, .. })
    ));
    let p = packet(
        HELLO,
        0,
        &Payload::new().u16(PROTOCOL_VERSION).u32(1).u8(2).str("v"),
    );
    assert_eq!(
        err_string(&p),
        "Hello.seccomp_listener: invalid value 2 (expected 0 or 1)"
    );
}

#[test]
fn to_worker_caps() {
    let l = Limits::default();
    // Slots out of range or equal.
    for (net, weights) in [(0u8, 0u8), (2, 1), (0, 255)] {
        let p = packet(LOAD_MODEL, 1, &Payload::new().u8(net).u8(weights).u8(0));
        assert!(matches!(
            decode_to_worker(&p, &l),
            Err(ProtocolError::InvalidValue { .. })
        ));
    }
    let p = packet(
        LOAD_MODEL,
        1,
        &Payload::new().u8(0).u8(1).u8(1).bytes(&[0; 16 * 1024 + 1]),
    );
    assert!(matches!(
        decode_to_worker(&p, &l),
        Err(ProtocolError::TooLong { max: 16384, .. })
    ));
    // Infer input with bad tag, bad dims, too many inputs.
    let p = packet(
        INFER,
        1,
        &Payload::new()
            .u32(0)
            .u8(0)
            .u32(1)
            .u8(3)
            .str("data")
            .u64(0)
            .u64(0),
    );
    assert!(matches!(
        decode_to_worker(&p, &l),
        Err(ProtocolError::InvalidValue { value: 3, .. })
    ));
    let p = packet(
        INFER,
        1,
        &Payload::new()
            .u32(0)
            .u8(0)
            .u32(1)
            .u8(1)
            .str("data")
            .dims(&[0])
            .u64(0)
            .u64(0),
    );
    assert_eq!(
        decode_to_worker(&p, &l).unwrap_err().to_string(),
        "input 'data': dim 0 = 0 outside 1..=65536"
    );
    let p = packet(INFER, 1, &Payload::new().u32(0).u8(0).u32(9).raw(&[0; 200]));
    assert!(matches!(
        decode_to_worker(&p, &l),
        Err(ProtocolError::TooMany { count: 9, .. })
    ));
    // new_arena is a boolean.
    let p = packet(INFER, 1, &Payload::new().u32(0).u8(2).u32(0));
    assert!(matches!(
        decode_to_worker(&p, &l),
        Err(ProtocolError::InvalidValue { value: 2, .. })
    ));
    // A tensor's range must hold exactly its data.
    let tensor = |len: u64| {
        packet(
            INFER,
            1,
            &Payload::new()
                .u32(0)
                .u8(1)
                .u32(1)
                .u8(1)
                .str("data")
                .dims(&[1, 2])
                .u64(0)
                .u64(len),
        )
    };
    assert!(decode_to_worker(&tensor(8), &l).is_ok());
    assert!(matches!(
        decode_to_worker(&tensor(12), &l),
        Err(ProtocolError::DataSizeMismatch {
            actual: 12,
            expected: 8,
            ..
        })
    ));
    // A range may not overflow or end past the largest arena.
    for (offset, len) in [(u64::MAX, 2), (1 << 31, 1), (0, (1 << 31) + 1)] {
        let p = packet(
            INFER,
            1,
            &Payload::new()
                .u32(0)
                .u8(1)
                .u32(1)
                .u8(2)
                .str("image")
                .u64(offset)
                .u64(len),
        );
        assert!(
            matches!(decode_to_worker(&p, &l), Err(ProtocolError::TooLong { .. })),
            "{offset}+{len}"
        );
    }
}

#[test]
fn encoder_refuses_oversized_messages() {
    let msg = Message::new(
        1,
        FromWorker::Loaded {
            inputs: (0..256)
                .map(|i| BlobInfo {
                    name: format!("{i:0>250}"),
                    dims: vec![1],
                })
                .collect(),
            outputs: vec![],
        },
    );
    assert!(matches!(
        encode(&msg),
        Err(ProtocolError::PacketTooLarge {
            max: MAX_PACKET,
            ..
        })
    ));
    let msg = Message::new(
        1,
        FromWorker::Error {
            kind: WorkerErrorKind::Internal,
            message: "x".repeat(5000),
            layer: None,
        },
    );
    assert!(matches!(encode(&msg), Err(ProtocolError::TooLong { .. })));
}

#[test]
fn expect_reply_checks_the_id() {
    let m = Message::new(7, FromWorker::InferResult { outputs: vec![] });
    assert!(m.clone().expect_reply(7).is_ok());
    assert_eq!(
        m.expect_reply(8).unwrap_err().to_string(),
        "reply carries request id 7, expected 8"
    );
}

#[test]
fn total_elements_of_one_reply_are_capped() {
    // Each output alone is within max_elements (2^26), together they are not.
    let p = packet(
        INFER_RESULT,
        1,
        &infer_result(&[("a", &[1024, 65536]), ("b", &[1024, 65536])]),
    );
    assert_eq!(
        err_string(&p),
        "InferResult.outputs (all tensors together): 134217728 elements exceed the limit of 67108864"
    );
    let p = packet(
        INFER_RESULT,
        1,
        &infer_result(&[("a", &[512, 65536]), ("b", &[512, 65536])]),
    );
    assert!(from_worker(&p).is_ok());
    let p = packet(
        INFER,
        1,
        &Payload::new()
            .u32(0)
            .u8(0)
            .u32(2)
            .u8(1)
            .str("a")
            .dims(&[1024, 65536])
            .u64(0)
            .u64(1024 * 65536 * 4)
            .u8(1)
            .str("b")
            .dims(&[1])
            .u64(0)
            .u64(4),
    );
    assert!(matches!(
        decode_to_worker(&p, &Limits::default()),
        Err(ProtocolError::TooManyElements { .. })
    ));
}

//! Property tests: decoding arbitrary or mutated bytes never panics, and
//! encode → decode is the identity on valid messages.

use caffe_sandbox_protocol::{
    decode_from_worker, decode_to_worker, encode, sanitize_text, ArenaRange, BlobInfo, FdSlot,
    FromWorker, InputSpec, Limits, Message, MessageKind, TensorHeader, ToWorker, WorkerErrorKind,
    MAGIC, PROTOCOL_VERSION,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_/.é-]{0,40}"
}

fn dims() -> impl Strategy<Value = Vec<u32>> {
    vec(1u32..=64, 0..=4)
}

/// Free text that `sanitize_text` leaves unchanged.
fn text() -> impl Strategy<Value = String> {
    "[ -~\n\té€ü中]{0,200}"
}

fn blobs() -> impl Strategy<Value = Vec<BlobInfo>> {
    btree_map(name(), dims(), 0..6).prop_map(|m| {
        m.into_iter()
            .map(|(name, dims)| BlobInfo { name, dims })
            .collect()
    })
}

fn error_kind() -> impl Strategy<Value = WorkerErrorKind> {
    proptest::sample::select(WorkerErrorKind::ALL.to_vec())
}

fn from_worker() -> impl Strategy<Value = FromWorker> {
    prop_oneof![
        (any::<u32>(), any::<bool>(), text()).prop_map(|(pid, l, v)| FromWorker::Hello {
            protocol_version: PROTOCOL_VERSION,
            worker_pid_in_ns: pid,
            seccomp_listener: l,
            caffe_version: v,
        }),
        (blobs(), blobs()).prop_map(|(inputs, outputs)| FromWorker::Loaded { inputs, outputs }),
        btree_map(name(), dims(), 0..=8).prop_map(|m| FromWorker::InferResult {
            outputs: m
                .into_iter()
                .map(|(name, dims)| TensorHeader { name, dims })
                .collect(),
        }),
        (error_kind(), text(), proptest::option::of(text())).prop_map(|(kind, message, layer)| {
            FromWorker::Error {
                kind,
                message,
                layer,
            }
        }),
    ]
}

fn input_spec(name: String) -> impl Strategy<Value = InputSpec> {
    prop_oneof![
        (dims(), 0u64..1 << 30).prop_map({
            let name = name.clone();
            move |(dims, offset)| InputSpec::Tensor {
                name: name.clone(),
                at: ArenaRange {
                    offset,
                    len: dims.iter().map(|&d| u64::from(d)).product::<u64>() * 4,
                },
                dims,
            }
        }),
        (0u64..1 << 30, 0u64..1 << 30).prop_map(move |(offset, len)| InputSpec::EncodedImage {
            name: name.clone(),
            at: ArenaRange { offset, len },
        }),
    ]
}

fn to_worker() -> impl Strategy<Value = ToWorker> {
    prop_oneof![
        (
            any::<bool>(),
            proptest::option::of(vec(any::<u8>(), 0..300))
        )
            .prop_map(|(swap, preprocess)| ToWorker::LoadModel {
                net: FdSlot(u8::from(swap)),
                weights: FdSlot(u8::from(!swap)),
                preprocess,
            }),
        (
            proptest::sample::subsequence(
                vec!["data", "image", "label", "im_info", "x/y", "z"],
                0..=6
            ),
            any::<u32>(),
            any::<bool>()
        )
            .prop_flat_map(|(names, deadline_ms, new_arena)| {
                let specs: Vec<_> = names
                    .into_iter()
                    .map(|n| input_spec(n.to_owned()))
                    .collect();
                specs.prop_map(move |inputs| ToWorker::Infer {
                    inputs,
                    new_arena,
                    deadline_ms,
                })
            }),
        Just(ToWorker::Shutdown),
    ]
}

fn kind_code() -> impl Strategy<Value = u16> {
    prop_oneof![
        proptest::sample::select(
            MessageKind::ALL
                .iter()
                .map(|k| k.code())
                .collect::<Vec<_>>()
        ),
        any::<u16>(),
    ]
}

/// Header with valid magic/version/length around arbitrary payload bytes, so
/// the fuzzing reaches the payload decoders.
fn framed(kind: u16, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    p.extend_from_slice(&kind.to_le_bytes());
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    p.extend_from_slice(payload);
    p
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn mutate(mut p: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = p.len();
        match *m {
            Mutation::Set(i, b) if len > 0 => p[i % len] = b,
            Mutation::Truncate(i) => p.truncate(i % (len + 1)),
            Mutation::Insert(i, b) => p.insert(i % (len + 1), b),
            Mutation::Remove(i) if len > 0 => {
                p.remove(i % len);
            }
            _ => {}
        }
    }
    p
}

/// Decoding must never panic; anything it accepts must survive a re-encode.
fn check_decoders(p: &[u8]) {
    let l = Limits::default();
    if let Ok(m) = decode_from_worker(p, &l) {
        let again = encode(&m).expect("accepted message must re-encode");
        assert_eq!(decode_from_worker(&again, &l).unwrap(), m);
    }
    if let Ok(m) = decode_to_worker(p, &l) {
        let again = encode(&m).expect("accepted message must re-encode");
        assert_eq!(decode_to_worker(&again, &l).unwrap(), m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn from_worker_round_trips(id in any::<u64>(), body in from_worker()) {
        let msg = Message::new(id, body);
        let packet = encode(&msg).unwrap();
        prop_assert_eq!(decode_from_worker(&packet, &Limits::default()).unwrap(), msg);
    }

    #[test]
    fn to_worker_round_trips(id in any::<u64>(), body in to_worker()) {
        let msg = Message::new(id, body);
        let packet = encode(&msg).unwrap();
        prop_assert_eq!(decode_to_worker(&packet, &Limits::default()).unwrap(), msg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        check_decoders(&bytes);
    }

    #[test]
    fn arbitrary_payloads_behind_a_valid_header_never_panic(
        kind in kind_code(),
        id in any::<u64>(),
        payload in vec(any::<u8>(), 0..512),
    ) {
        check_decoders(&framed(kind, id, &payload));
    }

    #[test]
    fn small_structured_payloads_never_panic(
        kind in kind_code(),
        // Bias toward small integers so counts/lengths/tags are plausible.
        words in vec(prop_oneof![0u32..10, any::<u32>()], 0..40),
        tail in vec(any::<u8>(), 0..64),
    ) {
        let mut payload: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        payload.extend_from_slice(&tail);
        check_decoders(&framed(kind, 1, &payload));
    }

    #[test]
    fn mutated_valid_packets_never_panic(
        body in from_worker(),
        muts in vec(mutation(), 1..6),
    ) {
        let packet = encode(&Message::new(5, body)).unwrap();
        check_decoders(&mutate(packet, &muts));
    }

    #[test]
    fn mutated_valid_requests_never_panic(
        body in to_worker(),
        muts in vec(mutation(), 1..6),
    ) {
        let packet = encode(&Message::new(5, body)).unwrap();
        check_decoders(&mutate(packet, &muts));
    }

    #[test]
    fn sanitize_text_output_is_safe_and_idempotent(s in "(\\PC|[\\x00-\\x1f\\x7f-\\x9f\\u{202a}-\\u{202e}]|\x1b\\[[0-9;]{0,6}[a-zA-Z]){0,64}") {
        let out = sanitize_text(&s);
        prop_assert!(out.len() <= s.len());
        prop_assert!(out.chars().all(|c| c == '\n' || c == '\t' || !c.is_control()));
        let esc = '\u{1b}';
        prop_assert!(!out.contains(esc), "ESC left in {:?}", out);
        let bidi = '\u{202a}'..='\u{202e}';
        prop_assert!(!out.chars().any(|c| bidi.contains(&c)), "bidi left in {:?}", out);
        prop_assert_eq!(sanitize_text(&out), out.clone());
    }

    #[test]
    fn sanitize_text_keeps_printable_text(s in "[ -~\n\té€ü中]{0,200}") {
        prop_assert_eq!(sanitize_text(&s), s);
    }
}

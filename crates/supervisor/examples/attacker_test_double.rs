//! TEST DOUBLE — a compromised worker. Not a tool, never installed: Cargo builds examples only for
//! `cargo test` / `cargo build --examples`, and nothing packages them.
//!
//! It stands in for `caffe-sandbox-worker` (links nothing of Caffe): it speaks `caffe_sandbox_protocol`,
//! installs the seccomp bundle from `--seccomp-fd` exactly like crates/worker/src/filter.rs (through the same
//! seccomp crate calls, channel opened first, listener filter before `Hello`, inference filter after load), sends
//! `Hello` with the listener, and then performs the ONE attack named by `ATTACK` (set through
//! `LaunchConfig::extra_env`):
//! * `syscall:<probe>` — one of the shipped probes (crates/supervisor/src/probe.rs), during load;
//! * `socket_family:<N>` — socket(N, …) for one address family;
//! * `benign` — behaves (threads work, a correct result): the control that proves the double is a worker;
//! * channel attacks on the supervisor: `hello_wrong_id`, `wrong_reply_id`, `duplicate_reply`,
//!   `fds_attached`, `length_huge`, `dims_overflow`, `too_many_axes`, `zero_dims`, `result_dims_overflow`,
//!   `result_nan`, `result_length_mismatch`, `truncate_memfd`, `flood`, `escape_text`, `invalid_utf8`,
//!   `huge_stderr`, `exit0`, `silence`, `grandchild_holds_socket`, `fork_bomb`;
//! * `arena_refused_once` — fails to adopt the first input arena it is sent (as if mapping it failed).
//!
//! Interlock: it does nothing unless it is pid 1 of its own pid namespace (i.e. inside the sandbox).
use caffe_sandbox_protocol::{
    BlobInfo, FromWorker, Message, Tensor, TensorHeader, ToWorker, WorkerChannel, WorkerErrorKind,
};
use caffe_sandbox_supervisor::probe;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const CHANNEL_FD: i32 = 3;

fn main() {
    if std::process::id() != 1 {
        eprintln!("attacker_test_double: only runs as pid 1 of a sandbox");
        std::process::exit(99);
    }
    // The shipped probes' variable selects a `syscall:` attack (so `probe::run_probe_raw` can drive the double).
    let attack = match std::env::var(probe::PROBE_ENV) {
        Ok(name) => format!("syscall:{name}"),
        Err(_) => std::env::var("ATTACK").unwrap_or_else(|_| "benign".into()),
    };
    let ch = probe::open_channel().unwrap_or_else(|e| die(&e));
    let (listener, inference) = match probe::install_worker_filter_from_args() {
        Ok(Some((l, i))) => (Some(l), Some(i)),
        Ok(None) => (None, None),
        Err(e) => die(&e),
    };
    if attack == "hello_wrong_id" {
        let hello = FromWorker::Hello {
            protocol_version: caffe_sandbox_protocol::PROTOCOL_VERSION,
            worker_pid_in_ns: 1,
            seccomp_listener: listener.is_some(),
            caffe_version: "double".into(),
        };
        let fds: Vec<_> = listener.iter().map(|l| l.as_fd()).collect();
        let _ = ch.send(&Message::new(7, hello), &fds);
        park();
    }
    probe::send_hello(&ch, listener).unwrap_or_else(|e| die(&e));
    if attack == "flood" {
        // Frames nobody asked for, as fast as the socket takes them (bounded).
        let pkt = raw_error_packet(0, b"flood");
        for _ in 0..20_000 {
            if send_raw(&pkt, &[], libc::MSG_DONTWAIT) < 0 {
                break;
            }
        }
        park();
    }
    let mut arena_refused = false;
    loop {
        let (msg, fds) = match ch.recv(None) {
            Ok(m) => m,
            Err(_) => std::process::exit(0),
        };
        drop(fds);
        let id = msg.request_id;
        match msg.body {
            ToWorker::Shutdown => std::process::exit(0),
            ToWorker::LoadModel { .. } => on_load(&ch, id, &attack, inference.as_deref()),
            // A worker that could not adopt the input arena it was sent (e.g. mapping it failed): it answers
            // the request with an error, and later ones only if they bring the arena again.
            ToWorker::Infer { new_arena, .. } if attack == "arena_refused_once" => {
                if new_arena && !arena_refused {
                    arena_refused = true;
                    report(&ch, id, "arena", "cannot map the input arena");
                } else if new_arena {
                    on_infer(&ch, id, "benign");
                } else {
                    report(&ch, id, "arena", "no input arena");
                }
            }
            ToWorker::Infer { .. } => on_infer(&ch, id, &attack),
        }
    }
}

fn die(m: &str) -> ! {
    eprintln!("attacker_test_double: {m}");
    std::process::exit(72)
}

fn park() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn blob(name: &str, dims: Vec<u32>) -> BlobInfo {
    BlobInfo {
        name: name.into(),
        dims,
    }
}

fn loaded() -> FromWorker {
    FromWorker::Loaded {
        inputs: vec![blob("data", vec![1, 3])],
        outputs: vec![blob("out", vec![1, 3])],
    }
}

fn report(ch: &WorkerChannel, id: u64, name: &str, outcome: &str) {
    let _ = ch.send(
        &Message::new(
            id,
            FromWorker::Error {
                kind: WorkerErrorKind::Internal,
                message: format!("{}{name}: {outcome}", probe::REPORT_PREFIX),
                layer: None,
            },
        ),
        &[],
    );
}

/// One raw packet: the 20-byte header (magic, version, kind, id, payload_len) and the payload.
fn raw_packet(kind: u16, id: u64, payload: &[u8], claimed_len: Option<u32>) -> Vec<u8> {
    let mut p = b"CFSB".to_vec();
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&kind.to_le_bytes());
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&claimed_len.unwrap_or(payload.len() as u32).to_le_bytes());
    p.extend_from_slice(payload);
    p
}

fn put_str(p: &mut Vec<u8>, s: &[u8]) {
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s);
}

fn put_dims(p: &mut Vec<u8>, dims: &[u32]) {
    p.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        p.extend_from_slice(&d.to_le_bytes());
    }
}

/// `Error` (0x8004): u8 kind, str message, option<str> layer.
fn raw_error_packet(id: u64, message: &[u8]) -> Vec<u8> {
    let mut pl = vec![WorkerErrorKind::BadModel.code()];
    put_str(&mut pl, message);
    pl.push(0);
    raw_packet(0x8004, id, &pl, None)
}

/// `Loaded` (0x8002) with one input of the given dims and one output.
fn raw_loaded(id: u64, dims: &[u32]) -> Vec<u8> {
    let mut pl = Vec::new();
    pl.extend_from_slice(&1u32.to_le_bytes());
    put_str(&mut pl, b"data");
    put_dims(&mut pl, dims);
    pl.extend_from_slice(&1u32.to_le_bytes());
    put_str(&mut pl, b"out");
    put_dims(&mut pl, &[1, 3]);
    raw_packet(0x8002, id, &pl, None)
}

/// `InferResult` (0x8003) with one tensor "out" of the given dims.
fn raw_result(id: u64, dims: &[u32]) -> Vec<u8> {
    let mut pl = Vec::new();
    pl.extend_from_slice(&1u32.to_le_bytes());
    put_str(&mut pl, b"out");
    put_dims(&mut pl, dims);
    raw_packet(0x8003, id, &pl, None)
}

/// sendmsg on the channel fd with optional SCM_RIGHTS.
fn send_raw(pkt: &[u8], fds: &[BorrowedFd<'_>], flags: i32) -> isize {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    // SAFETY: fd 3 is the channel, open for the life of the process; borrowed only for this call.
    let sock = unsafe { BorrowedFd::borrow_raw(CHANNEL_FD) };
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        control.push(SendAncillaryMessage::ScmRights(fds));
    }
    let f = if flags & libc::MSG_DONTWAIT != 0 {
        SendFlags::DONTWAIT
    } else {
        SendFlags::empty()
    };
    match sendmsg(sock, &[std::io::IoSlice::new(pkt)], &mut control, f) {
        Ok(n) => n as isize,
        Err(_) => -1,
    }
}

fn unsealed_memfd(bytes: &[u8]) -> OwnedFd {
    let name = c"out";
    // SAFETY: valid name; the flags the worker policy allows.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        die("memfd_create");
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: writing our buffer to our fd.
    unsafe { libc::pwrite(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
    fd
}

fn on_load(ch: &WorkerChannel, id: u64, attack: &str, inference: Option<&[u8]>) {
    if let Some(name) = attack
        .strip_prefix("syscall:")
        .filter(|n| !probe::spec(n).is_some_and(|s| s.after_load))
    {
        let outcome = probe::perform(name);
        report(ch, id, name, &outcome);
        return;
    }
    if let Some(fam) = attack.strip_prefix("socket_family:") {
        let fam: i32 = fam.parse().unwrap_or(0);
        let mut outcome = String::from("blocked (no socket type accepted)");
        for ty in [
            libc::SOCK_STREAM,
            libc::SOCK_DGRAM,
            libc::SOCK_RAW,
            libc::SOCK_SEQPACKET,
        ] {
            // SAFETY: plain syscall.
            let fd = unsafe { libc::socket(fam, ty | libc::SOCK_CLOEXEC, 0) };
            if fd >= 0 {
                outcome = format!("GOT-THROUGH (socket({fam}, {ty}) = {fd})");
                break;
            }
        }
        report(ch, id, "socket_family", &outcome);
        return;
    }
    match attack {
        "wrong_reply_id" => {
            let _ = ch.send(&Message::new(id + 100, loaded()), &[]);
        }
        "duplicate_reply" => {
            let _ = ch.send(&Message::new(id, loaded()), &[]);
            let _ = ch.send(&Message::new(id, loaded()), &[]);
        }
        "fds_attached" => {
            let fd = unsealed_memfd(b"smuggled");
            send_raw(
                &raw_error_packet(id, b"an error with an fd"),
                &[fd.as_fd()],
                0,
            );
        }
        "length_huge" => {
            send_raw(&raw_packet(0x8002, id, &[0u8; 8], Some(u32::MAX)), &[], 0);
        }
        "dims_overflow" => {
            send_raw(
                &raw_loaded(id, &[u32::MAX, u32::MAX, u32::MAX, u32::MAX]),
                &[],
                0,
            );
        }
        "too_many_axes" => {
            send_raw(&raw_loaded(id, &[1; 9]), &[], 0);
        }
        "zero_dims" => {
            send_raw(&raw_loaded(id, &[1, 0, 3]), &[], 0);
        }
        "escape_text" => {
            let _ = ch.send(
                &Message::new(
                    id,
                    FromWorker::Error {
                        kind: WorkerErrorKind::BadModel,
                        message:
                            "evil \u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}txt.exe\r\nFAKE: all good"
                                .into(),
                        layer: None,
                    },
                ),
                &[],
            );
        }
        "invalid_utf8" => {
            send_raw(&raw_error_packet(id, b"bad \xff\xfe utf8"), &[], 0);
        }
        "huge_stderr" => {
            let chunk = vec![b'A'; 1 << 20];
            let mut e = std::io::stderr().lock();
            for _ in 0..64 {
                let _ = e.write_all(&chunk);
            }
            std::process::exit(0);
        }
        "exit0" => std::process::exit(0),
        "silence" => park(),
        "grandchild_holds_socket" => {
            // SAFETY: the child only sleeps (holding every fd, the channel included).
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                park();
            }
            std::process::exit(0);
        }
        "fork_bomb" => {
            let mut made = 0;
            for _ in 0..10_000 {
                // SAFETY: children exit at once.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: async-signal-safe exit.
                    unsafe { libc::_exit(0) }
                }
                if pid < 0 {
                    break;
                }
                made += 1;
            }
            report(ch, id, "fork_bomb", &format!("GOT-THROUGH ({made} forks)"));
        }
        _ => {
            // benign and the inference-time attacks: behave like a worker — threads work, then stack the
            // inference filter and answer.
            let sum: u64 = (0..8)
                .map(|i| std::thread::spawn(move || (0..1000u64).map(|x| x * i).sum::<u64>()))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .sum();
            if sum == 0 {
                die("threads did not work");
            }
            if let Some(prog) = inference {
                if let Err(e) = caffe_sandbox_seccomp::install_filter(prog) {
                    die(&format!("inference filter: {e}"));
                }
            }
            let _ = ch.send(&Message::new(id, loaded()), &[]);
        }
    }
}

fn on_infer(ch: &WorkerChannel, id: u64, attack: &str) {
    let header = TensorHeader {
        name: "out".into(),
        dims: vec![1, 3],
    };
    if let Some(name) = attack.strip_prefix("syscall:") {
        let outcome = probe::perform(name);
        report(ch, id, name, &outcome);
        return;
    }
    match attack {
        "result_dims_overflow" => {
            let fd = unsealed_memfd(&[0u8; 12]);
            send_raw(&raw_result(id, &[65536, 65536, 65536]), &[fd.as_fd()], 0);
        }
        "result_nan" => {
            let mut bytes = Vec::new();
            for v in [f32::NAN, f32::INFINITY, 1.0] {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            let fd = caffe_sandbox_protocol::create_sealed_memfd("out", &bytes)
                .unwrap_or_else(|e| die(&e.to_string()));
            let _ = ch.send(
                &Message::new(
                    id,
                    FromWorker::InferResult {
                        outputs: vec![header],
                    },
                ),
                &[fd.as_fd()],
            );
        }
        "result_length_mismatch" => {
            let fd = caffe_sandbox_protocol::create_sealed_memfd("out", &[0u8; 8])
                .unwrap_or_else(|e| die(&e.to_string()));
            let _ = ch.send(
                &Message::new(
                    id,
                    FromWorker::InferResult {
                        outputs: vec![header],
                    },
                ),
                &[fd.as_fd()],
            );
        }
        "truncate_memfd" => {
            let fd = unsealed_memfd(&[0u8; 12]);
            let _ = ch.send(
                &Message::new(
                    id,
                    FromWorker::InferResult {
                        outputs: vec![header],
                    },
                ),
                &[fd.as_fd()],
            );
            // Shrink it under the reader's feet (a mmap-based reader would take SIGBUS).
            // SAFETY: our own fd.
            unsafe { libc::ftruncate(fd.as_raw_fd(), 0) };
            park();
        }
        _ => {
            let t = Tensor::new(vec![1, 3], vec![1.0, 2.0, 3.0])
                .unwrap_or_else(|e| die(&e.to_string()));
            let fd = t
                .to_sealed_memfd("out")
                .unwrap_or_else(|e| die(&e.to_string()));
            let _ = ch.send(
                &Message::new(
                    id,
                    FromWorker::InferResult {
                        outputs: vec![header],
                    },
                ),
                &[fd.as_fd()],
            );
        }
    }
}

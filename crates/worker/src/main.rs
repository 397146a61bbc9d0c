//! `caffe-sandbox-worker`: serves the supervisor's protocol with the real BVLC Caffe 1.0, inside the sandbox.
//!
//! Order of events (the trust boundary is the first model byte):
//! 1. the dynamic loader maps libcaffe and its ~146 libraries; glog (stderr only) and Caffe are initialised;
//! 2. the seccomp filter handed over by the supervisor is installed (with a user-notification listener whose
//!    fd goes to the supervisor), so every later system call is policed;
//! 3. `Hello` is sent; only then are model bytes received — everything after this point is untrusted input.
//!
//! With `--zygote` the binary is instead a pre-initialised fork server (see docs/fork-server.md): it does step 1
//! once, then forks one child per `Fork` request on its control channel (fd 3); each child continues with steps 2
//! and 3 on its own channel, with the seccomp programs compiled for its own pid.
//!
//! Exit codes: 0 after `Shutdown` or when the supervisor hangs up; 70 after a Caffe CHECK failure (reported
//! first as an `Error` message when possible); 71 protocol error; 72 initialisation failure.
use caffe_sandbox_protocol::{
    read_sealed_bytes, tensor_from_le_bytes, BlobInfo, ChildStatus, FromWorker, FromZygote,
    InputSpec, Message, ProtocolError, Tensor, TensorHeader, ToWorker, ToZygote, WorkerChannel,
    WorkerErrorKind, ZygoteChannel, HELLO_REQUEST_ID, PROTOCOL_VERSION,
};
use caffe_sandbox_worker::engine::{self, Net, NetFormat};
use caffe_sandbox_worker::filter::PendingInferenceFilter;
use caffe_sandbox_worker::mapped::SealedMap;
use caffe_sandbox_worker::options::LoadOptions;
use caffe_sandbox_worker::pipeline::image_to_tensor;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use caffe_sandbox_protocol::exit_code::{
    CAFFE_CHECK_FAILED as EXIT_CHECK_FAILED, INIT as EXIT_INIT, PROTOCOL as EXIT_PROTOCOL,
};

/// Largest net definition and weights accepted over the channel.
const MAX_NET_BYTES: usize = 64 << 20;
const MAX_WEIGHTS_BYTES: usize = 2 << 30;
const MAX_IMAGE_BYTES: usize = 64 << 20;

static CHANNEL: OnceLock<WorkerChannel> = OnceLock::new();
static CURRENT_REQUEST: AtomicU64 = AtomicU64::new(0);

/// glog FATAL (a CHECK failed): report it to the supervisor if possible, then end the process.
/// Must not return (glog would abort).
extern "C" fn on_caffe_fatal(msg: *const std::ffi::c_char, len: usize) {
    // SAFETY: the shim passes a buffer of `len` bytes that lives for this call.
    let text = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) };
    let message = String::from_utf8_lossy(text).into_owned();
    if let Some(ch) = CHANNEL.get() {
        let reply = FromWorker::Error {
            kind: WorkerErrorKind::CaffeCheckFailed,
            message,
            layer: None,
        };
        let _ = ch.send(
            &Message::new(CURRENT_REQUEST.load(Ordering::SeqCst), reply),
            &[],
        );
    }
    // SAFETY: _exit is async-signal-safe and never returns; no destructors may run with Caffe half-failed.
    unsafe { libc::_exit(EXIT_CHECK_FAILED) }
}

struct Args {
    channel_fd: i32,
    seccomp_fd: Option<i32>,
    log_level: i32,
    zygote: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        channel_fd: 3,
        seccomp_fd: None,
        log_level: 1,
        zygote: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = || -> Result<i32, String> {
            it.next()
                .ok_or(format!("{a} needs a value"))?
                .parse()
                .map_err(|e| format!("{a}: {e}"))
        };
        match a.as_str() {
            "--channel-fd" => args.channel_fd = num()?,
            "--seccomp-fd" => args.seccomp_fd = Some(num()?),
            "--log-level" => args.log_level = num()?,
            "--zygote" => args.zygote = true,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("caffe-sandbox-worker: {e}");
            std::process::exit(EXIT_INIT);
        }
    };
    if let Err(e) = engine::init(args.log_level, on_caffe_fatal) {
        eprintln!("caffe-sandbox-worker: {e}");
        std::process::exit(EXIT_INIT);
    }
    // SAFETY: the supervisor hands the channel over at this fd number; nothing else in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(args.channel_fd) };
    if args.zygote {
        if args.seccomp_fd.is_some() {
            eprintln!(
                "caffe-sandbox-worker: --zygote takes no --seccomp-fd (each child gets its own)"
            );
            std::process::exit(EXIT_INIT);
        }
        std::process::exit(zygote::run(fd));
    }
    std::process::exit(worker_main(fd, args.seccomp_fd));
}

/// Steps 2 and 3 and then the requests: install the seccomp programs at `seccomp_fd` (if any), send `Hello` on
/// the channel `fd`, serve. Returns the exit code.
fn worker_main(fd: OwnedFd, seccomp_fd: Option<RawFd>) -> i32 {
    let raw = fd.as_raw_fd();
    let channel = match WorkerChannel::new(fd) {
        Ok(c) => CHANNEL.get_or_init(|| c),
        Err(e) => {
            eprintln!("caffe-sandbox-worker: channel fd {raw}: {e}");
            return EXIT_INIT;
        }
    };
    // Everything Hello needs is computed before the filter exists, so that sending Hello (which hands the
    // supervisor the listener) is the first thing the worker does under it.
    let pid = std::process::id();
    let caffe_version = engine::caffe_version();
    let (listener, pending_filter) = match seccomp_fd {
        Some(fd) => match caffe_sandbox_worker::filter::install_from_fd(fd) {
            Ok((l, p)) => (Some(l), Some(p)),
            Err(e) => {
                eprintln!("caffe-sandbox-worker: seccomp: {e}");
                return EXIT_INIT;
            }
        },
        None => (None, None),
    };
    let hello = FromWorker::Hello {
        protocol_version: PROTOCOL_VERSION,
        worker_pid_in_ns: pid,
        seccomp_listener: listener.is_some(),
        caffe_version,
    };
    let fds: Vec<_> = listener.iter().map(|l| l.as_fd()).collect();
    if let Err(e) = channel.send(&Message::new(HELLO_REQUEST_ID, hello), &fds) {
        eprintln!("caffe-sandbox-worker: hello: {e}");
        return EXIT_PROTOCOL;
    }
    drop(fds);
    drop(listener); // the supervisor holds its copy; ours must not keep the listener alive
    serve(channel, pending_filter)
}

/// The fork server. Single-purpose: it never reads model bytes or inputs, only `Fork` requests (each with a
/// channel end and a stderr pipe) on its control channel, and it reaps its children through pidfds.
mod zygote {
    use super::*;

    /// How long a fresh child waits for its seccomp programs before giving up.
    const SECCOMP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

    struct Child {
        pidfd: OwnedFd,
        pid: i32,
        fork_id: u64,
    }

    /// Serves `Fork` requests until the supervisor hangs up; returns the exit code.
    pub fn run(fd: OwnedFd) -> i32 {
        let ctl = match ZygoteChannel::new(fd) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("caffe-sandbox-worker: zygote channel: {e}");
                return EXIT_INIT;
            }
        };
        let ready = FromZygote::Ready {
            protocol_version: PROTOCOL_VERSION,
            pid_in_ns: std::process::id(),
            caffe_version: engine::caffe_version(),
        };
        if let Err(e) = ctl.send(&Message::new(HELLO_REQUEST_ID, ready), &[]) {
            eprintln!("caffe-sandbox-worker: zygote ready: {e}");
            return EXIT_PROTOCOL;
        }
        let mut children: Vec<Child> = Vec::new();
        loop {
            let mut pfds: Vec<libc::pollfd> = std::iter::once(ctl.as_fd().as_raw_fd())
                .chain(children.iter().map(|c| c.pidfd.as_raw_fd()))
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs for the duration of the call.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!(
                    "caffe-sandbox-worker: zygote poll: {}",
                    std::io::Error::last_os_error()
                );
                return EXIT_PROTOCOL;
            }
            // Reap first (frees fds and pids), then serve the control channel.
            let ended: Vec<usize> = (1..pfds.len()).filter(|&i| pfds[i].revents != 0).collect();
            for &i in ended.iter().rev() {
                let c = children.swap_remove(i - 1);
                let status = reap(&c);
                let msg = FromZygote::ChildExited {
                    pid_in_ns: c.pid as u32,
                    status,
                };
                if let Err(e) = ctl.send(&Message::new(c.fork_id, msg), &[]) {
                    eprintln!("caffe-sandbox-worker: zygote: {e}");
                    return EXIT_PROTOCOL;
                }
            }
            if pfds[0].revents == 0 {
                continue;
            }
            let (msg, mut fds) = match ctl.try_recv() {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                // The supervisor hung up: end (pid 1 of the namespace: its children die with it).
                Err(ProtocolError::Closed) => return 0,
                Err(e) => {
                    eprintln!("caffe-sandbox-worker: zygote: {e}");
                    return EXIT_PROTOCOL;
                }
            };
            let reply = match msg.body {
                ToZygote::Fork => {
                    let stderr = fds
                        .pop()
                        .expect("Fork carries 2 fds (checked by the channel)");
                    let channel = fds
                        .pop()
                        .expect("Fork carries 2 fds (checked by the channel)");
                    match fork_child(channel, stderr) {
                        Ok(child) => {
                            let reply = FromZygote::Forked {
                                pid_in_ns: child.pid as u32,
                            };
                            let sent = ctl
                                .send(&Message::new(msg.request_id, reply), &[child.pidfd.as_fd()]);
                            children.push(Child {
                                fork_id: msg.request_id,
                                ..child
                            });
                            sent
                        }
                        Err(e) => ctl.send(
                            &Message::new(
                                msg.request_id,
                                FromZygote::ForkFailed {
                                    message: e.to_string(),
                                },
                            ),
                            &[],
                        ),
                    }
                }
                ToZygote::InstallSeccomp => {
                    eprintln!(
                        "caffe-sandbox-worker: zygote: InstallSeccomp on the control channel"
                    );
                    return EXIT_PROTOCOL;
                }
            };
            if let Err(e) = reply {
                eprintln!("caffe-sandbox-worker: zygote: {e}");
                return EXIT_PROTOCOL;
            }
        }
    }

    /// Reaps an ended child through its pidfd.
    fn reap(c: &Child) -> ChildStatus {
        loop {
            // SAFETY: siginfo_t is plain data; zeroed is a valid value that waitid overwrites.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: P_PIDFD (3) with a pidfd we own and a valid siginfo pointer.
            let r = unsafe {
                libc::waitid(
                    3 as libc::idtype_t,
                    c.pidfd.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED,
                )
            };
            if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            if r == -1 {
                // Cannot happen for our own child; report it as killed rather than invent an exit code.
                return ChildStatus::Signaled(libc::SIGKILL as u8);
            }
            // SAFETY: waitid filled `info` for a child state change.
            let (code, status) = unsafe { (info.si_code, info.si_status()) };
            return if code == libc::CLD_EXITED {
                ChildStatus::Exited(status as u8)
            } else {
                ChildStatus::Signaled(status.clamp(1, 64) as u8)
            };
        }
    }

    /// Forks one worker. The child never returns from here.
    fn fork_child(channel: OwnedFd, stderr: OwnedFd) -> std::io::Result<Child> {
        // SAFETY: the zygote is single-purpose and, at this point, single-threaded in everything that matters:
        // its only Rust thread is this one, and OpenBLAS's pthread_atfork prepare handler stops the BLAS
        // thread pool before the fork (the child starts its own lazily). glibc's fork makes malloc usable in
        // the child. The child only uses raw system calls and this program's own code until it installs seccomp.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: `_exit` never returns; destructors of the zygote's state must not run in the child.
            unsafe { libc::_exit(child_main(channel, stderr)) }
        }
        drop((channel, stderr));
        // SAFETY: pidfd_open(pid, 0) on our own unreaped child; the result is a new fd we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: kill and waitpid on our own child, which must not outlive a failed fork request.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(e);
        }
        // SAFETY: pidfd_open returned a new fd that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(Child {
            pidfd,
            pid,
            fork_id: 0,
        })
    }

    /// The child: only its own fds (0 = /dev/null, 1 and 2 = its stderr pipe, 3 = its channel), then its
    /// seccomp programs (compiled for its pid), `Hello`, serve.
    fn child_main(channel: OwnedFd, stderr: OwnedFd) -> i32 {
        let (ch, err) = (channel.into_raw_fd(), stderr.into_raw_fd());
        // SAFETY: dup2 and close_range on fds this process owns; fd 3 (the zygote's control channel) is
        // replaced by the child's own channel, and every other inherited fd (the zygote's pidfds of the
        // siblings, the received originals) is closed.
        let ok = unsafe {
            libc::dup2(err, 2) == 2
                && libc::dup2(err, 1) == 1
                && libc::dup2(ch, 3) == 3
                && libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) == 0
        };
        if !ok {
            eprintln!(
                "caffe-sandbox-worker: child fds: {}",
                std::io::Error::last_os_error()
            );
            return EXIT_INIT;
        }
        // SAFETY: fd 3 is the channel dup'ed above; nothing else owns it now.
        let fd = unsafe { OwnedFd::from_raw_fd(3) };
        let pre = match ZygoteChannel::new(fd) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("caffe-sandbox-worker: child channel: {e}");
                return EXIT_INIT;
            }
        };
        let (msg, mut fds) = match pre.recv(Some(SECCOMP_WAIT)) {
            Ok(m) => m,
            Err(ProtocolError::Closed) => return 0,
            Err(e) => {
                eprintln!("caffe-sandbox-worker: waiting for the seccomp programs: {e}");
                return EXIT_PROTOCOL;
            }
        };
        if msg.body != ToZygote::InstallSeccomp {
            eprintln!(
                "caffe-sandbox-worker: expected InstallSeccomp, got {:?}",
                msg.body
            );
            return EXIT_PROTOCOL;
        }
        let bundle = fds
            .pop()
            .expect("InstallSeccomp carries 1 fd (checked by the channel)");
        worker_main(pre.into_inner(), Some(bundle.into_raw_fd()))
    }
}

/// The worker's state between requests.
struct Loaded {
    net: Net,
    options: LoadOptions,
}

fn serve(channel: &WorkerChannel, mut pending_filter: Option<PendingInferenceFilter>) -> i32 {
    let mut loaded: Option<Loaded> = None;
    // The input arena, mapped once and replaced when a request brings a new one.
    let mut arena: Option<SealedMap> = None;
    loop {
        let (msg, fds) = match channel.recv(None) {
            Ok(m) => m,
            Err(ProtocolError::Closed) => return 0,
            Err(e) => {
                eprintln!("caffe-sandbox-worker: {e}");
                return EXIT_PROTOCOL;
            }
        };
        CURRENT_REQUEST.store(msg.request_id, Ordering::SeqCst);
        let reply = match msg.body {
            ToWorker::Shutdown => return 0,
            ToWorker::LoadModel {
                net,
                weights,
                preprocess,
            } => {
                match load(
                    &fds[net.index()],
                    &fds[weights.index()],
                    preprocess.as_deref(),
                ) {
                    Ok((l, reply)) => {
                        loaded = Some(l);
                        // Tighten seccomp before answering: from here on only inference happens.
                        match pending_filter.take().map(PendingInferenceFilter::install) {
                            Some(Err(e)) => {
                                eprintln!("caffe-sandbox-worker: {e}");
                                return EXIT_INIT;
                            }
                            _ => Ok((reply, Vec::new())),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            ToWorker::Infer {
                inputs, new_arena, ..
            } => {
                let mapped = match (new_arena, fds.first()) {
                    (true, Some(fd)) => SealedMap::arena(fd).map(|m| arena = Some(m)),
                    _ => Ok(()),
                };
                match (mapped, loaded.as_mut(), arena.as_ref()) {
                    (Err(e), _, _) => {
                        Err(WorkerError::new(WorkerErrorKind::BadInput, e.to_string()))
                    }
                    (Ok(()), Some(l), Some(a)) => infer(l, &inputs, a),
                    (Ok(()), None, _) => Err(WorkerError::new(
                        WorkerErrorKind::BadInput,
                        "no model loaded",
                    )),
                    (Ok(()), Some(_), None) => Err(WorkerError::new(
                        WorkerErrorKind::BadInput,
                        "no input arena: the first request must bring one",
                    )),
                }
            }
        };
        let sent = match reply {
            Ok((body, out_fds)) => {
                let borrowed: Vec<_> = out_fds.iter().map(|f| f.as_fd()).collect();
                channel.send(&Message::new(msg.request_id, body), &borrowed)
            }
            Err(e) => channel.send(
                &Message::new(
                    msg.request_id,
                    FromWorker::Error {
                        kind: e.kind,
                        message: truncate(e.message, 3000),
                        layer: e.layer,
                    },
                ),
                &[],
            ),
        };
        if let Err(e) = sent {
            eprintln!("caffe-sandbox-worker: reply: {e}");
            return EXIT_PROTOCOL;
        }
    }
}

struct WorkerError {
    kind: WorkerErrorKind,
    message: String,
    layer: Option<String>,
}

impl WorkerError {
    fn new(kind: WorkerErrorKind, message: impl Into<String>) -> Self {
        WorkerError {
            kind,
            message: message.into(),
            layer: None,
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Caffe names the offending layer in many messages ("Creating layer conv1", "layer 'x'…"); extract it so the
/// supervisor can report it as a field.
fn layer_in(message: &str) -> Option<String> {
    let start = message.find("layer ")? + "layer ".len();
    let rest = message[start..].trim_start_matches(['\'', '"']);
    let name: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '\'' | '"' | ',' | ':'))
        .collect();
    (!name.is_empty() && name.len() <= 256).then_some(name)
}

fn blob_info(net: &Net, name: &str) -> Result<BlobInfo, WorkerError> {
    let dims = net
        .blob_shape(name)
        .map_err(|e| WorkerError::new(WorkerErrorKind::Internal, e.to_string()))?;
    let dims = dims
        .iter()
        .map(|&d| u32::try_from(d).ok().filter(|&d| d > 0))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| {
            WorkerError::new(
                WorkerErrorKind::BadModel,
                format!("blob '{name}' has an empty or huge dim"),
            )
        })?;
    // A blob the protocol cannot carry (e.g. a 40000x40000 Input) is the model's fault: say so, rather than
    // failing to encode `Loaded` and exiting without an answer.
    caffe_sandbox_protocol::Limits::default()
        .check_shape(name, &dims)
        .map_err(|e| WorkerError::new(WorkerErrorKind::BadModel, e.to_string()))?;
    Ok(BlobInfo {
        name: name.to_string(),
        dims,
    })
}

fn load(
    net_fd: &OwnedFd,
    weights_fd: &OwnedFd,
    options: Option<&[u8]>,
) -> Result<(Loaded, FromWorker), WorkerError> {
    let options = match options {
        Some(bytes) => LoadOptions::from_json(bytes)
            .map_err(|e| WorkerError::new(WorkerErrorKind::Unsupported, e))?,
        None => LoadOptions::default(),
    };
    let net_bytes = read_sealed_bytes(net_fd, "net", MAX_NET_BYTES)
        .map_err(|e| WorkerError::new(WorkerErrorKind::BadModel, e.to_string()))?;
    let weights = SealedMap::new(weights_fd, "weights", MAX_WEIGHTS_BYTES)
        .map_err(|e| WorkerError::new(WorkerErrorKind::BadWeights, e.to_string()))?;
    let format = if options.net_is_text {
        NetFormat::Text
    } else {
        NetFormat::Binary
    };
    let net = Net::new(
        &net_bytes,
        format,
        Some(&weights[..]).filter(|w| !w.is_empty()),
    )
    .map_err(|e| {
        let message = e.to_string();
        let kind = if message.contains("weights") {
            WorkerErrorKind::BadWeights
        } else {
            WorkerErrorKind::BadModel
        };
        WorkerError {
            kind,
            layer: layer_in(&message),
            message,
        }
    })?;
    drop((net_bytes, weights));
    let inputs = net
        .input_names()
        .iter()
        .map(|n| blob_info(&net, n))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = net
        .output_names()
        .iter()
        .map(|n| blob_info(&net, n))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        Loaded { net, options },
        FromWorker::Loaded { inputs, outputs },
    ))
}

fn infer(
    l: &mut Loaded,
    inputs: &[InputSpec],
    arena: &SealedMap,
) -> Result<(FromWorker, Vec<OwnedFd>), WorkerError> {
    let bad_input = |m: String| WorkerError::new(WorkerErrorKind::BadInput, m);
    // One input per blob (the protocol refuses duplicate names); the bytes are read straight from the arena.
    for spec in inputs {
        let name = spec.name();
        let bytes = arena
            .range(spec.at())
            .map_err(|e| bad_input(format!("input '{name}': {e}")))?;
        let (dims, data) = match spec {
            InputSpec::Tensor { dims, .. } => {
                let header = TensorHeader {
                    name: name.to_string(),
                    dims: dims.clone(),
                };
                let Tensor { dims, data } =
                    tensor_from_le_bytes(&header, &Default::default(), bytes)
                        .map_err(|e| bad_input(e.to_string()))?;
                (dims, data)
            }
            InputSpec::EncodedImage { .. } => {
                let mut dims = l
                    .net
                    .blob_shape(name)
                    .map_err(|_| bad_input(format!("the net has no input named '{name}'")))?;
                if let Some(n) = dims.first_mut() {
                    *n = 1; // one image
                }
                if bytes.len() > MAX_IMAGE_BYTES {
                    return Err(bad_input(format!(
                        "input '{name}': an image of {} bytes exceeds the limit of {MAX_IMAGE_BYTES}",
                        bytes.len()
                    )));
                }
                let data = image_to_tensor(
                    bytes,
                    &l.options.preprocess,
                    &dims,
                    &l.options.decode_limits(),
                )
                .map_err(|e| WorkerError::new(WorkerErrorKind::ImageDecode, e.to_string()))?;
                (dims, data)
            }
        };
        l.net
            .set_input(name, &dims, &data)
            .map_err(|e| bad_input(e.to_string()))?;
    }
    l.net.forward().map_err(|e| {
        let message = e.to_string();
        WorkerError {
            kind: WorkerErrorKind::Internal,
            layer: layer_in(&message),
            message,
        }
    })?;
    let mut headers = Vec::new();
    let mut out_fds = Vec::new();
    for name in l.net.output_names() {
        let (shape, data) = l
            .net
            .blob(&name)
            .map_err(|e| WorkerError::new(WorkerErrorKind::Internal, e.to_string()))?;
        let tensor = Tensor::new(shape, data)
            .map_err(|e| WorkerError::new(WorkerErrorKind::Internal, e.to_string()))?;
        headers.push(
            tensor
                .header(&name)
                .map_err(|e| WorkerError::new(WorkerErrorKind::Internal, e.to_string()))?,
        );
        out_fds.push(
            tensor
                .to_sealed_memfd(&name)
                .map_err(|e| WorkerError::new(WorkerErrorKind::Internal, e.to_string()))?,
        );
    }
    Ok((FromWorker::InferResult { outputs: headers }, out_fds))
}

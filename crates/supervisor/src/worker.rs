//! One sandboxed worker as seen from the supervisor: start it, load a model, run requests, and when anything
//! goes wrong, kill it and say why. Everything the worker sends is decoded by the protocol crate with hard caps;
//! nothing it says overrides what the supervisor observed itself (its own timers, the wait status, the seccomp
//! monitor).
use crate::error::{Error, Result, WorkerFailure};
use crate::launch::zygote::{self, ForkedChild};
use crate::launch::{launch, LaunchConfig, Launched};
use crate::model::ModelBundle;
use crate::process::{classify, EndFacts, ExitStatus, StderrCollector};
use crate::seccomp_watch::SeccompWatch;
use caffe_sandbox_jail::{Layer, LayerReport, LayerState};
use caffe_sandbox_protocol::{
    read_sealed_tensor, ArenaRange, BlobInfo, FdSlot, FromWorker, InputArena, InputSpec, Limits,
    Message, ProtocolError, SupervisorChannel, ToWorker, WorkerErrorKind, HELLO_REQUEST_ID,
    PROTOCOL_VERSION,
};
use serde::Serialize;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

/// The part of a worker's input arena whose pages stay allocated between requests: enough for a batch of
/// photos or a few 224×224 tensors. Pages a larger request wrote above it are given back after its reply, so a
/// pool of workers does not keep one large request's memory each for as long as the workers live.
pub const ARENA_KEPT_BYTES: u64 = 16 << 20;

/// Deadlines the supervisor enforces with its own clock.
#[derive(Debug, Clone, Serialize)]
pub struct Deadlines {
    /// From spawn to `Hello` (dynamic loading of ~146 libraries, Caffe init, filter install).
    pub start: Duration,
    /// Model load (net construction + weights).
    pub load: Duration,
    /// One inference request.
    pub request: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            start: Duration::from_secs(20),
            load: Duration::from_secs(60),
            request: Duration::from_secs(30),
        }
    }
}

/// An input for one request.
#[derive(Debug, Clone)]
pub enum Input {
    /// Encoded image bytes (JPEG/PNG/BMP/GIF), decoded and preprocessed inside the worker.
    Image { name: String, bytes: Vec<u8> },
    /// A raw float tensor.
    Tensor {
        name: String,
        dims: Vec<usize>,
        data: Vec<f32>,
    },
}

impl Input {
    /// The input blob this input feeds.
    pub fn name(&self) -> &str {
        match self {
            Input::Image { name, .. } | Input::Tensor { name, .. } => name,
        }
    }
}

/// Net inputs and outputs as reported by the worker after loading (validated).
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub inputs: Vec<BlobShape>,
    pub outputs: Vec<BlobShape>,
}

/// A blob name and shape.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BlobShape {
    pub name: String,
    pub dims: Vec<usize>,
}

impl From<&BlobInfo> for BlobShape {
    fn from(b: &BlobInfo) -> Self {
        BlobShape {
            name: b.name.clone(),
            dims: b.dims.iter().map(|&d| d as usize).collect(),
        }
    }
}

/// A named output tensor.
#[derive(Debug, Clone, Serialize)]
pub struct Output {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Load,
    Inference,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Load => "load",
            Phase::Inference => "inference",
        }
    }
}

/// The worker process: started by the jail (a fresh exec, pid 1 of its own namespaces) or forked by a fork
/// server (a grandchild: killed through its pidfd, death seen on the pidfd, exit status reported by the
/// zygote that reaped it).
enum Proc {
    Own(Launched),
    Forked(ForkedChild),
}

fn poll_in(fd: &OwnedFd, timeout: Duration) -> bool {
    let ts = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    let mut pfd = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
    loop {
        match rustix::event::poll(&mut pfd, Some(&ts)) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

impl Proc {
    fn pidfd(&self) -> &OwnedFd {
        match self {
            Proc::Own(l) => &l.sandbox.pidfd,
            Proc::Forked(f) => &f.pidfd,
        }
    }

    fn kill(&self) {
        match self {
            Proc::Own(l) => {
                let _ = l.sandbox.kill();
            }
            Proc::Forked(f) => {
                let _ = rustix::process::pidfd_send_signal(&f.pidfd, rustix::process::Signal::KILL);
            }
        }
    }

    /// Waits until the process ended (killing it if it takes more than 10 s) and returns how.
    fn wait(&self) -> Option<ExitStatus> {
        match self {
            Proc::Own(l) => l.sandbox.wait().ok().map(ExitStatus::from),
            Proc::Forked(f) => {
                // Death comes from the kernel (the pidfd), not from the zygote.
                if !poll_in(&f.pidfd, Duration::from_secs(10)) {
                    self.kill();
                    if !poll_in(&f.pidfd, Duration::from_secs(5)) {
                        return None;
                    }
                }
                f.zygote.exit_status(f.fork_id, Duration::from_secs(2))
            }
        }
    }
}

/// A live worker.
pub struct Worker {
    launched: Option<Proc>,
    channel: SupervisorChannel,
    stderr: Option<StderrCollector>,
    seccomp: Option<SeccompWatch>,
    /// The seccomp state confirmed from the kernel after `Hello`.
    seccomp_state: Option<LayerState>,
    deadlines: Deadlines,
    limits: Limits,
    next_id: u64,
    phase: Phase,
    info: Option<ModelInfo>,
    cfg: LaunchConfig,
    dead: bool,
    /// The input arena (see `caffe_sandbox_protocol::InputArena`), made at the first request and replaced by a
    /// larger one when a request does not fit; `arena_sent` once the worker has it.
    arena: Option<InputArena>,
    arena_sent: bool,
}

impl Worker {
    /// Spawns a worker in the sandbox described by `cfg` and waits for its `Hello`.
    pub fn start(cfg: &LaunchConfig, deadlines: Deadlines) -> Result<Worker> {
        if cfg.fork_server {
            return Self::start_forked(cfg, deadlines);
        }
        let mut w = Self::start_launched(cfg, deadlines, launch(cfg)?)?;
        // Natively launched, the process the supervisor holds is the worker itself (pid 1 of its sandbox), so
        // its filter can be confirmed from the kernel. (Other launchers, e.g. the OCI tier, hold a wrapper.)
        w.confirm_seccomp_from_kernel()?;
        Ok(w)
    }

    /// Confirms the seccomp filter from the kernel's side (every thread in filter mode) rather than from the
    /// worker's Hello: a worker that handed over a listener but filtered only one thread must not count as
    /// sandboxed.
    fn confirm_seccomp_from_kernel(&mut self) -> Result<()> {
        if self.seccomp.is_none() {
            return Ok(());
        }
        if let Some(pid) = self.pid() {
            match crate::seccomp_watch::confirm_from_kernel(pid, 1, &self.cfg.seccomp_policy_name())
            {
                LayerState::Weakened { reason } => {
                    return Err(self.sandbox_error(format!("worker's seccomp filter: {reason}")));
                }
                state => self.seccomp_state = Some(state),
            }
        }
        Ok(())
    }

    /// [`Worker::start`] with [`LaunchConfig::fork_server`]: fork from the configuration's zygote (started on
    /// first use), then the same `Hello` handshake, checking that the worker's pid is the forked one.
    fn start_forked(cfg: &LaunchConfig, deadlines: Deadlines) -> Result<Worker> {
        let deadline = Instant::now() + deadlines.start;
        let z = zygote::for_config(cfg, deadline)?;
        let (child, channel, stderr) = z.fork(cfg, deadline)?;
        let w = Worker {
            launched: Some(Proc::Forked(child)),
            channel,
            stderr: Some(StderrCollector::start(stderr, StderrCollector::DEFAULT_CAP)),
            seccomp: None,
            seccomp_state: None,
            deadlines,
            limits: Limits::default(),
            next_id: 1,
            phase: Phase::Start,
            info: None,
            cfg: cfg.clone(),
            dead: false,
            arena: None,
            arena_sent: false,
        };
        w.handshake(deadline)
    }

    /// Like [`Worker::start`] for a worker another launcher started (e.g. the OCI-runtime tier in
    /// crates/policy): waits for `Hello`, takes over the seccomp listener and watches the process.
    pub fn start_launched(
        cfg: &LaunchConfig,
        deadlines: Deadlines,
        mut launched: crate::launch::Launched,
    ) -> Result<Worker> {
        let channel = launched.channel.take().expect("launch returns the channel");
        let stderr = launched
            .sandbox
            .stderr
            .try_clone()
            .ok()
            .map(|fd| StderrCollector::start(fd, StderrCollector::DEFAULT_CAP));
        let w = Worker {
            launched: Some(Proc::Own(launched)),
            channel,
            stderr,
            seccomp: None,
            seccomp_state: None,
            deadlines,
            limits: Limits::default(),
            next_id: 1,
            phase: Phase::Start,
            info: None,
            cfg: cfg.clone(),
            dead: false,
            arena: None,
            arena_sent: false,
        };
        let deadline = Instant::now() + w.deadlines.start;
        w.handshake(deadline)
    }

    /// Waits for `Hello` and takes over the seccomp listener.
    fn handshake(mut self, deadline: Instant) -> Result<Worker> {
        let w = &mut self;
        let (msg, mut fds) = match w.channel.recv_deadline(Some(deadline)) {
            Ok(m) => m,
            Err(e) => return Err(w.fail(Some(e))),
        };
        let (version, listener, hello_pid) = match (msg.request_id, msg.body) {
            (
                HELLO_REQUEST_ID,
                FromWorker::Hello {
                    protocol_version,
                    seccomp_listener,
                    worker_pid_in_ns,
                    ..
                },
            ) => (
                protocol_version,
                if seccomp_listener { fds.pop() } else { None },
                worker_pid_in_ns,
            ),
            (id, other) => {
                let detail = format!(
                    "expected Hello (id 0), got {:?} with id {id}",
                    kind_of(&other)
                );
                return Err(w.violation(detail));
            }
        };
        if version != PROTOCOL_VERSION {
            return Err(w.violation(format!(
                "protocol version {version}, supervisor speaks {PROTOCOL_VERSION}"
            )));
        }
        if let Some(Proc::Forked(f)) = &w.launched {
            if hello_pid != f.pid_in_ns {
                let detail = format!(
                    "Hello from pid {hello_pid}, but the fork server forked pid {}",
                    f.pid_in_ns
                );
                return Err(w.violation(detail));
            }
        }
        match listener {
            Some(fd) => {
                let pidfd = w.launched.as_ref().map(|l| l.pidfd().try_clone()).transpose();
                let policy = w.launched.as_mut().and_then(|l| match l {
                    Proc::Own(l) => l.seccomp_policy.take(),
                    Proc::Forked(f) => f.seccomp_policy.take(),
                });
                match (pidfd, policy) {
                    (Ok(Some(pidfd)), Some(policy)) => match SeccompWatch::start(fd, pidfd, policy) {
                        Ok(s) => w.seccomp = Some(s),
                        Err(e) => return Err(w.sandbox_error(format!("seccomp monitor: {e}"))),
                    },
                    (_, None) => {
                        return Err(w.violation("sent a seccomp listener although none was requested".into()))
                    }
                    _ => return Err(w.sandbox_error("seccomp monitor: no pidfd".into())),
                }
            }
            None if w.cfg.require_seccomp() => {
                return Err(w.sandbox_error(
                    "the worker did not hand over a seccomp listener: the seccomp layer is not in force \
                     (pass --allow-weaker seccomp to run without it)"
                        .into(),
                ))
            }
            None => {}
        }
        // A forked worker is a process the jail did not start: confirm its filter from the kernel's side.
        if matches!(w.launched, Some(Proc::Forked(_))) {
            w.confirm_seccomp_from_kernel()?;
        }
        Ok(self)
    }

    /// The isolation layers in force for this worker.
    pub fn layers(&self) -> LayerReport {
        let mut report = match &self.launched {
            Some(Proc::Own(l)) => l.layers.clone(),
            Some(Proc::Forked(f)) => forked_layers(f),
            None => LayerReport::default(),
        };
        let state = if let Some(confirmed) = &self.seccomp_state {
            confirmed.clone()
        } else if self.seccomp.is_some() {
            LayerState::enforced(format!(
                "{}; violations reported through the user-notification listener",
                self.cfg.seccomp_policy_name()
            ))
        } else {
            LayerState::weakened("not installed: allowed explicitly with --allow-weaker seccomp")
        };
        report.set(Layer::Seccomp, state);
        report
    }

    /// The worker's pid (host pid namespace).
    pub fn pid(&self) -> Option<i32> {
        self.launched.as_ref().map(|l| match l {
            Proc::Own(l) => l.sandbox.pid,
            Proc::Forked(f) => f.pid,
        })
    }

    /// With a fork server: the server's host pid (the worker's parent), else `None`.
    pub fn fork_server_pid(&self) -> Option<i32> {
        match &self.launched {
            Some(Proc::Forked(f)) => Some(f.zygote.pid()),
            _ => None,
        }
    }

    /// Model inputs/outputs, once loaded.
    pub fn model_info(&self) -> Option<&ModelInfo> {
        self.info.as_ref()
    }

    /// Whether the worker can still take requests.
    pub fn is_alive(&self) -> bool {
        !self.dead
    }

    fn next_request_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends the model (as sealed memfds) and waits for `Loaded`.
    pub fn load(&mut self, model: &ModelBundle) -> Result<ModelInfo> {
        self.phase = Phase::Load;
        if let Some(s) = &self.seccomp {
            s.set_phase("load");
        }
        let (net, weights) = model.sealed_files()?;
        let options = model.load_options_json();
        let id = self.next_request_id();
        let msg = Message::new(
            id,
            ToWorker::LoadModel {
                net: FdSlot(0),
                weights: FdSlot(1),
                preprocess: Some(options),
            },
        );
        let deadline = Instant::now() + self.deadlines.load;
        if let Err(e) = self
            .channel
            .send_deadline(&msg, &[net, weights], Some(deadline))
        {
            return Err(self.fail(Some(e)));
        }
        let (body, _fds) = self.reply(id, deadline)?;
        match body {
            FromWorker::Loaded { inputs, outputs } => {
                let info = ModelInfo {
                    inputs: inputs.iter().map(BlobShape::from).collect(),
                    outputs: outputs.iter().map(BlobShape::from).collect(),
                };
                self.phase = Phase::Inference;
                if let Some(s) = &self.seccomp {
                    s.set_phase("inference");
                }
                self.info = Some(info.clone());
                Ok(info)
            }
            FromWorker::Error {
                kind,
                message,
                layer,
            } => Err(match kind {
                _ if is_allocation_failure(&message) => self.memory_limit(message),
                WorkerErrorKind::BadModel
                | WorkerErrorKind::BadWeights
                | WorkerErrorKind::Unsupported => Error::BadModel { message, layer },
                _ => Error::BadModel {
                    message: format!("{kind}: {message}"),
                    layer,
                },
            }),
            other => Err(self.violation(format!("expected Loaded, got {:?}", kind_of(&other)))),
        }
    }

    /// Runs one request.
    pub fn infer(&mut self, inputs: &[Input]) -> Result<Vec<Output>> {
        let info = self.info.as_ref().ok_or_else(|| Error::BadInput {
            message: "no model loaded".into(),
            input: None,
        })?;
        if inputs.is_empty() || inputs.len() > caffe_sandbox_protocol::MAX_FDS_PER_MESSAGE {
            return Err(Error::BadInput {
                message: format!(
                    "1..={} inputs per request, {} given",
                    caffe_sandbox_protocol::MAX_FDS_PER_MESSAGE,
                    inputs.len()
                ),
                input: None,
            });
        }
        // Each input's bytes, checked, before anything is written to the arena.
        let mut pending: Vec<(InputSpec, std::borrow::Cow<'_, [u8]>)> = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let name = input.name();
            if inputs[..i].iter().any(|earlier| earlier.name() == name) {
                // One input per blob per request (the protocol refuses duplicates): a caller's mistake, caught
                // here so that it never reaches the channel, where it would count against the worker.
                return Err(Error::BadInput {
                    message: format!("input '{name}' given more than once in one request"),
                    input: Some(name.to_owned()),
                });
            }
            let blob =
                info.inputs
                    .iter()
                    .find(|b| b.name == name)
                    .ok_or_else(|| Error::BadInput {
                        message: format!(
                            "the model has no input named '{name}' (inputs: {})",
                            info.inputs
                                .iter()
                                .map(|b| b.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        input: Some(name.to_owned()),
                    })?;
            match input {
                Input::Image { bytes, .. } => pending.push((
                    InputSpec::EncodedImage {
                        name: name.to_owned(),
                        at: ArenaRange { offset: 0, len: 0 },
                    },
                    bytes.as_slice().into(),
                )),
                Input::Tensor { dims, data, .. } => {
                    // Shape checks happen here, before anything reaches the worker.
                    let bad = |m: String| Error::BadInput {
                        message: m,
                        input: Some(name.to_owned()),
                    };
                    if dims.len() != blob.dims.len() || dims[1..] != blob.dims[1..] {
                        return Err(bad(format!(
                            "shape {:?} does not match the model's input shape {:?} (any batch size allowed)",
                            dims, blob.dims
                        )));
                    }
                    let dims64: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
                    let elements = self
                        .limits
                        .check_shape(name, &dims64)
                        .map_err(|e| bad(e.to_string()))?;
                    if elements != data.len() {
                        return Err(bad(format!(
                            "shape {dims:?} holds {elements} values, {} given",
                            data.len()
                        )));
                    }
                    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
                    pending.push((
                        InputSpec::Tensor {
                            name: name.to_owned(),
                            // check_shape bounded every dim by max_dim (a u32).
                            dims: dims.iter().map(|&d| d as u32).collect(),
                            at: ArenaRange { offset: 0, len: 0 },
                        },
                        bytes.into(),
                    ));
                }
            }
        }
        let (specs, new_arena) = self.place_inputs(pending)?;
        let inputs_end = specs.iter().map(|s| s.at().offset + s.at().len).max();
        let id = self.next_request_id();
        let deadline = Instant::now() + self.deadlines.request;
        let msg = Message::new(
            id,
            ToWorker::Infer {
                inputs: specs,
                new_arena,
                deadline_ms: self.deadlines.request.as_millis().min(u32::MAX as u128) as u32,
            },
        );
        let arena_fd: Vec<_> = match (&self.arena, new_arena) {
            (Some(a), true) => vec![a.reader()],
            _ => Vec::new(),
        };
        if let Err(e) = self.channel.send_deadline(&msg, &arena_fd, Some(deadline)) {
            return Err(self.fail(Some(e)));
        }
        self.arena_sent = true;
        let reply = self.reply(id, deadline);
        if inputs_end.unwrap_or(0) > ARENA_KEPT_BYTES {
            self.release_arena_pages();
        }
        let (body, out_fds) = reply?;
        if new_arena && matches!(body, FromWorker::Error { .. }) {
            // The worker may not have adopted the arena (e.g. it could not map it): send it again next time.
            self.arena_sent = false;
        }
        match body {
            FromWorker::InferResult { outputs } => {
                let mut result = Vec::with_capacity(outputs.len());
                for (header, fd) in outputs.iter().zip(&out_fds) {
                    match read_sealed_tensor(fd, header, &self.limits) {
                        Ok(t) => result.push(Output {
                            name: header.name.clone(),
                            dims: t.dims,
                            data: t.data,
                        }),
                        Err(e) => {
                            return Err(self.violation(format!("output '{}': {e}", header.name)))
                        }
                    }
                }
                Ok(result)
            }
            FromWorker::Error {
                kind,
                message,
                layer,
            } => match kind {
                _ if is_allocation_failure(&message) => Err(self.memory_limit(message)),
                WorkerErrorKind::BadInput
                | WorkerErrorKind::ImageDecode
                | WorkerErrorKind::Unsupported => Err(Error::BadInput {
                    message: format!("{kind}: {message}"),
                    input: None,
                }),
                _ => Err(Error::BadModel {
                    message: format!("{kind}: {message}"),
                    layer,
                }),
            },
            other => {
                Err(self.violation(format!("expected InferResult, got {:?}", kind_of(&other))))
            }
        }
    }

    /// Lays the inputs out in the arena (64-byte aligned, in order), making a new arena when there is none yet or
    /// this request does not fit (at least 1 MiB, doubling to fit), writes them, and returns the specs with their
    /// ranges and whether the worker must be sent the (new) arena.
    fn place_inputs(
        &mut self,
        pending: Vec<(InputSpec, std::borrow::Cow<'_, [u8]>)>,
    ) -> Result<(Vec<InputSpec>, bool)> {
        const ALIGN: u64 = 64;
        let mut end = 0u64;
        let mut ranges = Vec::with_capacity(pending.len());
        for (_, bytes) in &pending {
            let offset = end.div_ceil(ALIGN) * ALIGN;
            ranges.push(ArenaRange {
                offset,
                len: bytes.len() as u64,
            });
            end = offset + bytes.len() as u64;
        }
        let arena_error = |e: std::io::Error| Error::Sandbox(format!("input arena: {e}"));
        if self.arena.as_ref().is_none_or(|a| a.capacity() < end) {
            if end > caffe_sandbox_protocol::MAX_INPUT_ARENA {
                return Err(Error::BadInput {
                    message: format!(
                        "the request's inputs take {end} bytes, more than the {} a request may carry",
                        caffe_sandbox_protocol::MAX_INPUT_ARENA
                    ),
                    input: None,
                });
            }
            let capacity = end
                .max(1 << 20)
                .next_power_of_two()
                .min(caffe_sandbox_protocol::MAX_INPUT_ARENA);
            self.arena = Some(InputArena::new(capacity).map_err(arena_error)?);
            self.arena_sent = false;
        }
        let arena = self.arena.as_ref().expect("made above");
        let mut specs = Vec::with_capacity(pending.len());
        for ((mut spec, bytes), at) in pending.into_iter().zip(ranges) {
            arena.write_at(at.offset, &bytes).map_err(arena_error)?;
            match &mut spec {
                InputSpec::Tensor { at: a, .. } | InputSpec::EncodedImage { at: a, .. } => *a = at,
            }
            specs.push(spec);
        }
        Ok((specs, !self.arena_sent))
    }

    /// After a request whose inputs reached beyond [`ARENA_KEPT_BYTES`] into the arena: gives those pages back
    /// (see `InputArena::release_above`). Should that fail, the arena is dropped instead; the next request makes
    /// a new one and sends it, and the worker's mapping of this one goes when that arrives.
    fn release_arena_pages(&mut self) {
        if let Some(arena) = &self.arena {
            if arena.release_above(ARENA_KEPT_BYTES).is_err() {
                self.arena = None;
            }
        }
    }

    /// Asks the worker to exit, then makes sure it did.
    pub fn shutdown(mut self) {
        let _ = self.channel.send_timeout(
            &Message::new(0, ToWorker::Shutdown),
            &[],
            Some(Duration::from_millis(200)),
        );
        if let Some(l) = &self.launched {
            // Give it a moment to exit by itself, then kill: shutdown must not hang on a hostile worker.
            poll_in(l.pidfd(), Duration::from_millis(500));
            l.kill();
            let _ = l.wait();
        }
        self.dead = true;
    }

    /// Waits for the reply to `id`. Any other message is a violation; silence past the deadline kills.
    fn reply(&mut self, id: u64, deadline: Instant) -> Result<(FromWorker, Vec<OwnedFd>)> {
        match self.channel.recv_deadline(Some(deadline)) {
            Ok((msg, fds)) => {
                // A CHECK failure report arrives as Error and the worker then exits: classify it as the crash it is.
                if let FromWorker::Error {
                    kind: WorkerErrorKind::CaffeCheckFailed,
                    message,
                    ..
                } = &msg.body
                {
                    let message = message.clone();
                    return Err(self.fail_with_check(message));
                }
                match msg.expect_reply(id) {
                    Ok(body) => Ok((body, fds)),
                    Err(e) => Err(self.violation(e.to_string())),
                }
            }
            Err(e) => Err(self.fail(Some(e))),
        }
    }

    /// A C++ allocation that failed under RLIMIT_AS, caught by the shim and reported as an error reply: the
    /// memory limit is the cause. The worker is ended (its heap may be exhausted).
    fn memory_limit(&mut self, message: String) -> Error {
        let _ = self.kill_and_reap();
        let stderr_tail = self.stderr_tail();
        Error::Worker {
            failure: WorkerFailure::MemoryLimit {
                limit_bytes: self.cfg.limits.address_space_bytes,
                detail: message.chars().take(300).collect(),
            },
            stderr_tail,
        }
    }

    fn sandbox_error(&mut self, msg: String) -> Error {
        self.kill_and_reap();
        Error::Sandbox(msg)
    }

    fn violation(&mut self, detail: String) -> Error {
        let _ = self.kill_and_reap();
        let stderr_tail = self.stderr_tail();
        Error::Worker {
            failure: WorkerFailure::ProtocolViolation { detail },
            stderr_tail,
        }
    }

    fn fail_with_check(&mut self, message: String) -> Error {
        let status = self.wait_briefly();
        let stderr_tail = self.stderr_tail();
        let facts = EndFacts {
            status: status.unwrap_or(ExitStatus::Exited(
                crate::process::exit_code::CAFFE_CHECK_FAILED,
            )),
            killed_for_timeout: None,
            seccomp: self.seccomp.as_ref().and_then(|s| s.first_violation()),
            check_message: Some(message),
            stderr_tail: &stderr_tail,
            cpu_limit_seconds: self.cfg.limits.cpu_seconds,
            memory_limit_bytes: self.cfg.limits.address_space_bytes,
        };
        Error::Worker {
            failure: classify(&facts),
            stderr_tail,
        }
    }

    /// The worker failed to answer (closed, timed out, or sent garbage): establish why and return the error.
    fn fail(&mut self, cause: Option<ProtocolError>) -> Error {
        let timed_out = matches!(cause, Some(ProtocolError::Timeout));
        let decode_error = match &cause {
            Some(ProtocolError::Closed) | Some(ProtocolError::Timeout) | None => None,
            Some(e) => Some(e.to_string()),
        };
        let status = if timed_out || decode_error.is_some() {
            self.kill_and_reap()
        } else {
            self.wait_briefly()
        };
        let stderr_tail = self.stderr_tail();
        if let (Some(detail), None) = (
            &decode_error,
            self.seccomp.as_ref().and_then(|s| s.first_violation()),
        ) {
            return Error::Worker {
                failure: WorkerFailure::ProtocolViolation {
                    detail: detail.clone(),
                },
                stderr_tail,
            };
        }
        let limit_ms = match self.phase {
            Phase::Start => self.deadlines.start,
            Phase::Load => self.deadlines.load,
            Phase::Inference => self.deadlines.request,
        }
        .as_millis() as u64;
        let facts = EndFacts {
            status: status.unwrap_or(ExitStatus::Signaled(libc::SIGKILL)),
            killed_for_timeout: timed_out.then_some((self.phase.as_str(), limit_ms)),
            seccomp: self.seccomp.as_ref().and_then(|s| s.first_violation()),
            check_message: None,
            stderr_tail: &stderr_tail,
            cpu_limit_seconds: self.cfg.limits.cpu_seconds,
            memory_limit_bytes: self.cfg.limits.address_space_bytes,
        };
        Error::Worker {
            failure: classify(&facts),
            stderr_tail,
        }
    }

    /// Waits up to 2 s for the worker to end by itself (it closed the channel or reported a CHECK failure),
    /// then kills it. Returns its status.
    fn wait_briefly(&mut self) -> Option<ExitStatus> {
        let l = self.launched.as_ref()?;
        if !poll_in(l.pidfd(), Duration::from_secs(2)) {
            l.kill();
        }
        let st = l.wait();
        self.dead = true;
        st
    }

    fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        let l = self.launched.as_ref()?;
        l.kill();
        let st = l.wait();
        self.dead = true;
        st
    }

    fn stderr_tail(&mut self) -> String {
        match self.stderr.take() {
            // The worker is pid 1 of its pid namespace (or, forked, the only holder of its own stderr pipe):
            // once it is dead every process that could hold the pipe is dead too, so EOF comes promptly.
            Some(c) if self.dead => c.finish(),
            Some(c) => {
                let s = c.snapshot().0;
                self.stderr = Some(c);
                s
            }
            None => String::new(),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.dead {
            if let Some(l) = &self.launched {
                l.kill();
                let _ = l.wait();
            }
        }
    }
}

/// The layers of a forked worker: the fork server's sandbox, which it shares with its siblings (see
/// docs/fork-server.md), plus its own seccomp filter.
fn forked_layers(f: &ForkedChild) -> LayerReport {
    let mut r = f.zygote.layers();
    let shared = |r: &LayerReport, l: Layer, what: &str| match r.get(l) {
        Some(LayerState::Enforced { detail }) => {
            Some(LayerState::enforced(format!("{detail}; {what}")))
        }
        _ => None,
    };
    if let Some(LayerState::Enforced { detail }) = r.get(Layer::PidNs) {
        let detail = format!(
            "{}; shared with the fork server and its other workers; this worker is pid {}",
            detail.replace("target is pid 1", "the fork server is pid 1"),
            f.pid_in_ns
        );
        r.set(Layer::PidNs, LayerState::enforced(detail));
    }
    let notes = [
        (
            Layer::MountNs,
            "shared with the fork server's other workers".to_string(),
        ),
        (
            Layer::NetNs,
            "shared with the fork server's other workers".to_string(),
        ),
        (
            Layer::IpcNs,
            "shared with the fork server's other workers".to_string(),
        ),
        (
            Layer::ScratchTmpfs,
            "shared with the fork server's other workers".to_string(),
        ),
        (
            Layer::Rlimits,
            "per process, inherited from the fork server; nproc counts all workers of the server"
                .to_string(),
        ),
    ];
    for (layer, what) in notes {
        if let Some(state) = shared(&r, layer, &what) {
            r.set(layer, state);
        }
    }
    r
}

/// Whether a worker's error text is an allocation failure (std::bad_alloc and friends).
fn is_allocation_failure(message: &str) -> bool {
    message.contains("std::bad_alloc") || message.contains("Cannot allocate memory")
}

/// The name of a worker message's kind, for protocol-violation reports.
fn kind_of(b: &FromWorker) -> &'static str {
    match b {
        FromWorker::Hello { .. } => "Hello",
        FromWorker::Loaded { .. } => "Loaded",
        FromWorker::InferResult { .. } => "InferResult",
        FromWorker::Error { .. } => "Error",
    }
}

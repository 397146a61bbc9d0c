//! # caffe-sandbox-jail: the worker's sandbox (everything but seccomp)
//!
//! [`spawn`] starts a program (the Caffe worker, or any program for `caffe-sandbox run`) inside a stack of
//! Linux isolation layers and returns only once every layer has been applied and confirmed — or fails
//! closed with [`JailError::LayerUnavailable`] naming the layer, unless [`SandboxSpec::allow_weaker`] lists it.
//!
//! ## Design (runc/youki style, safe in a multi-threaded supervisor)
//! 1. The supervisor prepares everything that allocates (argv, pipes, a sealed memfd holding the serialized
//!    spec) and calls `clone3(CLONE_NEWUSER|NEWPID|NEWNET|NEWNS|NEWIPC|NEWUTS|NEWCGROUP|CLONE_PIDFD)`.
//! 2. The clone child runs only async-signal-safe raw system calls (every signal blocked): `PR_SET_PDEATHSIG`,
//!    a blocking read on a sync pipe, `O_PATH` opens of the bind sources (still with the caller's
//!    credentials), `setgroups(0)` (root mode) and `setresuid/setresgid(0)` inside the namespace, clearing
//!    `FD_CLOEXEC` on the fds stage 2 needs, `execveat` of the stage-2 executable (an `O_PATH` fd opened by
//!    the parent). Meanwhile the parent writes `uid_map`/`gid_map`: rootless, ns uid/gid 0 ↦ the caller's
//!    uid/gid with `setgroups` denied; as root, ns 0 ↦ 65534/65534 (the worker is never host root), and
//!    (if requested and delegated) moves the child into its cgroup v2.
//! 3. Stage 2 is a fresh single-threaded image of the supervisor binary (re-executed through
//!    [`stage2_main_if_requested`], which the binary must call first thing in `main`) — or, when the caller is
//!    single-threaded ([`SandboxSpec::stage2_in_child`]), the clone child itself, which may then run any code
//!    (it keeps its namespace capabilities through the id switch with `SECBIT_NO_SETUID_FIXUP`). It reads the spec from
//!    the memfd and, with the namespace-root capabilities of its own user namespace, builds a minimal root
//!    (private propagation, tmpfs root, read-only binds, a tmpfs `/dev` with bound nodes, optional private
//!    `/proc` (`subset=pid`), a size-capped scratch tmpfs, `pivot_root`, old root detached), sets the hostname,
//!    arranges fds (`close_range`), `setsid`, rlimits, locked securebits, `no_new_privs`, Landlock, drops every
//!    capability including the bounding set, re-arms `PR_SET_PDEATHSIG`, reads back what it can, writes the
//!    [`LayerReport`] into a `CLOEXEC` pipe (with [`SandboxSpec::exec_filter`]: installs that seccomp filter
//!    and hands its listener over), and `execve`s the target, which becomes pid 1 of the new pid
//!    namespace (killing it kills every process in the sandbox). A successful exec closes the pipe.
//!    Stage 2 refuses to run unless it is pid 1 and holds a sealed spec memfd (no accidental use on the host).
//!
//! Every layer is read back where the kernel allows (namespace inodes, `lo` down, statvfs flags and size of
//! the root and the scratch, open-fd scan, getrlimit, `PR_GET_NO_NEW_PRIVS`, Landlock `FullyEnforced`,
//! capability sets, `PR_GET_PDEATHSIG`); `tests/sandbox.rs` then checks each from inside with a probe.
//!
//! ## Security trade-offs (read these)
//! * **Parent-death signal is per thread**: `PR_SET_PDEATHSIG` fires when the *thread* that spawned the
//!   sandbox exits, not the process. Spawn from a long-lived thread; [`Spawner`] provides one.
//! * **Seccomp is the target's own business by default**: the worker installs its own filter after library
//!   initialisation (so the filter can be tight); the report marks it [`LayerState::Delegated`] until the
//!   caller confirms it with [`Sandboxed::confirm_seccomp`], which reads the kernel's
//!   `Seccomp:`/`Seccomp_filters:` for the pid from the supervisor side (the worker's word is not needed).
//!   The caller must fail closed if that fails. For programs that cannot install a filter (`caffe-sandbox
//!   run -- CMD`), [`SandboxSpec::exec_filter`] makes stage 2 install one as its last step before `execve`
//!   and hand the user-notification listener back to the caller.
//! * **cgroup v2** limits need a delegated v2 hierarchy with memory, cpu and pids controllers. Without one the
//!   layer is `NotAvailable` and, by default ([`SandboxSpec::new`] puts it in `allow_weaker`), that is not
//!   fatal: rlimits (address space, CPU seconds, nproc) remain the resource bound.
//! * **RLIMIT_NPROC** counts processes per (user namespace, uid) since Linux 5.14; with a fresh user namespace
//!   per sandbox it is effectively a per-sandbox process/thread cap.
//! * **Rootless supplementary groups** cannot be dropped (`setgroups` is denied in an unprivileged user
//!   namespace); as root they are dropped.
//! * **Dumpable**: `execve` resets the dumpable flag, so the jail cannot make the target non-dumpable; the
//!   worker may call `prctl(PR_SET_DUMPABLE, 0)` itself (at the cost of the supervisor losing
//!   `/proc/PID/{fd,maps,environ}` access; `/proc/PID/stat|status` stay readable).
//! * **Landlock** is capped at the ABI this crate was tested with (v7); file-system rights are a hard
//!   requirement (fail closed), TCP bind/connect denial (ABI ≥ 4) and signal / abstract-socket scoping
//!   (ABI ≥ 6) are applied when present and listed in the report detail.
//! * **Root mode runs the sandbox as host uid/gid 65534** (shared with other `nobody` processes; a dedicated
//!   subordinate id would be better where `/etc/subuid` is managed). The bind *sources* are opened by the clone
//!   child with the caller's credentials, so private (0700) ancestors are fine, but the bound files and
//!   directories themselves must be readable (libraries and programs also executable) by uid 65534.
//! * **Nested user namespaces** are disabled (`user.max_user_namespaces = 0` inside the sandbox's own user
//!   namespace): otherwise `unshare(CLONE_NEWUSER)` would hand the worker a fresh full capability set.
//! * **Construct specs with [`SandboxSpec::new`]** and assign fields: the `test-hooks` feature adds a field.
//! * **Reaping is the caller's job**: wait on [`Sandboxed::pidfd`] (or [`Sandboxed::wait`]); dropping a
//!   [`Sandboxed`] neither kills nor reaps it.

#![deny(missing_docs)]

mod caps;
mod cgroup;
mod exec_filter;
mod facts;
mod fds;
mod landlock;
mod mounts;
mod proto;
mod report;
mod rlimits;
mod spawn;
mod spawner;
mod stage2;
mod sys;
mod userns;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use facts::{host_facts, CgroupFacts, HostFacts};
pub use report::{Layer, LayerReport, LayerState, UnknownLayer};
pub use spawn::{spawn, ExitStatus, PendingExec, Sandboxed};
pub use spawner::Spawner;
pub use stage2::{stage2_main_if_requested, STAGE2_ARG};

/// Whether the sandbox gets a `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ProcMode {
    /// No `/proc` at all (default).
    #[default]
    None,
    /// A private, read-only `proc` of the new pid namespace, mounted with `subset=pid` (no `/proc/sys`,
    /// no `/proc/kcore`, …): only the sandbox's own processes are visible.
    PrivatePidNs,
}

/// Where the target's stdout goes (stdin is always `/dev/null`, stderr always a pipe to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StdoutMode {
    /// `/dev/null`.
    Null,
    /// The same pipe as stderr (default).
    #[default]
    Stderr,
    /// A separate pipe returned as [`Sandboxed::stdout`].
    Pipe,
}

/// The private writable tmpfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScratchSpec {
    /// Absolute path inside the sandbox (e.g. `/scratch`).
    pub path: PathBuf,
    /// tmpfs `size=` cap in bytes (writes beyond fail with ENOSPC).
    pub size_bytes: u64,
}

/// Resource limits; each `Some` sets both soft and hard limit. `RLIMIT_CORE` is always 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// RLIMIT_AS in bytes.
    pub address_space: Option<u64>,
    /// RLIMIT_DATA in bytes.
    pub data: Option<u64>,
    /// RLIMIT_CPU in seconds (SIGXCPU at the soft limit, SIGKILL at the hard one; both equal here).
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_FSIZE in bytes.
    pub file_size: Option<u64>,
    /// RLIMIT_NOFILE.
    pub nofile: Option<u64>,
    /// RLIMIT_NPROC (processes + threads of the sandbox's uid in its user namespace).
    pub nproc: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            address_space: Some(2 << 30),
            data: None,
            cpu_seconds: Some(600),
            file_size: Some(64 << 20),
            nofile: Some(64),
            nproc: Some(128),
        }
    }
}

/// cgroup v2 limits (applied only with a delegated v2 hierarchy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLimits {
    /// `memory.max` in bytes (`memory.swap.max` is set to 0 as well).
    pub memory_max: Option<u64>,
    /// `cpu.max` as (quota µs, period µs).
    pub cpu_max: Option<(u64, u64)>,
    /// `pids.max`.
    pub pids_max: Option<u64>,
}

/// Everything [`spawn`] needs.
#[derive(Debug)]
pub struct SandboxSpec {
    /// Host path of the program; bound read-only (and executable) at the same path inside.
    pub program: PathBuf,
    /// argv\[1..] (argv\[0] is `program`).
    pub args: Vec<OsString>,
    /// The whole environment of the target; nothing else is inherited. `TMPDIR` is added (pointing at the
    /// scratch) when a scratch exists and the list has no `TMPDIR`.
    pub env: Vec<(OsString, OsString)>,
    /// Files or directories bound read-only, executable, at the same path (libraries, the Caffe prefix).
    pub ro_paths: Vec<PathBuf>,
    /// Files or directories bound read-only and `noexec` at the same path (data).
    pub ro_noexec_paths: Vec<PathBuf>,
    /// Device nodes bound into a private `/dev` (read-write; the rest of `/dev` is a read-only tmpfs).
    /// Default: `/dev/null`, `/dev/urandom` (Caffe reads `/dev/urandom` while building a net). `/dev/zero` is
    /// deliberately absent (an endless data-layer source).
    pub dev_nodes: Vec<PathBuf>,
    /// `/proc` inside.
    pub proc: ProcMode,
    /// The private writable tmpfs.
    pub scratch: Option<ScratchSpec>,
    /// Fds handed to the target: (fd, number inside). Everything else is closed. The caller keeps ownership
    /// of its copies: drop them after `spawn` so that e.g. a socket reports EOF when the worker dies.
    pub pass_fds: Vec<(OwnedFd, RawFd)>,
    /// Where stdout goes.
    pub stdout: StdoutMode,
    /// rlimits.
    pub limits: Limits,
    /// cgroup v2 limits (`None`: not requested).
    pub cgroup: Option<CgroupLimits>,
    /// Layers that may be weaker than requested without failing the spawn.
    pub allow_weaker: BTreeSet<Layer>,
    /// Hostname inside the UTS namespace.
    pub hostname: String,
    /// Executable re-executed as stage 2 (`None`: `/proc/self/exe`, i.e. the running binary, which must call
    /// [`stage2_main_if_requested`] first thing in `main`).
    pub stage2_exe: Option<PathBuf>,
    /// Run stage 2 in the clone child itself, without re-executing anything, when the calling process is
    /// single-threaded (a fork-like child of a single-threaded process may run any code, like bwrap's or
    /// nsjail's children do). Saves an `execve` (~0.8 ms) per spawn for one-shot callers such as
    /// `caffe-sandbox run`. Multi-threaded callers always get the re-executed stage 2: their clone child
    /// could inherit a lock held by another thread. Default: true.
    pub stage2_in_child: bool,
    /// How long stage 2 may take to confirm the layers before the spawn is abandoned (and the child killed).
    pub setup_timeout: Duration,
    /// A seccomp filter stage 2 installs as its very last step, right before `execve` of the target, for
    /// programs that cannot install one themselves (`caffe-sandbox run -- CMD`). `None`: seccomp is the
    /// target's own business (the worker) and the report marks it `Delegated`.
    pub exec_filter: Option<ExecFilter>,
    /// Test hook: layers to pretend are unavailable (compiled only with the `test-hooks` feature).
    #[cfg(feature = "test-hooks")]
    pub test_simulate_unavailable: BTreeSet<Layer>,
}

impl SandboxSpec {
    /// A spec with the defaults described on each field: no args, empty environment, the default device
    /// nodes, no `/proc`, no scratch, default [`Limits`], no cgroup, `allow_weaker = {CgroupV2}`,
    /// hostname `caffe-sandbox`, 10 s setup timeout.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        SandboxSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            ro_paths: Vec::new(),
            ro_noexec_paths: Vec::new(),
            dev_nodes: vec![PathBuf::from("/dev/null"), PathBuf::from("/dev/urandom")],
            proc: ProcMode::None,
            scratch: None,
            pass_fds: Vec::new(),
            stdout: StdoutMode::Stderr,
            limits: Limits::default(),
            cgroup: None,
            allow_weaker: [Layer::CgroupV2].into_iter().collect(),
            hostname: "caffe-sandbox".to_string(),
            stage2_exe: None,
            stage2_in_child: true,
            setup_timeout: Duration::from_secs(10),
            exec_filter: None,
            #[cfg(feature = "test-hooks")]
            test_simulate_unavailable: BTreeSet::new(),
        }
    }
}

/// Whether this process has exactly one thread (from `/proc/self/task`; `false` when it cannot be read).
/// Nothing but this thread can change the answer while it is `true`.
pub fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.take(2).count() == 1)
}

/// A seccomp filter with a user-notification listener, installed by stage 2 right before `execve` of the
/// target (see [`SandboxSpec::exec_filter`]). The program (dynamic loader included) runs under it from its
/// first instruction.
///
/// With it, [`spawn`] returns as soon as the listener is in hand, **before** the target's `execve` has been
/// decided: the filter may route that `execve` to the listener (e.g. "allow exactly once"), so the caller
/// must first start answering notifications on [`Sandboxed::seccomp_listener`] and then call
/// [`Sandboxed::confirm_exec`]. Between installing the filter and `execve`, stage 2 makes only `write`
/// (its report), `sendmsg` (the listener), `close`, the allocator's `brk`/`mmap`/`munmap` and, on failure,
/// `exit_group`: the filter must allow them (the run-tool policy does).
#[derive(Debug)]
pub struct ExecFilter {
    /// The BPF program: a raw `struct sock_filter` array (as libseccomp exports it), or where it will
    /// arrive. Stage 2 needs it only as its last step, so the caller may compile it while the sandbox is
    /// being built.
    pub bpf: BpfSource,
    /// What to call it in the layer report (e.g. the policy's name).
    pub name: String,
}

/// Where [`ExecFilter::bpf`] comes from.
#[derive(Debug)]
pub enum BpfSource {
    /// Compiled already.
    Ready(Vec<u8>),
    /// Compiled by this function on its own thread, started by `spawn` right after the clone (so the
    /// compilation overlaps building the sandbox, and a single-threaded caller stays single-threaded at the
    /// clone). An `Err` is why the seccomp layer is unavailable.
    Compile(CompileOnce),
}

/// The compiler of [`BpfSource::Compile`]; `spawn` takes it out and runs it once.
pub struct CompileOnce(std::sync::Mutex<Option<CompileFn>>);

type CompileFn = Box<dyn FnOnce() -> Result<Vec<u8>, String> + Send>;

impl CompileOnce {
    /// Wraps `f`.
    pub fn new(f: impl FnOnce() -> Result<Vec<u8>, String> + Send + 'static) -> Self {
        CompileOnce(std::sync::Mutex::new(Some(Box::new(f))))
    }

    /// Starts the compiler on its own thread; `None` if it was taken already.
    pub(crate) fn start(&self) -> Option<std::thread::JoinHandle<Result<Vec<u8>, String>>> {
        let f = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        std::thread::Builder::new()
            .name("seccomp-compile".into())
            .spawn(f)
            .ok()
    }
}

impl std::fmt::Debug for CompileOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompileOnce(..)")
    }
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A layer could not be applied and `allow_weaker` does not list it (fail closed).
    #[error("sandbox layer {layer} unavailable: {cause} (refusing to run; allow it explicitly with --allow-weaker {layer})")]
    LayerUnavailable {
        /// The layer.
        layer: Layer,
        /// Why.
        cause: String,
    },
    /// The spec is unusable (relative paths, fd clashes, …).
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// A system call in the supervisor failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was attempted.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Stage 2 reported a failure while building the sandbox.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// The target program could not be executed inside the sandbox.
    #[error("exec of the sandboxed program failed: {0}")]
    Exec(String),
    /// Stage 2 did not confirm in time.
    #[error("sandbox setup timed out after {0:?}")]
    Timeout(Duration),
}

impl JailError {
    pub(crate) fn sys(what: impl Into<String>, source: std::io::Error) -> Self {
        JailError::Sys {
            what: what.into(),
            source,
        }
    }
}

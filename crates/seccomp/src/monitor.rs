//! Supervisor side: the user-notification monitor.
//!
//! A [`Monitor`] owns the worker's listener fd and runs on its own thread. For
//! every notification it re-evaluates the policy on the register arguments
//! ([`ResolvedPolicy::classify`]) and either lets a `phase_gated` /
//! `notify_once` syscall continue, or records a [`Violation`], kills the
//! worker (pidfd, or the notifying task's pid after `SECCOMP_IOCTL_NOTIF_ID_VALID`)
//! and answers `EPERM`. The decision never reads the worker's memory, so the
//! well-known TOCTOU weakness of `SECCOMP_USER_NOTIF_FLAG_CONTINUE` (pointer
//! arguments changing after the check) does not apply.
//!
//! The phase is the supervisor's own state ([`Monitor::set_phase`]), not the
//! worker's word: set it to [`Phase::Inference`] after the worker reported
//! `Loaded` and *before* sending the first request.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::policy::{syscall_name, ResolvedPolicy, Verdict};

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;

/// How the supervisor describes a worker killed by `SIGSYS` (seccomp
/// `KILL_PROCESS`): the monitor never sees those syscalls by name.
pub const SIGSYS_CAUSE: &str = "seccomp (inference-phase filter or foreign syscall ABI): SIGSYS";

/// The worker's phase, as decided by the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// From filter installation until the model is loaded: `phase_gated`
    /// syscalls continue.
    Load,
    /// Serving requests: `phase_gated` syscalls are violations.
    Inference,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Load => "load",
            Phase::Inference => "inference",
        })
    }
}

/// A syscall the policy does not allow (in this phase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Syscall name (`unknown-<nr>` if libseccomp has none).
    pub syscall: String,
    /// Syscall number as seen by the kernel.
    pub nr: i64,
    /// Architecture of the call (`x86_64`, or e.g. `x86` for `int 0x80`).
    pub arch: String,
    /// Raw register arguments.
    pub args: [u64; 6],
    /// The supervisor's phase at the time.
    pub phase: Phase,
    /// Thread id of the caller in the supervisor's pid namespace.
    pub pid: u32,
    /// Why it is a violation.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seccomp violation: {} (nr {}, {}) in {} phase: {}",
            self.syscall, self.nr, self.arch, self.phase, self.reason
        )
    }
}

/// A `phase_gated` or `notify_once` syscall the monitor let continue (audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateEvent {
    /// Syscall name.
    pub syscall: String,
    /// Raw register arguments.
    pub args: [u64; 6],
    /// Index of the matching rule in the policy.
    pub rule: usize,
}

/// Called on the monitor thread for each violation.
pub type ViolationCallback = Box<dyn Fn(&Violation) + Send + Sync>;

/// What the monitor does besides recording.
pub struct MonitorOptions {
    /// pidfd of the worker (preferred way to kill it: no pid reuse race).
    /// Without it the monitor kills the notifying task's pid after checking
    /// that the notification is still valid (the task cannot exit while it
    /// waits for our answer).
    pub pidfd: Option<OwnedFd>,
    /// Called on the monitor thread for each violation, after the kill.
    pub on_violation: Option<ViolationCallback>,
    /// Violations kept (later ones are counted, not stored).
    pub max_violations: usize,
    /// Gate events kept.
    pub max_gate_events: usize,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            pidfd: None,
            on_violation: None,
            max_violations: 64,
            max_gate_events: 1024,
        }
    }
}

impl fmt::Debug for MonitorOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorOptions")
            .field("pidfd", &self.pidfd)
            .field("on_violation", &self.on_violation.is_some())
            .field("max_violations", &self.max_violations)
            .field("max_gate_events", &self.max_gate_events)
            .finish()
    }
}

#[derive(Default)]
struct Records {
    violations: Vec<Violation>,
    dropped: u64,
    gate: Vec<GateEvent>,
    error: Option<String>,
}

struct Shared {
    phase: AtomicU8,
    finished: AtomicBool,
    records: Mutex<Records>,
    cond: Condvar,
}

impl Shared {
    fn phase(&self) -> Phase {
        if self.phase.load(Ordering::SeqCst) == 0 {
            Phase::Load
        } else {
            Phase::Inference
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Everything the monitor saw, returned by [`Monitor::stop`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorReport {
    /// Recorded violations, in order.
    pub violations: Vec<Violation>,
    /// Violations beyond `max_violations`.
    pub dropped_violations: u64,
    /// Load-phase continues.
    pub gate_events: Vec<GateEvent>,
    /// An internal error that ended the monitor early (the worker's pending
    /// syscalls then fail with ENOSYS: fail closed).
    pub error: Option<String>,
}

/// The running monitor. Dropping it stops the thread and closes the listener
/// (pending and future notified syscalls of the worker then fail with ENOSYS).
pub struct Monitor {
    shared: Arc<Shared>,
    stop_w: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("phase", &self.phase())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Checks that `fd` is a seccomp user-notification listener
/// (`anon_inode:seccomp notify`), so a confused or hostile peer cannot hand
/// the monitor some other file.
pub fn check_listener_fd(fd: RawFd) -> io::Result<()> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
    if target.as_os_str() == "anon_inode:seccomp notify" {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not a seccomp listener ({})", target.display()),
        ))
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Monitor {
    /// Starts monitoring `listener` (received from the worker) with `policy`
    /// (the same resolved policy the listener filter was compiled from).
    pub fn start(
        listener: OwnedFd,
        policy: ResolvedPolicy,
        opts: MonitorOptions,
    ) -> io::Result<Monitor> {
        check_listener_fd(listener.as_raw_fd())?;
        let (stop_r, stop_w) = pipe()?;
        let shared = Arc::new(Shared {
            phase: AtomicU8::new(0),
            finished: AtomicBool::new(false),
            records: Mutex::new(Records::default()),
            cond: Condvar::new(),
        });
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("seccomp-monitor".into())
            .spawn(move || {
                let mut w = Worker {
                    listener,
                    stop_r,
                    policy,
                    opts,
                    shared: Arc::clone(&sh),
                    once_used: BTreeSet::new(),
                };
                if let Err(e) = w.run() {
                    sh.lock().error = Some(e.to_string());
                }
                sh.finished.store(true, Ordering::SeqCst);
                // Drop the listener before waking waiters: the worker's
                // pending notified syscalls then fail with ENOSYS.
                drop(w);
                let _guard = sh.lock();
                sh.cond.notify_all();
            })?;
        Ok(Monitor {
            shared,
            stop_w: Some(stop_w),
            thread: Some(thread),
        })
    }

    /// Sets the phase (the supervisor's decision).
    pub fn set_phase(&self, phase: Phase) {
        let v = match phase {
            Phase::Load => 0,
            Phase::Inference => 1,
        };
        self.shared.phase.store(v, Ordering::SeqCst);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.shared.phase()
    }

    /// Violations recorded so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.shared.lock().violations.clone()
    }

    /// Load-phase continues so far.
    pub fn gate_events(&self) -> Vec<GateEvent> {
        self.shared.lock().gate.clone()
    }

    /// Whether the monitor thread ended (all tasks using the filter exited,
    /// or an error).
    pub fn is_finished(&self) -> bool {
        self.shared.finished.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the first violation.
    pub fn wait_violation(&self, timeout: Duration) -> Option<Violation> {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.lock();
        loop {
            if let Some(v) = g.violations.first() {
                return Some(v.clone());
            }
            let now = Instant::now();
            if now >= deadline || self.shared.finished.load(Ordering::SeqCst) {
                return None;
            }
            g = self
                .shared
                .cond
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits up to `timeout` for the monitor to finish (the worker exited).
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.lock();
        while !self.shared.finished.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .shared
                .cond
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Stops the thread (if still running) and returns what it saw.
    pub fn stop(mut self) -> MonitorReport {
        self.shutdown();
        let mut g = self.shared.lock();
        MonitorReport {
            violations: std::mem::take(&mut g.violations),
            dropped_violations: g.dropped,
            gate_events: std::mem::take(&mut g.gate),
            error: g.error.take(),
        }
    }

    fn shutdown(&mut self) {
        if let Some(w) = self.stop_w.take() {
            // SAFETY: writes one byte from a valid buffer to our pipe.
            let _ = unsafe { libc::write(w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    listener: OwnedFd,
    stop_r: OwnedFd,
    policy: ResolvedPolicy,
    opts: MonitorOptions,
    shared: Arc<Shared>,
    once_used: BTreeSet<usize>,
}

fn arch_name(arch: u32) -> String {
    match arch {
        AUDIT_ARCH_X86_64 => "x86_64".into(),
        AUDIT_ARCH_I386 => "x86".into(),
        other => format!("audit-arch-{other:#x}"),
    }
}

impl Worker {
    fn run(&mut self) -> io::Result<()> {
        loop {
            let mut pfd = [
                libc::pollfd {
                    fd: self.listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.stop_r.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `pfd` is a valid array of two pollfd structs.
            let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if pfd[1].revents != 0 {
                return Ok(());
            }
            let re = pfd[0].revents;
            if re & libc::POLLIN != 0 {
                self.receive_one()?;
            } else if re & libc::POLLHUP != 0 {
                // Every task using the filter has exited.
                return Ok(());
            } else if re & (libc::POLLERR | libc::POLLNVAL) != 0 {
                return Err(io::Error::other("seccomp listener poll error"));
            }
        }
    }

    fn receive_one(&mut self) -> io::Result<()> {
        // SAFETY: all-zero bytes are a valid seccomp_notif (plain integers);
        // the kernel requires a zeroed buffer.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: `req` is a valid, writable seccomp_notif matching the size
        // encoded in the ioctl number.
        let rc = unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut req as *mut libc::seccomp_notif,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // The task died or the syscall was interrupted before we got it.
                Some(libc::ENOENT) | Some(libc::EINTR) => Ok(()),
                _ => Err(e),
            };
        }
        self.handle(&req);
        Ok(())
    }

    fn id_valid(&self, id: u64) -> bool {
        let mut id = id;
        // SAFETY: passes a pointer to a valid u64 as the ioctl expects.
        let rc = unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &mut id as *mut u64,
            )
        };
        rc == 0
    }

    fn respond(&self, id: u64, error: i32, flags: u32) {
        let mut resp = libc::seccomp_notif_resp {
            id,
            val: 0,
            error,
            flags,
        };
        // SAFETY: `resp` is a valid seccomp_notif_resp matching the ioctl size.
        // Failure (ENOENT: the task is gone) needs no handling.
        let _ = unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut resp as *mut libc::seccomp_notif_resp,
            )
        };
    }

    fn handle(&mut self, req: &libc::seccomp_notif) {
        let nr = i64::from(req.data.nr);
        let args = req.data.args;
        let phase = self.shared.phase();
        let verdict = if req.data.arch == AUDIT_ARCH_X86_64 {
            self.policy.classify(nr, &args)
        } else {
            Verdict::Deny
        };
        let name = if req.data.arch == AUDIT_ARCH_X86_64 {
            syscall_name(nr).unwrap_or_else(|| format!("unknown-{nr}"))
        } else {
            format!("unknown-{nr}")
        };
        let reason = match verdict {
            Verdict::PhaseGated(rule) if phase == Phase::Load => {
                return self.continue_gated(req.id, name, args, rule);
            }
            Verdict::NotifyOnce(rule) if self.once_used.insert(rule) => {
                return self.continue_gated(req.id, name, args, rule);
            }
            Verdict::PhaseGated(rule) => {
                format!("load-phase-only syscall (rule {rule}) after load")
            }
            Verdict::NotifyOnce(rule) => format!("allowed once (rule {rule}), used again"),
            Verdict::Deny => "not allowed by the policy".to_string(),
            // The kernel filter should have decided these itself: BPF and the
            // evaluator disagree. Fail closed.
            other => format!("filter/evaluator mismatch ({other:?}); denied"),
        };
        let v = Violation {
            syscall: name,
            nr,
            arch: arch_name(req.data.arch),
            args,
            phase,
            pid: req.pid,
            reason,
        };
        self.kill(req);
        self.respond(req.id, -libc::EPERM, 0);
        if let Some(cb) = &self.opts.on_violation {
            cb(&v);
        }
        let mut g = self.shared.lock();
        if g.violations.len() < self.opts.max_violations {
            g.violations.push(v);
        } else {
            g.dropped += 1;
        }
        self.shared.cond.notify_all();
    }

    fn continue_gated(&mut self, id: u64, syscall: String, args: [u64; 6], rule: usize) {
        self.respond(id, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32);
        let mut g = self.shared.lock();
        if g.gate.len() < self.opts.max_gate_events {
            g.gate.push(GateEvent {
                syscall,
                args,
                rule,
            });
        }
    }

    fn kill(&self, req: &libc::seccomp_notif) {
        if let Some(pidfd) = &self.opts.pidfd {
            // SAFETY: pidfd_send_signal with a pidfd we own and a NULL siginfo.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0u32,
                )
            };
            if rc == 0 {
                return;
            }
        }
        // The notifying task is blocked until we answer, so its pid cannot be
        // reused while the notification id is still valid.
        if self.id_valid(req.id) {
            if let Ok(pid) = libc::pid_t::try_from(req.pid) {
                if pid > 0 {
                    // SAFETY: plain kill(2); a thread id signals its whole
                    // thread group.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

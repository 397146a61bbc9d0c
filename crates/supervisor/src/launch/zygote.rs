//! The fork server ("zygote"), supervisor side: one `caffe-sandbox-worker --zygote` per launch configuration,
//! started on first use inside the full worker sandbox (everything but seccomp). It has loaded the ~146
//! libraries and initialised glog/Caffe once; each worker is a `fork` of it (see docs/fork-server.md).
//!
//! What the supervisor takes from the zygote, and how it checks it:
//! * the child's pid (`Forked`) comes with a pidfd; the supervisor reads the pidfd's own `fdinfo` (kernel data)
//!   and requires that its namespace pid is the one announced and that the process is a child of the zygote;
//! * the child's seccomp programs are compiled by the supervisor for that pid and sent to the child itself, on
//!   the child's own channel; the child's `Hello` must then carry the same pid and the listener;
//! * killing uses the pidfd (race-free, the zygote is not involved);
//! * death is established from the pidfd (POLLIN), never from the zygote's word; only the *kind* of death
//!   (exit code or signal, which only the reaping parent can learn) comes from the zygote's `ChildExited`.
use crate::error::{Error, Result};
use crate::launch::LaunchConfig;
use crate::process::{ExitStatus, StderrCollector};
use caffe_sandbox_jail::{LayerReport, Sandboxed};
use caffe_sandbox_protocol::{
    socketpair, ChildStatus, FromZygote, Message, ProtocolError, SupervisorChannel, ToZygote,
    ZygoteControl, HELLO_REQUEST_ID, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// Replies to `Fork`, by request id.
    replies: HashMap<u64, (FromZygote, Vec<OwnedFd>)>,
    /// `ChildExited` reports, by the id of the `Fork` that made the child.
    exits: HashMap<u64, ChildStatus>,
    /// Set once the control channel failed (zygote dead or misbehaving).
    closed: Option<String>,
}

/// A running fork server.
pub struct Zygote {
    ctl: Arc<ZygoteControl>,
    sandbox: Sandboxed,
    state: Arc<(Mutex<State>, Condvar)>,
    next_id: AtomicU64,
    fork_lock: Mutex<()>,
    stderr: Mutex<Option<StderrCollector>>,
    /// Forked workers not yet dropped by the supervisor.
    live: Arc<AtomicUsize>,
    /// At most this many at once: the zygote holds one pidfd per child under its RLIMIT_NOFILE, and a `Fork`
    /// whose fds it could not receive would end it (and every worker it forked).
    max_children: usize,
}

/// One of a zygote's child slots, released when the supervisor drops the child.
pub struct ChildSlot(Arc<AtomicUsize>);

impl Drop for ChildSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A worker freshly forked by a zygote, its seccomp programs sent, before its `Hello`.
pub struct ForkedChild {
    /// The zygote (kept alive while the child lives: its death kills the child's pid namespace).
    pub zygote: Arc<Zygote>,
    /// The `Fork` request id (also the id of the child's `ChildExited`).
    pub fork_id: u64,
    /// Host pid (read from the pidfd's fdinfo).
    pub pid: i32,
    /// Pid inside the zygote's pid namespace (what the seccomp pins name).
    pub pid_in_ns: u32,
    pub pidfd: OwnedFd,
    /// The policy its filter was compiled from (taken by the seccomp monitor).
    pub seccomp_policy: Option<caffe_sandbox_seccomp::ResolvedPolicy>,
    /// Counts the child against the zygote's capacity while it exists.
    pub slot: ChildSlot,
}

/// Fds of the zygote that are not per-child pidfds: 0–3, the two of a `Fork` in flight, and a margin for
/// children the supervisor dropped before the zygote reaped them.
const RESERVED_FDS: usize = 12;

fn max_children(cfg: &LaunchConfig) -> usize {
    let nofile = cfg.limits.open_files.unwrap_or(1024) as usize;
    nofile.saturating_sub(RESERVED_FDS).max(1)
}

fn registry() -> &'static Mutex<HashMap<String, Arc<Zygote>>> {
    static R: OnceLock<Mutex<HashMap<String, Arc<Zygote>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The zygote for `cfg`, started if there is none yet or the last one died.
pub fn for_config(cfg: &LaunchConfig, deadline: Instant) -> Result<Arc<Zygote>> {
    let key = format!("{cfg:?}");
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(z) = reg.get(&key) {
        if z.is_alive() {
            return Ok(z.clone());
        }
        let z = reg.remove(&key).expect("present");
        z.kill();
    }
    let z = Arc::new(Zygote::start(cfg, deadline)?);
    reg.insert(key, z.clone());
    Ok(z)
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

/// (host pid, pid in the innermost pid namespace) of the process behind `pidfd`, from the kernel's
/// `/proc/self/fdinfo` (not from anything the zygote says).
fn pidfd_pids(pidfd: &OwnedFd) -> Option<(i32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    };
    let host: i32 = field("Pid:")?.first()?.parse().ok()?;
    let ns: u32 = field("NSpid:")?.last()?.parse().ok()?;
    (host > 0).then_some((host, ns))
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new fds into the 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are new and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn parent_of(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

impl Zygote {
    fn start(cfg: &LaunchConfig, deadline: Instant) -> Result<Zygote> {
        if !cfg.require_seccomp() {
            return Err(Error::Setup(
                "the fork server requires the seccomp layer (each forked worker installs a filter pinned to \
                 its own pid); drop --fork-server to run without seccomp"
                    .into(),
            ));
        }
        let (sandbox, ctl) = super::launch_zygote(cfg)?;
        let stderr = sandbox
            .stderr
            .try_clone()
            .ok()
            .map(|fd| StderrCollector::start(fd, StderrCollector::DEFAULT_CAP));
        let fail = |sandbox: &Sandboxed, stderr: Option<StderrCollector>, what: String| {
            let _ = sandbox.kill();
            let _ = sandbox.wait();
            let tail = stderr.map(|c| c.finish()).unwrap_or_default();
            Error::Sandbox(format!("fork server: {what}; stderr: {tail}"))
        };
        match ctl.recv_deadline(Some(deadline)) {
            Ok((
                Message {
                    request_id: HELLO_REQUEST_ID,
                    body:
                        FromZygote::Ready {
                            protocol_version: PROTOCOL_VERSION,
                            pid_in_ns: 1,
                            ..
                        },
                },
                _,
            )) => {}
            Ok((m, _)) => return Err(fail(&sandbox, stderr, format!("expected Ready, got {m:?}"))),
            Err(e) => return Err(fail(&sandbox, stderr, format!("no Ready: {e}"))),
        }
        let ctl = Arc::new(ctl);
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let (c, s) = (ctl.clone(), state.clone());
        std::thread::Builder::new()
            .name("zygote-reader".into())
            .spawn(move || reader(c, s))
            .map_err(|e| fail(&sandbox, None, format!("reader thread: {e}")))?;
        Ok(Zygote {
            ctl,
            sandbox,
            state,
            next_id: AtomicU64::new(1),
            fork_lock: Mutex::new(()),
            stderr: Mutex::new(stderr),
            live: Arc::default(),
            max_children: max_children(cfg),
        })
    }

    /// The zygote's layers (what every forked worker inherits).
    pub fn layers(&self) -> LayerReport {
        self.sandbox.layers.clone()
    }

    /// Host pid of the zygote.
    pub fn pid(&self) -> i32 {
        self.sandbox.pid
    }

    /// Whether the zygote process is alive and its channel healthy.
    pub fn is_alive(&self) -> bool {
        let closed = self
            .state
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed
            .is_some();
        !closed && !poll_in(&self.sandbox.pidfd, Duration::ZERO)
    }

    /// Kills the zygote (and with it, as pid 1 of its pid namespace, every worker it forked) and reaps it.
    pub fn kill(&self) {
        let _ = self.sandbox.kill();
        let _ = self.sandbox.wait();
    }

    /// The zygote's own stderr so far (sanitized).
    pub fn stderr_snapshot(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.snapshot().0)
            .unwrap_or_default()
    }

    /// Forks one worker, verifies what the zygote says about it, and sends it its seccomp programs. Returns the
    /// child, the supervisor's end of its channel and the read end of its stderr pipe.
    pub fn fork(
        self: &Arc<Self>,
        cfg: &LaunchConfig,
        deadline: Instant,
    ) -> Result<(ForkedChild, SupervisorChannel, OwnedFd)> {
        // Take a slot first; give it back if the fork does not happen.
        let slot = ChildSlot(self.live.clone());
        if self.live.fetch_add(1, Ordering::SeqCst) >= self.max_children {
            return Err(Error::Sandbox(format!(
                "fork server at capacity: {} workers alive (its open-files limit of {} bounds them: raise \
                 ResourceLimits::open_files, or use the default path)",
                self.max_children,
                self.max_children + RESERVED_FDS
            )));
        }
        let (sup_end, worker_end) =
            socketpair().map_err(|e| Error::Sandbox(format!("socketpair: {e}")))?;
        let (err_r, err_w) = pipe().map_err(|e| Error::Sandbox(format!("pipe: {e}")))?;
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        {
            let _g = self.fork_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.ctl
                .send_deadline(
                    &Message::new(id, ToZygote::Fork),
                    &[worker_end.as_fd(), err_w.as_fd()],
                    Some(deadline),
                )
                .map_err(|e| self.broken(format!("sending Fork: {e}")))?;
        }
        drop((worker_end, err_w));
        let (body, mut fds) = self.wait_reply(id, deadline)?;
        let pid_in_ns = match body {
            FromZygote::Forked { pid_in_ns } => pid_in_ns,
            FromZygote::ForkFailed { message } => {
                return Err(Error::Sandbox(format!(
                    "fork server: fork failed: {message}"
                )))
            }
            other => return Err(self.broken(format!("answered Fork with {other:?}"))),
        };
        let pidfd = fds
            .pop()
            .expect("Forked carries 1 fd (checked by the channel)");
        // The pidfd is the kernel's handle: check it names a child of this zygote with the announced pid.
        let pid = match pidfd_pids(&pidfd) {
            Some((host, ns)) if ns == pid_in_ns && parent_of(host) == Some(self.sandbox.pid) => {
                host
            }
            found => {
                let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
                return Err(self.broken(format!(
                    "Forked pid {pid_in_ns} does not match its pidfd ({found:?}, zygote host pid {})",
                    self.sandbox.pid
                )));
            }
        };
        let (prog, policy) = crate::seccomp_watch::compiled_worker_filter_for(cfg, pid_in_ns)?;
        let pre =
            ZygoteControl::new(sup_end).map_err(|e| Error::Sandbox(format!("channel: {e}")))?;
        let kill = || {
            let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
        };
        if let Err(e) = pre.send_deadline(
            &Message::new(1, ToZygote::InstallSeccomp),
            &[prog.as_fd()],
            Some(deadline),
        ) {
            kill();
            return Err(Error::Sandbox(format!("sending the seccomp programs: {e}")));
        }
        let channel = match SupervisorChannel::new(pre.into_inner()) {
            Ok(c) => c,
            Err(e) => {
                kill();
                return Err(Error::Sandbox(format!("channel: {e}")));
            }
        };
        let child = ForkedChild {
            zygote: self.clone(),
            fork_id: id,
            pid,
            pid_in_ns,
            pidfd,
            seccomp_policy: Some(policy),
            slot,
        };
        Ok((child, channel, err_r))
    }

    /// The zygote misbehaved or its channel broke: kill it (a new one is started on the next fork).
    fn broken(&self, what: String) -> Error {
        self.kill();
        let mut st = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
        st.closed.get_or_insert(what.clone());
        Error::Sandbox(format!("fork server: {what}"))
    }

    fn wait_reply(&self, id: u64, deadline: Instant) -> Result<(FromZygote, Vec<OwnedFd>)> {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = st.replies.remove(&id) {
                return Ok(r);
            }
            if let Some(why) = &st.closed {
                let why = why.clone();
                drop(st);
                return Err(self.broken(format!("no answer to Fork: {why}")));
            }
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                return Err(self.broken("no answer to Fork in time".into()));
            }
            st = cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// How the child of `fork_id` ended, once the caller has seen it dead on its pidfd. Waits up to
    /// `timeout` for the zygote's report; `None` if it does not come (the zygote is then treated as broken).
    pub fn exit_status(&self, fork_id: u64, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = st.exits.remove(&fork_id) {
                return Some(match s {
                    ChildStatus::Exited(c) => ExitStatus::Exited(c.into()),
                    ChildStatus::Signaled(s) => ExitStatus::Signaled(s.into()),
                });
            }
            let now = Instant::now();
            if st.closed.is_some() || now >= deadline {
                return None;
            }
            st = cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads the control channel: replies to `Fork` and `ChildExited` reports go to the waiting callers.
fn reader(ctl: Arc<ZygoteControl>, state: Arc<(Mutex<State>, Condvar)>) {
    let (lock, cv) = &*state;
    let why = loop {
        match ctl.recv(None) {
            Ok((msg, fds)) => {
                let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                match msg.body {
                    FromZygote::ChildExited { status, .. } => {
                        st.exits.insert(msg.request_id, status);
                    }
                    b @ (FromZygote::Forked { .. } | FromZygote::ForkFailed { .. }) => {
                        st.replies.insert(msg.request_id, (b, fds));
                    }
                    FromZygote::Ready { .. } => break "unexpected second Ready".to_string(),
                }
                drop(st);
                cv.notify_all();
            }
            Err(ProtocolError::Closed) => break "the fork server ended".to_string(),
            Err(e) => break format!("protocol error: {e}"),
        }
    };
    lock.lock()
        .unwrap_or_else(|e| e.into_inner())
        .closed
        .get_or_insert(why);
    cv.notify_all();
}

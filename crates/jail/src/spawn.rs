//! The supervisor side of [`spawn`].

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::proto::{self, Decoded, Stage2ExecFilter, Stage2Msg, Stage2Spec};
use crate::sys::{self, check};
use crate::userns::{self, ChildPlan};
use crate::{
    cgroup, exec_filter, stage2, BpfSource, ExecFilter, JailError, Layer, LayerReport, LayerState,
    SandboxSpec, StdoutMode,
};

/// A sandboxed process.
#[derive(Debug)]
pub struct Sandboxed {
    /// Pid in the supervisor's pid namespace (pid 1 inside).
    pub pid: libc::pid_t,
    /// pidfd for race-free wait/kill (`CLOEXEC`).
    pub pidfd: OwnedFd,
    /// Read end of the target's stderr pipe (`CLOEXEC`). Read it with a byte cap, and past the cap keep
    /// draining (discarding): a full pipe blocks the worker, a closed one kills it with SIGPIPE.
    pub stderr: OwnedFd,
    /// Read end of the stdout pipe when [`StdoutMode::Pipe`] was requested.
    pub stdout: Option<OwnedFd>,
    /// The layers in force.
    pub layers: LayerReport,
    /// Wall time from `spawn` entry to the confirmed exec.
    pub spawn_time: Duration,
    /// The sandbox's own cgroup v2 directory, when the layer is enforced (removed by `wait`/`try_wait`
    /// once the sandbox has been reaped).
    pub cgroup: Option<PathBuf>,
    /// The user-notification listener of [`crate::SandboxSpec::exec_filter`] (`CLOEXEC`): take it, start
    /// answering notifications, then call [`Sandboxed::confirm_exec`].
    pub seccomp_listener: Option<OwnedFd>,
    /// Set while the target's `execve` is still undecided (exec filter only): see
    /// [`Sandboxed::confirm_exec`].
    pub exec_pending: Option<PendingExec>,
    /// Stage 2 ran in the clone child itself (single-threaded caller) rather than as a re-executed binary.
    pub stage2_in_child: bool,
}

/// The report pipe of a sandbox whose target `execve` has not been confirmed yet.
#[derive(Debug)]
pub struct PendingExec {
    report: OwnedFd,
    timeout: Duration,
}

/// How a sandboxed process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Normal exit with a code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

impl Sandboxed {
    /// With an exec filter: wait until the target's `execve` has succeeded (stage 2's report pipe closes on
    /// exec) or failed; on failure (or timeout) the sandbox is killed and reaped. Call it after starting to
    /// answer [`Sandboxed::seccomp_listener`]'s notifications. A no-op without a pending exec.
    pub fn confirm_exec(&mut self) -> Result<(), JailError> {
        let Some(p) = self.exec_pending.take() else {
            return Ok(());
        };
        let fail = |me: &Self, e: JailError| {
            let _ = me.kill();
            let _ = me.wait();
            Err(e)
        };
        let buf = match read_to_eof(&p.report, p.timeout) {
            Ok(b) => b,
            Err(e) => return fail(self, e),
        };
        match proto::decode_all(&buf) {
            Err(e) => fail(self, JailError::Setup(e)),
            Ok(msgs) => match msgs.into_iter().find_map(|m| match m {
                Decoded::Msg(Stage2Msg::ExecFailed(s)) => Some(JailError::Exec(s)),
                Decoded::Msg(Stage2Msg::SetupFailed(s)) => Some(JailError::Setup(s)),
                Decoded::Msg(Stage2Msg::Unavailable { layer, cause }) => {
                    Some(JailError::LayerUnavailable { layer, cause })
                }
                _ => None,
            }) {
                Some(e) => fail(self, e),
                None => Ok(()),
            },
        }
    }

    /// Send a signal through the pidfd (no pid-reuse race).
    pub fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        sys::pidfd_send_signal(self.pidfd.as_raw_fd(), sig)
    }

    /// SIGKILL pid 1 of the sandbox (the kernel then kills every process of its pid namespace).
    pub fn kill(&self) -> io::Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Block until the process exits and reap it (`waitid(P_PIDFD)`).
    pub fn wait(&self) -> io::Result<ExitStatus> {
        let st = wait_pidfd(self.pidfd.as_raw_fd(), 0)?.expect("blocking waitid returns a status");
        self.remove_cgroup();
        Ok(st)
    }

    /// The kernel's view of the target's seccomp state, read from the supervisor side
    /// (`/proc/PID/status`: `Seccomp:` mode 0/1/2 and `Seccomp_filters:` count). Valid until the process is
    /// reaped (an unreaped pid cannot be reused).
    pub fn seccomp_status(&self) -> io::Result<(u32, u32)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        match (field("Seccomp:"), field("Seccomp_filters:")) {
            (Some(mode), Some(filters)) => Ok((mode, filters)),
            _ => Err(io::Error::other("no Seccomp fields in /proc/PID/status")),
        }
    }

    /// The seccomp hook: once the worker says its filter is installed, confirm it from the kernel's side and
    /// record [`Layer::Seccomp`] as enforced (or weakened when no filter is in place). Returns the new state.
    pub fn confirm_seccomp(&mut self, min_filters: u32) -> LayerState {
        let state = match self.seccomp_status() {
            Ok((2, n)) if n >= min_filters => {
                LayerState::enforced(format!("filter mode, {n} filter(s) (read from /proc/{}/status)", self.pid))
            }
            Ok((mode, n)) => LayerState::weakened(format!(
                "kernel reports seccomp mode {mode} with {n} filter(s), expected filter mode with >= {min_filters}"
            )),
            Err(e) => LayerState::weakened(format!("cannot read seccomp state: {e}")),
        };
        self.layers.set(Layer::Seccomp, state.clone());
        state
    }

    fn remove_cgroup(&self) {
        if let Some(d) = &self.cgroup {
            let _ = std::fs::remove_dir(d);
        }
    }

    /// Reap if exited; `None` while running.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        let st = wait_pidfd(self.pidfd.as_raw_fd(), libc::WNOHANG)?;
        if st.is_some() {
            self.remove_cgroup();
        }
        Ok(st)
    }
}

fn wait_pidfd(pidfd: RawFd, extra: libc::c_int) -> io::Result<Option<ExitStatus>> {
    loop {
        // SAFETY: siginfo_t is plain data, zeroed is valid; waitid writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: P_PIDFD (3) with a valid pidfd and a valid siginfo pointer.
        let r = unsafe {
            libc::waitid(
                3 as libc::idtype_t,
                pidfd as libc::id_t,
                &mut info,
                libc::WEXITED | extra,
            )
        };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled `info` for a child state change (or left si_pid 0 with WNOHANG).
        let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(if code == libc::CLD_EXITED {
            ExitStatus::Code(status)
        } else {
            ExitStatus::Signal(status)
        }));
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), JailError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-int array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })
        .map_err(|e| JailError::sys("pipe2", e))?;
    // SAFETY: pipe2 just returned two new fds that nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn sealed_memfd(data: &[u8]) -> Result<OwnedFd, JailError> {
    let name = c"caffe-sandbox-jail-spec";
    // SAFETY: valid name; flags are constants.
    let fd = check(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })
    .map_err(|e| JailError::sys("memfd_create", e))?;
    // SAFETY: memfd_create returned a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(fd);
    f.write_all(data)
        .map_err(|e| JailError::sys("write spec memfd", e))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on an fd we own.
    check(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) })
        .map_err(|e| JailError::sys("seal spec memfd", e))?;
    Ok(OwnedFd::from(f))
}

fn ns_inodes() -> BTreeMap<String, u64> {
    ["user", "pid", "net", "mnt", "ipc", "uts", "cgroup"]
        .iter()
        .filter_map(|n| {
            std::fs::metadata(format!("/proc/self/ns/{n}"))
                .ok()
                .map(|m| (n.to_string(), m.ino()))
        })
        .collect()
}

fn validate_abs(p: &Path, what: &str) -> Result<(), JailError> {
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(JailError::InvalidSpec(format!(
            "{what} {} must be an absolute path without ..",
            p.display()
        )));
    }
    Ok(())
}

fn validate(spec: &SandboxSpec) -> Result<(), JailError> {
    validate_abs(&spec.program, "program")?;
    for p in spec
        .ro_paths
        .iter()
        .chain(&spec.ro_noexec_paths)
        .chain(&spec.dev_nodes)
    {
        validate_abs(p, "path")?;
    }
    if let Some(s) = &spec.scratch {
        validate_abs(&s.path, "scratch path")?;
        if s.path == Path::new("/") {
            return Err(JailError::InvalidSpec("scratch cannot be /".into()));
        }
        if s.size_bytes == 0 {
            return Err(JailError::InvalidSpec("scratch size must be > 0".into()));
        }
    }
    let mut targets: Vec<RawFd> = spec.pass_fds.iter().map(|(_, t)| *t).collect();
    targets.sort_unstable();
    if targets.windows(2).any(|w| w[0] == w[1]) {
        return Err(JailError::InvalidSpec(
            "two passed fds share a target number".into(),
        ));
    }
    if targets.iter().any(|t| !(3..=1023).contains(t)) {
        return Err(JailError::InvalidSpec(
            "passed fd targets must be in 3..=1023 (0-2 are stdio)".into(),
        ));
    }
    if let Some(n) = spec.limits.nofile {
        if targets.last().is_some_and(|&t| t as u64 >= n) {
            return Err(JailError::InvalidSpec(
                "RLIMIT_NOFILE must exceed the highest passed fd".into(),
            ));
        }
    }
    if spec.ro_paths.len() + spec.ro_noexec_paths.len() > 4000 {
        return Err(JailError::InvalidSpec(
            "too many read-only paths (max 4000)".into(),
        ));
    }
    if spec.hostname.len() > 64 {
        return Err(JailError::InvalidSpec(
            "hostname longer than 64 bytes".into(),
        ));
    }
    Ok(())
}

fn simulated(spec: &SandboxSpec) -> std::collections::BTreeSet<Layer> {
    #[cfg(feature = "test-hooks")]
    {
        spec.test_simulate_unavailable.clone()
    }
    #[cfg(not(feature = "test-hooks"))]
    {
        let _ = spec;
        std::collections::BTreeSet::new()
    }
}

/// Start `spec.program` in a sandbox. Returns once stage 2 has applied every layer and the target's
/// `execve` succeeded; fails closed with [`JailError::LayerUnavailable`] for a layer that cannot be applied
/// and is not listed in `spec.allow_weaker`. Call it from a long-lived thread (see [`crate::Spawner`]).
pub fn spawn(spec: &SandboxSpec) -> Result<Sandboxed, JailError> {
    spawn_inner(spec, None)
}

/// `no_userns`: `Some(reason)` when retrying without a user namespace (root + `allow_weaker` only).
fn spawn_inner(spec: &SandboxSpec, no_userns: Option<String>) -> Result<Sandboxed, JailError> {
    let t0 = Instant::now();
    validate(spec)?;
    let simulate = simulated(spec);
    let mut parent_layers = LayerReport::default();

    // cgroup v2: decided before anything is created.
    let cg_plan = match &spec.cgroup {
        None => {
            parent_layers.set(Layer::CgroupV2, LayerState::not_available("not requested"));
            None
        }
        Some(limits) => match cgroup::prepare(limits) {
            Ok(plan) => Some(plan),
            Err(cause) => {
                if !spec.allow_weaker.contains(&Layer::CgroupV2) {
                    return Err(JailError::LayerUnavailable {
                        layer: Layer::CgroupV2,
                        cause,
                    });
                }
                parent_layers.set(Layer::CgroupV2, LayerState::not_available(cause));
                None
            }
        },
    };
    if spec.exec_filter.is_none() {
        parent_layers.set(
            Layer::Seccomp,
            LayerState::Delegated {
                reason: "installed by the worker after library init; confirmed by the caller"
                    .into(),
            },
        );
    }

    // Stage 2 in the clone child itself (single-threaded caller), or re-executed: its executable opened now
    // (O_PATH) so a replaced file cannot be swapped in.
    let in_child = spec.stage2_in_child && crate::single_threaded();
    let exe_path = spec
        .stage2_exe
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let exe = if in_child {
        None
    } else {
        Some(
            std::fs::File::options()
                .read(true)
                .custom_flags_opath()
                .open(&exe_path)
                .map_err(|e| {
                    JailError::sys(format!("open stage 2 executable {}", exe_path.display()), e)
                })?,
        )
    };

    let (sync_r, sync_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let stdout_pipe = if spec.stdout == StdoutMode::Pipe {
        Some(pipe()?)
    } else {
        None
    };

    // SAFETY: trivial getter.
    let is_root = unsafe { libc::geteuid() } == 0;
    let with_userns = !simulate.contains(&Layer::UserNs) && no_userns.is_none();
    let binds: Vec<(PathBuf, bool)> = spec
        .ro_paths
        .iter()
        .chain(std::iter::once(&spec.program))
        .map(|p| (p.clone(), true))
        .chain(spec.ro_noexec_paths.iter().map(|p| (p.clone(), false)))
        .collect();
    let bind_paths = binds
        .iter()
        .map(|(p, _)| sys::cstr(p.as_os_str()))
        .collect::<io::Result<Vec<CString>>>()
        .map_err(|e| JailError::InvalidSpec(format!("path: {e}")))?;
    let (bind_r, bind_w) = pipe()?;
    let filter_pair = match &spec.exec_filter {
        Some(_) => Some(
            exec_filter::socket_pair().map_err(|e| JailError::sys("exec filter socketpair", e))?,
        ),
        None => None,
    };
    let stage2 = Stage2Spec {
        program: spec.program.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        binds: binds.clone(),
        bind_fd_pipe: bind_r.as_raw_fd(),
        dev_nodes: spec.dev_nodes.clone(),
        proc: spec.proc,
        scratch: spec.scratch.clone(),
        pass_fds: spec
            .pass_fds
            .iter()
            .map(|(fd, t)| (fd.as_raw_fd(), *t))
            .collect(),
        stderr_fd: stderr_w.as_raw_fd(),
        stdout: spec.stdout,
        stdout_fd: stdout_pipe.as_ref().map(|(_, w)| w.as_raw_fd()),
        report_fd: report_w.as_raw_fd(),
        limits: spec.limits.clone(),
        allow_weaker: spec.allow_weaker.clone(),
        hostname: spec.hostname.clone(),
        drop_groups: is_root,
        userns: with_userns,
        parent_ns: ns_inodes(),
        parent_layers: parent_layers.clone(),
        simulate_unavailable: simulate.clone(),
        exec_filter: spec.exec_filter.as_ref().zip(filter_pair.as_ref()).map(
            |(f, (_, child_end))| Stage2ExecFilter {
                name: f.name.clone(),
                sock: child_end.as_raw_fd(),
            },
        ),
    };
    let spec_bytes = serde_json::to_vec(&stage2)
        .map_err(|e| JailError::Setup(format!("serialize spec: {e}")))?;
    let memfd = sealed_memfd(&spec_bytes)?;

    let mut inherit = vec![
        bind_r.as_raw_fd(),
        memfd.as_raw_fd(),
        report_w.as_raw_fd(),
        stderr_w.as_raw_fd(),
    ];
    if let Some((_, w)) = &stdout_pipe {
        inherit.push(w.as_raw_fd());
    }
    inherit.extend(spec.pass_fds.iter().map(|(fd, _)| fd.as_raw_fd()));
    inherit.extend(filter_pair.as_ref().map(|(_, c)| c.as_raw_fd()));

    let argv: Vec<CString> = vec![
        CString::new("caffe-sandbox-jail-stage2").expect("no NUL"),
        CString::new(stage2::STAGE2_ARG).expect("no NUL"),
        CString::new(memfd.as_raw_fd().to_string()).expect("no NUL"),
        CString::new(report_w.as_raw_fd().to_string()).expect("no NUL"),
    ];
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let plan = ChildPlan {
        exe_fd: exe.as_ref().map_or(-1, |e| e.as_raw_fd()),
        _argv: argv,
        argv_ptrs,
        envp_ptrs: vec![std::ptr::null()],
        sync_r: sync_r.as_raw_fd(),
        sync_w: sync_w.as_raw_fd(),
        report_w: report_w.as_raw_fd(),
        inherit,
        bind_paths,
        bind_pipe_w: bind_w.as_raw_fd(),
        drop_groups: is_root && with_userns,
        stage2_in_child: in_child.then(|| (memfd.as_raw_fd(), report_w.as_raw_fd())),
    };

    if !with_userns && !spec.allow_weaker.contains(&Layer::UserNs) {
        return Err(JailError::LayerUnavailable {
            layer: Layer::UserNs,
            cause: "simulated unavailability (test hook)".into(),
        });
    }
    let (pid, pidfd) =
        match userns::clone_into_namespaces(userns::namespace_flags(with_userns), &plan) {
            Ok(v) => v,
            Err(e)
                if with_userns
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EUSERS)
                    ) =>
            {
                let cause = format!("clone3(CLONE_NEWUSER|namespaces): {e}");
                if spec.allow_weaker.contains(&Layer::UserNs) && is_root {
                    return spawn_inner(spec, Some(cause));
                }
                return Err(JailError::LayerUnavailable {
                    layer: Layer::UserNs,
                    cause,
                });
            }
            Err(e) if !with_userns && e.raw_os_error() == Some(libc::EPERM) => {
                return Err(JailError::LayerUnavailable {
                    layer: Layer::UserNs,
                    cause: format!(
                        "{}; without a user namespace only root can create the other namespaces",
                        no_userns.unwrap_or_else(|| "user namespace unavailable".into())
                    ),
                });
            }
            Err(e) => return Err(JailError::sys("clone3", e)),
        };
    // The exec filter's compiler runs while the child builds the sandbox.
    let compiling = match &spec.exec_filter {
        Some(ExecFilter {
            bpf: BpfSource::Compile(c),
            ..
        }) => c.start(),
        _ => None,
    };
    // SAFETY: clone3 returned a fresh pidfd owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(sync_r);
    drop(bind_w);
    drop(bind_r);
    drop(report_w);
    drop(stderr_w);
    let stdout_r = stdout_pipe.map(|(r, w)| {
        drop(w);
        r
    });
    drop(memfd);
    let filter_sock = filter_pair.map(|(parent_end, child_end)| {
        drop(child_end);
        parent_end
    });

    let abort = |err: JailError| -> JailError {
        let _ = sys::pidfd_send_signal(pidfd.as_raw_fd(), libc::SIGKILL);
        let _ = wait_pidfd(pidfd.as_raw_fd(), 0);
        err
    };

    let mut layers_from_parent = parent_layers;
    if with_userns {
        match userns::write_id_maps(pid) {
            Ok((uid, gid, _)) => layers_from_parent.set(
                Layer::UserNs,
                LayerState::enforced(format!("ns uid/gid 0 = host {uid}/{gid}")),
            ),
            Err(e) => {
                return Err(abort(JailError::LayerUnavailable {
                    layer: Layer::UserNs,
                    cause: e.to_string(),
                }));
            }
        }
    } else {
        layers_from_parent.set(
            Layer::UserNs,
            LayerState::weakened(format!(
                "{}; running without a user namespace as host uid/gid {}",
                no_userns
                    .as_deref()
                    .unwrap_or("simulated unavailability (test hook)"),
                userns::ROOT_MODE_ID
            )),
        );
    }
    if let Some(plan) = &cg_plan {
        match plan.attach(pid) {
            Ok(detail) => layers_from_parent.set(Layer::CgroupV2, LayerState::enforced(detail)),
            Err(cause) => {
                if !spec.allow_weaker.contains(&Layer::CgroupV2) {
                    return Err(abort(JailError::LayerUnavailable {
                        layer: Layer::CgroupV2,
                        cause,
                    }));
                }
                layers_from_parent.set(Layer::CgroupV2, LayerState::weakened(cause));
            }
        }
    }

    // Release the child.
    let mut w = std::fs::File::from(sync_w);
    if let Err(e) = w.write_all(b"G") {
        return Err(abort(JailError::sys("release clone child", e)));
    }
    drop(w);
    drop(exe);

    // The exec filter's program (it may have been compiling until now), or why there is none.
    if let (Some(f), Some(sock)) = (&spec.exec_filter, &filter_sock) {
        let program = match (&f.bpf, compiling) {
            (BpfSource::Ready(bpf), _) => Ok(bpf.clone()),
            (BpfSource::Compile(_), Some(h)) => h
                .join()
                .unwrap_or_else(|_| Err("the seccomp compiler panicked".into())),
            (BpfSource::Compile(_), None) => {
                Err("the seccomp compiler could not be started (or was used already)".into())
            }
        };
        let sent =
            exec_filter::send_program(sock.as_fd(), program.as_deref().map_err(String::as_str));
        if let Err(e) = sent {
            return Err(abort(JailError::sys(
                "sending the seccomp program to stage 2",
                e,
            )));
        }
    }

    // Read the report until EOF (exec succeeded or stage 2 died) or timeout — with an exec filter, only until
    // the listener arrives: the filter may hold the target's execve until the caller answers it.
    let started = Instant::now();
    let read = match &filter_sock {
        None => read_to_eof(&report_r, spec.setup_timeout).map(|b| (b, None)),
        Some(sock) => read_until_listener(&report_r, sock, spec.setup_timeout),
    };
    let (buf, listener) = match read {
        Ok(v) => v,
        Err(e) => return Err(abort(e)),
    };
    let msgs = match proto::decode_all(&buf) {
        Ok(m) => m,
        Err(e) => return Err(abort(JailError::Setup(e))),
    };
    let mut report = None;
    for m in msgs {
        match m {
            Decoded::ChildExecFailed(errno) => {
                let hint = if is_root && errno == libc::EACCES {
                    " (as root the sandbox runs as uid 65534: the stage-2 executable must be executable by others)"
                } else {
                    ""
                };
                return Err(abort(JailError::Setup(format!(
                    "clone child: setting up or executing stage 2 ({}) failed: {}{hint}",
                    exe_path.display(),
                    io::Error::from_raw_os_error(errno)
                ))));
            }
            Decoded::Msg(Stage2Msg::Unavailable { layer, cause }) => {
                return Err(abort(JailError::LayerUnavailable { layer, cause }))
            }
            Decoded::Msg(Stage2Msg::SetupFailed(s)) => return Err(abort(JailError::Setup(s))),
            Decoded::Msg(Stage2Msg::ExecFailed(s)) => return Err(abort(JailError::Exec(s))),
            Decoded::Msg(Stage2Msg::Ready(r)) => report = Some(r),
        }
    }
    let Some(mut report) = report else {
        let status = wait_pidfd(pidfd.as_raw_fd(), 0).ok().flatten();
        return Err(JailError::Setup(format!(
            "stage 2 ended without a report (status {status:?})"
        )));
    };
    for (l, s) in layers_from_parent.layers {
        report.set(l, s);
    }
    let cgroup = cg_plan.and_then(cgroup::Plan::into_dir);
    let exec_pending = listener.as_ref().map(|_| PendingExec {
        report: report_r,
        timeout: spec.setup_timeout.saturating_sub(started.elapsed()),
    });
    Ok(Sandboxed {
        pid,
        pidfd,
        stderr: stderr_r,
        stdout: stdout_r,
        layers: report,
        spawn_time: t0.elapsed(),
        cgroup,
        seccomp_listener: listener,
        exec_pending,
        stage2_in_child: in_child,
    })
}

/// What one poll-and-read of the report pipe gave.
enum Chunk {
    Data,
    Eof,
    Nothing,
}

/// Polls `fds` for input for up to `wait`; `false` when nothing became ready (timeout or EINTR).
fn poll_in(fds: &mut [PollFd<'_>], wait: Duration) -> Result<bool, JailError> {
    let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    });
    match poll(fds, Some(&timeout)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::INTR) => Ok(false),
        Err(e) => Err(JailError::sys("poll report pipe", e.into())),
    }
}

/// Waits up to `wait` for `fd` and appends what one `read` returns.
fn read_chunk(fd: &OwnedFd, wait: Duration, out: &mut Vec<u8>) -> Result<Chunk, JailError> {
    if !poll_in(&mut [PollFd::new(fd, PollFlags::IN)], wait)? {
        return Ok(Chunk::Nothing);
    }
    let mut chunk = [0u8; 8192];
    let n = match rustix::io::read(fd, &mut chunk) {
        Ok(n) => n,
        Err(Errno::INTR) => return Ok(Chunk::Nothing),
        Err(e) => return Err(JailError::sys("read report pipe", e.into())),
    };
    if n == 0 {
        return Ok(Chunk::Eof);
    }
    out.extend_from_slice(&chunk[..n]);
    if out.len() > proto::MAX_FRAME * 2 {
        return Err(JailError::Setup("stage 2 report too large".into()));
    }
    Ok(Chunk::Data)
}

/// The time left until `deadline`, or the timeout error once it has passed.
fn time_left(deadline: Instant, timeout: Duration) -> Result<Duration, JailError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(JailError::Timeout(timeout));
    }
    Ok(left)
}

fn read_to_eof(fd: &OwnedFd, timeout: Duration) -> Result<Vec<u8>, JailError> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let wait = time_left(deadline, timeout)?;
        if let Chunk::Eof = read_chunk(fd, wait, &mut out)? {
            return Ok(out);
        }
    }
}

/// Reads the report until stage 2 hands over the exec filter's listener (then takes only the report bytes
/// already written: stage 2 writes its report before sending the listener) or until the report ends (stage 2
/// failed, or exec'd without a filter because seccomp was allowed to be weaker).
fn read_until_listener(
    report: &OwnedFd,
    sock: &OwnedFd,
    timeout: Duration,
) -> Result<(Vec<u8>, Option<OwnedFd>), JailError> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let wait = time_left(deadline, timeout)?;
        let mut pfd = [
            PollFd::new(report, PollFlags::IN),
            PollFd::new(sock, PollFlags::IN),
        ];
        if !poll_in(&mut pfd, wait)? {
            continue;
        }
        let (report_ready, sock_ready) =
            (!pfd[0].revents().is_empty(), !pfd[1].revents().is_empty());
        if sock_ready {
            match exec_filter::recv_listener(sock.as_fd()) {
                Ok(Some(listener)) => {
                    while let Chunk::Data = read_chunk(report, Duration::ZERO, &mut out)? {}
                    return Ok((out, Some(listener)));
                }
                Ok(None) => {
                    let rest =
                        read_to_eof(report, deadline.saturating_duration_since(Instant::now()))?;
                    out.extend(rest);
                    return Ok((out, None));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(JailError::Setup(format!("seccomp listener hand-over: {e}"))),
            }
        }
        if report_ready {
            if let Chunk::Eof = read_chunk(report, Duration::ZERO, &mut out)? {
                return Ok((out, None));
            }
        }
    }
}

trait OpenOptionsExt2 {
    fn custom_flags_opath(&mut self) -> &mut Self;
}

impl OpenOptionsExt2 for std::fs::OpenOptions {
    fn custom_flags_opath(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_PATH | libc::O_CLOEXEC)
    }
}

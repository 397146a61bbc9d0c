//! Stage 2: a fresh single-threaded image of the supervisor binary that builds the sandbox from inside the
//! new namespaces and then execs the target.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::mounts::{self, MountError};
use crate::proto::{self, Stage2Msg, Stage2Spec};
use crate::sys::{self, cstr};
use crate::{caps, exec_filter, fds, landlock, rlimits, Layer, LayerReport, LayerState, ProcMode};

/// argv\[1] that selects stage 2.
pub const STAGE2_ARG: &str = "__jail-stage2";

/// Call first thing in `main()` of every binary that spawns sandboxes (the CLI, test helpers). If this
/// process is a stage-2 re-execution it never returns (it becomes the sandboxed program); otherwise it
/// returns immediately.
pub fn stage2_main_if_requested() {
    let mut args = std::env::args_os();
    let _argv0 = args.next();
    if args.next().as_deref() != Some(OsStr::new(STAGE2_ARG)) {
        return;
    }
    let mut fd = || -> Option<RawFd> { args.next().and_then(|a| a.to_str()?.parse().ok()) };
    let (Some(spec_fd), Some(report_fd)) = (fd(), fd()) else {
        exit_now(120);
    };
    run(spec_fd, report_fd)
}

/// Ends stage 2 without running exit handlers or flushing stdio buffers: in the clone child of a
/// single-threaded caller those are copies of the caller's.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

enum Fail {
    Unavailable(Layer, String),
    Setup(String),
}

struct Ctx {
    report: LayerReport,
    allow: BTreeSet<Layer>,
    simulate: BTreeSet<Layer>,
}

impl Ctx {
    /// Record a layer outcome; fail closed unless `allow_weaker` lists the layer.
    fn outcome(&mut self, layer: Layer, res: Result<String, String>) -> Result<(), Fail> {
        let res = if self.simulate.contains(&layer) {
            Err(format!(
                "simulated unavailability (test hook){}",
                res.err().map(|e| format!("; {e}")).unwrap_or_default()
            ))
        } else {
            res
        };
        match res {
            Ok(detail) => self.report.set(layer, LayerState::enforced(detail)),
            Err(cause) if self.allow.contains(&layer) => self.report.set(
                layer,
                LayerState::weakened(format!("{cause} (allowed by allow_weaker)")),
            ),
            Err(cause) => return Err(Fail::Unavailable(layer, cause)),
        }
        Ok(())
    }
}

fn send(report_fd: RawFd, msg: &Stage2Msg) {
    // SAFETY: borrowing an fd we own for the duration of the write, without closing it (ManuallyDrop).
    let f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(report_fd) });
    let _ = proto::write_msg(&*f, msg);
}

/// Stage 2 proper: from the re-executed binary, or directly in the clone child of a single-threaded caller.
pub(crate) fn run(spec_fd: RawFd, report_fd: RawFd) -> ! {
    // Refuse a manual invocation: stage 2 must be pid 1 of a fresh pid namespace and hold the supervisor's
    // sealed spec memfd. (Otherwise e.g. `make / rprivate` would hit the caller's own mount namespace.)
    // SAFETY: getpid has no preconditions; F_GET_SEALS only queries the fd.
    let (pid, seals) = unsafe { (libc::getpid(), libc::fcntl(spec_fd, libc::F_GET_SEALS)) };
    let want = libc::F_SEAL_SEAL | libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK;
    if pid != 1 || seals < 0 || seals & want != want {
        eprintln!("{STAGE2_ARG}: internal entry point of the sandbox, not for direct use");
        exit_now(118);
    }
    // SAFETY: the fd number was handed to us by the supervisor through argv and is owned by this process.
    let mut spec_file = unsafe { File::from_raw_fd(spec_fd) };
    let spec: Stage2Spec = match spec_file
        .seek(SeekFrom::Start(0))
        .and_then(|_| proto::read_spec(&spec_file))
    {
        Ok(s) if s.report_fd == report_fd => s,
        Ok(_) => exit_now(119),
        Err(e) => {
            // E.g. a caffe-sandbox-jail-stage2 left over from another build next to the caller.
            send(
                report_fd,
                &Stage2Msg::SetupFailed(format!(
                    "the stage-2 executable cannot read the sandbox spec ({e}): it must come from the same \
                     build as the program that spawns the sandbox"
                )),
            );
            exit_now(119)
        }
    };
    drop(spec_file);
    for fd in std::iter::once(report_fd).chain(spec.exec_filter.as_ref().map(|f| f.sock)) {
        // SAFETY: fcntl on an inherited fd of ours: it must close on the target's exec.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let mut ctx = Ctx {
        report: spec.parent_layers.clone(),
        allow: spec.allow_weaker.clone(),
        simulate: spec.simulate_unavailable.clone(),
    };
    let built = match build(&spec, &mut ctx) {
        Ok(b) => b,
        Err((fd, Fail::Unavailable(layer, cause))) => {
            send(fd, &Stage2Msg::Unavailable { layer, cause });
            exit_now(126)
        }
        Err((fd, Fail::Setup(s))) => {
            send(fd, &Stage2Msg::SetupFailed(s));
            exit_now(125)
        }
    };
    let Built {
        report_fd,
        argv,
        envp,
        prog,
        filter_sock,
    } = built;
    // The exec filter comes last: once it is installed, only write, sendmsg, close, execve, the allocator's
    // brk/mmap/munmap (and exit_group) follow.
    let listener = match (&spec.exec_filter, filter_sock) {
        (Some(f), Some(sock)) => {
            // SAFETY: `sock` is our end of the listener socket pair, kept open by `fds::arrange`.
            let sock_fd = unsafe { BorrowedFd::borrow_raw(sock) };
            let res = match exec_filter::recv_program(sock_fd) {
                Err(e) => Err(format!("receiving the program: {e}")),
                Ok(Err(why)) => Err(why),
                Ok(Ok(_)) if ctx.simulate.contains(&Layer::Seccomp) => {
                    Err(io_simulated().to_string())
                }
                Ok(Ok(bpf)) => exec_filter::install(&bpf).map_err(|e| e.to_string()),
            };
            let outcome = res.as_ref().map(|_| {
                format!(
                    "{} (installed by stage 2 as its last step before execve; violations reported by the kernel)",
                    f.name
                )
            });
            if let Err(Fail::Unavailable(layer, cause)) = ctx.outcome(
                Layer::Seccomp,
                outcome.map_err(|e| format!("installing {}: {e}", f.name)),
            ) {
                send(report_fd, &Stage2Msg::Unavailable { layer, cause });
                exit_now(126)
            }
            res.ok().map(|l| (sock, l))
        }
        _ => None,
    };
    send(report_fd, &Stage2Msg::Ready(ctx.report));
    if let Some((sock, listener)) = listener {
        // SAFETY: `sock` is our end of the listener socket pair, kept open by `fds::arrange`.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        if let Err(e) = exec_filter::send_listener(sock.as_fd(), listener.as_fd()) {
            send(
                report_fd,
                &Stage2Msg::SetupFailed(format!("handing the seccomp listener over: {e}")),
            );
            exit_now(125)
        }
    }
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(prog.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    let e = std::io::Error::last_os_error();
    send(
        report_fd,
        &Stage2Msg::ExecFailed(format!("execve {}: {e}", spec.program.display())),
    );
    exit_now(127)
}

fn io_simulated() -> std::io::Error {
    std::io::Error::other("simulated unavailability (test hook)")
}

/// What stage 2 execs, and the fds it still holds for the last steps.
struct Built {
    report_fd: RawFd,
    argv: Vec<CString>,
    envp: Vec<CString>,
    prog: CString,
    /// Our end of the listener socket pair when an exec filter was requested.
    filter_sock: Option<RawFd>,
}

fn ns_inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/ns/{name}"))
        .ok()
        .map(|m| m.ino())
}

fn reset_signals() {
    // SAFETY: resetting dispositions to SIG_DFL and unblocking signals affects only this single thread;
    // errors for SIGKILL/SIGSTOP are expected and ignored.
    unsafe {
        for sig in 1..=libc::SIGRTMAX() {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

fn net_only_lo_down() -> Result<String, String> {
    // SAFETY: if_nameindex returns a heap array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(format!("if_nameindex: {}", std::io::Error::last_os_error()));
        }
        let mut names = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 {
            names.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        if names != ["lo"] {
            return Err(format!("unexpected interfaces {names:?}"));
        }
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req);
        libc::close(s);
        if r != 0 {
            return Err(format!(
                "SIOCGIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ));
        }
        if req.ifr_ifru.ifru_flags as libc::c_int & libc::IFF_UP != 0 {
            return Err("lo is up".into());
        }
    }
    Ok("only lo, down".into())
}

fn build(spec: &Stage2Spec, ctx: &mut Ctx) -> Result<Built, (RawFd, Fail)> {
    let mut report_fd = spec.report_fd;
    macro_rules! t {
        ($e:expr) => {
            $e.map_err(|f| (report_fd, f))?
        };
    }
    reset_signals();
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o022) };

    // Namespaces: prove each differs from the supervisor's.
    for (layer, name) in [
        (Layer::PidNs, "pid"),
        (Layer::NetNs, "net"),
        (Layer::IpcNs, "ipc"),
        (Layer::UtsNs, "uts"),
        (Layer::CgroupNs, "cgroup"),
    ] {
        let res = match (ns_inode(name), spec.parent_ns.get(name)) {
            (Some(mine), Some(&theirs)) if mine != theirs => Ok(format!("{name} ns {mine}")),
            (mine, theirs) => Err(format!(
                "{name} namespace not separate ({mine:?} vs {theirs:?})"
            )),
        };
        let res = match (layer, res) {
            // SAFETY: trivial getter.
            (Layer::PidNs, Ok(d)) if unsafe { libc::getpid() } != 1 => {
                Err(format!("{d}, but not pid 1"))
            }
            (Layer::PidNs, Ok(d)) => Ok(format!("{d}; target is pid 1")),
            (Layer::NetNs, Ok(d)) => net_only_lo_down().map(|x| format!("{d}; {x}")),
            (_, r) => r,
        };
        t!(ctx.outcome(layer, res));
    }
    let mnt_separate =
        matches!((ns_inode("mnt"), spec.parent_ns.get("mnt")), (Some(a), Some(&b)) if a != b);

    if spec.drop_groups {
        // The clone child dropped them; verify.
        // SAFETY: getgroups(0, NULL) only returns the count.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if n != 0 {
            t!(Err(Fail::Setup(format!(
                "{n} supplementary groups left after setgroups(0)"
            ))));
        }
    }

    // Host /dev/null for stdin (opened before the host tree disappears).
    // SAFETY: open with a static path.
    let devnull = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if devnull < 0 {
        t!(Err(Fail::Setup(format!(
            "open /dev/null: {}",
            std::io::Error::last_os_error()
        ))));
    }

    // Hostname.
    // SAFETY: pointer/length of a live byte slice.
    let r = unsafe {
        libc::sethostname(
            spec.hostname.as_ptr() as *const libc::c_char,
            spec.hostname.len(),
        )
    };
    if r != 0 {
        t!(ctx.outcome(
            Layer::UtsNs,
            Err(format!("sethostname: {}", std::io::Error::last_os_error()))
        ));
    } else if let Some(LayerState::Enforced { detail }) = ctx.report.get(Layer::UtsNs).cloned() {
        ctx.report.set(
            Layer::UtsNs,
            LayerState::enforced(format!("{detail}; hostname {}", spec.hostname)),
        );
    }

    // No nested user namespaces: inside one the process would hold a full capability set again (and reach
    // mount/chroot/unshare of everything else). The limit is per user namespace and owned by our ns root.
    let nested = if spec.userns {
        std::fs::write("/proc/sys/user/max_user_namespaces", "0")
            .map_err(|e| format!("disable nested user namespaces (max_user_namespaces=0): {e}"))
    } else {
        Ok(())
    };

    // Minimal root.
    let binds = match mounts::resolve_binds(&spec.binds, spec.bind_fd_pipe) {
        Ok(b) => b,
        Err(MountError::Config(s)) | Err(MountError::Kernel(s)) | Err(MountError::Scratch(s)) => {
            t!(Err(Fail::Setup(s)))
        }
    };
    let view = if !mnt_separate {
        t!(ctx.outcome(Layer::MountNs, Err("mount namespace not separate".into())));
        None
    } else {
        match mounts::build(binds, &spec.dev_nodes, spec.proc, spec.scratch.as_ref()) {
            Ok(v) => Some(v),
            Err(MountError::Config(s)) => t!(Err(Fail::Setup(s))),
            Err(MountError::Kernel(s)) => t!(Err(Fail::Unavailable(Layer::MountNs, s))),
            Err(MountError::Scratch(s)) => t!(Err(Fail::Unavailable(Layer::ScratchTmpfs, s))),
        }
    };
    match &view {
        Some(v) => match mounts::verify(v, spec.scratch.as_ref()) {
            Ok((root, scratch)) => {
                t!(ctx.outcome(Layer::MountNs, Ok(root)));
                match scratch {
                    Some(s) => t!(ctx.outcome(Layer::ScratchTmpfs, Ok(s))),
                    None => ctx.report.set(
                        Layer::ScratchTmpfs,
                        LayerState::not_available("no scratch requested"),
                    ),
                }
            }
            Err(e) => t!(Err(Fail::Unavailable(Layer::MountNs, e))),
        },
        None => ctx.report.set(
            Layer::ScratchTmpfs,
            LayerState::not_available("no mount namespace"),
        ),
    }
    let cwd = spec
        .scratch
        .as_ref()
        .map(|s| s.path.clone())
        .unwrap_or_else(|| PathBuf::from("/"));
    if let Err(e) = std::env::set_current_dir(&cwd) {
        t!(Err(Fail::Setup(format!("chdir {}: {e}", cwd.display()))));
    }

    // Fds.
    let mut filter_sock = None;
    let keep: Vec<RawFd> = std::iter::once(spec.report_fd)
        .chain(spec.exec_filter.as_ref().map(|f| f.sock))
        .collect();
    match fds::arrange(
        devnull,
        spec.stderr_fd,
        spec.stdout,
        spec.stdout_fd,
        &spec.pass_fds,
        &keep,
    ) {
        Ok((kept, detail)) => {
            report_fd = kept[0];
            filter_sock = kept.get(1).copied();
            t!(ctx.outcome(Layer::FdsClosed, Ok(detail)));
        }
        Err(e) => t!(ctx.outcome(Layer::FdsClosed, Err(format!("fd arrangement: {e}")))),
    }

    // Session.
    // SAFETY: setsid has no memory-safety preconditions.
    let sid = unsafe { libc::setsid() };
    let res = if sid == -1 {
        Err(format!("setsid: {}", std::io::Error::last_os_error()))
    } else {
        Ok(format!("sid {sid}"))
    };
    t!(ctx.outcome(Layer::Setsid, res));

    // Rlimits.
    t!(ctx.outcome(Layer::Rlimits, rlimits::apply(&spec.limits)));

    // Securebits while we still hold CAP_SETPCAP (namespace root, or real root without a user namespace).
    let userns = spec.userns;
    let secbits = caps::lock_securebits();
    // Without a user namespace (explicitly allowed, root only): clear the bounding set while still able to,
    // then become 65534 for real.
    if !userns {
        if let Err(e) = caps::drop_bounding() {
            t!(Err(Fail::Unavailable(Layer::Capabilities, e)));
        }
        let id = crate::userns::ROOT_MODE_ID;
        // SAFETY: single-threaded; plain id changes.
        let ok = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(id, id, id) == 0
                && libc::setresuid(id, id, id) == 0
        };
        if !ok {
            t!(Err(Fail::Unavailable(
                Layer::UserNs,
                format!(
                    "no user namespace and cannot switch to uid {id}: {}",
                    std::io::Error::last_os_error()
                )
            )));
        }
    }

    // no_new_privs.
    let nnp = sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
        .and_then(|_| sys::prctl(libc::PR_GET_NO_NEW_PRIVS, 0))
        .map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))
        .and_then(|v| {
            if v == 1 {
                Ok("set".to_string())
            } else {
                Err("does not read back".into())
            }
        });
    t!(ctx.outcome(Layer::NoNewPrivs, nnp));

    // Landlock.
    let landlock_res = match &view {
        Some(v) => {
            let ro_exec: Vec<PathBuf> = v
                .binds
                .iter()
                .filter(|b| b.exec)
                .map(|b| b.dst.clone())
                .collect();
            let ro_noexec: Vec<PathBuf> = v
                .binds
                .iter()
                .filter(|b| !b.exec)
                .map(|b| b.dst.clone())
                .collect();
            landlock::apply(&landlock::View {
                ro_exec,
                ro_noexec,
                dev_nodes: &v.dev_nodes,
                proc_: v.proc_mounted,
                scratch: v.scratch.as_deref(),
            })
        }
        None => Err("no minimal root to mirror".into()),
    };
    t!(ctx.outcome(Layer::Landlock, landlock_res));

    // Capabilities.
    let caps_res = nested.and(secbits).and_then(|_| caps::drop_all()).map(|d| {
        if spec.userns {
            format!("{d}; nested user namespaces disabled")
        } else {
            format!("{d}; nested user namespaces NOT disabled (no own user namespace): seccomp must block unshare/clone flags")
        }
    });
    t!(ctx.outcome(Layer::Capabilities, caps_res));

    // Parent-death signal (re-armed: credential changes can clear it).
    let pdeath = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))
        .and_then(|_| {
            let mut sig: libc::c_int = 0;
            // SAFETY: PR_GET_PDEATHSIG writes an int to the pointer.
            let r = unsafe {
                libc::prctl(
                    libc::PR_GET_PDEATHSIG,
                    &mut sig as *mut libc::c_int,
                    0,
                    0,
                    0,
                )
            };
            if r == 0 && sig == libc::SIGKILL {
                Ok("SIGKILL when the spawning thread exits".to_string())
            } else {
                Err("PR_GET_PDEATHSIG does not read back SIGKILL".into())
            }
        });
    t!(ctx.outcome(Layer::ParentDeathSignal, pdeath));

    // Environment.
    let mut env: Vec<(OsString, OsString)> = spec.env.clone();
    if let Some(s) = &spec.scratch {
        if !env.iter().any(|(k, _)| k == "TMPDIR") {
            env.push(("TMPDIR".into(), s.path.clone().into_os_string()));
        }
    }
    let envp: Result<Vec<CString>, _> = env
        .iter()
        .map(|(k, v)| {
            let mut b = k.as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            CString::new(b)
        })
        .collect();
    let envp = t!(envp.map_err(|_| Fail::Setup("NUL byte in environment".into())));
    t!(ctx.outcome(
        Layer::EnvScrubbed,
        Ok(format!("{} variables, all explicit", envp.len()))
    ));

    if spec.proc == ProcMode::None {
        debug_assert!(!Path::new("/proc/self").exists());
    }
    let prog = t!(cstr(spec.program.as_os_str()).map_err(|e| Fail::Setup(e.to_string())));
    let mut argv = vec![prog.clone()];
    for a in &spec.args {
        argv.push(t!(cstr(a).map_err(|e| Fail::Setup(e.to_string()))));
    }
    // SAFETY: umask only changes this process's file creation mask (inherited by the target).
    unsafe { libc::umask(0o077) };
    Ok(Built {
        report_fd,
        argv,
        envp,
        prog,
        filter_sock,
    })
}

//! `clone3` into the new namespaces, the async-signal-safe clone child, and the uid/gid maps.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use crate::proto::CHILD_EXEC_FAILED;

/// Host uid/gid the sandbox's uid/gid 0 maps to when the supervisor runs as root.
pub(crate) const ROOT_MODE_ID: u32 = 65534;

/// `SECBIT_NO_SETUID_FIXUP` (linux/securebits.h).
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;

const CLONE_NEWTIME_UNUSED: u64 = 0;

/// `struct clone_args` (version 2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Namespace flags for the sandbox.
pub(crate) fn namespace_flags(with_userns: bool) -> u64 {
    let mut f = (libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP) as u64
        | CLONE_NEWTIME_UNUSED;
    if with_userns {
        f |= libc::CLONE_NEWUSER as u64;
    }
    f
}

/// Everything the clone child touches, prepared (allocated) before the clone.
pub(crate) struct ChildPlan {
    /// `O_PATH|O_CLOEXEC` fd of the stage-2 executable (run with `execveat(AT_EMPTY_PATH)`).
    pub exe_fd: RawFd,
    /// Kept alive for the pointers in `argv_ptrs`.
    pub _argv: Vec<CString>,
    /// NULL-terminated.
    pub argv_ptrs: Vec<*const libc::c_char>,
    /// NULL-terminated (empty environment for stage 2).
    pub envp_ptrs: Vec<*const libc::c_char>,
    pub sync_r: RawFd,
    pub sync_w: RawFd,
    pub report_w: RawFd,
    /// Fds whose `FD_CLOEXEC` the child clears so that stage 2 inherits them.
    pub inherit: Vec<RawFd>,
    /// Host paths to open (`O_PATH`) for the read-only binds, while the child still has the caller's
    /// credentials (as root: host root, so 0700 ancestors are no obstacle for the later uid-65534 stage 2).
    pub bind_paths: Vec<CString>,
    /// Write end of the pipe that carries the fd numbers (one native-endian i32 each, -errno on failure).
    pub bind_pipe_w: RawFd,
    /// Drop supplementary groups (root mode: setgroups is allowed in the new user namespace).
    pub drop_groups: bool,
    /// `Some((spec memfd, report fd))`: run stage 2 right here instead of exec'ing `exe_fd` (the caller is
    /// single-threaded, so this fork-like child may run any code).
    pub stage2_in_child: Option<(RawFd, RawFd)>,
}

/// `clone3` with the namespace flags and `CLONE_PIDFD`. Returns (pid, pidfd) in the parent; the child runs
/// [`child_after_clone`] and never returns.
pub(crate) fn clone_into_namespaces(
    flags: u64,
    plan: &ChildPlan,
) -> io::Result<(libc::pid_t, RawFd)> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // Block every signal on this thread across the clone so that no handler of the (possibly multi-threaded,
    // e.g. tokio) supervisor runs in the child before it execs. Stage 2 resets mask and dispositions.
    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask only write to the provided sets.
    let old_mask = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    // SAFETY: clone3 without CLONE_VM behaves like fork: the child gets a copy of the address space and
    // continues on a copy of this stack. The child only executes `child_after_clone`, which uses raw,
    // async-signal-safe system calls on memory prepared before the clone, and never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        child_after_clone(plan);
    }
    let err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
    if ret < 0 {
        return Err(err);
    }
    Ok((ret as libc::pid_t, pidfd))
}

/// The clone child: async-signal-safe code only (no allocation, no locks, no std I/O).
fn child_after_clone(plan: &ChildPlan) -> ! {
    // SAFETY: only raw system calls on fds and buffers that were set up before the clone; `_exit` never returns.
    unsafe {
        libc::close(plan.sync_w);
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        // Wait for the parent to write uid_map/gid_map. EOF (parent gone) or error: give up.
        let mut b = 0u8;
        loop {
            let r = libc::read(plan.sync_r, &mut b as *mut u8 as *mut libc::c_void, 1);
            if r == 1 && b == b'G' {
                break;
            }
            if r == -1 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(121);
        }
        libc::close(plan.sync_r);
        for p in &plan.bind_paths {
            let fd = libc::open(p.as_ptr(), libc::O_PATH);
            let v: i32 = if fd < 0 {
                -*libc::__errno_location()
            } else {
                fd
            };
            if libc::write(plan.bind_pipe_w, &v as *const i32 as *const libc::c_void, 4) != 4 {
                child_fail(plan.report_w);
            }
        }
        libc::close(plan.bind_pipe_w);
        // Become uid/gid 0 *of the new namespace* (kuid = the mapped host id). As root the creds are still
        // host root (kuid 0, unmapped inside) until this point; without it exec would drop every capability.
        // Raw system calls: glibc's wrappers would try to broadcast to the parent's other threads.
        if plan.drop_groups
            && libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
        {
            child_fail(plan.report_w);
        }
        // Stage 2 in this child: no exec will recompute capabilities after the id change below, so keep them
        // through it (as root, kuid 0 -> 65534 would otherwise clear them). Stage 2 locks the securebits and
        // drops every capability before the target's exec.
        if plan.stage2_in_child.is_some()
            && libc::prctl(libc::PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0) != 0
        {
            child_fail(plan.report_w);
        }
        if libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
            || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
        {
            child_fail(plan.report_w);
        }
        for &fd in &plan.inherit {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                child_fail(plan.report_w);
            }
        }
        if let Some((spec_fd, report_fd)) = plan.stage2_in_child {
            crate::stage2::run(spec_fd, report_fd);
        }
        let empty = b"\0";
        libc::syscall(
            libc::SYS_execveat,
            plan.exe_fd,
            empty.as_ptr() as *const libc::c_char,
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        child_fail(plan.report_w)
    }
}

/// Report `errno` as a raw frame and exit (async-signal-safe).
unsafe fn child_fail(report_w: RawFd) -> ! {
    // SAFETY: errno location is valid for this thread; buffer is on the stack; _exit never returns.
    unsafe {
        let errno = *libc::__errno_location();
        let mut frame = [0u8; 8];
        frame[..4].copy_from_slice(&CHILD_EXEC_FAILED.to_le_bytes());
        frame[4..].copy_from_slice(&errno.to_le_bytes());
        libc::write(report_w, frame.as_ptr() as *const libc::c_void, frame.len());
        libc::_exit(122)
    }
}

/// Write the child's uid/gid maps. Rootless: ns 0 ↦ own euid/egid with setgroups denied. Root: ns 0 ↦ 65534.
/// Returns (host uid, host gid, setgroups allowed).
pub(crate) fn write_id_maps(pid: libc::pid_t) -> io::Result<(u32, u32, bool)> {
    // SAFETY: trivial getters.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (uid, gid, allow_setgroups) = if euid == 0 {
        (ROOT_MODE_ID, ROOT_MODE_ID, true)
    } else {
        (euid, egid, false)
    };
    let base = format!("/proc/{pid}");
    std::fs::write(format!("{base}/uid_map"), format!("0 {uid} 1\n"))
        .map_err(|e| io::Error::new(e.kind(), format!("write {base}/uid_map: {e}")))?;
    if !allow_setgroups {
        std::fs::write(format!("{base}/setgroups"), "deny")
            .map_err(|e| io::Error::new(e.kind(), format!("write {base}/setgroups: {e}")))?;
    }
    std::fs::write(format!("{base}/gid_map"), format!("0 {gid} 1\n"))
        .map_err(|e| io::Error::new(e.kind(), format!("write {base}/gid_map: {e}")))?;
    Ok((uid, gid, allow_setgroups))
}

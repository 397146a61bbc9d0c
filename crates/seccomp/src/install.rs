//! Worker side: installing compiled filters with the raw `seccomp(2)` syscall.
//!
//! libc only (no libseccomp in the worker). Both functions set
//! `no_new_privs` if the kernel asks for it (`EACCES`), and synchronise the filter to
//! every thread of the process (`SECCOMP_FILTER_FLAG_TSYNC`): the worker
//! already runs OpenBLAS threads when it installs the filter.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Kernel limit on the number of instructions in one program.
pub const BPF_MAXINSNS: usize = 4096;

fn to_insns(bpf: &[u8]) -> io::Result<Vec<libc::sock_filter>> {
    if bpf.is_empty() || !bpf.len().is_multiple_of(8) || bpf.len() / 8 > BPF_MAXINSNS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "seccomp program of {} bytes is not 1..={BPF_MAXINSNS} instructions",
                bpf.len()
            ),
        ));
    }
    Ok(bpf
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// Sets `PR_SET_NO_NEW_PRIVS` unless it is already set (required for an
/// unprivileged `seccomp(SECCOMP_SET_MODE_FILTER)`; it also makes setuid
/// binaries and file capabilities inert).
pub fn ensure_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let cur = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    if cur == 1 {
        return Ok(());
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn seccomp_raw(insns: &[libc::sock_filter], flags: libc::c_ulong) -> io::Result<libc::c_long> {
    let prog = libc::sock_fprog {
        len: insns.len() as libc::c_ushort,
        filter: insns.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points to `insns`, which outlives the call; the kernel
    // copies the program and does not keep the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// Installs `bpf` (raw `struct sock_filter` array as exported by libseccomp)
/// on every thread of the process and returns the user-notification listener.
///
/// Flags: `NEW_LISTENER | TSYNC | TSYNC_ESRCH` (with a listener, TSYNC must
/// report failure as `ESRCH` since the return value is the fd). The fd is
/// close-on-exec. The caller sends it to the supervisor and then **must close
/// its own copy**: whoever holds it can answer the worker's notifications.
/// (The worker policy also allows no `SECCOMP_IOCTL_NOTIF_*` ioctl.)
///
/// Only one filter with a listener may exist in a task's filter chain;
/// a second call fails with `EBUSY`.
pub fn install_filter_with_listener(bpf: &[u8]) -> io::Result<OwnedFd> {
    let insns = to_insns(bpf)?;
    let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        | libc::SECCOMP_FILTER_FLAG_TSYNC
        | libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
    // Always set nnp explicitly, even as root (where the kernel would accept
    // the filter without it): setuid binaries and file capabilities must stay
    // inert in the worker.
    ensure_no_new_privs()?;
    let fd = seccomp_raw(&insns, flags)?;
    let fd =
        libc::c_int::try_from(fd).map_err(|_| io::Error::other("seccomp returned a bad fd"))?;
    // SAFETY: with NEW_LISTENER a non-negative return value is a new fd owned
    // by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Stacks `bpf` without a listener on every thread of the process (`TSYNC`).
/// Used for the inference-phase filter after load. Requires the listener
/// filter to allow `seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC)`.
pub fn install_filter(bpf: &[u8]) -> io::Result<()> {
    let insns = to_insns(bpf)?;
    // Under the listener filter nnp is already set, and the policy need not
    // allow prctl: only set it if the kernel asks (EACCES).
    let rc = match seccomp_raw(&insns, libc::SECCOMP_FILTER_FLAG_TSYNC) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            ensure_no_new_privs()?;
            seccomp_raw(&insns, libc::SECCOMP_FILTER_FLAG_TSYNC)?
        }
        r => r?,
    };
    if rc != 0 {
        // Without TSYNC_ESRCH a positive value is the id of a thread that
        // could not be synchronised.
        return Err(io::Error::other(format!(
            "seccomp TSYNC failed: thread {rc} has an incompatible filter"
        )));
    }
    Ok(())
}

/// This process's seccomp state from `/proc/<pid>/status`: `(mode,
/// filter count)`; mode 2 is filter mode. The supervisor can check a worker
/// with it after `Hello` (the kernel reports it; the worker cannot fake it).
pub fn seccomp_status(pid: u32) -> io::Result<(u32, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u32> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    match (field("Seccomp:"), field("Seccomp_filters:")) {
        (Some(m), Some(n)) => Ok((m, n)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no Seccomp fields in /proc status",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_malformed_programs() {
        assert!(to_insns(&[]).is_err());
        assert!(to_insns(&[0; 7]).is_err());
        assert!(to_insns(&vec![0; 8 * (BPF_MAXINSNS + 1)]).is_err());
        assert_eq!(to_insns(&[0; 16]).unwrap().len(), 2);
    }

    #[test]
    fn status_of_self_parses() {
        let (mode, _) = seccomp_status(std::process::id()).unwrap();
        assert!(mode <= 2);
    }
}

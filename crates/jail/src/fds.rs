//! Fd layout of the target: stdin `/dev/null`, stdout/stderr pipes, the passed fds at their numbers, nothing
//! else (close_range). Stage 2's own fds (the report pipe, the exec-filter socket) survive as high `CLOEXEC`
//! fds that the final exec closes.

use std::io;
use std::os::fd::RawFd;

use crate::sys::check;
use crate::StdoutMode;

/// Fds verified closed above the highest one kept.
const VERIFY_MARGIN: u32 = 64;

fn dup_high(fd: RawFd, min: RawFd) -> io::Result<RawFd> {
    // SAFETY: fcntl on an fd number; F_DUPFD_CLOEXEC returns a new fd >= min.
    check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })
}

fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on fd numbers we own; the new fd has FD_CLOEXEC cleared.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

fn close_range(lo: u32, hi: u32) -> io::Result<()> {
    if lo > hi {
        return Ok(());
    }
    // SAFETY: closes fds in [lo, hi]; nothing in that range is referenced afterwards.
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) };
    crate::sys::check_long(r).map(drop)
}

/// Arrange fds; returns the new numbers of `keep_cloexec` (in order) and a description.
pub(crate) fn arrange(
    devnull: RawFd,
    stderr: RawFd,
    stdout: StdoutMode,
    stdout_fd: Option<RawFd>,
    pass: &[(RawFd, RawFd)],
    keep_cloexec: &[RawFd],
) -> io::Result<(Vec<RawFd>, String)> {
    let max_target = pass.iter().map(|(_, t)| *t).max().unwrap_or(2);
    let high = max_target.max(2) + 1;
    // Move everything we need above the target range first so that no dup2 clobbers a source.
    let devnull_h = dup_high(devnull, high)?;
    let stderr_h = dup_high(stderr, high)?;
    let stdout_h = match (stdout, stdout_fd) {
        (StdoutMode::Pipe, Some(fd)) => dup_high(fd, high)?,
        (StdoutMode::Stderr, _) => stderr_h,
        _ => devnull_h,
    };
    let kept_h: Vec<RawFd> = keep_cloexec
        .iter()
        .map(|&fd| dup_high(fd, high))
        .collect::<io::Result<_>>()?;
    let pass_h: Vec<(RawFd, RawFd)> = pass
        .iter()
        .map(|&(src, t)| dup_high(src, high).map(|h| (h, t)))
        .collect::<io::Result<_>>()?;
    dup2(devnull_h, 0)?;
    dup2(stdout_h, 1)?;
    dup2(stderr_h, 2)?;
    for &(h, t) in &pass_h {
        dup2(h, t)?;
    }
    // Keep 0..2, the targets and the kept (CLOEXEC) fds; close every other fd.
    let mut keep: Vec<u32> = vec![0, 1, 2];
    keep.extend(kept_h.iter().map(|&fd| fd as u32));
    keep.extend(pass.iter().map(|(_, t)| *t as u32));
    keep.sort_unstable();
    keep.dedup();
    let mut next = 0u32;
    for &k in &keep {
        if k > next {
            close_range(next, k - 1)?;
        }
        next = k + 1;
    }
    close_range(next, u32::MAX)?;
    // Verify up to the highest fd we keep plus a margin (fcntl F_GETFD fails with EBADF on a closed fd);
    // above that close_range(…, ~0) is the kernel's guarantee (it cannot fail half-way), and 1000 more
    // fcntl calls cost ~0.15 ms of every spawn.
    let verify_to = keep.last().copied().unwrap_or(0) + VERIFY_MARGIN;
    for fd in 0..verify_to {
        // SAFETY: querying fd flags has no side effects.
        let open = unsafe { libc::fcntl(fd as RawFd, libc::F_GETFD) } != -1;
        if open != keep.contains(&fd) {
            return Err(io::Error::other(format!(
                "fd {fd} is unexpectedly {}",
                if open { "open" } else { "closed" }
            )));
        }
    }
    let targets: Vec<String> = pass.iter().map(|(_, t)| t.to_string()).collect();
    Ok((
        kept_h,
        format!(
            "open: 0 (/dev/null), 1, 2 (pipes), passed: [{}]; all others closed",
            targets.join(",")
        ),
    ))
}

//! [`crate::ExecFilter`]: stage 2 installs a seccomp filter with a user-notification listener as its very
//! last step and hands the listener to the supervisor over a `SOCK_SEQPACKET` pair; the supervisor side
//! receives it.
//!
//! Doing this in stage 2 (instead of a separate launcher exec'd between stage 2 and the target) keeps one
//! `execve` off every `caffe-sandbox run`, and the target's dynamic loader still runs under the filter from
//! its first instruction.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// The one message stage 2 sends, with the listener attached.
const TAG: &[u8] = b"seccomp-listener";
/// First byte of the supervisor's message: a program follows, or the reason there is none.
const PROGRAM: u8 = b'P';
const NO_PROGRAM: u8 = b'E';
/// A program is at most 4096 instructions of 8 bytes (the kernel's limit); a reason is short text.
const MAX_MESSAGE: usize = 1 + 4096 * 8;

/// Supervisor: send the program (or why there is none) to stage 2.
pub(crate) fn send_program(sock: BorrowedFd<'_>, program: Result<&[u8], &str>) -> io::Result<()> {
    let too_long;
    let (tag, body) = match program {
        Ok(bpf) if bpf.len() < MAX_MESSAGE => (PROGRAM, bpf),
        // Never cut a program short: a prefix could still be a valid, different filter.
        Ok(bpf) => {
            too_long = format!(
                "a program of {} bytes exceeds the kernel's 4096 instructions",
                bpf.len()
            );
            (NO_PROGRAM, too_long.as_bytes())
        }
        Err(why) => (NO_PROGRAM, why.as_bytes()),
    };
    let body = &body[..body.len().min(MAX_MESSAGE - 1)];
    let msg = [&[tag][..], body].concat();
    rustix::net::send(sock, &msg, SendFlags::empty())?;
    Ok(())
}

/// Stage 2: wait for the supervisor's program. `Err(reason)` inside: no program (the layer is unavailable).
pub(crate) fn recv_program(sock: BorrowedFd<'_>) -> io::Result<Result<Vec<u8>, String>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (n, _) = rustix::net::recv(sock, &mut buf, RecvFlags::empty())?;
    match buf[..n].split_first() {
        Some((&PROGRAM, bpf)) => Ok(Ok(bpf.to_vec())),
        Some((&NO_PROGRAM, why)) => Ok(Err(String::from_utf8_lossy(why).into_owned())),
        _ => Err(io::Error::other("the supervisor sent no seccomp program")),
    }
}

/// Supervisor: a `CLOEXEC` `SOCK_SEQPACKET` pair (supervisor's end, stage 2's end).
pub(crate) fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Stage 2: install `bpf` on this (single-threaded) process and return the listener. Sets no_new_privs
/// first if it is not set yet (stage 2 has already set it).
pub(crate) fn install(bpf: &[u8]) -> io::Result<OwnedFd> {
    caffe_sandbox_seccomp::install_filter_with_listener(bpf)
}

/// Stage 2: send the listener to the supervisor. The caller closes its own copy afterwards: whoever holds a
/// listener can answer the program's notifications.
pub(crate) fn send_listener(sock: BorrowedFd<'_>, listener: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [listener];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("control buffer too small"));
    }
    sendmsg(sock, &[IoSlice::new(TAG)], &mut control, SendFlags::empty())?;
    Ok(())
}

/// Supervisor: receive the listener (call when `sock` is readable). `Ok(None)`: end of file, i.e. stage 2
/// is gone without handing one over (its report says why).
pub(crate) fn recv_listener(sock: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let mut buf = [0u8; 32];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(r) = m {
            fds.extend(r);
        }
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if &buf[..msg.bytes] != TAG || fds.len() != 1 {
        return Err(io::Error::other(format!(
            "unexpected message from stage 2 ({} bytes, {} fds) instead of the seccomp listener",
            msg.bytes,
            fds.len()
        )));
    }
    Ok(fds.pop())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn hands_over_exactly_one_fd_and_reports_eof() {
        let (a, b) = socket_pair().unwrap();
        let (x, _y) = socket_pair().unwrap();
        send_listener(b.as_fd(), x.as_fd()).unwrap();
        assert!(recv_listener(a.as_fd()).unwrap().is_some());
        drop(b);
        assert!(recv_listener(a.as_fd()).unwrap().is_none());
    }

    #[test]
    fn carries_a_program_or_the_reason_there_is_none() {
        let (a, b) = socket_pair().unwrap();
        send_program(a.as_fd(), Ok(&[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
        assert_eq!(
            recv_program(b.as_fd()).unwrap(),
            Ok(vec![1, 2, 3, 4, 5, 6, 7, 8])
        );
        send_program(a.as_fd(), Err("libseccomp refused")).unwrap();
        assert_eq!(
            recv_program(b.as_fd()).unwrap(),
            Err("libseccomp refused".into())
        );
        drop(a);
        assert!(recv_program(b.as_fd()).is_err());
    }

    #[test]
    fn refuses_a_message_without_the_listener() {
        let (a, b) = socket_pair().unwrap();
        rustix::io::write(&b, TAG).unwrap();
        assert!(recv_listener(a.as_fd()).is_err());
    }
}

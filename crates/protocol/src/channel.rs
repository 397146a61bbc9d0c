//! [`Channel`]: one end of the `SOCK_SEQPACKET` socketpair.
//!
//! # Why there are no partial frames
//! `SOCK_SEQPACKET` preserves message boundaries: one `sendmsg` is one
//! packet and one `recvmsg` returns at most one whole packet, never a part
//! of two. A packet larger than the receive buffer is cut by the kernel and
//! flagged `MSG_TRUNC`; the rest of it is discarded. So a peer cannot send
//! "half a frame and then silence": either a whole packet arrives (and is
//! validated: `payload_len` must match it exactly) or nothing arrives and
//! the caller's timeout fires. [`Channel::new`] refuses any other socket
//! type, since a `SOCK_STREAM` socket would break this.
//!
//! # Floods
//! The channel keeps no queue: each `recv` reads exactly one packet (at most
//! [`MAX_PACKET`] bytes and [`MAX_FDS_PER_MESSAGE`] fds, all closed on any
//! error), so memory use per call is bounded. A worker can still send many
//! packets; the supervisor must cap them: it expects exactly one reply per
//! request (plus the initial `Hello`), so any unsolicited message, any reply
//! with an unexpected id ([`crate::Message::expect_reply`]) and any second
//! reply is a protocol violation, and the supervisor waits with an overall
//! deadline ([`Channel::recv_deadline`]) rather than a per-packet timeout.

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::{Errno, IoSlice, IoSliceMut};
use rustix::net::{
    recvmsg, sendmsg, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use crate::codec::{decode, encode};
use crate::error::{ProtocolError, Result};
use crate::limits::Limits;
use crate::message::{Body, FromWorker, FromZygote, Message, ToWorker, ToZygote};
use crate::{MAX_FDS_PER_MESSAGE, MAX_PACKET};

/// Control-buffer size for [`MAX_FDS_PER_MESSAGE`] fds.
const CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE));

/// Which end of the channel this is: fixes what it sends and what it accepts.
pub trait Role: private::Sealed {
    /// Bodies this end sends.
    type Outgoing: Body;
    /// Bodies this end accepts; other kinds are
    /// [`ProtocolError::WrongDirection`].
    type Incoming: Body;
}

/// The supervisor's end: sends [`ToWorker`], accepts [`FromWorker`].
#[derive(Debug)]
pub enum SupervisorSide {}

/// The worker's end: sends [`FromWorker`], accepts [`ToWorker`].
#[derive(Debug)]
pub enum WorkerSide {}

impl Role for SupervisorSide {
    type Outgoing = ToWorker;
    type Incoming = FromWorker;
}

impl Role for WorkerSide {
    type Outgoing = FromWorker;
    type Incoming = ToWorker;
}

/// The supervisor's end of a fork server's control channel: sends
/// [`ToZygote`], accepts [`FromZygote`].
#[derive(Debug)]
pub enum ZygoteClientSide {}

/// The fork server's end of its control channel (sends [`FromZygote`],
/// accepts [`ToZygote`]); also a freshly forked worker's end of its own
/// channel until it received [`ToZygote::InstallSeccomp`] (then re-wrap the
/// fd as a [`WorkerChannel`] with [`Channel::into_inner`]).
#[derive(Debug)]
pub enum ZygoteSide {}

impl Role for ZygoteClientSide {
    type Outgoing = ToZygote;
    type Incoming = FromZygote;
}

impl Role for ZygoteSide {
    type Outgoing = FromZygote;
    type Incoming = ToZygote;
}

mod private {
    pub trait Sealed {}
    impl Sealed for super::SupervisorSide {}
    impl Sealed for super::WorkerSide {}
    impl Sealed for super::ZygoteClientSide {}
    impl Sealed for super::ZygoteSide {}
}

/// The supervisor's end of a fork server's control channel.
pub type ZygoteControl = Channel<ZygoteClientSide>;
/// The fork server's end of its control channel.
pub type ZygoteChannel = Channel<ZygoteSide>;

/// The supervisor's end of the channel.
pub type SupervisorChannel = Channel<SupervisorSide>;
/// The worker's end of the channel.
pub type WorkerChannel = Channel<WorkerSide>;

/// A message received together with its fds.
pub type Received<B> = (Message<B>, Vec<OwnedFd>);

/// One end of the supervisor↔worker `SOCK_SEQPACKET` socketpair.
///
/// `recv` validates each packet completely (see [`crate::decode`]) and checks
/// that the number of attached fds is what the message kind expects; on any
/// error all received fds are closed.
#[derive(Debug)]
pub struct Channel<R: Role> {
    fd: OwnedFd,
    limits: Limits,
    _role: PhantomData<fn() -> R>,
}

/// Creates a connected `AF_UNIX`/`SOCK_SEQPACKET` pair with `SOCK_CLOEXEC`
/// (clear it on the worker's end, e.g. by `dup2` onto fd 3, when spawning).
pub fn socketpair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Creates a connected in-process pair of channel ends (tests, tools).
pub fn channel_pair() -> Result<(SupervisorChannel, WorkerChannel)> {
    let (a, b) = socketpair()?;
    Ok((Channel::new(a)?, Channel::new(b)?))
}

/// `now + timeout`; a timeout too large to represent means "no deadline".
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

fn timespec(d: Duration) -> Timespec {
    Timespec::try_from(d).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    })
}

impl<R: Role> Channel<R> {
    /// Wraps a connected `SOCK_SEQPACKET` socket with default [`Limits`].
    pub fn new(fd: OwnedFd) -> Result<Self> {
        Self::with_limits(fd, Limits::default())
    }

    /// Wraps a connected `SOCK_SEQPACKET` socket with `limits` for decoding.
    pub fn with_limits(fd: OwnedFd, limits: Limits) -> Result<Self> {
        match rustix::net::sockopt::socket_type(&fd) {
            Ok(SocketType::SEQPACKET) => {}
            Ok(_) | Err(Errno::NOTSOCK) => return Err(ProtocolError::NotSeqpacket),
            Err(e) => return Err(e.into()),
        }
        // SOCK_SEQPACKET also exists for SCTP; only unix sockets pass fds.
        if rustix::net::sockopt::socket_domain(&fd)? != AddressFamily::UNIX {
            return Err(ProtocolError::NotSeqpacket);
        }
        Ok(Channel {
            fd,
            limits,
            _role: PhantomData,
        })
    }

    /// The limits used to decode incoming messages.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Gives back the socket.
    pub fn into_inner(self) -> OwnedFd {
        self.fd
    }

    /// Sends one message with `fds` attached, blocking until the socket
    /// accepts it. See [`Channel::send_timeout`].
    pub fn send(&self, msg: &Message<R::Outgoing>, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.send_deadline(msg, fds, None)
    }

    /// Like [`Channel::send`] but gives up with [`ProtocolError::Timeout`]
    /// after `timeout` (a peer that stops reading cannot block us forever).
    pub fn send_timeout(
        &self,
        msg: &Message<R::Outgoing>,
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.send_deadline(msg, fds, deadline_after(timeout))
    }

    /// Sends with an absolute deadline.
    ///
    /// Before sending, the message is checked exactly as the peer will check
    /// it (same decoder, this channel's limits) and `fds.len()` must match
    /// what the kind expects, so a bad message fails here, not at the peer.
    pub fn send_deadline(
        &self,
        msg: &Message<R::Outgoing>,
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
    ) -> Result<()> {
        if fds.len() > MAX_FDS_PER_MESSAGE {
            return Err(ProtocolError::TooManyFds {
                got: fds.len(),
                max: MAX_FDS_PER_MESSAGE,
            });
        }
        msg.check_fd_count(fds.len())?;
        let packet = encode(msg)?;
        decode::<R::Outgoing>(&packet, &self.limits)?;

        let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(ProtocolError::TooManyFds {
                got: fds.len(),
                max: MAX_FDS_PER_MESSAGE,
            });
        }
        // Try at once: a SEQPACKET socket nearly always has room, and waiting only on EAGAIN saves a poll
        // per message.
        let mut wait_first = false;
        loop {
            if wait_first {
                self.wait(PollFlags::OUT, deadline)?;
            }
            wait_first = true;
            match sendmsg(
                &self.fd,
                &[IoSlice::new(&packet)],
                &mut control,
                SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
            ) {
                Ok(n) if n == packet.len() => return Ok(()),
                Ok(n) => {
                    return Err(std::io::Error::other(format!(
                        "short send of {n} of {} bytes on a SOCK_SEQPACKET socket",
                        packet.len()
                    ))
                    .into())
                }
                Err(Errno::AGAIN | Errno::INTR) => continue,
                Err(Errno::PIPE | Errno::CONNRESET | Errno::NOTCONN) => {
                    return Err(ProtocolError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives and validates one message, waiting at most `timeout`
    /// (`None` = forever). Returns [`ProtocolError::Closed`] at EOF and
    /// [`ProtocolError::Timeout`] when nothing arrived in time.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Received<R::Incoming>> {
        self.recv_deadline(deadline_after(timeout))
    }

    /// Like [`Channel::recv`] with an absolute deadline (use one deadline for
    /// a whole request so a flood of packets cannot extend the wait).
    pub fn recv_deadline(&self, deadline: Option<Instant>) -> Result<Received<R::Incoming>> {
        loop {
            self.wait(PollFlags::IN, deadline)?;
            if let Some(received) = self.try_recv()? {
                return Ok(received);
            }
        }
    }

    /// Non-blocking receive: `Ok(None)` if no packet is queued. For use with
    /// an external event loop (poll the fd from [`AsFd`] for `POLLIN`).
    pub fn try_recv(&self) -> Result<Option<Received<R::Incoming>>> {
        let Some((packet, fds)) = self.recv_packet()? else {
            return Ok(None);
        };
        let msg = decode::<R::Incoming>(&packet, &self.limits)?;
        if fds.len() > MAX_FDS_PER_MESSAGE {
            return Err(ProtocolError::TooManyFds {
                got: fds.len(),
                max: MAX_FDS_PER_MESSAGE,
            });
        }
        msg.check_fd_count(fds.len())?;
        Ok(Some((msg, fds)))
    }

    /// One `recvmsg`: the raw packet and its fds, or `None` on EAGAIN/EINTR.
    fn recv_packet(&self) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_PACKET];
        let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let res = match recvmsg(
            &self.fd,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            // TRUNC: report the real length of an oversized packet.
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT | RecvFlags::TRUNC,
        ) {
            Ok(res) => res,
            Err(Errno::AGAIN | Errno::INTR) => return Ok(None),
            Err(Errno::CONNRESET) => return Err(ProtocolError::Closed),
            Err(e) => return Err(e.into()),
        };
        // Take ownership of every fd first, so that each early return below
        // closes them.
        let mut fds = Vec::new();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = msg {
                fds.extend(received);
            }
        }
        if res.flags.contains(ReturnFlags::CTRUNC) {
            return Err(ProtocolError::ControlTruncated {
                max: MAX_FDS_PER_MESSAGE,
            });
        }
        if res.flags.contains(ReturnFlags::TRUNC) || res.bytes > MAX_PACKET {
            return Err(ProtocolError::PacketTooLarge {
                len: res.bytes,
                max: MAX_PACKET,
            });
        }
        if res.bytes == 0 && fds.is_empty() && self.peer_hung_up()? {
            return Err(ProtocolError::Closed);
        }
        buf.truncate(res.bytes);
        Ok(Some((buf, fds)))
    }

    /// Distinguishes EOF from an empty packet after a 0-byte read.
    fn peer_hung_up(&self) -> Result<bool> {
        let mut pfd = [PollFd::new(&self.fd, PollFlags::IN | PollFlags::RDHUP)];
        loop {
            match poll(&mut pfd, Some(&Timespec::default())) {
                Ok(_) => {
                    return Ok(pfd[0]
                        .revents()
                        .intersects(PollFlags::HUP | PollFlags::RDHUP))
                }
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Polls for `events` until `deadline`.
    fn wait(&self, events: PollFlags, deadline: Option<Instant>) -> Result<()> {
        loop {
            let timeout = deadline.map(|d| timespec(d.saturating_duration_since(Instant::now())));
            let mut pfd = [PollFd::new(&self.fd, events)];
            match poll(&mut pfd, timeout.as_ref()) {
                // Readiness, HUP or ERR: let the syscall report what it is.
                Ok(n) if n > 0 => return Ok(()),
                Ok(_) => return Err(ProtocolError::Timeout),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl<R: Role> AsFd for Channel<R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

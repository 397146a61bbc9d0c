//! Attack probes: what a compromised worker would try, run *inside* the real sandbox so that `caffe-sandbox
//! audit` (and the compromised-worker tests) can show which layer stops each attempt.
//!
//! Two halves:
//! * inside the sandbox, [`probe_main_if_requested`] turns the running binary into a stand-in worker when
//!   [`PROBE_ENV`] names a probe: it installs the seccomp bundle from `--seccomp-fd` exactly as
//!   `caffe-sandbox-worker` does (crates/worker/src/filter.rs), sends `Hello` with the listener, and on
//!   `LoadModel` performs the attack ([`perform`]) and reports the raw outcome in an `Error` reply. A probe marked
//!   `after_load` first answers `Loaded` and stacks the inference-phase filter like the real worker, then
//!   attacks when the `Infer` request arrives.
//! * on the supervisor side, [`run_probe`] starts such a worker with an ordinary [`LaunchConfig`] and turns what
//!   happened into a [`ProbeVerdict`]: blocked (by which layer, how) or got through.
//!
//! Safety interlock: a probe refuses to act unless it is pid 1 of its own pid namespace, so running the binary
//! with the variable set on a host does nothing.
use crate::error::{Error, WorkerFailure};
use crate::launch::LaunchConfig;
use crate::model::ModelBundle;
use crate::worker::{Deadlines, Input, Worker};
use caffe_sandbox_protocol::{
    FromWorker, Message, ToWorker, WorkerChannel, WorkerErrorKind, HELLO_REQUEST_ID,
    PROTOCOL_VERSION,
};
use serde::Serialize;
use std::ffi::CString;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Environment variable naming the probe to run (set through `LaunchConfig::extra_env`).
pub const PROBE_ENV: &str = "CAFFE_SANDBOX_AUDIT_PROBE";
/// Optional host pid to aim signals, ptrace and process_vm_readv at.
pub const TARGET_PID_ENV: &str = "CAFFE_SANDBOX_PROBE_PID";
/// Optional 127.0.0.1 TCP port to connect to.
pub const TARGET_PORT_ENV: &str = "CAFFE_SANDBOX_PROBE_PORT";
/// Optional abstract unix socket name (without the leading NUL) to connect to.
pub const TARGET_ABSTRACT_ENV: &str = "CAFFE_SANDBOX_PROBE_ABSTRACT";
/// Optional host path to create/write.
pub const TARGET_PATH_ENV: &str = "CAFFE_SANDBOX_PROBE_PATH";
/// Optional existing, world-readable host file to try to read.
pub const TARGET_READ_ENV: &str = "CAFFE_SANDBOX_PROBE_READ";

/// Prefix of the report a probe sends back.
pub const REPORT_PREFIX: &str = "probe-report ";

/// One probe: an attempt and the layer that is meant to stop it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProbeSpec {
    pub name: &'static str,
    /// Which of the audit's layer groups this belongs to (namespaces, filesystem, network, seccomp, landlock,
    /// limits).
    pub group: &'static str,
    /// What is tried, in words.
    pub what: &'static str,
    /// Performed after the model is loaded (inference phase, tighter filter), else during load.
    pub after_load: bool,
}

const fn p(name: &'static str, group: &'static str, what: &'static str) -> ProbeSpec {
    ProbeSpec {
        name,
        group,
        what,
        after_load: false,
    }
}

/// Every probe, in table order.
pub const PROBES: &[ProbeSpec] = &[
    p(
        "pid_ns_kill_all",
        "namespaces",
        "kill(-1, SIGKILL): signal every process it can see",
    ),
    p(
        "kill_host_pid",
        "namespaces",
        "kill(<host pid>, SIGTERM) of a process outside",
    ),
    p(
        "ptrace_attach",
        "namespaces",
        "ptrace(PTRACE_ATTACH) a host process",
    ),
    p(
        "process_vm_readv",
        "namespaces",
        "process_vm_readv() of a host process",
    ),
    p(
        "unshare_userns",
        "namespaces",
        "unshare(CLONE_NEWUSER|CLONE_NEWNS): new namespaces",
    ),
    p("setns", "namespaces", "setns() into another namespace"),
    p("mount_tmpfs", "namespaces", "mount(tmpfs) over /scratch"),
    p("umount_root", "namespaces", "umount2(/, MNT_DETACH)"),
    p("chroot", "namespaces", "chroot(/scratch)"),
    p("pivot_root", "namespaces", "pivot_root(/scratch, /scratch)"),
    p(
        "proc_environ",
        "filesystem",
        "read /proc/1/environ and /proc/self/status",
    ),
    p("read_etc_passwd", "filesystem", "read /etc/passwd"),
    p(
        "read_host_path",
        "filesystem",
        "read a host path given by the auditor",
    ),
    p(
        "write_host_path",
        "filesystem",
        "create a file at a host path (e.g. /tmp/…)",
    ),
    p("write_root_bashrc", "filesystem", "append to /root/.bashrc"),
    p(
        "write_library",
        "filesystem",
        "open a bound system library for writing",
    ),
    p("exec_bin_sh", "seccomp", "execve(/bin/sh -c …)"),
    p(
        "execveat_memfd",
        "seccomp",
        "fexecve: execveat(memfd, \"\", AT_EMPTY_PATH)",
    ),
    p("fork", "seccomp", "fork(): a second process"),
    p(
        "socket_inet",
        "network",
        "socket(AF_INET) + connect to 127.0.0.1:<port>",
    ),
    p(
        "socket_abstract_unix",
        "network",
        "socket(AF_UNIX) + connect to an abstract socket",
    ),
    p(
        "socket_netlink",
        "network",
        "socket(AF_NETLINK, NETLINK_ROUTE)",
    ),
    p("socket_packet", "network", "socket(AF_PACKET): raw frames"),
    p("socket_inet6", "network", "socket(AF_INET6)"),
    p(
        "socket_vsock",
        "network",
        "socket(AF_VSOCK): talk to the hypervisor",
    ),
    p(
        "tiocsti",
        "seccomp",
        "ioctl(TIOCSTI) on stderr: inject keystrokes",
    ),
    p(
        "keyctl",
        "seccomp",
        "add_key(user) into the process keyring",
    ),
    p("bpf", "seccomp", "bpf(BPF_MAP_CREATE)"),
    p(
        "io_uring_setup",
        "seccomp",
        "io_uring_setup(): a syscall-less I/O path",
    ),
    p("userfaultfd", "seccomp", "userfaultfd()"),
    p(
        "perf_event_open",
        "seccomp",
        "perf_event_open(software clock)",
    ),
    p("init_module", "seccomp", "init_module(): load kernel code"),
    p("mknod_char_device", "seccomp", "mknod(/scratch/mem, c 1 1)"),
    p("personality", "seccomp", "personality(READ_IMPLIES_EXEC)"),
    p(
        "open_by_handle_at",
        "seccomp",
        "open_by_handle_at(): escape the mount namespace by handle",
    ),
    p("setuid_root", "seccomp", "setuid(0)"),
    p(
        "symlink_in_scratch",
        "seccomp",
        "plant a symlink in scratch (-> /etc/shadow)",
    ),
    p("fifo_in_scratch", "seccomp", "plant a FIFO in scratch"),
    p(
        "hardlink_in_scratch",
        "seccomp",
        "hardlink a bound file into scratch",
    ),
    p("mmap_exec", "seccomp", "mmap(PROT_EXEC) during load"),
    ProbeSpec {
        name: "mprotect_exec_after_load",
        group: "seccomp",
        what: "mprotect(PROT_EXEC) after the model is loaded",
        after_load: true,
    },
    ProbeSpec {
        name: "mmap_exec_after_load",
        group: "seccomp",
        what: "mmap(PROT_EXEC) after the model is loaded",
        after_load: true,
    },
    ProbeSpec {
        name: "open_after_load",
        group: "seccomp",
        what: "open(/dev/urandom) after the model is loaded",
        after_load: true,
    },
    p(
        "landlock_write_scratch_escape",
        "landlock",
        "create a file in / (outside scratch) by a read-only open flag mix",
    ),
    p(
        "inherited_fds",
        "limits",
        "look for inherited fds beyond the channel",
    ),
    p("raise_rlimit", "limits", "setrlimit(RLIMIT_AS, infinity)"),
    p(
        "fill_scratch",
        "limits",
        "write 64 MiB into the scratch tmpfs",
    ),
    p(
        "capabilities",
        "limits",
        "any effective/permitted capability left",
    ),
];

/// Looks a probe up by name.
pub fn spec(name: &str) -> Option<&'static ProbeSpec> {
    PROBES.iter().find(|s| s.name == name)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_name(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EMFILE => "EMFILE",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EBUSY => "EBUSY",
        libc::EDQUOT => "EDQUOT",
        _ => "",
    };
    if n.is_empty() {
        format!("errno {e}")
    } else {
        n.to_string()
    }
}

/// The result of one attempt, as the probe saw it.
fn blocked(what: &str) -> String {
    let e = errno();
    format!("blocked {} ({what})", errno_name(e))
}

fn through(what: &str) -> String {
    format!("GOT-THROUGH ({what})")
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn env_i32(name: &str) -> Option<i32> {
    std::env::var(name).ok()?.parse().ok()
}

/// `open(path, flags)` → Ok(fd) or the failure text.
fn try_open(path: &str, flags: i32) -> Result<OwnedFd, String> {
    let c = cstr(path);
    // SAFETY: valid NUL-terminated path; the returned fd is owned by the OwnedFd.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        Err(blocked(&format!("open {path}")))
    } else {
        // SAFETY: a fresh fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// A socket of `family`/`ty`, reported.
fn try_socket(family: i32, ty: i32, proto: i32, what: &str) -> Result<OwnedFd, String> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        Err(blocked(what))
    } else {
        // SAFETY: a fresh fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn rc(r: libc::c_long, what: &str) -> String {
    if r < 0 {
        blocked(what)
    } else {
        through(&format!("{what} returned {r}"))
    }
}

/// Performs probe `name` in the current process and describes the outcome: `blocked <ERRNO> (…)` or
/// `GOT-THROUGH (…)`. Never call this outside a sandbox (see [`probe_main_if_requested`]).
pub fn perform(name: &str) -> String {
    use std::os::fd::AsRawFd;
    let target_pid = env_i32(TARGET_PID_ENV).unwrap_or(1);
    match name {
        "pid_ns_kill_all" => {
            // SAFETY: plain syscall; inside a pid namespace where we are pid 1 this reaches nobody.
            let r = unsafe { libc::kill(-1, libc::SIGKILL) };
            rc(r as _, "kill(-1, SIGKILL)")
        }
        "kill_host_pid" => {
            // SAFETY: plain syscall.
            let r = unsafe { libc::kill(target_pid, libc::SIGTERM) };
            rc(r as _, &format!("kill({target_pid}, SIGTERM)"))
        }
        "ptrace_attach" => {
            // SAFETY: plain syscall.
            let r = unsafe {
                libc::ptrace(
                    libc::PTRACE_ATTACH,
                    target_pid,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            };
            rc(r, &format!("ptrace(PTRACE_ATTACH, {target_pid})"))
        }
        "process_vm_readv" => {
            let mut buf = [0u8; 64];
            let local = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let remote = libc::iovec {
                iov_base: 0x400000 as *mut libc::c_void,
                iov_len: 64,
            };
            // SAFETY: the local iovec points at our buffer; the remote one is only read by the kernel.
            let r = unsafe { libc::process_vm_readv(target_pid, &local, 1, &remote, 1, 0) };
            rc(r as _, &format!("process_vm_readv({target_pid})"))
        }
        "unshare_userns" => {
            // SAFETY: plain syscall.
            let r = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) };
            rc(r as _, "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
        }
        "setns" => {
            // The only namespace fd a worker could hold would come from /proc; try the channel fd as a stand-in.
            // SAFETY: plain syscall.
            let r = unsafe { libc::setns(3, libc::CLONE_NEWNET) };
            rc(r as _, "setns(3, CLONE_NEWNET)")
        }
        "mount_tmpfs" => {
            let (s, t, f) = (cstr("none"), cstr("/scratch"), cstr("tmpfs"));
            // SAFETY: valid strings.
            let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
            rc(r as _, "mount(tmpfs, /scratch)")
        }
        "umount_root" => {
            let t = cstr("/");
            // SAFETY: valid string.
            let r = unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
            rc(r as _, "umount2(/)")
        }
        "chroot" => {
            let t = cstr("/scratch");
            // SAFETY: valid string.
            let r = unsafe { libc::chroot(t.as_ptr()) };
            rc(r as _, "chroot(/scratch)")
        }
        "pivot_root" => {
            let t = cstr("/scratch");
            // SAFETY: valid strings.
            let r = unsafe { libc::syscall(libc::SYS_pivot_root, t.as_ptr(), t.as_ptr()) };
            rc(r, "pivot_root(/scratch, /scratch)")
        }
        "proc_environ" => {
            let a = try_open("/proc/1/environ", libc::O_RDONLY);
            let b = try_open("/proc/self/status", libc::O_RDONLY);
            match (a, b) {
                (Err(a), Err(_)) => a,
                _ => through("opened a /proc file"),
            }
        }
        "read_etc_passwd" => read_path("/etc/passwd"),
        "read_host_path" => {
            let path = std::env::var(TARGET_READ_ENV).unwrap_or_else(|_| "/etc/hostname".into());
            read_path(&path)
        }
        "write_host_path" => {
            let path = std::env::var(TARGET_PATH_ENV)
                .unwrap_or_else(|_| "/tmp/caffe-sandbox-audit-probe".into());
            write_path(&path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)
        }
        "write_root_bashrc" => write_path("/root/.bashrc", libc::O_WRONLY | libc::O_APPEND),
        "write_library" => {
            // libc is bound into every sandbox at its host path.
            let lib = [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("/lib/x86_64-linux-gnu/libc.so.6");
            write_path(lib, libc::O_WRONLY)
        }
        "exec_bin_sh" => {
            let sh = cstr("/bin/sh");
            let args = [
                sh.as_ptr(),
                cstr("-c").into_raw(),
                cstr("exit 0").into_raw(),
                std::ptr::null_mut(),
            ];
            let env: [*const libc::c_char; 1] = [std::ptr::null()];
            // SAFETY: NUL-terminated argv/envp arrays of valid strings (the two leaked strings live forever).
            let r = unsafe { libc::execve(sh.as_ptr(), args.as_ptr().cast(), env.as_ptr()) };
            rc(r as _, "execve(/bin/sh)")
        }
        "execveat_memfd" => {
            let name = cstr("x");
            // SAFETY: valid name; flags are the ones the worker's own memfds use.
            let fd = unsafe {
                libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
            };
            if fd < 0 {
                return blocked("memfd_create");
            }
            // SAFETY: fresh fd.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let script = b"#!/bin/sh\nexit 0\n";
            // SAFETY: writing our buffer to our fd.
            unsafe { libc::write(fd.as_raw_fd(), script.as_ptr().cast(), script.len()) };
            let empty = cstr("");
            let argv = [empty.as_ptr(), std::ptr::null()];
            let envp: [*const libc::c_char; 1] = [std::ptr::null()];
            // SAFETY: valid arrays.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_execveat,
                    fd.as_raw_fd(),
                    empty.as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
            rc(r, "execveat(memfd)")
        }
        "fork" => {
            // SAFETY: the child only calls _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: async-signal-safe exit of the child.
                unsafe { libc::_exit(0) }
            }
            if pid > 0 {
                let mut st = 0;
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
            }
            rc(pid as _, "fork()")
        }
        "socket_inet" => {
            let port = env_i32(TARGET_PORT_ENV).unwrap_or(22) as u16;
            match try_socket(libc::AF_INET, libc::SOCK_STREAM, 0, "socket(AF_INET)") {
                Err(e) => e,
                Ok(s) => {
                    let addr = libc::sockaddr_in {
                        sin_family: libc::AF_INET as _,
                        sin_port: port.to_be(),
                        sin_addr: libc::in_addr {
                            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
                        },
                        sin_zero: [0; 8],
                    };
                    // SAFETY: a valid sockaddr_in of the size given.
                    let r = unsafe {
                        libc::connect(
                            s.as_raw_fd(),
                            (&addr as *const libc::sockaddr_in).cast(),
                            std::mem::size_of::<libc::sockaddr_in>() as u32,
                        )
                    };
                    rc(
                        r as _,
                        &format!("socket(AF_INET) ok; connect(127.0.0.1:{port})"),
                    )
                }
            }
        }
        "socket_abstract_unix" => {
            let name =
                std::env::var(TARGET_ABSTRACT_ENV).unwrap_or_else(|_| "caffe-sandbox-audit".into());
            match try_socket(libc::AF_UNIX, libc::SOCK_STREAM, 0, "socket(AF_UNIX)") {
                Err(e) => e,
                Ok(s) => {
                    // SAFETY: sockaddr_un is plain data.
                    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
                    addr.sun_family = libc::AF_UNIX as _;
                    let bytes = name.as_bytes();
                    let n = bytes.len().min(addr.sun_path.len() - 1);
                    for (i, b) in bytes[..n].iter().enumerate() {
                        addr.sun_path[i + 1] = *b as libc::c_char;
                    }
                    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + n) as u32;
                    // SAFETY: a valid sockaddr_un of the length given.
                    let r = unsafe {
                        libc::connect(
                            s.as_raw_fd(),
                            (&addr as *const libc::sockaddr_un).cast(),
                            len,
                        )
                    };
                    rc(r as _, &format!("socket(AF_UNIX) ok; connect(@{name})"))
                }
            }
        }
        "socket_netlink" => sock_only(libc::AF_NETLINK, libc::SOCK_RAW, 0, "socket(AF_NETLINK)"),
        "socket_packet" => sock_only(libc::AF_PACKET, libc::SOCK_RAW, 0, "socket(AF_PACKET)"),
        "socket_inet6" => sock_only(libc::AF_INET6, libc::SOCK_DGRAM, 0, "socket(AF_INET6)"),
        "socket_vsock" => sock_only(libc::AF_VSOCK, libc::SOCK_STREAM, 0, "socket(AF_VSOCK)"),
        "tiocsti" => {
            let c: libc::c_char = b'x' as _;
            // SAFETY: TIOCSTI reads one byte from the pointer.
            let r = unsafe { libc::ioctl(2, libc::TIOCSTI, &c) };
            rc(r as _, "ioctl(2, TIOCSTI)")
        }
        "keyctl" => {
            let (t, d) = (cstr("user"), cstr("caffe-sandbox-probe"));
            let payload = b"secret";
            // SAFETY: valid strings and buffer.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_add_key,
                    t.as_ptr(),
                    d.as_ptr(),
                    payload.as_ptr(),
                    payload.len(),
                    -2i32, // KEY_SPEC_PROCESS_KEYRING
                )
            };
            rc(r, "add_key(user)")
        }
        "bpf" => {
            // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries.
            let mut attr = [0u32; 32];
            attr[0] = 2; // BPF_MAP_TYPE_ARRAY
            attr[1] = 4;
            attr[2] = 4;
            attr[3] = 1;
            // SAFETY: a zero-padded attr buffer of the size given.
            let r = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), 128u32) };
            rc(r, "bpf(BPF_MAP_CREATE)")
        }
        "io_uring_setup" => {
            let mut params = [0u8; 120];
            // SAFETY: a zeroed io_uring_params buffer.
            let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
            rc(r, "io_uring_setup(1)")
        }
        "userfaultfd" => {
            // SAFETY: plain syscall (UFFD_USER_MODE_ONLY = 1).
            let r = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | 1) };
            rc(r, "userfaultfd(UFFD_USER_MODE_ONLY)")
        }
        "perf_event_open" => {
            // struct perf_event_attr, PERF_ATTR_SIZE_VER0 (64 bytes): type = PERF_TYPE_SOFTWARE (1), size,
            // config = PERF_COUNT_SW_CPU_CLOCK (0), everything else 0.
            let mut attr = [0u8; 64];
            attr[0..4].copy_from_slice(&1u32.to_ne_bytes());
            attr[4..8].copy_from_slice(&64u32.to_ne_bytes());
            // SAFETY: a valid attr buffer of the size it claims; self, any cpu.
            let r =
                unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) };
            rc(r, "perf_event_open(cpu clock)")
        }
        "init_module" => {
            let params = cstr("");
            // SAFETY: an empty image; the kernel only reads len 0 bytes.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_init_module,
                    std::ptr::null::<u8>(),
                    0usize,
                    params.as_ptr(),
                )
            };
            rc(r, "init_module")
        }
        "mknod_char_device" => {
            let t = cstr("/scratch/mem");
            // SAFETY: valid path.
            let r = unsafe { libc::mknod(t.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 1)) };
            rc(r as _, "mknod(/scratch/mem, c 1 1)")
        }
        "personality" => {
            // SAFETY: plain syscall; READ_IMPLIES_EXEC = 0x0400000.
            let r = unsafe { libc::personality(0x0400000) };
            // personality returns the previous persona; check that the new one took.
            // SAFETY: query only.
            let now = unsafe { libc::personality(0xffffffff) };
            if r < 0 || now & 0x0400000 == 0 {
                blocked("personality(READ_IMPLIES_EXEC)")
            } else {
                through("personality(READ_IMPLIES_EXEC) took effect")
            }
        }
        "open_by_handle_at" => {
            // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[] }: a guessed root inode.
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&8u32.to_ne_bytes());
            h[4..8].copy_from_slice(&1i32.to_ne_bytes());
            h[8..12].copy_from_slice(&2u32.to_ne_bytes());
            // SAFETY: a handle buffer of the size it claims.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_open_by_handle_at,
                    libc::AT_FDCWD,
                    h.as_mut_ptr(),
                    libc::O_RDONLY,
                )
            };
            rc(r, "open_by_handle_at")
        }
        "setuid_root" => {
            // Change to a uid other than the current one (0 if not already 0 inside the user namespace).
            // SAFETY: trivial getter.
            let target = if unsafe { libc::getuid() } == 0 { 1 } else { 0 };
            // SAFETY: plain syscall (raw, not glibc's all-threads wrapper).
            let r = unsafe { libc::syscall(libc::SYS_setuid, target) };
            rc(r, &format!("setuid({target})"))
        }
        "symlink_in_scratch" => {
            let (a, b) = (cstr("/etc/shadow"), cstr("/scratch/link"));
            // SAFETY: valid strings.
            let r = unsafe { libc::symlink(a.as_ptr(), b.as_ptr()) };
            rc(r as _, "symlink(/scratch/link -> /etc/shadow)")
        }
        "fifo_in_scratch" => {
            let a = cstr("/scratch/fifo");
            // SAFETY: valid string.
            let r = unsafe { libc::mkfifo(a.as_ptr(), 0o666) };
            rc(r as _, "mkfifo(/scratch/fifo)")
        }
        "hardlink_in_scratch" => {
            let exe = std::env::args().next().unwrap_or_default();
            let (a, b) = (cstr(&exe), cstr("/scratch/hardlink"));
            // SAFETY: valid strings.
            let r = unsafe { libc::link(a.as_ptr(), b.as_ptr()) };
            rc(r as _, "link(<binary>, /scratch/hardlink)")
        }
        "mmap_exec" | "mmap_exec_after_load" => mmap_exec(),
        "mprotect_exec_after_load" => {
            // SAFETY: an anonymous private mapping we own.
            let m = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if m == libc::MAP_FAILED {
                return blocked("mmap(RW)");
            }
            // SAFETY: changing protection of our own mapping.
            let r = unsafe { libc::mprotect(m, 4096, libc::PROT_READ | libc::PROT_EXEC) };
            rc(r as _, "mprotect(PROT_EXEC)")
        }
        "open_after_load" => match try_open("/dev/urandom", libc::O_RDONLY) {
            Ok(_) => through("opened /dev/urandom after load"),
            Err(e) => e,
        },
        "landlock_write_scratch_escape" => {
            write_path("/probe-file", libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)
        }
        "inherited_fds" => {
            let mut open = Vec::new();
            for fd in 0..1024 {
                // SAFETY: F_GETFD only queries.
                if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
                    open.push(fd);
                }
            }
            // 0-2 stdio, 3 the channel; anything else was leaked in (the seccomp fd 4 is closed after reading).
            let extra: Vec<i32> = open.iter().copied().filter(|&f| f > 3).collect();
            if extra.is_empty() {
                format!("blocked none (open fds {open:?}: stdio and the channel only)")
            } else {
                through(&format!("extra fds open: {extra:?}"))
            }
        }
        "raise_rlimit" => {
            let lim = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: valid rlimit.
            let r = unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
            rc(r as _, "setrlimit(RLIMIT_AS, infinity)")
        }
        "fill_scratch" => {
            // SIGXFSZ would kill us before we can report: ignore it so the write fails with EFBIG.
            // SAFETY: setting a signal disposition.
            unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
            match try_open(
                "/scratch/fill",
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            ) {
                Err(e) => e,
                Ok(fd) => {
                    let chunk = vec![0x5au8; 1 << 20];
                    let mut total = 0usize;
                    for _ in 0..64 {
                        // SAFETY: writing our buffer.
                        let n = unsafe {
                            libc::write(fd.as_raw_fd(), chunk.as_ptr().cast(), chunk.len())
                        };
                        if n <= 0 {
                            return blocked(&format!("write after {} MiB", total >> 20));
                        }
                        total += n as usize;
                    }
                    through(&format!("wrote {} MiB into scratch", total >> 20))
                }
            }
        }
        "capabilities" => {
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            let mut h = Header {
                version: 0x20080522,
                pid: 0,
            };
            let mut data = [0u32; 6];
            // SAFETY: capget with a v3 header and two data structs.
            let r = unsafe { libc::syscall(libc::SYS_capget, &mut h, data.as_mut_ptr()) };
            if r < 0 {
                blocked("capget")
            } else if data.iter().all(|&d| d == 0) {
                "blocked none (no capabilities at all)".into()
            } else {
                through(&format!("capabilities left: {data:x?}"))
            }
        }
        other => format!("unknown probe {other}"),
    }
}

fn sock_only(family: i32, ty: i32, proto: i32, what: &str) -> String {
    match try_socket(family, ty, proto, what) {
        Err(e) => e,
        Ok(_) => through(&format!("{what} created")),
    }
}

fn read_path(path: &str) -> String {
    match try_open(path, libc::O_RDONLY) {
        Err(e) => e,
        Ok(fd) => {
            let mut f = std::fs::File::from(fd);
            let mut buf = Vec::new();
            use std::io::Read;
            let n = (&mut f).take(64).read_to_end(&mut buf).unwrap_or(0);
            through(&format!("read {n} bytes of {path}"))
        }
    }
}

fn write_path(path: &str, flags: i32) -> String {
    match try_open(path, flags) {
        Err(e) => e,
        Ok(fd) => {
            use std::os::fd::AsRawFd;
            let b = b"caffe-sandbox probe was here\n";
            // SAFETY: writing our buffer.
            let n = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), b.len()) };
            if n < 0 {
                blocked(&format!("write {path}"))
            } else {
                through(&format!("opened {path} for writing and wrote {n} bytes"))
            }
        }
    }
}

fn mmap_exec() -> String {
    // SAFETY: anonymous mapping request; unmapped below.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if m == libc::MAP_FAILED {
        blocked("mmap(PROT_EXEC)")
    } else {
        // SAFETY: our mapping.
        unsafe { libc::munmap(m, 4096) };
        through("mmap(PROT_EXEC) succeeded")
    }
}

/// Inside the sandbox: when [`PROBE_ENV`] names a probe, act as a stand-in worker that performs it, and never
/// return. Returns at once otherwise. Call it first thing in `main` of the binary used as `worker_exe`.
pub fn probe_main_if_requested() {
    let Some(name) = std::env::var_os(PROBE_ENV) else {
        return;
    };
    let name = name.to_string_lossy().into_owned();
    // Interlock: only ever act as pid 1 of a fresh pid namespace (the sandbox's worker).
    if std::process::id() != 1 {
        eprintln!("caffe-sandbox: {PROBE_ENV} is set but this is not a sandboxed worker (pid 1); ignoring it");
        return;
    }
    std::process::exit(stand_in_worker(&name));
}

fn arg_fd(flag: &str) -> Option<i32> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// Installs the seccomp bundle handed over at `--seccomp-fd` exactly as caffe-sandbox-worker does (listener
/// filter on every thread now; the inference program kept for later). Returns the listener and the program.
pub fn install_worker_filter_from_args() -> Result<Option<(OwnedFd, Vec<u8>)>, String> {
    let Some(fd) = arg_fd("--seccomp-fd") else {
        return Ok(None);
    };
    // SAFETY: the supervisor hands the bundle over at this fd number; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let caffe_sandbox_seccomp::FilterBundle {
        listener,
        inference,
    } = caffe_sandbox_seccomp::read_bundle(&fd)
        .map_err(|e| format!("reading the programs: {e}"))?;
    drop(fd);
    let l = caffe_sandbox_seccomp::install_filter_with_listener(&listener)
        .map_err(|e| format!("listener filter: {e}"))?;
    Ok(Some((l, inference)))
}

/// Opens the channel at `--channel-fd` (before the filter goes in, like the worker).
pub fn open_channel() -> Result<WorkerChannel, String> {
    let fd = arg_fd("--channel-fd").unwrap_or(3);
    // SAFETY: the supervisor hands the channel over at this fd number.
    WorkerChannel::new(unsafe { OwnedFd::from_raw_fd(fd) }).map_err(|e| e.to_string())
}

/// Sends `Hello` (with the listener, if any), as the worker does.
pub fn send_hello(ch: &WorkerChannel, listener: Option<OwnedFd>) -> Result<(), String> {
    let hello = FromWorker::Hello {
        protocol_version: PROTOCOL_VERSION,
        worker_pid_in_ns: std::process::id(),
        seccomp_listener: listener.is_some(),
        caffe_version: "probe (no Caffe)".into(),
    };
    let fds: Vec<_> = listener.iter().map(|l| l.as_fd()).collect();
    ch.send(&Message::new(HELLO_REQUEST_ID, hello), &fds)
        .map_err(|e| e.to_string())
}

fn report(ch: &WorkerChannel, id: u64, name: &str, outcome: &str) {
    let _ = ch.send(
        &Message::new(
            id,
            FromWorker::Error {
                kind: WorkerErrorKind::Internal,
                message: format!("{REPORT_PREFIX}{name}: {outcome}"),
                layer: None,
            },
        ),
        &[],
    );
}

fn stand_in_worker(name: &str) -> i32 {
    let ch = match open_channel() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("probe: channel: {e}");
            return 71;
        }
    };
    let (listener, inference) = match install_worker_filter_from_args() {
        Ok(Some((l, i))) => (Some(l), Some(i)),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("probe: seccomp: {e}");
            return 72;
        }
    };
    if let Err(e) = send_hello(&ch, listener) {
        eprintln!("probe: hello: {e}");
        return 71;
    }
    let after_load = spec(name).map(|s| s.after_load).unwrap_or(false);
    loop {
        let (msg, fds) = match ch.recv(None) {
            Ok(m) => m,
            Err(_) => return 0,
        };
        // The model memfds are not needed: close them so that they do not count as inherited fds.
        drop(fds);
        match msg.body {
            ToWorker::Shutdown => return 0,
            ToWorker::LoadModel { .. } if after_load => {
                if let Some(prog) = &inference {
                    if let Err(e) = caffe_sandbox_seccomp::install_filter(prog) {
                        eprintln!("probe: inference filter: {e}");
                        return 72;
                    }
                }
                let blob = |n: &str| caffe_sandbox_protocol::BlobInfo {
                    name: n.into(),
                    dims: vec![1, 3],
                };
                let _ = ch.send(
                    &Message::new(
                        msg.request_id,
                        FromWorker::Loaded {
                            inputs: vec![blob("data")],
                            outputs: vec![blob("out")],
                        },
                    ),
                    &[],
                );
            }
            ToWorker::LoadModel { .. } | ToWorker::Infer { .. } => {
                let outcome = perform(name);
                report(&ch, msg.request_id, name, &outcome);
            }
        }
    }
}

/// How an attempt ended, as established by the supervisor.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ProbeVerdict {
    /// Stopped. `by` names the layer, `how` the evidence (the kernel's seccomp report, the errno seen, …).
    Blocked { by: String, how: String },
    /// The attempt succeeded inside the sandbox.
    GotThrough { how: String },
    /// Neither could be established (the probe did not report; treated as a failure by the audit).
    Inconclusive { how: String },
}

impl ProbeVerdict {
    pub fn is_blocked(&self) -> bool {
        matches!(self, ProbeVerdict::Blocked { .. })
    }
}

/// Which layer an errno seen by a probe points at, given the probe.
fn layer_for_errno(spec: &ProbeSpec, outcome: &str) -> String {
    let has = |s: &str| outcome.contains(s);
    let layer = match spec.name {
        "inherited_fds" => "fds-closed",
        "capabilities" => "capabilities",
        _ if has("ENETUNREACH") || has("ECONNREFUSED") => "net-ns",
        _ if spec.group == "network" && has("EACCES") => "landlock (network rules)",
        _ if spec.group == "namespaces" && has("ESRCH") => "pid-ns",
        _ if has("ENOENT") => "mount-ns (path absent)",
        _ if has("EROFS") => "mount-ns (read-only bind)",
        _ if has("EXDEV") => "mount-ns (separate mounts)",
        _ if has("EACCES") => "landlock/permissions",
        _ if has("EFBIG") => "rlimits (RLIMIT_FSIZE)",
        _ if has("ENOSPC") && spec.group == "limits" => "scratch tmpfs size",
        _ if has("ENOSPC") => "user-ns (nesting limit)",
        _ if spec.group == "limits" && has("EPERM") => "rlimits (hard limit)",
        _ if has("EPERM") => "capabilities/user-ns",
        _ if has("ENOTTY") => "no tty (stderr is a pipe)",
        _ => "kernel refused",
    };
    layer.to_string()
}

/// Classifies the outcome of one probe run from what the supervisor got back.
pub fn classify(spec: &ProbeSpec, result: &std::result::Result<String, Error>) -> ProbeVerdict {
    match result {
        Ok(report) => {
            let outcome = report
                .split_once(REPORT_PREFIX)
                .map(|(_, r)| r)
                .and_then(|r| r.split_once(": ").map(|(_, o)| o))
                .unwrap_or(report);
            if outcome.starts_with("GOT-THROUGH") {
                ProbeVerdict::GotThrough {
                    how: outcome.to_string(),
                }
            } else if outcome.starts_with("blocked") {
                ProbeVerdict::Blocked {
                    by: layer_for_errno(spec, outcome),
                    how: outcome.to_string(),
                }
            } else {
                ProbeVerdict::Inconclusive {
                    how: outcome.to_string(),
                }
            }
        }
        Err(Error::Worker {
            failure,
            stderr_tail,
        }) => match failure {
            WorkerFailure::SeccompViolation { syscall, phase, .. } => ProbeVerdict::Blocked {
                by: "seccomp".into(),
                how: format!("kernel reported {syscall} ({phase} phase); worker killed"),
            },
            WorkerFailure::MemoryLimit { detail, .. } => ProbeVerdict::Blocked {
                by: "rlimits".into(),
                how: format!("memory limit: {detail}"),
            },
            other => {
                let tail: String = stderr_tail
                    .chars()
                    .rev()
                    .take(300)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                ProbeVerdict::Inconclusive {
                    how: format!("worker failed: {other}; stderr: {tail}"),
                }
            }
        },
        Err(e) => ProbeVerdict::Inconclusive {
            how: format!("{} error: {e}", e.label()),
        },
    }
}

/// Targets on the host the auditor watches (all optional).
#[derive(Debug, Clone, Default)]
pub struct ProbeTargets {
    pub pid: Option<i32>,
    pub tcp_port: Option<u16>,
    pub abstract_name: Option<String>,
    pub path: Option<std::path::PathBuf>,
    /// An existing host file (world-readable) the read probe tries.
    pub read_path: Option<std::path::PathBuf>,
}

impl ProbeTargets {
    fn env(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        let mut v = Vec::new();
        if let Some(p) = self.pid {
            v.push((TARGET_PID_ENV.into(), p.to_string().into()));
        }
        if let Some(p) = self.tcp_port {
            v.push((TARGET_PORT_ENV.into(), p.to_string().into()));
        }
        if let Some(n) = &self.abstract_name {
            v.push((TARGET_ABSTRACT_ENV.into(), n.into()));
        }
        if let Some(p) = &self.path {
            v.push((TARGET_PATH_ENV.into(), p.clone().into()));
        }
        if let Some(p) = &self.read_path {
            v.push((TARGET_READ_ENV.into(), p.clone().into()));
        }
        v
    }
}

/// A tiny model the stand-in worker "loads" (it never parses it).
pub fn dummy_bundle() -> ModelBundle {
    ModelBundle::from_bytes(
        "probe",
        b"layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 3 } } }\n".to_vec(),
        true,
        Vec::new(),
    )
}

/// Runs probe `name` in a sandbox started from `cfg` (its `worker_exe` must call [`probe_main_if_requested`]):
/// returns the probe's own report (`Ok`) or the supervisor's typed error.
pub fn run_probe_raw(
    cfg: &LaunchConfig,
    name: &str,
    targets: &ProbeTargets,
) -> std::result::Result<String, Error> {
    let mut cfg = cfg.clone();
    cfg.extra_env.push((PROBE_ENV.into(), name.into()));
    cfg.extra_env.extend(targets.env());
    let deadlines = Deadlines {
        start: Duration::from_secs(10),
        load: Duration::from_secs(10),
        request: Duration::from_secs(10),
    };
    let mut w = Worker::start(&cfg, deadlines)?;
    let after_load = spec(name).map(|s| s.after_load).unwrap_or(false);
    let r = match w.load(&dummy_bundle()) {
        Err(Error::BadModel { message, .. }) if message.contains(REPORT_PREFIX) => Ok(message),
        Err(e) => Err(e),
        Ok(_) if after_load => {
            match w.infer(&[Input::Tensor {
                name: "data".into(),
                dims: vec![1, 3],
                data: vec![0.0; 3],
            }]) {
                Err(Error::BadModel { message, .. }) if message.contains(REPORT_PREFIX) => {
                    Ok(message)
                }
                Err(e) => Err(e),
                Ok(_) => Ok("no report".into()),
            }
        }
        Ok(_) => Ok("no report".into()),
    };
    if w.is_alive() {
        w.shutdown();
    }
    r
}

/// Runs probe `spec` and classifies the outcome.
pub fn run_probe(cfg: &LaunchConfig, spec: &ProbeSpec, targets: &ProbeTargets) -> ProbeVerdict {
    classify(spec, &run_probe_raw(cfg, spec.name, targets))
}

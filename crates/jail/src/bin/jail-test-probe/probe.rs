//! In-sandbox checks. Each prints `PROBE-OK <what>` or `PROBE-FAIL <what>` lines on stderr and the process
//! exits 0 only if every check of the mode passed.

use std::ffi::CString;
use std::io::Write;

struct P {
    failed: bool,
}

impl P {
    fn check(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            eprintln!("PROBE-OK {what}: {detail}");
        } else {
            self.failed = true;
            eprintln!("PROBE-FAIL {what}: {detail}");
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// Open for writing (creating); returns Ok(()) or the errno.
fn try_create(path: &str) -> Result<(), i32> {
    let p = c(path);
    // SAFETY: valid path string.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: fd just opened.
    unsafe { libc::close(fd) };
    Ok(())
}

fn exists(path: &str) -> bool {
    std::path::Path::new(path).symlink_metadata().is_ok()
}

pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("hello");
    let rest = &args[args.len().min(1)..];
    let mut p = P { failed: false };
    match mode {
        "hello" => p.check("hello", true, "alive"),
        "spawn-single-threaded" => spawn_single_threaded(&mut p),
        "true" => return 0,
        "ids" => ids(&mut p),
        "net" => net(&mut p, rest[0].parse().expect("port"), &rest[1]),
        "fs" => fs(&mut p, rest),
        "fds" => fds(&mut p, rest),
        "env" => env(&mut p, rest),
        "privs" => privs(&mut p),
        "kill" => kill(&mut p, rest[0].parse().expect("pid")),
        "rlimits" => rlimits(&mut p, rest),
        "enforce" => enforce(&mut p, rest),
        "noexec" => noexec(&mut p, &rest[0]),
        "seccomp-then-pause" => {
            // Install a trivial allow-all filter (no_new_privs is already set), announce, then wait.
            let filter = [libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            }];
            let prog = libc::sock_fprog {
                len: 1,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: valid one-instruction program that lives across the call.
            let r = unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                    0,
                    0,
                )
            };
            p.check(
                "seccomp filter installed",
                r == 0,
                format!("r={r} errno {}", errno()),
            );
            eprintln!("READY");
            loop {
                // SAFETY: pause sleeps until a signal.
                unsafe { libc::pause() };
            }
        }
        "proc" => proc_(&mut p),
        "grandchild" => grandchild(),
        "pause" => loop {
            // SAFETY: pause just sleeps until a signal.
            unsafe { libc::pause() };
        },
        other => p.check("mode", false, format!("unknown mode {other}")),
    }
    let _ = std::io::stderr().flush();
    i32::from(p.failed)
}

fn ids(p: &mut P) {
    // SAFETY: trivial getters.
    let (uid, gid, pid, ppid) = unsafe {
        (
            libc::getuid(),
            libc::getgid(),
            libc::getpid(),
            libc::getppid(),
        )
    };
    p.check(
        "uid 0 in namespace",
        uid == 0 && gid == 0,
        format!("uid={uid} gid={gid}"),
    );
    p.check("pid 1", pid == 1, format!("pid={pid}"));
    p.check("parent outside pid ns", ppid == 0, format!("ppid={ppid}"));
    // SAFETY: getsid(0) has no preconditions.
    let sid = unsafe { libc::getsid(0) };
    p.check("session leader", sid == pid, format!("sid={sid}"));
    let mut host = [0u8; 65];
    // SAFETY: buffer and its length.
    unsafe { libc::gethostname(host.as_mut_ptr() as *mut libc::c_char, 64) };
    let h = String::from_utf8_lossy(&host[..host.iter().position(|&b| b == 0).unwrap_or(64)])
        .into_owned();
    p.check("hostname", h == "caffe-sandbox", &h);
    // fd 3: a host directory owned by host root. ns root must not be able to create in it or chmod it.
    let name = c("jail-pwned");
    // SAFETY: openat on the passed directory fd with a valid name.
    let fd = unsafe {
        libc::openat(
            3,
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
            0o644,
        )
    };
    let e = errno();
    p.check(
        "create in host-root dir denied",
        fd < 0,
        format!("errno {e}"),
    );
    // SAFETY: fchmod on the passed fd.
    let r = unsafe { libc::fchmod(3, 0o777) };
    let e = errno();
    p.check(
        "chmod host-root dir denied",
        r != 0 && e == libc::EPERM,
        format!("r={r} errno {e}"),
    );
    // SAFETY: setuid(1) would need a mapping; must fail.
    let r = unsafe { libc::syscall(libc::SYS_setuid, 1) };
    p.check("cannot change uid", r != 0, format!("r={r}"));
}

fn net(p: &mut P, port: u16, abstract_name: &str) {
    use std::os::linux::net::SocketAddrExt;
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).expect("name");
    let r = std::os::unix::net::UnixStream::connect_addr(&addr);
    p.check(
        "connect to a host abstract unix socket fails",
        r.is_err(),
        format!("{:?}", r.map(|_| ())),
    );
    // SAFETY: if_nameindex/if_freenameindex pair; entries are read before freeing.
    let names = unsafe {
        let list = libc::if_nameindex();
        let mut v = Vec::new();
        let mut q = list;
        while !q.is_null() && (*q).if_index != 0 {
            v.push(
                std::ffi::CStr::from_ptr((*q).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            q = q.add(1);
        }
        if !list.is_null() {
            libc::if_freenameindex(list);
        }
        v
    };
    p.check("only lo", names == ["lo"], format!("{names:?}"));
    let r = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_secs(1),
    );
    p.check(
        "connect to host listener fails",
        r.is_err(),
        format!("{:?}", r.map(|_| ())),
    );
    let r = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"x", ("8.8.8.8", 53)));
    p.check("udp to the outside fails", r.is_err(), format!("{r:?}"));
}

fn fs(p: &mut P, rest: &[String]) {
    let program = &rest[0];
    let cap: u64 = rest[1].parse().expect("scratch size");
    let marker = &rest[2];
    p.check("host /tmp content invisible", !exists(marker), marker);
    // /tmp itself exists only if the program was bound from below it.
    let tmp_ok = !exists("/tmp") || program.starts_with("/tmp/");
    p.check("/tmp invisible", tmp_ok, "");
    if let Ok(d) = std::fs::read_dir("/tmp") {
        let names: Vec<String> = d
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        p.check(
            "/tmp holds only the program's path",
            names.len() <= 1,
            format!("{names:?}"),
        );
    }
    for host in [
        "/home",
        "/root",
        "/etc/passwd",
        "/etc",
        "/proc/1",
        "/proc/self",
        "/sys",
        "/var",
        "/run",
    ] {
        p.check(&format!("{host} invisible"), !exists(host), "");
    }
    for target in ["/pwned", "/dev/pwned", "/lib/pwned", program.as_str()] {
        let r = try_create(target);
        p.check(
            &format!("write {target} denied"),
            matches!(r, Err(libc::EROFS) | Err(libc::EACCES) | Err(libc::EPERM)),
            format!("{r:?}"),
        );
    }
    let r = std::fs::write("/scratch/ok.txt", b"hello");
    p.check("scratch writable", r.is_ok(), format!("{r:?}"));
    p.check(
        "cwd is scratch",
        std::env::current_dir()
            .map(|d| d == std::path::Path::new("/scratch"))
            .unwrap_or(false),
        "",
    );
    // Fill the scratch: ENOSPC before more than the cap is written.
    let mut f = std::fs::File::create("/scratch/fill").expect("create fill");
    let chunk = vec![0xabu8; 64 * 1024];
    let mut written = 0u64;
    let err = loop {
        match f.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => break e,
        }
        if written > cap * 2 {
            break std::io::Error::other("no limit hit");
        }
    };
    p.check(
        "scratch size cap (ENOSPC)",
        err.raw_os_error() == Some(libc::ENOSPC) && written <= cap,
        format!("wrote {written} of cap {cap}: {err}"),
    );
    drop(f);
    let _ = std::fs::remove_file("/scratch/fill");
    // noexec: copy ourselves into the scratch and try to run it.
    let copy = std::fs::copy(program, "/scratch/exe");
    p.check(
        "copy program into scratch",
        copy.is_ok(),
        format!("{copy:?}"),
    );
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions("/scratch/exe", std::fs::Permissions::from_mode(0o755));
    let exe = c("/scratch/exe");
    let argv = [exe.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: valid NULL-terminated arrays; on success this would replace the process (a failure then).
    unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = errno();
    p.check("scratch is noexec", e == libc::EACCES, format!("errno {e}"));
    // Symlinks / FIFOs cannot be planted (Landlock).
    let r = std::os::unix::fs::symlink("/etc/passwd", "/scratch/link");
    p.check("no symlinks in scratch", r.is_err(), format!("{r:?}"));
    let f = c("/scratch/fifo");
    // SAFETY: valid path.
    let r = unsafe { libc::mkfifo(f.as_ptr(), 0o600) };
    p.check("no FIFOs in scratch", r != 0, format!("r={r}"));
    // /dev/null and /dev/urandom work; /dev/zero absent.
    p.check(
        "/dev/null writable",
        std::fs::write("/dev/null", b"x").is_ok(),
        "",
    );
    let mut buf = [0u8; 16];
    let ur = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf));
    p.check("/dev/urandom readable", ur.is_ok(), format!("{ur:?}"));
    p.check("/dev/zero absent", !exists("/dev/zero"), "");
    // mknod / mount fail.
    let d = c("/scratch/dev");
    // SAFETY: valid path; must fail.
    let r = unsafe { libc::mknod(d.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    p.check("mknod denied", r != 0, format!("r={r}"));
    let t = c("tmpfs");
    let s = c("/scratch");
    // SAFETY: valid strings; must fail without capabilities.
    let r = unsafe { libc::mount(t.as_ptr(), s.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
    p.check("mount denied", r != 0, format!("errno {}", errno()));
}

fn fds(p: &mut P, expected: &[String]) {
    let want: Vec<i32> = expected.iter().map(|s| s.parse().expect("fd")).collect();
    let mut open = Vec::new();
    for fd in 0..4096 {
        // SAFETY: F_GETFD has no side effects.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            open.push(fd);
        }
    }
    p.check(
        "exactly the expected fds are open",
        open == want,
        format!("open {open:?}, want {want:?}"),
    );
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid output pointer.
    let r = unsafe { libc::fstat(0, &mut st) };
    p.check(
        "stdin is /dev/null",
        r == 0 && st.st_rdev == libc::makedev(1, 3),
        format!("rdev {:#x}", st.st_rdev),
    );
}

fn env(p: &mut P, expected: &[String]) {
    let mut got: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    got.sort();
    let mut want = expected.to_vec();
    want.sort();
    p.check(
        "environment exactly as given",
        got == want,
        format!("{got:?}"),
    );
}

fn privs(p: &mut P) {
    // SAFETY: prctl queries without pointers.
    let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    p.check("no_new_privs", nnp == 1, nnp);
    #[repr(C)]
    struct Hdr {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        eff: u32,
        perm: u32,
        inh: u32,
    }
    let mut h = Hdr {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget v3 with a header and two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Hdr, d.as_mut_ptr()) };
    let all_zero = d.iter().all(|x| x.eff == 0 && x.perm == 0 && x.inh == 0);
    p.check(
        "effective/permitted/inheritable empty",
        r == 0 && all_zero,
        format!("r={r}"),
    );
    let mut bnd = Vec::new();
    for cap in 0..64 {
        // SAFETY: prctl query.
        let v = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) };
        if v == 1 {
            bnd.push(cap);
        }
    }
    p.check("bounding set empty", bnd.is_empty(), format!("{bnd:?}"));
    for cap in 0..64 {
        // SAFETY: prctl query.
        let v =
            unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_IS_SET, cap, 0, 0) };
        if v == 1 {
            p.check("ambient set empty", false, cap);
        }
    }
    let mut sig = 0i32;
    // SAFETY: PR_GET_PDEATHSIG writes an int.
    unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut i32, 0, 0, 0) };
    p.check("parent-death signal SIGKILL", sig == libc::SIGKILL, sig);
    let mut rl = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: valid output struct.
    unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut rl) };
    p.check(
        "core dumps off",
        rl.rlim_cur == 0 && rl.rlim_max == 0,
        rl.rlim_max,
    );
    // Namespace escapes must fail.
    let d = c("/scratch");
    // SAFETY: chroot with a valid path; must fail without CAP_SYS_CHROOT.
    let ch = unsafe { libc::chroot(d.as_ptr()) };
    p.check("chroot denied", ch != 0, format!("errno {}", errno()));
    // A nested user namespace would hand back a full capability set inside it.
    // SAFETY: unshare with a constant flag; must fail.
    let u = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    let e = errno();
    p.check(
        "unshare(CLONE_NEWUSER) denied",
        u != 0,
        format!("errno {e}"),
    );
}

fn kill(p: &mut P, host_pid: i32) {
    // SAFETY: signals with constant arguments; all must fail.
    let r_all = unsafe { libc::kill(-1, libc::SIGKILL) };
    let e_all = errno();
    p.check(
        "kill(-1) reaches nobody",
        r_all != 0 && e_all == libc::ESRCH,
        format!("r={r_all} errno {e_all}"),
    );
    // SAFETY: as above.
    let r = unsafe { libc::kill(host_pid, libc::SIGKILL) };
    let e = errno();
    p.check("kill(host pid) fails", r != 0, format!("r={r} errno {e}"));
}

fn rlimits(p: &mut P, expected: &[String]) {
    let table = [
        ("as", libc::RLIMIT_AS),
        ("data", libc::RLIMIT_DATA),
        ("cpu", libc::RLIMIT_CPU),
        ("fsize", libc::RLIMIT_FSIZE),
        ("nofile", libc::RLIMIT_NOFILE),
        ("nproc", libc::RLIMIT_NPROC),
        ("core", libc::RLIMIT_CORE),
    ];
    for e in expected {
        let (name, v) = e.split_once('=').expect("name=value");
        let v: u64 = v.parse().expect("value");
        let res = table
            .iter()
            .find(|(n, _)| *n == name)
            .expect("known rlimit")
            .1;
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid output struct.
        unsafe { libc::getrlimit(res, &mut rl) };
        p.check(
            &format!("rlimit {name}"),
            rl.rlim_cur == v && rl.rlim_max == v,
            format!("{}/{}", rl.rlim_cur, rl.rlim_max),
        );
    }
}

fn proc_(p: &mut P) {
    let status = std::fs::read_to_string("/proc/self/status");
    p.check("/proc/self/status readable", status.is_ok(), "");
    if let Ok(s) = status {
        for key in ["CapEff:", "CapBnd:", "CapPrm:", "CapAmb:"] {
            let line = s.lines().find(|l| l.starts_with(key)).unwrap_or("");
            p.check(
                &format!("{key} zero"),
                line.ends_with("0000000000000000"),
                line,
            );
        }
        let nnp = s
            .lines()
            .find(|l| l.starts_with("NoNewPrivs:"))
            .unwrap_or("");
        p.check("NoNewPrivs: 1", nnp.ends_with('1'), nnp);
    }
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default();
    p.check(
        "only own pid visible in /proc",
        pids == ["1"],
        format!("{pids:?}"),
    );
    p.check(
        "/proc/sys hidden (subset=pid)",
        !exists("/proc/sys") && !exists("/proc/kcore"),
        "",
    );
    let r = std::fs::write("/proc/self/comm", b"x");
    p.check("/proc read-only", r.is_err(), format!("{r:?}"));
}

fn grandchild() {
    // SAFETY: fork in a single-threaded process; the child only pauses.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        loop {
            // SAFETY: pause sleeps until a signal.
            unsafe { libc::pause() };
        }
    }
    eprintln!("PROBE-OK forked {pid}");
    eprintln!("READY");
    loop {
        // SAFETY: pause sleeps until a signal.
        unsafe { libc::pause() };
    }
}

/// Limits actually bite: address space (mmap beyond it fails), processes (fork stops at nproc), file size.
fn enforce(p: &mut P, rest: &[String]) {
    let as_limit: usize = rest[0].parse().expect("as");
    let nproc: usize = rest[1].parse().expect("nproc");
    // SAFETY: anonymous private mapping request; checked for MAP_FAILED; unmapped if it succeeds.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            as_limit,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    let e = errno();
    p.check(
        "mmap beyond RLIMIT_AS fails",
        m == libc::MAP_FAILED && e == libc::ENOMEM,
        format!("errno {e}"),
    );
    if m != libc::MAP_FAILED {
        // SAFETY: unmapping the mapping just created.
        unsafe { libc::munmap(m, as_limit) };
    }
    let mut kids = Vec::new();
    let mut err = 0;
    for _ in 0..nproc * 2 {
        // SAFETY: fork in a single-threaded process; the child only pauses until killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                // SAFETY: pause sleeps until a signal.
                unsafe { libc::pause() };
            }
        }
        if pid < 0 {
            err = errno();
            break;
        }
        kids.push(pid);
    }
    p.check(
        "fork stops at RLIMIT_NPROC",
        err == libc::EAGAIN && kids.len() < nproc,
        format!("{} children, errno {err}", kids.len()),
    );
    for k in kids {
        // SAFETY: killing and reaping our own children.
        unsafe {
            libc::kill(k, libc::SIGKILL);
            libc::waitpid(k, std::ptr::null_mut(), 0);
        }
    }
    // RLIMIT_FSIZE: writing past it raises SIGXFSZ (ignored here so the write fails with EFBIG).
    // SAFETY: ignoring a signal.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let fsize: usize = rest[2].parse().expect("fsize");
    let r = std::fs::write("/scratch/big", vec![0u8; fsize + 4096]);
    p.check(
        "write beyond RLIMIT_FSIZE fails",
        r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EFBIG),
        format!("{r:?}"),
    );
}

/// A file under a read-only noexec bind: readable, not writable, not executable.
fn noexec(p: &mut P, path: &str) {
    p.check("noexec bind readable", std::fs::read(path).is_ok(), path);
    let r = std::fs::OpenOptions::new().write(true).open(path);
    p.check(
        "noexec bind not writable",
        r.is_err(),
        format!("{:?}", r.map(|_| ())),
    );
    let exe = c(path);
    let argv = [exe.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: valid NULL-terminated arrays; success would replace this process (a failure of the check).
    unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = errno();
    p.check(
        "noexec bind not executable",
        e == libc::EACCES,
        format!("errno {e}"),
    );
}

/// Host side (not sandboxed): spawn `hello` from this single-threaded process with an exec filter compiled
/// on the jail's thread, and check that stage 2 ran in the clone child and every layer held.
fn spawn_single_threaded(p: &mut P) {
    use caffe_sandbox_jail::{
        single_threaded, spawn, BpfSource, CompileOnce, ExecFilter, ExitStatus, Layer, SandboxSpec,
        ScratchSpec,
    };
    use std::io::Read;
    p.check("single threaded", single_threaded(), "before the spawn");
    let me = std::env::current_exe().expect("own path");
    let mut s = SandboxSpec::new(&me);
    s.args = vec!["hello".into()];
    s.ro_paths = vec![
        "/lib64/ld-linux-x86-64.so.2".into(),
        "/lib/x86_64-linux-gnu/libc.so.6".into(),
        "/lib/x86_64-linux-gnu/libgcc_s.so.1".into(),
    ];
    s.scratch = Some(ScratchSpec {
        path: "/scratch".into(),
        size_bytes: 1 << 20,
    });
    // RET ALLOW: the point is the hand-over, not the policy.
    let allow: Vec<u8> = [
        0x06u16.to_ne_bytes().to_vec(),
        vec![0, 0],
        libc::SECCOMP_RET_ALLOW.to_ne_bytes().to_vec(),
    ]
    .concat();
    s.exec_filter = Some(ExecFilter {
        bpf: BpfSource::Compile(CompileOnce::new(move || Ok(allow))),
        name: "allow-all test filter".into(),
    });
    let mut sb = match spawn(&s) {
        Ok(sb) => sb,
        Err(e) => return p.check("spawn", false, e),
    };
    p.check(
        "stage 2 in the clone child",
        sb.stage2_in_child,
        "no re-exec",
    );
    p.check(
        "listener handed over",
        sb.seccomp_listener.take().is_some(),
        "",
    );
    p.check("exec confirmed", sb.confirm_exec().is_ok(), "");
    let mut out = String::new();
    let _ = std::fs::File::from(sb.stderr.try_clone().expect("dup")).read_to_string(&mut out);
    let status = sb.wait();
    p.check(
        "target ran",
        status.as_ref().ok() == Some(&ExitStatus::Code(0)) && out.contains("PROBE-OK hello"),
        format!("{status:?}: {out}"),
    );
    for layer in [
        Layer::UserNs,
        Layer::MountNs,
        Layer::Landlock,
        Layer::Capabilities,
        Layer::NoNewPrivs,
        Layer::Seccomp,
        Layer::FdsClosed,
    ] {
        p.check(
            &format!("layer {layer}"),
            sb.layers.is_enforced(layer),
            format!("{:?}", sb.layers.get(layer)),
        );
    }
}

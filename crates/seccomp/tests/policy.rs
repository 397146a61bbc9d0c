//! Pins the shipped policies: golden rule lists (any change is a reviewed
//! diff), the certainly-blocked syscalls and argument combinations, and the
//! strictness of the schema.

use caffe_sandbox_seccomp::policy::{syscall_nr, Operand, Rule, Var};
use caffe_sandbox_seccomp::{Action, Policy, Vars, Verdict};

fn summary(r: &Rule) -> String {
    let mut s = format!("{} {}", r.syscall, r.action);
    if let Some(e) = r.errno {
        s.push_str(&format!(" errno={e}"));
    }
    for a in &r.args {
        let v = match a.value {
            Operand::Const(v) => format!("{v:#x}"),
            Operand::Var(Var::WorkerTgid) => "${worker_tgid}".into(),
        };
        match a.mask {
            Some(m) => s.push_str(&format!(" arg{}&{m:#x}=={v}", a.arg)),
            None => s.push_str(&format!(" arg{}=={v}", a.arg)),
        }
    }
    s
}

fn check_golden(p: &Policy, golden: &[&str]) {
    let mut got: Vec<String> = p.rules.iter().map(summary).collect();
    got.sort();
    let mut want: Vec<String> = golden.iter().map(|s| s.to_string()).collect();
    want.sort();
    if got != want {
        let added: Vec<_> = got.iter().filter(|g| !want.contains(g)).collect();
        let removed: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
        panic!(
            "policy {} differs from the golden list (review, then update the test).\nadded: {added:#?}\nremoved: {removed:#?}\nfull list:\n{}",
            p.name,
            got.iter().map(|g| format!("    \"{g}\",")).collect::<Vec<_>>().join("\n")
        );
    }
}

const WORKER_GOLDEN: &[&str] = &[
    "access phase_gated",
    "brk allow",
    "clock_gettime allow",
    "clock_nanosleep allow",
    "clone allow arg0&0xffffffffffc7ffff==0x50f00",
    "clone3 errno errno=38",
    "close allow",
    "dup phase_gated",
    "exit allow",
    "exit_group allow",
    "faccessat phase_gated",
    "faccessat2 phase_gated",
    "fcntl allow arg1==0x1",
    "fcntl allow arg1==0x2",
    "fcntl allow arg1==0x3",
    "fcntl allow arg1==0x406",
    "fcntl allow arg1==0x409",
    "fcntl allow arg1==0x40a",
    "fstat allow",
    "ftruncate allow",
    "futex allow",
    "get_mempolicy allow",
    "getcwd phase_gated",
    "getdents64 phase_gated",
    "getegid allow",
    "geteuid allow",
    "getgid allow",
    "getpid allow",
    "getrandom allow",
    "getsockopt allow arg1==0x1 arg2==0x3",
    "gettid allow",
    "gettimeofday allow",
    "getuid allow",
    "ioctl allow arg1==0x5401",
    "ioctl allow arg1==0x5421",
    "ioctl allow arg1==0x5451",
    "kill allow arg0==${worker_tgid}",
    "lseek allow",
    "madvise allow",
    "mbind allow",
    "memfd_create allow arg1==0x3",
    "memfd_create allow arg1==0xb",
    "mmap allow arg2&0x4==0x0",
    "mprotect allow arg2&0x4==0x0",
    "mremap allow",
    "munmap allow",
    "nanosleep allow",
    "newfstatat allow",
    "openat phase_gated arg2&0x400643==0x0",
    "poll allow",
    "ppoll allow",
    "prctl allow arg0==0xf",
    "prctl allow arg0==0x10",
    "pread64 allow",
    "prlimit64 allow arg0==0x0 arg2==0x0",
    "pwrite64 allow",
    "read allow",
    "readlink phase_gated",
    "readlinkat phase_gated",
    "recvmsg allow",
    "restart_syscall allow",
    "rseq allow",
    "rt_sigaction allow",
    "rt_sigprocmask allow",
    "rt_sigreturn allow",
    "sched_getaffinity allow",
    "sched_yield allow",
    "seccomp allow_load arg0==0x1 arg1==0x1",
    "sendmsg allow",
    "set_robust_list allow",
    "sigaltstack allow",
    "stat phase_gated",
    "statx allow",
    "sysinfo phase_gated",
    "tgkill allow arg0==${worker_tgid}",
    "uname phase_gated",
    "write allow",
    "writev allow",
];

const RUN_TOOL_GOLDEN: &[&str] = &[
    "access allow",
    "arch_prctl allow arg0==0x1002",
    "brk allow",
    "clock_gettime allow",
    "clock_nanosleep allow",
    "clone allow arg0&0xffffffffffc7ffff==0x50f00",
    "clone3 errno errno=38",
    "close allow",
    "dup allow",
    "execve notify_once",
    "exit allow",
    "exit_group allow",
    "faccessat2 allow",
    "fcntl allow arg1==0x1",
    "fcntl allow arg1==0x2",
    "fcntl allow arg1==0x3",
    "fcntl allow arg1==0x4",
    "fstat allow",
    "futex allow",
    "get_mempolicy allow",
    "getcwd allow",
    "getdents64 allow",
    "getegid allow",
    "geteuid allow",
    "getgid allow",
    "getpid allow",
    "getppid allow",
    "getrandom allow",
    "gettid allow",
    "gettimeofday allow",
    "getuid allow",
    "ioctl allow arg1==0x5401",
    "kill allow arg0==${worker_tgid}",
    "lseek allow",
    "madvise allow",
    "mbind allow",
    "mmap allow arg2&0x4==0x0",
    "mmap allow arg2&0x4==0x4 arg3&0x20==0x0",
    "mprotect allow arg2&0x4==0x0",
    "mremap allow",
    "munmap allow",
    "nanosleep allow",
    "newfstatat allow",
    "openat allow",
    "poll allow",
    "ppoll allow",
    "pread64 allow",
    "prlimit64 allow arg0==0x0 arg2==0x0",
    "read allow",
    "readlink allow",
    "restart_syscall allow",
    "rseq allow",
    "rt_sigaction allow",
    "rt_sigprocmask allow",
    "rt_sigreturn allow",
    "sched_getaffinity allow",
    "sched_yield allow",
    "sendmsg allow",
    "set_mempolicy allow",
    "set_robust_list allow",
    "set_tid_address allow",
    "sigaltstack allow",
    "socket errno errno=13 arg0==0x1",
    "stat allow",
    "statx allow",
    "sysinfo allow",
    "tgkill allow arg0==${worker_tgid}",
    "uname allow",
    "write allow",
    "writev allow",
];

#[test]
fn worker_policy_matches_golden_list() {
    check_golden(&Policy::worker(), WORKER_GOLDEN);
}

#[test]
fn run_tool_policy_matches_golden_list() {
    check_golden(&Policy::run_tool(), RUN_TOOL_GOLDEN);
}

/// Syscalls the issue names as certainly blocked (beyond each file's own
/// `never_allow`, which validation enforces at load time).
const CERTAINLY_BLOCKED: &[&str] = &[
    "execveat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "unshare",
    "setns",
    "bpf",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "open_by_handle_at",
    "name_to_handle_at",
    "mknod",
    "mknodat",
    "tkill",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "pidfd_send_signal",
    "pidfd_getfd",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "personality",
    "fork",
    "vfork",
    "modify_ldt",
    "iopl",
    "ioperm",
    "symlink",
    "symlinkat",
    "link",
    "linkat",
];

const TGID: u32 = 4242;

fn classify(p: &Policy, name: &str, args: [u64; 6]) -> Verdict {
    let r = p
        .resolve(&Vars {
            worker_tgid: Some(TGID),
        })
        .unwrap();
    r.classify(i64::from(syscall_nr(name).unwrap()), &args)
}

#[test]
fn certainly_blocked_syscalls_never_run() {
    for p in [Policy::worker(), Policy::run_tool()] {
        let runnable = p.runnable_syscalls();
        for s in CERTAINLY_BLOCKED {
            assert!(!runnable.contains(s), "{}: {s} is runnable", p.name);
            assert_eq!(classify(&p, s, [0; 6]), Verdict::Deny, "{}: {s}", p.name);
            assert!(
                p.never_allow.iter().any(|n| n == s),
                "{}: {s} missing from never_allow",
                p.name
            );
        }
    }
    let w = Policy::worker();
    for s in [
        "execve",
        "socket",
        "memfd_secret",
        "openat2",
        "open",
        "creat",
        "unlink",
        "rename",
        "mkdir",
    ] {
        assert_eq!(classify(&w, s, [0; 6]), Verdict::Deny, "worker: {s}");
    }
}

const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID) as u64;

#[test]
fn argument_filters_hold() {
    for p in [Policy::worker(), Policy::run_tool()] {
        let c = |name: &str, args: [u64; 6]| classify(&p, name, args);
        // clone: glibc's thread flags pass; anything else does not.
        assert_eq!(c("clone", [THREAD_FLAGS, 0, 0, 0, 0, 0]), Verdict::Allow);
        for extra in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_PTRACE,
            libc::CLONE_VFORK,
            libc::CLONE_PARENT,
            libc::CLONE_PIDFD,
            libc::CLONE_UNTRACED,
            libc::SIGCHLD,
        ] {
            let f = THREAD_FLAGS | extra as u32 as u64;
            assert_eq!(
                c("clone", [f, 0, 0, 0, 0, 0]),
                Verdict::Deny,
                "{}: clone {f:#x}",
                p.name
            );
        }
        // fork via clone(SIGCHLD) and a process without CLONE_THREAD.
        assert_eq!(
            c("clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            Verdict::Deny
        );
        assert_eq!(
            c(
                "clone",
                [THREAD_FLAGS & !(libc::CLONE_THREAD as u64), 0, 0, 0, 0, 0]
            ),
            Verdict::Deny
        );
        assert_eq!(c("clone3", [0; 6]), Verdict::Errno(libc::ENOSYS));
        // mprotect/pkey_mprotect never executable.
        let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        assert_eq!(c("mprotect", [0, 4096, rx, 0, 0, 0]), Verdict::Deny);
        assert_eq!(c("pkey_mprotect", [0, 4096, 1, 0, 0, 0]), Verdict::Deny);
        let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        assert_eq!(
            c("mmap", [0, 4096, rx, anon, u64::MAX, 0]),
            Verdict::Deny,
            "{}",
            p.name
        );
        assert_eq!(c("mmap", [0, 4096, 3, anon, u64::MAX, 0]), Verdict::Allow);
        // ioctl: TCGETS only (plus harmless fd-flag requests); the 64-bit
        // compare fails closed on high garbage bits.
        assert_eq!(c("ioctl", [2, libc::TCGETS, 0, 0, 0, 0]), Verdict::Allow);
        assert_eq!(
            c("ioctl", [2, libc::TCGETS | 1 << 32, 0, 0, 0, 0]),
            Verdict::Deny
        );
        assert_eq!(c("ioctl", [0, libc::TIOCSTI, 0, 0, 0, 0]), Verdict::Deny);
        assert_eq!(
            c("ioctl", [3, libc::SECCOMP_IOCTL_NOTIF_SEND, 0, 0, 0, 0]),
            Verdict::Deny
        );
        assert_eq!(
            c("ioctl", [3, libc::SECCOMP_IOCTL_NOTIF_RECV, 0, 0, 0, 0]),
            Verdict::Deny
        );
        // socket: never runs.
        for fam in [
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
            libc::AF_PACKET,
        ] {
            assert_eq!(c("socket", [fam as u64, 1, 0, 0, 0, 0]), Verdict::Deny);
        }
        assert!(!matches!(
            c("socket", [1, 1, 0, 0, 0, 0]),
            Verdict::Allow | Verdict::AllowLoad
        ));
        // signals: own thread group only.
        assert_eq!(
            c("tgkill", [u64::from(TGID), 7, 6, 0, 0, 0]),
            Verdict::Allow
        );
        assert_eq!(c("tgkill", [1, 1, 9, 0, 0, 0]), Verdict::Deny);
        // prctl: no dumpable/ptracer/seccomp/mm changes.
        for opt in [
            libc::PR_SET_DUMPABLE,
            libc::PR_SET_PTRACER,
            libc::PR_SET_SECCOMP,
            libc::PR_SET_MM,
            libc::PR_CAP_AMBIENT,
            libc::PR_SET_SPECULATION_CTRL,
        ] {
            assert_eq!(
                c("prctl", [opt as u64, 0, 0, 0, 0, 0]),
                Verdict::Deny,
                "prctl {opt}"
            );
        }
        // prlimit64: read-only, own process.
        assert_eq!(c("prlimit64", [0, 3, 0, 0x1000, 0, 0]), Verdict::Allow);
        assert_eq!(c("prlimit64", [0, 3, 0x1000, 0, 0, 0]), Verdict::Deny);
        assert_eq!(c("prlimit64", [1, 3, 0, 0x1000, 0, 0]), Verdict::Deny);
        // fcntl: no F_SETOWN / F_SETSIG / F_NOTIFY / F_SETLEASE.
        for cmd in [libc::F_SETOWN, 10, libc::F_NOTIFY, libc::F_SETLEASE] {
            assert_eq!(
                c("fcntl", [0, cmd as u64, 0, 0, 0, 0]),
                Verdict::Deny,
                "fcntl {cmd}"
            );
        }
    }
}

#[test]
fn worker_phase_gates_and_load_only() {
    let w = Policy::worker();
    let ro = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    let at_fdcwd = libc::AT_FDCWD as i64 as u64;
    assert!(matches!(
        classify(&w, "openat", [at_fdcwd, 0, ro, 0, 0, 0]),
        Verdict::PhaseGated(_)
    ));
    let dir = ro | (libc::O_DIRECTORY | libc::O_NONBLOCK) as u64;
    assert!(matches!(
        classify(&w, "openat", [at_fdcwd, 0, dir, 0, 0, 0]),
        Verdict::PhaseGated(_)
    ));
    for wf in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_CREAT,
        libc::O_TRUNC,
        libc::O_APPEND,
        libc::O_TMPFILE,
    ] {
        let f = ro | wf as u64;
        assert_eq!(
            classify(&w, "openat", [at_fdcwd, 0, f, 0, 0, 0]),
            Verdict::Deny,
            "openat {f:#o}"
        );
    }
    assert_eq!(
        classify(
            &w,
            "seccomp",
            [1, libc::SECCOMP_FILTER_FLAG_TSYNC, 0, 0, 0, 0]
        ),
        Verdict::AllowLoad
    );
    // A second listener, or switching off the SSB mitigation, is not allowed.
    assert_eq!(
        classify(
            &w,
            "seccomp",
            [1, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER, 0, 0, 0, 0]
        ),
        Verdict::Deny
    );
    assert_eq!(
        classify(
            &w,
            "seccomp",
            [
                1,
                libc::SECCOMP_FILTER_FLAG_TSYNC | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                0,
                0,
                0,
                0
            ]
        ),
        Verdict::Deny
    );
    assert_eq!(
        w.syscalls_with(Action::AllowLoad)
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["seccomp"]
    );
    // Every phase-gated syscall is harmless without the load phase: none is in never_allow.
    for s in w.syscalls_with(Action::PhaseGated) {
        assert!(!w.never_allow.iter().any(|n| n == s));
    }
}

#[test]
fn run_tool_exec_rules() {
    let r = Policy::run_tool();
    assert!(matches!(
        classify(&r, "execve", [0; 6]),
        Verdict::NotifyOnce(_)
    ));
    let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
    let file = (libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_DENYWRITE) as u64;
    assert_eq!(
        classify(&r, "mmap", [0, 4096, rx, file, 3, 0]),
        Verdict::Allow
    );
    assert_eq!(
        classify(&r, "socket", [1, 1, 0, 0, 0, 0]),
        Verdict::Errno(libc::EACCES)
    );
    assert_eq!(classify(&r, "memfd_create", [0; 6]), Verdict::Deny);
}

fn base_json(rules: &str) -> String {
    format!(
        r#"{{"schema": "caffe-sandbox-seccomp-policy/1", "name": "t", "description": "test",
            "never_allow": ["execve"], "rules": [{rules}]}}"#
    )
}

fn rejects(rules: &str, what: &str) {
    let err = Policy::from_json(&base_json(rules)).expect_err(what);
    eprintln!("{what}: {err}");
}

#[test]
fn schema_is_strict() {
    let ok = r#"{"syscall": "read", "action": "allow", "why": "reads things"}"#;
    Policy::from_json(&base_json(ok)).unwrap();
    // Unknown fields, at every level.
    rejects(
        r#"{"syscall": "read", "action": "allow", "why": "reads things", "comment": "x"}"#,
        "unknown rule field",
    );
    assert!(
        Policy::from_json(&base_json(ok).replacen("\"name\"", "\"extra\": 1, \"name\"", 1))
            .is_err()
    );
    rejects(
        r#"{"syscall": "ioctl", "action": "allow", "why": "reads things", "args": [{"arg": 1, "op": "eq", "value": "TCGETS", "flags": 1}]}"#,
        "unknown arg field",
    );
    // Unknown names.
    rejects(
        r#"{"syscall": "reed", "action": "allow", "why": "reads things"}"#,
        "unknown syscall",
    );
    rejects(
        r#"{"syscall": "socketcall", "action": "allow", "why": "not on x86_64"}"#,
        "non-x86_64 syscall",
    );
    rejects(
        r#"{"syscall": "read", "action": "permit", "why": "reads things"}"#,
        "unknown action",
    );
    rejects(
        r#"{"syscall": "ioctl", "action": "allow", "why": "reads things", "args": [{"arg": 1, "op": "eq", "value": "TCGETZ"}]}"#,
        "unknown constant",
    );
    rejects(
        r#"{"syscall": "ioctl", "action": "allow", "why": "reads things", "args": [{"arg": 1, "op": "ne", "value": 1}]}"#,
        "ne is not supported (fails open on 32-bit args)",
    );
    rejects(
        r#"{"syscall": "tgkill", "action": "allow", "why": "reads things", "args": [{"arg": 0, "op": "eq", "value": "${pid}"}]}"#,
        "unknown variable",
    );
    // Duplicates and ambiguity.
    rejects(&format!("{ok}, {ok}"), "duplicate rule");
    rejects(
        r#"{"syscall": "read", "action": "allow", "why": "reads things"}, {"syscall": "read", "action": "phase_gated", "why": "reads things"}"#,
        "overlapping different actions",
    );
    assert!(
        Policy::from_json(&base_json(ok).replace("[\"execve\"]", "[\"execve\", \"execve\"]"))
            .is_err()
    );
    // Semantics.
    rejects(
        r#"{"syscall": "execve", "action": "allow", "why": "never ever"}"#,
        "never_allow allowed",
    );
    rejects(
        r#"{"syscall": "ioctl", "action": "allow", "why": "any request"}"#,
        "ioctl without args",
    );
    rejects(
        r#"{"syscall": "clone", "action": "allow", "why": "any flags at all"}"#,
        "clone without args",
    );
    rejects(
        r#"{"syscall": "read", "action": "allow", "why": ""}"#,
        "empty why",
    );
    rejects(
        r#"{"syscall": "read", "action": "errno", "why": "reads things"}"#,
        "errno without errno",
    );
    rejects(
        r#"{"syscall": "read", "action": "allow", "errno": "EPERM", "why": "reads things"}"#,
        "errno with allow",
    );
    rejects(
        r#"{"syscall": "mmap", "action": "allow", "why": "reads things", "args": [{"arg": 2, "op": "masked_eq", "mask": "PROT_EXEC", "value": 3}]}"#,
        "value outside mask",
    );
    rejects(
        r#"{"syscall": "mmap", "action": "allow", "why": "reads things", "args": [{"arg": 2, "op": "masked_eq", "mask": "PROT_EXEC", "value": 0}, {"arg": 2, "op": "eq", "value": 3}]}"#,
        "two conditions on one arg",
    );
    rejects(
        r#"{"syscall": "mmap", "action": "allow", "why": "reads things", "args": [{"arg": 6, "op": "eq", "value": 0}]}"#,
        "arg index",
    );
    assert!(Policy::from_json(&base_json(ok).replace("policy/1", "policy/2")).is_err());
}

#[test]
fn missing_variable_is_an_error() {
    let w = Policy::worker();
    assert!(w.resolve(&Vars::default()).is_err());
    assert!(w
        .resolve(&Vars {
            worker_tgid: Some(1)
        })
        .is_ok());
}

#[test]
fn shipped_policies_compile() {
    for p in [Policy::worker(), Policy::run_tool()] {
        let r = p
            .resolve(&Vars {
                worker_tgid: Some(1),
            })
            .unwrap();
        let b = caffe_sandbox_seccomp::compile_bundle(&r).unwrap();
        for prog in [&b.listener, &b.inference] {
            assert!(
                !prog.is_empty() && prog.len() % 8 == 0 && prog.len() / 8 <= 4096,
                "{}",
                p.name
            );
        }
        let pfc = caffe_sandbox_seccomp::compile::listener_filter_pfc(&r).unwrap();
        // Foreign arch and the x32 syscall range end in KILL_PROCESS.
        assert!(pfc.contains("KILL_PROCESS"), "{pfc}");
        // The x32 ABI (syscall numbers with bit 30 set) is rejected by a
        // `jge 0x40000000` right after the arch check.
        let x32 = b.listener.chunks_exact(8).any(|i| {
            u16::from_ne_bytes([i[0], i[1]]) == 0x35
                && u32::from_ne_bytes([i[4], i[5], i[6], i[7]]) == 0x4000_0000
        });
        assert!(x32, "{}: no x32 check in the listener filter", p.name);
        // Default action SECCOMP_RET_USER_NOTIF (0x7fc00000).
        assert!(
            pfc.contains("# default action\n  action 0x7fc00000;"),
            "{pfc}"
        );
    }
}

//! A compromised worker under the real sandbox: the test double (examples/attacker_test_double.rs, no Caffe)
//! replaces `caffe-sandbox-worker`, installs the same seccomp policy the same way, and performs one attacker
//! action per run. Each action must fail and be reported with the right cause, the supervisor must survive
//! with a typed error, and host-side checks must show that nothing happened: no file, no connection accepted
//! by a listener on 127.0.0.1 or an abstract unix socket, no signal delivered to (and no tracer attached to) a
//! host process spawned by the test.
//!
//! Needs the workspace built (`cargo build --workspace --examples`, done by `cargo test --workspace`); user
//! namespaces and seccomp must be available: a missing precondition fails loudly.

use caffe_sandbox_supervisor::probe::{self, ProbeTargets, ProbeVerdict, PROBES};
use caffe_sandbox_supervisor::{Deadlines, Error, Input, LaunchConfig, Layer, Worker};
use caffe_sandbox_testkit::{built, is_root, rerun_as_nobody};
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn cfg(attack: &str) -> LaunchConfig {
    let mut c = LaunchConfig::discover()
        .expect("launch config (run scripts/setup and build the workspace)");
    c.worker_exe = built("examples/attacker_test_double");
    // `cargo test --test compromised_worker` alone does not rebuild examples: refuse a stale double.
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for src in ["examples/attacker_test_double.rs", "src/probe.rs"] {
        assert!(
            mtime(&c.worker_exe) >= mtime(&manifest.join(src)),
            "{} is older than {src}: rebuild it (cargo build -p caffe-sandbox-supervisor --examples)",
            c.worker_exe.display()
        );
    }
    c.stage2_exe = Some(built("caffe-sandbox-jail-stage2"));
    c.extra_env.push(("ATTACK".into(), attack.into()));
    c
}

fn deadlines() -> Deadlines {
    Deadlines {
        start: Duration::from_secs(10),
        load: Duration::from_secs(3),
        request: Duration::from_secs(3),
    }
}

/// The host side: a listener on 127.0.0.1, an abstract unix socket, a spawned process, and paths that must
/// stay absent.
struct Host {
    tcp: TcpListener,
    unix: UnixListener,
    abstract_name: String,
    sleeper: std::process::Child,
    dir: PathBuf,
    paths: Vec<PathBuf>,
}

impl Host {
    fn new(tag: &str) -> Host {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.set_nonblocking(true).unwrap();
        let abstract_name = format!("cs-compromised-{tag}-{}", std::process::id());
        let unix = {
            use std::os::linux::net::SocketAddrExt;
            let a = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
                .unwrap();
            UnixListener::bind_addr(&a).unwrap()
        };
        unix.set_nonblocking(true).unwrap();
        let sleeper = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("spawn sleep");
        let dir = std::env::temp_dir().join(format!("cs-compromised-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        }
        let secret = dir.join("readable-secret");
        std::fs::write(&secret, "host file content").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let paths = vec![
            dir.join("written-from-the-sandbox"),
            std::env::temp_dir().join(format!("cs-compromised-{tag}-{}.out", std::process::id())),
        ];
        Host {
            tcp,
            unix,
            abstract_name,
            sleeper,
            dir,
            paths,
        }
    }

    fn targets(&self, which_path: usize) -> ProbeTargets {
        ProbeTargets {
            pid: Some(self.sleeper.id() as i32),
            tcp_port: Some(self.tcp.local_addr().unwrap().port()),
            abstract_name: Some(self.abstract_name.clone()),
            path: Some(self.paths[which_path].clone()),
            read_path: Some(self.dir.join("readable-secret")),
        }
    }

    /// Panics if anything reached the host.
    fn assert_untouched(&mut self, case: &str) {
        match self.tcp.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{case}: the 127.0.0.1 listener saw {other:?}"),
        }
        match self.unix.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("{case}: the abstract socket saw {other:?}"),
        }
        assert!(
            self.sleeper.try_wait().unwrap().is_none(),
            "{case}: the host process was signalled"
        );
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.sleeper.id())).unwrap();
        assert!(
            status.lines().any(|l| l == "TracerPid:\t0"),
            "{case}: the host process is traced:\n{status}"
        );
        for p in &self.paths {
            assert!(
                p.symlink_metadata().is_err(),
                "{case}: {} exists on the host",
                p.display()
            );
        }
        let entries: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            entries,
            vec![std::ffi::OsString::from("readable-secret")],
            "{case}: the host dir changed"
        );
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The syscall the kernel must report for each shipped probe, or the errno the probe must see when the
/// filesystem view (not seccomp) is what stops it.
fn expected(name: &str) -> &'static str {
    match name {
        "pid_ns_kill_all" | "kill_host_pid" => "kill",
        "ptrace_attach" => "ptrace",
        "process_vm_readv" => "process_vm_readv",
        "unshare_userns" => "unshare",
        "setns" => "setns",
        "mount_tmpfs" => "mount",
        "umount_root" => "umount2",
        "chroot" => "chroot",
        "pivot_root" => "pivot_root",
        "proc_environ" | "read_etc_passwd" | "read_host_path" => "ENOENT",
        "write_host_path"
        | "write_root_bashrc"
        | "write_library"
        | "open_after_load"
        | "landlock_write_scratch_escape"
        | "fill_scratch" => "openat",
        "exec_bin_sh" => "execve",
        "execveat_memfd" => "execveat",
        "fork" => "clone",
        n if n.starts_with("socket_") => "socket",
        "tiocsti" => "ioctl",
        "keyctl" => "add_key",
        "bpf" => "bpf",
        "io_uring_setup" => "io_uring_setup",
        "userfaultfd" => "userfaultfd",
        "perf_event_open" => "perf_event_open",
        "init_module" => "init_module",
        "mknod_char_device" | "fifo_in_scratch" => "mknodat",
        "personality" => "personality",
        "open_by_handle_at" => "open_by_handle_at",
        "setuid_root" => "setuid",
        "symlink_in_scratch" => "symlink",
        "hardlink_in_scratch" => "link",
        "mmap_exec" | "mmap_exec_after_load" => "mmap",
        "mprotect_exec_after_load" => "mprotect",
        "inherited_fds" => "none",
        "raise_rlimit" => "prlimit64",
        "capabilities" => "capget",
        other => panic!("no expectation for probe {other}: add one"),
    }
}

fn run_every_action(host: &mut Host) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, spec) in PROBES.iter().enumerate() {
        let c = cfg("");
        let raw = probe::run_probe_raw(&c, spec.name, &host.targets(i % 2));
        let verdict = probe::classify(spec, &raw);
        let want = expected(spec.name);
        let ok = match &verdict {
            ProbeVerdict::Blocked { by, how } if by == "seccomp" => {
                how.starts_with(&format!("kernel reported {want} "))
            }
            ProbeVerdict::Blocked { how, .. } => how.contains(want),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{}: want {want}, got {verdict:?} (raw {raw:?})",
                spec.name
            ));
        }
        host.assert_untouched(spec.name);
    }
    failures
}

#[test]
fn every_shipped_attacker_action_fails_is_reported_and_leaves_the_host_untouched() {
    let mut host = Host::new("all");
    let failures = run_every_action(&mut host);
    assert!(
        failures.is_empty(),
        "{} actions not contained as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn socket_of_every_address_family_is_a_reported_seccomp_violation() {
    let mut host = Host::new("families");
    let mut failures = Vec::new();
    for family in 0..=45 {
        let attack = format!("socket_family:{family}");
        let mut w = Worker::start(&cfg(&attack), deadlines()).expect("start the double");
        match w.load(&probe::dummy_bundle()) {
            Err(Error::Worker { failure, .. }) if failure.label() == "seccomp_violation" => {
                let s = failure.to_string();
                if !s.contains("system call socket ") {
                    failures.push(format!("{family}: {s}"));
                }
            }
            other => failures.push(format!("{family}: {other:?}")),
        }
        host.assert_untouched(&attack);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_double_is_a_working_worker_threads_work_and_results_arrive() {
    // The control: without an attack the same binary loads, runs threads under the filter, and answers.
    let mut w = Worker::start(&cfg("benign"), deadlines()).expect("start");
    assert!(w.layers().is_enforced(Layer::Seccomp), "{}", w.layers());
    w.load(&probe::dummy_bundle()).expect("load");
    let out = w
        .infer(&[Input::Tensor {
            name: "data".into(),
            dims: vec![1, 3],
            data: vec![0.0; 3],
        }])
        .expect("infer");
    assert_eq!(out[0].data, vec![1.0, 2.0, 3.0]);
    w.shutdown();
}

#[test]
fn an_input_arena_the_worker_could_not_adopt_is_sent_again() {
    let mut w = Worker::start(&cfg("arena_refused_once"), deadlines()).expect("start");
    w.load(&probe::dummy_bundle()).expect("load");
    let first = w.infer(&tensor());
    assert!(
        matches!(&first, Err(Error::BadModel { message, .. }) if message.contains("cannot map the input arena")),
        "{first:?}"
    );
    let out = w
        .infer(&tensor())
        .expect("the next request brings the arena again");
    assert_eq!(out[0].data, vec![1.0, 2.0, 3.0]);
    w.shutdown();
}

fn tensor() -> Vec<Input> {
    vec![Input::Tensor {
        name: "data".into(),
        dims: vec![1, 3],
        data: vec![0.0; 3],
    }]
}

/// Runs one channel attack; returns the typed error (the supervisor must survive to return it).
fn channel_attack(attack: &str, c: &LaunchConfig) -> (Error, Duration) {
    let t = Instant::now();
    let err = match Worker::start(c, deadlines()) {
        Err(e) => e,
        Ok(mut w) => match w.load(&probe::dummy_bundle()) {
            Err(e) => e,
            Ok(_) => match w.infer(&tensor()) {
                Err(e) => e,
                Ok(o) => panic!("{attack}: the supervisor accepted {o:?}"),
            },
        },
    };
    (err, t.elapsed())
}

#[test]
fn attacks_on_the_supervisor_through_the_channel_become_typed_errors() {
    let mut host = Host::new("channel");
    let cases: &[(&str, &str)] = &[
        ("hello_wrong_id", "protocol_violation"),
        ("wrong_reply_id", "protocol_violation"),
        ("duplicate_reply", "protocol_violation"),
        ("fds_attached", "protocol_violation"),
        ("length_huge", "protocol_violation"),
        ("dims_overflow", "protocol_violation"),
        ("too_many_axes", "protocol_violation"),
        ("zero_dims", "protocol_violation"),
        ("flood", "protocol_violation"),
        ("invalid_utf8", "protocol_violation"),
        ("result_dims_overflow", "protocol_violation"),
        ("result_nan", "protocol_violation"),
        ("result_length_mismatch", "protocol_violation"),
        ("truncate_memfd", "protocol_violation"),
        ("exit0", "exited_without_answer"),
        ("huge_stderr", "exited_without_answer"),
        ("silence", "timeout"),
        ("grandchild_holds_socket", "seccomp_violation"),
        ("fork_bomb", "seccomp_violation"),
        ("escape_text", "bad_model"),
    ];
    let mut failures = Vec::new();
    for (attack, want) in cases {
        let (err, took) = channel_attack(attack, &cfg(attack));
        if err.label() != *want {
            failures.push(format!(
                "{attack}: want {want}, got {} ({err})",
                err.label()
            ));
        }
        if took > Duration::from_secs(8) {
            failures.push(format!("{attack}: took {took:?}"));
        }
        let text = err.to_string();
        if text.contains('\u{1b}')
            || text.contains('\u{7}')
            || text.contains('\u{202e}')
            || text.contains('\r')
        {
            failures.push(format!(
                "{attack}: control characters reached the caller: {text:?}"
            ));
        }
        if let Error::Worker { stderr_tail, .. } = &err {
            if stderr_tail.len() > 64 * 1024 {
                failures.push(format!(
                    "{attack}: stderr tail of {} bytes",
                    stderr_tail.len()
                ));
            }
        }
        match (*attack, &err) {
            ("fork_bomb" | "grandchild_holds_socket", _)
                if !text.contains("system call clone ") =>
            {
                failures.push(format!("{attack}: {text}"))
            }
            ("exit0", Error::Worker { .. }) if !text.contains("code 0") => {
                failures.push(format!("{attack}: {text}"))
            }
            _ => {}
        }
        host.assert_untouched(attack);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_grandchild_holding_the_channel_cannot_hang_the_supervisor_even_without_seccomp() {
    // With seccomp weakened the fork succeeds; the worker is pid 1 of its pid namespace, so its exit takes the
    // grandchild (and its copy of the channel) down with it: the supervisor sees the end promptly.
    let mut c = cfg("grandchild_holds_socket");
    c.allow_weaker.insert(Layer::Seccomp);
    let (err, took) = channel_attack("grandchild_holds_socket", &c);
    assert_eq!(err.label(), "exited_without_answer", "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// The rootless subset: the same test binary re-run as uid/gid 65534 through setpriv (user namespaces
/// instead of root), so the supervisor itself is unprivileged.
#[test]
fn rootless_subset() {
    if !is_root() {
        // Already unprivileged: this run is the rootless one.
        rootless_inner();
        return;
    }
    rerun_as_nobody("rootless_inner");
}

#[test]
#[ignore = "run by rootless_subset as uid 65534"]
fn rootless_inner() {
    // SAFETY: trivial getter.
    assert_ne!(unsafe { libc::geteuid() }, 0, "must run unprivileged");
    let mut host = Host::new("rootless");
    let subset = [
        "kill_host_pid",
        "ptrace_attach",
        "write_host_path",
        "socket_inet",
        "socket_abstract_unix",
        "exec_bin_sh",
        "mount_tmpfs",
        "mprotect_exec_after_load",
        "inherited_fds",
    ];
    for name in subset {
        let spec = probe::spec(name).unwrap();
        let raw = probe::run_probe_raw(&cfg(""), name, &host.targets(0));
        let v = probe::classify(spec, &raw);
        let want = expected(name);
        assert!(
            matches!(&v, ProbeVerdict::Blocked { how, .. } if how.contains(want)),
            "rootless {name}: want {want}, got {v:?}"
        );
        host.assert_untouched(name);
    }
    for (attack, want) in [
        ("length_huge", "protocol_violation"),
        ("truncate_memfd", "protocol_violation"),
    ] {
        let (err, _) = channel_attack(attack, &cfg(attack));
        assert_eq!(err.label(), want, "rootless {attack}: {err}");
    }
}

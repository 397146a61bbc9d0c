//! Real-kernel tests of the jail. As root they also re-run themselves unprivileged (uid 65534, via
//! `setpriv`), so one `cargo test` covers both root and rootless operation. Nothing is skipped: a missing
//! precondition (user namespaces, Landlock, setpriv) fails the test.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caffe_sandbox_jail::*;

/// A helper binary: the compile-time path, or the copy made for the unprivileged rerun (the build tree may
/// not be reachable by uid 65534, e.g. a checkout under a 0700 directory).
fn bin(name: &str, compiled: &str) -> PathBuf {
    match std::env::var_os("JAIL_TEST_BIN_DIR") {
        Some(d) => PathBuf::from(d).join(name),
        None => PathBuf::from(compiled),
    }
}

fn probe() -> PathBuf {
    bin("jail-test-probe", env!("CARGO_BIN_EXE_jail-test-probe"))
}

fn stage2_bin() -> PathBuf {
    bin(
        "caffe-sandbox-jail-stage2",
        env!("CARGO_BIN_EXE_caffe-sandbox-jail-stage2"),
    )
}

const SCRATCH: u64 = 1 << 20;

fn spec(args: &[&str]) -> SandboxSpec {
    let p = probe();
    let mut s = SandboxSpec::new(&p);
    s.stage2_exe = Some(p);
    s.args = args.iter().map(OsString::from).collect();
    s.ro_paths = vec![
        "/lib64/ld-linux-x86-64.so.2".into(),
        "/lib/x86_64-linux-gnu/libc.so.6".into(),
        "/lib/x86_64-linux-gnu/libgcc_s.so.1".into(),
    ];
    s.scratch = Some(ScratchSpec {
        path: "/scratch".into(),
        size_bytes: SCRATCH,
    });
    s.env = vec![("JAIL_TEST".into(), "1".into())];
    s
}

struct Outcome {
    status: ExitStatus,
    stderr: String,
    layers: LayerReport,
}

fn read_capped(fd: OwnedFd, cap: u64) -> String {
    let mut s = Vec::new();
    std::fs::File::from(fd)
        .take(cap)
        .read_to_end(&mut s)
        .expect("read stderr");
    String::from_utf8_lossy(&s).into_owned()
}

fn run(s: &SandboxSpec) -> Outcome {
    let sb = spawn(s).unwrap_or_else(|e| panic!("spawn failed: {e}"));
    let layers = sb.layers.clone();
    let stderr = read_capped(sb.stderr.try_clone().expect("dup"), 1 << 20);
    let status = sb.wait().expect("wait");
    Outcome {
        status,
        stderr,
        layers,
    }
}

fn run_ok(s: &SandboxSpec) -> Outcome {
    let o = run(s);
    eprintln!("{}", o.stderr);
    assert!(
        !o.stderr.contains("PROBE-FAIL"),
        "probe failures:\n{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("PROBE-OK"),
        "probe printed nothing:\n{}",
        o.stderr
    );
    assert_eq!(o.status, ExitStatus::Code(0), "{}", o.stderr);
    o
}

fn euid() -> u32 {
    // SAFETY: trivial getter.
    unsafe { libc::geteuid() }
}

#[test]
fn host_preconditions() {
    let f = host_facts();
    eprintln!("{}", serde_json::to_string_pretty(&f).unwrap());
    assert!(
        f.landlock_abi >= 1,
        "Landlock unavailable: the sandbox would refuse to run"
    );
    assert!(f.seccomp_available, "seccomp unavailable");
    assert!(
        f.unprivileged_userns,
        "unprivileged user namespaces disabled"
    );
}

#[test]
fn every_layer_enforced_and_reported() {
    let o = run_ok(&spec(&["hello"]));
    let r = &o.layers;
    eprintln!("{r}");
    for l in Layer::ALL {
        match l {
            Layer::Seccomp => assert!(matches!(r.get(l), Some(LayerState::Delegated { .. }))),
            Layer::CgroupV2 => assert!(matches!(r.get(l), Some(LayerState::NotAvailable { .. }))),
            _ => assert!(r.is_enforced(l), "{l} not enforced: {:?}", r.get(l)),
        }
    }
    let json = serde_json::to_string(r).unwrap();
    assert!(
        json.contains("\"landlock\":{\"state\":\"enforced\""),
        "{json}"
    );
    assert!("allow-weaker".parse::<Layer>().is_err());
    assert_eq!("landlock".parse::<Layer>().unwrap(), Layer::Landlock);
    assert_eq!("cgroup_v2".parse::<Layer>().unwrap(), Layer::CgroupV2);
}

#[test]
fn uid0_inside_but_host_root_files_untouchable() {
    let dir = std::fs::File::open("/var/lib").expect("open /var/lib");
    let mut s = spec(&["ids"]);
    s.pass_fds.push((OwnedFd::from(dir), 3));
    run_ok(&s);
    drop(s);
    assert!(
        !Path::new("/var/lib/jail-pwned").exists(),
        "file created in a host root directory"
    );
    let meta = std::fs::metadata("/var/lib").unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_ne!(meta.permissions().mode() & 0o777, 0o777);
}

#[test]
fn network_only_down_lo_and_host_sees_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    use std::os::linux::net::SocketAddrExt;
    let name = format!("jail-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let unix = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    unix.set_nonblocking(true).unwrap();
    run_ok(&spec(&["net", &port, &name]));
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("host listener saw something: {other:?}"),
    }
    match unix.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("host abstract socket saw something: {other:?}"),
    }
}

#[test]
fn filesystem_view_scratch_cap_and_noexec() {
    let p = probe();
    // Large enough to hold a copy of the (debug) probe binary for the noexec check.
    let cap = 32u64 << 20;
    // A host file the sandbox must not see.
    let marker = std::env::temp_dir().join(format!("jail-marker-{}", std::process::id()));
    std::fs::write(&marker, b"host secret").unwrap();
    let mut s = spec(&[
        "fs",
        p.to_str().unwrap(),
        &cap.to_string(),
        marker.to_str().unwrap(),
    ]);
    s.scratch = Some(ScratchSpec {
        path: "/scratch".into(),
        size_bytes: cap,
    });
    let before: BTreeSet<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    let o = run(&s);
    let _ = std::fs::remove_file(&marker);
    assert!(!o.stderr.contains("PROBE-FAIL"), "{}", o.stderr);
    assert_eq!(o.status, ExitStatus::Code(0), "{}", o.stderr);
    assert!(!o.stderr.contains("host secret"));
    assert!(!Path::new("/pwned").exists() && !Path::new("/dev/pwned").exists());
    assert!(!Path::new("/lib/pwned").exists());
    let after: BTreeSet<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    // Other tests may create files in /tmp concurrently; none may be named like the probe's.
    assert!(
        after.iter().all(|n| !n.to_string_lossy().contains("pwned")),
        "{before:?} -> {after:?}"
    );
}

#[test]
fn only_passed_fds_survive() {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let extra = std::fs::File::open("/dev/null").unwrap();
    // A deliberately inheritable fd in the supervisor: must not leak.
    // SAFETY: plain open of a constant path without O_CLOEXEC.
    let leaky = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    assert!(leaky >= 0);
    let mut s = spec(&["fds", "0", "1", "2", "3", "7"]);
    s.pass_fds.push((OwnedFd::from(a), 3));
    s.pass_fds.push((OwnedFd::from(extra), 7));
    run_ok(&s);
    drop(b);
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(leaky) };
}

#[test]
fn environment_is_exactly_the_spec() {
    let mut s = spec(&["env", "A=1", "B=two", "TMPDIR=/scratch"]);
    s.env = vec![("A".into(), "1".into()), ("B".into(), "two".into())];
    std::env::set_var("JAIL_SECRET_SHOULD_NOT_LEAK", "x");
    run_ok(&s);
}

#[test]
fn privileges_dropped() {
    run_ok(&spec(&["privs"]));
}

#[test]
fn signals_cannot_leave_the_sandbox() {
    let mut victim = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    run_ok(&spec(&["kill", &victim.id().to_string()]));
    assert!(
        victim.try_wait().unwrap().is_none(),
        "host process was killed from inside the sandbox"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn rlimits_applied() {
    let mut s = spec(&[
        "rlimits",
        "as=1073741824",
        "cpu=7",
        "fsize=2097152",
        "nofile=32",
        "nproc=50",
        "core=0",
        "data=536870912",
    ]);
    s.limits = Limits {
        address_space: Some(1 << 30),
        data: Some(512 << 20),
        cpu_seconds: Some(7),
        file_size: Some(2 << 20),
        nofile: Some(32),
        nproc: Some(50),
    };
    run_ok(&s);
}

/// As root the sandbox runs as host uid 65534, yet bind sources are opened with the caller's credentials:
/// a program inside a 0700 directory (like a CI checkout under a private temp dir) still works.
#[test]
fn binds_from_a_private_directory() {
    let dir = std::env::temp_dir().join(format!("jail-private-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let prog = dir.join("probe");
    std::fs::copy(probe(), &prog).unwrap();
    let mut s = spec(&["hello"]);
    s.program = prog.clone();
    // Concurrent spawns by other tests briefly hold a copy of every supervisor fd (until their stage 2 runs
    // close_range), including the copy's write fd: exec may see ETXTBSY for a moment.
    let mut tries = 0;
    let sb = loop {
        match spawn(&s) {
            Err(JailError::Exec(e)) if e.contains("Text file busy") && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other.unwrap_or_else(|e| panic!("{e}")),
        }
    };
    let stderr = read_capped(sb.stderr.try_clone().unwrap(), 1 << 20);
    let o = Outcome {
        status: sb.wait().unwrap(),
        stderr,
        layers: sb.layers.clone(),
    };
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status, ExitStatus::Code(0), "{}", o.stderr);
    assert!(o.stderr.contains("PROBE-OK"), "{}", o.stderr);
}

#[test]
fn noexec_binds_are_read_only_and_not_executable() {
    let dir = std::env::temp_dir().join(format!("jail-noexec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = dir.join("tool");
    std::fs::copy(probe(), &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut s = spec(&["noexec", target.to_str().unwrap()]);
    s.ro_noexec_paths.push(dir.clone());
    let o = run(&s);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!o.stderr.contains("PROBE-FAIL"), "{}", o.stderr);
    assert_eq!(o.status, ExitStatus::Code(0), "{}", o.stderr);
}

#[test]
fn stage2_executable_permissions_explained() {
    let dir = std::env::temp_dir().join(format!("jail-s2perm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let s2 = dir.join("stage2");
    let st = std::process::Command::new("cp")
        .arg(stage2_bin())
        .arg(&s2)
        .status()
        .unwrap();
    assert!(st.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&s2, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut s = spec(&["hello"]);
    s.stage2_exe = Some(s2);
    let r = spawn(&s);
    std::fs::remove_dir_all(&dir).unwrap();
    if euid() == 0 {
        match r {
            Err(JailError::Setup(m)) => assert!(m.contains("executable by others"), "{m}"),
            other => panic!("expected a Setup error, got {other:?}"),
        }
    } else {
        let sb = r.unwrap_or_else(|e| panic!("owner may execute its own stage 2: {e}"));
        assert_eq!(sb.wait().unwrap(), ExitStatus::Code(0));
    }
}

#[test]
fn rlimits_enforced() {
    let mut s = spec(&["enforce", "268435456", "12", "65536"]);
    s.limits.address_space = Some(256 << 20);
    s.limits.nproc = Some(12);
    s.limits.file_size = Some(65536);
    run_ok(&s);
}

#[test]
fn private_proc_shows_only_the_sandbox() {
    let mut s = spec(&["proc"]);
    s.proc = ProcMode::PrivatePidNs;
    run_ok(&s);
}

#[test]
fn ids_and_session() {
    let dir = std::fs::File::open("/usr").unwrap();
    let mut s = spec(&["ids"]);
    s.pass_fds.push((OwnedFd::from(dir), 3));
    run_ok(&s);
}

#[test]
fn killing_pid1_kills_grandchildren() {
    let sb = spawn(&spec(&["grandchild"])).unwrap_or_else(|e| panic!("{e}"));
    // Read until READY.
    let mut f = std::fs::File::from(sb.stderr.try_clone().unwrap());
    let mut buf = Vec::new();
    let mut b = [0u8; 256];
    while !String::from_utf8_lossy(&buf).contains("READY") {
        let n = f.read(&mut b).unwrap();
        assert!(n > 0, "probe died: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&b[..n]);
    }
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", sb.pid)).unwrap();
    let gc: i32 = children
        .split_whitespace()
        .next()
        .expect("a grandchild")
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{gc}")).exists());
    sb.kill().unwrap();
    assert_eq!(sb.wait().unwrap(), ExitStatus::Signal(libc::SIGKILL));
    let t = Instant::now();
    while Path::new(&format!("/proc/{gc}/status")).exists() {
        let st = std::fs::read_to_string(format!("/proc/{gc}/status")).unwrap_or_default();
        if st.is_empty() || st.contains("State:\tZ") || st.contains("State:\tX") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "grandchild {gc} survived pid 1:\n{st}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn fail_closed_when_a_layer_is_unavailable() {
    for layer in [
        Layer::Landlock,
        Layer::Capabilities,
        Layer::NetNs,
        Layer::Rlimits,
    ] {
        let mut s = spec(&["hello"]);
        s.test_simulate_unavailable.insert(layer);
        match spawn(&s) {
            Err(JailError::LayerUnavailable { layer: l, cause }) => {
                assert_eq!(l, layer);
                assert!(cause.contains("simulated"), "{cause}");
            }
            other => panic!("{layer}: expected LayerUnavailable, got {other:?}"),
        }
        s.allow_weaker.insert(layer);
        let o = run_ok(&s);
        match o.layers.get(layer) {
            Some(LayerState::Weakened { reason }) => assert!(reason.contains("simulated")),
            other => panic!("{layer}: expected Weakened, got {other:?}"),
        }
        assert!(o.layers.to_string().contains("WEAKENED"));
    }
}

#[test]
fn without_user_namespace_only_root_may_run_weaker() {
    let mut s = spec(&["hello"]);
    s.test_simulate_unavailable.insert(Layer::UserNs);
    assert!(matches!(
        spawn(&s),
        Err(JailError::LayerUnavailable {
            layer: Layer::UserNs,
            ..
        })
    ));
    s.allow_weaker.insert(Layer::UserNs);
    if euid() == 0 {
        let o = run_ok(&s);
        eprintln!("{}", o.layers);
        assert!(matches!(
            o.layers.get(Layer::UserNs),
            Some(LayerState::Weakened { .. })
        ));
        for l in [
            Layer::PidNs,
            Layer::MountNs,
            Layer::Landlock,
            Layer::Capabilities,
            Layer::NoNewPrivs,
        ] {
            assert!(o.layers.is_enforced(l), "{l}: {:?}", o.layers.get(l));
        }
    } else {
        match spawn(&s) {
            Err(JailError::LayerUnavailable {
                layer: Layer::UserNs,
                cause,
            }) => {
                assert!(cause.contains("only root"), "{cause}")
            }
            other => panic!("expected LayerUnavailable(UserNs), got {other:?}"),
        }
    }
}

#[test]
fn cgroup_v2_reported_honestly() {
    let facts = host_facts();
    let mut s = spec(&["hello"]);
    s.cgroup = Some(CgroupLimits {
        memory_max: Some(512 << 20),
        cpu_max: Some((100_000, 100_000)),
        pids_max: Some(64),
    });
    s.allow_weaker.clear();
    match (&facts.cgroup.v2_unavailable, spawn(&s)) {
        (
            Some(why),
            Err(JailError::LayerUnavailable {
                layer: Layer::CgroupV2,
                cause,
            }),
        ) => assert_eq!(why, &cause),
        (None, Ok(sb)) => assert!(sb.layers.is_enforced(Layer::CgroupV2)),
        (w, r) => panic!("inconsistent: host says {w:?}, spawn gave {r:?}"),
    }
    s.allow_weaker.insert(Layer::CgroupV2);
    let o = run_ok(&s);
    if let Some(why) = facts.cgroup.v2_unavailable {
        assert_eq!(
            o.layers.get(Layer::CgroupV2),
            Some(&LayerState::NotAvailable {
                reason: why.clone()
            })
        );
        eprintln!("cgroup v2: {why}");
    }
}

#[test]
fn exec_failure_and_bad_specs_are_errors() {
    let mut s = spec(&[]);
    s.program = "/etc/hostname".into();
    assert!(
        matches!(spawn(&s), Err(JailError::Exec(_))),
        "non-executable program must fail"
    );
    let mut s = spec(&[]);
    s.ro_paths.push("/nonexistent/jail-test".into());
    assert!(matches!(spawn(&s), Err(JailError::Setup(_))));
    let mut s = spec(&[]);
    s.ro_paths.push("relative/path".into());
    assert!(matches!(spawn(&s), Err(JailError::InvalidSpec(_))));
    let mut s = spec(&[]);
    s.pass_fds
        .push((OwnedFd::from(std::fs::File::open("/dev/null").unwrap()), 1));
    assert!(matches!(spawn(&s), Err(JailError::InvalidSpec(_))));
}

#[test]
fn spawner_thread_exit_kills_its_sandboxes() {
    let spawner = Spawner::new().unwrap();
    let sb = spawner
        .spawn(spec(&["pause"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sb.try_wait().unwrap(), None);
    drop(spawner);
    assert_eq!(sb.wait().unwrap(), ExitStatus::Signal(libc::SIGKILL));
}

/// Spawns from many threads at once while another thread keeps creating inheritable fds: every sandbox
/// still sees exactly its stdio.
#[test]
fn concurrent_spawns_from_many_threads() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: open/close of a constant path, deliberately without O_CLOEXEC.
                unsafe {
                    let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                    std::thread::yield_now();
                    libc::close(fd);
                }
            }
        })
    };
    let workers: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..4 {
                    run_ok(&spec(&["fds", "0", "1", "2"]));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("spawning thread panicked");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noise.join().unwrap();
}

#[test]
fn dedicated_stage2_binary_works() {
    let mut s = spec(&["hello"]);
    s.stage2_exe = Some(stage2_bin());
    let o = run_ok(&s);
    assert!(o.layers.is_enforced(Layer::Landlock));
    // Run directly, it refuses; a forged stage-2 invocation (not pid 1, no sealed spec) refuses too.
    let out = std::process::Command::new(stage2_bin()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(stage2_bin())
        .args([STAGE2_ARG, "0", "2"])
        .stdin(std::fs::File::open("/dev/null").unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(118));
}

#[test]
fn seccomp_hook_confirms_from_the_kernel_side() {
    let mut sb = spawn(&spec(&["seccomp-then-pause"])).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        sb.layers.get(Layer::Seccomp),
        Some(LayerState::Delegated { .. })
    ));
    let mut f = std::fs::File::from(sb.stderr.try_clone().unwrap());
    let mut buf = Vec::new();
    let mut b = [0u8; 256];
    while !String::from_utf8_lossy(&buf).contains("READY") {
        let n = f.read(&mut b).unwrap();
        assert!(n > 0, "probe died: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&b[..n]);
    }
    assert!(!String::from_utf8_lossy(&buf).contains("PROBE-FAIL"));
    assert_eq!(sb.seccomp_status().unwrap(), (2, 1));
    assert!(matches!(sb.confirm_seccomp(1), LayerState::Enforced { .. }));
    assert!(sb.layers.is_enforced(Layer::Seccomp));
    assert!(matches!(sb.confirm_seccomp(2), LayerState::Weakened { .. }));
    sb.kill().unwrap();
    sb.wait().unwrap();
}

#[test]
fn spawn_latency() {
    let s = spec(&["true"]);
    let mut times = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let sb = spawn(&s).unwrap_or_else(|e| panic!("{e}"));
        let confirmed = t.elapsed();
        assert_eq!(sb.wait().unwrap(), ExitStatus::Code(0));
        times.push((confirmed, t.elapsed()));
    }
    let mut c: Vec<Duration> = times.iter().map(|t| t.0).collect();
    let mut e: Vec<Duration> = times.iter().map(|t| t.1).collect();
    c.sort();
    e.sort();
    eprintln!(
        "spawn latency (uid {}): spawn-confirmed p50 {:?} p95 {:?}; spawn+exit p50 {:?} p95 {:?}",
        euid(),
        c[c.len() / 2],
        c[c.len() * 95 / 100],
        e[e.len() / 2],
        e[e.len() * 95 / 100]
    );
}

/// As root: run this whole test binary again as uid/gid 65534 (no capabilities), i.e. rootless.
#[test]
fn unprivileged_rerun() {
    if euid() != 0 {
        eprintln!(
            "already unprivileged (uid {}): this run is the rootless pass",
            euid()
        );
        return;
    }
    // Copy the binaries to a directory uid 65534 can reach. `cp` does the writing, so no write fd of the
    // copies ever sits in this (multi-threaded, concurrently spawning) process: no ETXTBSY later.
    let dir = std::env::temp_dir().join(format!("jail-rerun-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.join("sandbox-tests");
    for (src, dst) in [
        (std::env::current_exe().unwrap(), exe.clone()),
        (probe(), dir.join("jail-test-probe")),
        (stage2_bin(), dir.join("caffe-sandbox-jail-stage2")),
    ] {
        let st = std::process::Command::new("cp")
            .arg(&src)
            .arg(&dst)
            .status()
            .unwrap();
        assert!(st.success(), "cp {} failed", src.display());
    }
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(&exe)
        .args(["--skip", "unprivileged_rerun", "--test-threads=4"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("JAIL_TEST_BIN_DIR", &dir)
        .output()
        .expect("setpriv must be installed (util-linux)");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "--- unprivileged run ---\n{stdout}\n{}",
        stderr
            .lines()
            .filter(|l| l.contains("latency") || l.contains("panicked") || l.contains("FAIL"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.status.success(),
        "unprivileged run failed:\n{stdout}\n{stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("test result: ok."))
        .expect("test result line");
    let passed: u32 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(passed >= 15, "too few tests ran unprivileged: {line}");
}

/// A raw filter for [`SandboxSpec::exec_filter`]: `execve` goes to the listener, everything else is allowed.
fn notify_execve_filter() -> Vec<u8> {
    let insn = |code: u16, jt: u8, jf: u8, k: u32| {
        let mut v = code.to_ne_bytes().to_vec();
        v.extend([jt, jf]);
        v.extend(k.to_ne_bytes());
        v
    };
    [
        insn(0x20, 0, 0, 0),                            // ld [nr]
        insn(0x15, 0, 1, libc::SYS_execve as u32),      // jeq execve
        insn(0x06, 0, 0, libc::SECCOMP_RET_USER_NOTIF), // ret notify
        insn(0x06, 0, 0, libc::SECCOMP_RET_ALLOW),      // ret allow
    ]
    .concat()
}

/// Answers one notification from `listener` with "continue" and returns its syscall number.
fn continue_one(listener: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: plain data structures filled by the kernel; ioctl on the listener fd we own.
    unsafe {
        let mut req: libc::seccomp_notif = std::mem::zeroed();
        assert_eq!(
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut req
            ),
            0,
            "NOTIF_RECV: {}",
            std::io::Error::last_os_error()
        );
        let mut resp: libc::seccomp_notif_resp = std::mem::zeroed();
        resp.id = req.id;
        resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;
        assert_eq!(
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut resp
            ),
            0,
            "NOTIF_SEND: {}",
            std::io::Error::last_os_error()
        );
        req.data.nr
    }
}

#[test]
fn exec_filter_is_installed_before_execve_and_its_listener_handed_over() {
    let mut s = spec(&["hello"]);
    s.exec_filter = Some(ExecFilter {
        bpf: BpfSource::Ready(notify_execve_filter()),
        name: "test filter".into(),
    });
    let mut sb = spawn(&s).unwrap_or_else(|e| panic!("spawn failed: {e}"));
    let listener = sb.seccomp_listener.take().expect("listener handed over");
    assert!(
        sb.exec_pending.is_some(),
        "the execve must still be pending"
    );
    match sb.layers.get(Layer::Seccomp) {
        Some(LayerState::Enforced { detail }) => {
            assert!(detail.contains("test filter"), "{detail}")
        }
        other => panic!("seccomp layer: {other:?}"),
    }
    // Stage 2 is held at its execve until the listener answers: the probe has not run yet.
    std::thread::sleep(Duration::from_millis(50));
    assert!(sb.try_wait().unwrap().is_none());
    assert_eq!(continue_one(&listener), libc::SYS_execve as i32);
    sb.confirm_exec()
        .unwrap_or_else(|e| panic!("confirm_exec: {e}"));
    let stderr = read_capped(sb.stderr.try_clone().unwrap(), 1 << 20);
    assert_eq!(sb.wait().unwrap(), ExitStatus::Code(0), "{stderr}");
    assert!(stderr.contains("PROBE-OK"), "{stderr}");
}

#[test]
fn an_exec_filter_that_cannot_be_installed_fails_closed_unless_allowed() {
    let mut s = spec(&["hello"]);
    s.exec_filter = Some(ExecFilter {
        bpf: BpfSource::Ready(vec![0; 12]), // not a whole number of instructions: the kernel never sees it
        name: "broken filter".into(),
    });
    match spawn(&s) {
        Err(JailError::LayerUnavailable { layer, cause }) => {
            assert_eq!(layer, Layer::Seccomp);
            assert!(cause.contains("broken filter"), "{cause}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    s.allow_weaker.insert(Layer::Seccomp);
    let mut sb = spawn(&s).unwrap_or_else(|e| panic!("spawn failed: {e}"));
    assert!(sb.seccomp_listener.is_none() && sb.exec_pending.is_none());
    assert!(matches!(
        sb.layers.get(Layer::Seccomp),
        Some(LayerState::Weakened { .. })
    ));
    sb.confirm_exec().unwrap();
    let stderr = read_capped(sb.stderr.try_clone().unwrap(), 1 << 20);
    assert_eq!(sb.wait().unwrap(), ExitStatus::Code(0), "{stderr}");
}

#[test]
fn stage2_runs_in_the_clone_child_of_a_single_threaded_caller() {
    // The probe binary is single-threaded on the host; it spawns itself and checks the result.
    let out = std::process::Command::new(probe())
        .arg("spawn-single-threaded")
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("PROBE-FAIL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("PROBE-OK stage 2 in the clone child"),
        "{stderr}"
    );
}

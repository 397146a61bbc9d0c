//! The OCI tier on the real runtimes from Debian (crun, runc), as root on this hybrid-cgroup host:
//! * a probe program inside a bundle generated from the inference policy: forbidden syscalls are killed by the
//!   exported profile (death by SIGSYS), the filesystem is read-only, /dev/zero is masked;
//! * the real worker runs open_nsfw under crun and runc and matches the native tier;
//! * killing the process the supervisor holds takes the whole container down.
//!
//! These tests need root, crun and runc (`apt-get install -y crun runc`): they fail, never skip, without them.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caffe_sandbox_policy::export::oci::config;
use caffe_sandbox_policy::export::seccomp::envelope;
use caffe_sandbox_policy::export::Workload;
use caffe_sandbox_policy::oci_tier::{launch_worker, new_id, OciRunner, Runtime};
use caffe_sandbox_policy::SandboxPolicy;
use caffe_sandbox_supervisor::launch::shared_libraries;
use caffe_sandbox_supervisor::{Deadlines, Input, LaunchConfig, Layer, ModelBundle, Worker};

/// `probe` result for a death by SIGSYS.
const SIGSYS_DEATH: i32 = -libc::SIGSYS;

fn require_root() {
    // SAFETY: trivial getter.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the OCI-runtime tests run as root (runc/crun with cgroupfs)"
    );
}

fn runner(rt: Runtime) -> OciRunner {
    require_root();
    OciRunner::find(rt).unwrap_or_else(|e| panic!("{e}"))
}

fn cfg() -> LaunchConfig {
    let mut c = LaunchConfig::discover().expect(
        "caffe-sandbox-worker and the Caffe prefix (cargo build --workspace; scripts/setup)",
    );
    c.allow_weaker.insert(Layer::Landlock);
    // The native jail re-executes a binary that calls stage2_main_if_requested(): the CLI next to the worker.
    let cli = c.worker_exe.with_file_name("caffe-sandbox");
    assert!(
        cli.is_file(),
        "{} missing (cargo build -p caffe-sandbox)",
        cli.display()
    );
    c.stage2_exe = Some(cli);
    c
}

fn policy() -> SandboxPolicy {
    let mut p = SandboxPolicy::inference();
    p.allow_weaker.insert(Layer::Landlock);
    p
}

/// Runs the probe with `action` in a bundle made from the inference policy; returns (exit code, stdout).
fn probe(rt: Runtime, action: &str) -> (i32, String) {
    let r = runner(rt);
    let p = policy();
    let c = cfg();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_caffe-sandbox-oci-probe"));
    let w = Workload {
        program: exe.clone(),
        args: vec![action.to_string()],
        env: vec!["PATH=/nonexistent".into()],
        ro_files: shared_libraries(&exe, &c.caffe_prefix).expect("ldd of the probe"),
        ro_dirs: Vec::new(),
        ro_noexec_dirs: Vec::new(),
    };
    let mut o = r.options();
    o.nofile_floor = Some(w.binds().len() as u64 + 64);
    let doc = config(&p, &w, &envelope(&p).unwrap(), &o);
    let id = new_id();
    let bundle = r.write_bundle(&id, &doc, o.host_uid, o.host_gid).unwrap();
    let out = r
        .command(&bundle, &id, 0)
        .output()
        .expect("spawn the runtime");
    let _ = std::fs::remove_dir_all(&bundle);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // The runtime reports a container killed by signal N as exit code 128+N; the tier's outer wrapper turns
    // that back into a death by signal N, exactly what the native tier's worker would show.
    use std::os::unix::process::ExitStatusExt;
    let end = match (out.status.code(), out.status.signal()) {
        (Some(0), _) => 0,
        (None, Some(libc::SIGSYS)) => SIGSYS_DEATH,
        _ => panic!(
            "{} {action}: {:?}, stdout {stdout:?}, stderr {}",
            rt.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    };
    (end, stdout)
}

fn probe_battery(rt: Runtime) {
    assert_eq!(
        probe(rt, "ok"),
        (0, "OK ok".into()),
        "a plain Rust program must start under the envelope"
    );
    // Forbidden by the envelope: killed by SIGSYS, nothing printed.
    for action in ["socket-inet", "ptrace", "write-root", "write-scratch"] {
        assert_eq!(
            probe(rt, action),
            (SIGSYS_DEATH, String::new()),
            "{} {action}",
            rt.name()
        );
    }
    // Errno rule of the start-up set: AF_UNIX sockets fail with EACCES.
    assert_eq!(
        probe(rt, "socket-unix").1,
        format!("ERR {} Permission denied (os error 13)", libc::EACCES)
    );
    // No host files: /etc is not there at all.
    assert!(probe(rt, "read-etc")
        .1
        .starts_with(&format!("ERR {} ", libc::ENOENT)));
    // The runtime's default /dev/zero is masked by /dev/null: no endless data source.
    assert_eq!(probe(rt, "dev-zero").1, "OK read 0 bytes from /dev/zero");
}

#[test]
fn forbidden_syscalls_are_blocked_under_crun() {
    probe_battery(Runtime::Crun);
}

#[test]
fn forbidden_syscalls_are_blocked_under_runc() {
    probe_battery(Runtime::Runc);
}

fn sample() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/samples/chelsea.png");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (scripts/setup)", p.display()))
}

fn model() -> ModelBundle {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/open_nsfw");
    ModelBundle::from_dir(&dir, &Default::default()).expect("open_nsfw (scripts/setup)")
}

fn classify(mut w: Worker) -> (Vec<f32>, caffe_sandbox_supervisor::LayerReport) {
    w.load(&model()).expect("load open_nsfw");
    let out = w
        .infer(&[Input::Image {
            name: "data".into(),
            bytes: sample(),
        }])
        .expect("infer");
    let layers = w.layers();
    w.shutdown();
    (out.last().expect("an output").data.clone(), layers)
}

fn oci_matches_native(rt: Runtime) {
    let r = runner(rt);
    let c = cfg();
    let mut native_cfg = c.clone();
    native_cfg.allow_weaker.remove(&Layer::Landlock);
    let native =
        classify(Worker::start(&native_cfg, Deadlines::default()).expect("native worker")).0;
    let launched = launch_worker(&c, &policy(), &r).expect("OCI launch");
    let (oci, layers) =
        classify(Worker::start_launched(&c, Deadlines::default(), launched).expect("OCI worker"));
    assert_eq!(native.len(), 2);
    for (a, b) in native.iter().zip(&oci) {
        assert!(
            (a - b).abs() < 1e-6,
            "native {native:?} vs {} {oci:?}",
            rt.name()
        );
    }
    assert!(native[0] > 0.99, "chelsea.png is safe for work: {native:?}");
    let text = layers.to_string();
    assert!(text.contains(&format!("{} (OCI)", rt.name())), "{text}");
    assert!(
        layers.is_enforced(Layer::Seccomp)
            && layers.is_enforced(Layer::NetNs)
            && layers.is_enforced(Layer::CgroupV2),
        "{text}"
    );
    assert!(!layers.is_enforced(Layer::Landlock), "{text}");
}

#[test]
fn open_nsfw_under_crun_matches_native() {
    oci_matches_native(Runtime::Crun);
}

#[test]
fn open_nsfw_under_runc_matches_native() {
    oci_matches_native(Runtime::Runc);
}

fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

#[test]
fn killing_the_runtime_process_takes_the_container_down() {
    let r = runner(Runtime::Crun);
    let c = cfg();
    let launched = launch_worker(&c, &policy(), &r).expect("OCI launch");
    // Wait until the worker (a descendant: unshare -> sh/crun -> container) exists.
    let t0 = Instant::now();
    let worker_exe = c.worker_exe.canonicalize().unwrap();
    let find_worker = || {
        descendants(launched.sandbox.pid).into_iter().find(|p| {
            std::fs::read_link(format!("/proc/{p}/exe"))
                .map(|e| e == worker_exe)
                .unwrap_or(false)
        })
    };
    let worker = loop {
        if let Some(p) = find_worker() {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the worker never appeared under {}",
            launched.sandbox.pid
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let all = descendants(launched.sandbox.pid);
    assert!(all.contains(&worker));
    // crun applied the policy's cgroup limits through the v1 controllers (hybrid host, root).
    let cg = std::fs::read_to_string(format!("/proc/{worker}/cgroup")).unwrap();
    let path_of = |ctrl: &str| {
        cg.lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                ctrls
                    .split(',')
                    .any(|c| c == ctrl)
                    .then(|| path.to_string())
            })
            .unwrap_or_else(|| panic!("no {ctrl} cgroup in {cg}"))
    };
    let read = |ctrl: &str, file: &str| {
        let p = format!("/sys/fs/cgroup/{ctrl}{}/{file}", path_of(ctrl));
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .trim()
            .to_string()
    };
    assert!(path_of("memory").contains("caffe-sandbox-"), "{cg}");
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (2u64 << 30).to_string()
    );
    assert_eq!(read("pids", "pids.max"), "256");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "200000");
    launched.sandbox.kill().unwrap();
    launched.sandbox.wait().unwrap();
    let t1 = Instant::now();
    loop {
        // SAFETY: kill with signal 0 only checks existence.
        let alive: Vec<i32> = all
            .iter()
            .copied()
            .filter(|&p| unsafe { libc::kill(p, 0) } == 0 && !is_zombie(p))
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(5),
            "still alive after the runtime was killed: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn a_bundle_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mut r = runner(Runtime::Crun);
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    r.bundles = base.path().join("bundles");
    r.state_root = base.path().join("crun");
    let e = r
        .write_bundle("caffe-sandbox-test-0", &serde_json::json!({}), 0, 0)
        .unwrap_err();
    assert!(e.contains("writable by nobody else"), "{e}");
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = r
        .write_bundle("caffe-sandbox-test-0", &serde_json::json!({}), 0, 0)
        .unwrap();
    assert!(dir.join("config.json").is_file() && dir.join("rootfs").is_dir());
}

//! A Python layer (compiled into Debian's libcaffe1) importing a module shipped next to the model: with a
//! Python 3.9 standard library made reachable inside the sandbox for this test only (`extra_ro_paths`, bound
//! read-only and noexec; `PYTHONHOME`/`PYTHONPATH` in `extra_env`), the module really runs inside the real
//! worker at net construction, reports what it could do on stderr, then tries one harmful action. Each action
//! must be blocked (seccomp report naming the system call, or the errno it saw), the host unchanged, and no
//! host file content anywhere in the error or the stderr tail. Firewall OFF: the sandbox itself is tested.

use caffe_sandbox_supervisor::{Deadlines, Error, FirewallMode, LaunchConfig, ModelBundle, Worker};
use caffe_sandbox_testkit::{is_root, rerun_as_nobody, target_dir};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn world_dir(tag: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = std::env::temp_dir().join(format!("cs-pylayer-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

const MODULE: &str = r#"
import os, sys
def log(m):
    sys.stderr.write("PYPROBE " + m + "\n"); sys.stderr.flush()
log("running as uid %d pid %d" % (os.getuid(), os.getpid()))
for p in ["/etc/passwd", os.environ.get("PYPROBE_SECRET", "/nonexistent")]:
    try:
        with open(p) as f:
            data = f.read()
        log("READ %s (%d bytes)" % (p, len(data)))
    except OSError as e:
        log("read %s blocked errno=%d" % (p, e.errno))
try:
    os.listdir("/proc")
    log("LISTED /proc")
except OSError as e:
    log("listdir /proc blocked errno=%d" % e.errno)
action = os.environ.get("PYPROBE_ACTION", "")
log("action " + action)
if action == "write_host":
    with open(os.environ["PYPROBE_TARGET"], "w") as f:
        f.write("pwned")
elif action == "socket":
    import _socket  # built into Debian's libpython3.9 (the socket module's imports would trip on epoll first)
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.connect(("127.0.0.1", int(os.environ["PYPROBE_PORT"])))
elif action == "exec":
    os.execv("/bin/sh", ["sh", "-c", "echo pwned > " + os.environ["PYPROBE_TARGET"]])
elif action == "kill":
    os.kill(int(os.environ["PYPROBE_PID"]), 15)
elif action == "fork":
    os.fork()
log("ACTION RETURNED")

import caffe
class EvilLayer(caffe.Layer):
    pass
"#;

fn prototxt() -> &'static str {
    r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "evil" type: "Python" bottom: "data" top: "out" python_param { module: "evil_module" layer: "EvilLayer" } }
"#
}

fn run(action: &str, extra: &[(&str, String)]) -> Error {
    let cfg_base =
        LaunchConfig::discover().expect("launch config (scripts/setup, cargo build --workspace)");
    let prefix = cfg_base.caffe_prefix.clone();
    let stdlib = prefix.join("usr/lib/python3.9");
    assert!(
        stdlib.join("os.py").is_file(),
        "{} is missing: scripts/setup extracts bullseye's Python 3.9 standard library",
        stdlib.display()
    );
    let moddir = world_dir(&format!("mod-{action}"));
    std::fs::write(moddir.join("evil_module.py"), MODULE).unwrap();
    let model = world_dir(&format!("model-{action}"));
    std::fs::write(model.join("deploy.prototxt"), prototxt()).unwrap();
    std::fs::write(model.join("w.caffemodel"), b"").unwrap();
    let mut cfg = cfg_base;
    cfg.stage2_exe = Some(target_dir().join("caffe-sandbox-jail-stage2"));
    assert!(
        cfg.stage2_exe.as_deref().is_some_and(Path::is_file),
        "build the workspace (caffe-sandbox-jail-stage2)"
    );
    cfg.extra_ro_paths = vec![stdlib, moddir.clone()];
    cfg.extra_env = vec![
        ("PYTHONHOME".into(), prefix.join("usr").into()),
        ("PYTHONPATH".into(), moddir.clone().into()),
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ("PYPROBE_ACTION".into(), action.into()),
    ];
    for (k, v) in extra {
        cfg.extra_env.push(((*k).into(), v.into()));
    }
    let bundle = ModelBundle::from_dir_checked(&model, &Default::default(), &FirewallMode::Off)
        .expect("read the model");
    let deadlines = Deadlines {
        load: Duration::from_secs(20),
        ..Deadlines::default()
    };
    let mut w = Worker::start(&cfg, deadlines).expect("start the real worker");
    let err = w
        .load(&bundle)
        .expect_err("the hostile Python layer must not load");
    // The module must not have left compiled files next to itself either.
    let left: Vec<_> = std::fs::read_dir(&moddir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("evil_module.py")],
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&moddir);
    let _ = std::fs::remove_dir_all(&model);
    err
}

fn tail(e: &Error) -> String {
    match e {
        Error::Worker { stderr_tail, .. } => stderr_tail.clone(),
        _ => String::new(),
    }
}

#[test]
fn a_python_layer_really_runs_and_every_harmful_action_is_blocked() {
    python_layer_checks();
}

/// The same with an unprivileged supervisor (uid 65534, rootless sandbox through user namespaces).
#[test]
fn a_python_layer_is_contained_by_the_rootless_sandbox_too() {
    if !is_root() {
        eprintln!("already unprivileged: the test above was the rootless run");
        return;
    }
    rerun_as_nobody("python_layer_as_nobody");
}

#[test]
#[ignore = "run by a_python_layer_is_contained_by_the_rootless_sandbox_too as uid 65534"]
fn python_layer_as_nobody() {
    assert!(!is_root(), "must run unprivileged");
    python_layer_checks();
}

fn python_layer_checks() {
    let secret_dir = world_dir("secret");
    let secret = secret_dir.join("secret.txt");
    let marker = format!("CSPYSECRET{}", std::process::id());
    std::fs::write(&secret, &marker).unwrap();
    let target = secret_dir.join("written-by-python");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let common = [
        ("PYPROBE_SECRET", secret.display().to_string()),
        ("PYPROBE_TARGET", target.display().to_string()),
        ("PYPROBE_PORT", port.to_string()),
        ("PYPROBE_PID", sleeper.id().to_string()),
    ];
    let mut failures = Vec::new();
    for (action, syscall) in [
        ("write_host", "openat"),
        ("socket", "socket"),
        ("exec", "execve"),
        ("kill", "kill"),
        ("fork", "clone"),
    ] {
        let e = run(action, &common);
        let t = tail(&e);
        let all = format!("{e}\n{t}");
        // The module ran: its own report is in the stderr tail, with the reads it tried refused by the view.
        if !t.contains(&format!("PYPROBE action {action}")) {
            failures.push(format!("{action}: the module did not run:\n{all}"));
        }
        if !t.contains("PYPROBE read /etc/passwd blocked errno=2")
            || !t.contains(&format!(
                "PYPROBE read {} blocked errno=2",
                secret.display()
            ))
            || !t.contains("PYPROBE listdir /proc blocked errno=2")
        {
            failures.push(format!("{action}: host files were readable:\n{all}"));
        }
        if e.label() != "seccomp_violation"
            || !e.to_string().contains(&format!("system call {syscall} "))
        {
            failures.push(format!(
                "{action}: want a seccomp report of {syscall}, got [{}] {e}",
                e.label()
            ));
        }
        if t.contains("ACTION RETURNED") || all.contains(&marker) {
            failures.push(format!(
                "{action}: action returned or secret leaked:\n{all}"
            ));
        }
        if target.exists() {
            failures.push(format!("{action}: {} exists on the host", target.display()));
            let _ = std::fs::remove_file(&target);
        }
        if tcp.accept().is_ok() {
            failures.push(format!("{action}: the host listener accepted a connection"));
        }
        if sleeper.try_wait().unwrap().is_some() {
            failures.push(format!("{action}: the host process was signalled"));
        }
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let _ = std::fs::remove_dir_all(&secret_dir);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

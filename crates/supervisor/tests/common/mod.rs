//! Helpers shared by the supervisor's integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// target/<profile>: test binaries run from target/<profile>/deps.
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A workspace binary, or `examples/NAME`, below target/<profile>; fails the test when it is missing.
pub fn built(rel: &str) -> PathBuf {
    let p = target_dir().join(rel);
    assert!(
        p.is_file(),
        "{} is missing: build the workspace with its examples (cargo test --workspace does)",
        p.display()
    );
    p
}

pub fn is_root() -> bool {
    // SAFETY: trivial getter.
    unsafe { libc::geteuid() == 0 }
}

/// As root: re-runs the `#[ignore]`d test `name` of this test binary as uid/gid 65534 through setpriv — the
/// rootless path, user namespaces instead of root, with an unprivileged supervisor — and fails unless it
/// passed. Every directory up to the test binary must be world-accessible.
pub fn rerun_as_nobody(name: &str) {
    assert!(is_root(), "only root can re-run a test as uid 65534");
    let me = std::env::current_exe().unwrap();
    for dir in me.ancestors().skip(1) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).map(|m| m.permissions().mode());
        assert!(
            mode.is_ok_and(|m| m & 0o005 == 0o005),
            "{} is not world-accessible: the rootless rerun as uid 65534 cannot reach the test binary \
             (build in a world-readable checkout)",
            dir.display()
        );
        if dir == Path::new("/") {
            break;
        }
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&me)
        .args([
            "--exact",
            name,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HOME", "/nonexistent")
        .output()
        .expect("setpriv");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

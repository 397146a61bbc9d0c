//! Helpers shared by the workspace's integration tests (a dev-dependency only).
//!
//! The tests run the real binaries, the real libcaffe and the real open_nsfw model. A missing precondition
//! (workspace not built, `scripts/setup` not run) fails the test with a message naming the fix: nothing is
//! skipped.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// target/<profile>: integration-test binaries run from target/<profile>/deps.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
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

/// The open_nsfw model directory made by `scripts/setup`.
pub fn open_nsfw_dir() -> PathBuf {
    let p = repo().join(".cache/models/open_nsfw");
    assert!(
        p.join("resnet_50_1by2_nsfw.caffemodel").is_file(),
        "open_nsfw is missing at {}: run scripts/setup (these tests need the real model)",
        p.display()
    );
    p
}

/// A sample photo fetched by `scripts/setup` (e.g. `chelsea.png`).
pub fn sample(name: &str) -> PathBuf {
    let p = repo().join(".cache/samples").join(name);
    assert!(
        p.is_file(),
        "sample {} missing: run scripts/setup",
        p.display()
    );
    p
}

/// A fresh, empty, world-readable temporary directory (sandboxed workers run as an unprivileged uid), named
/// `cs-test-TAG-…` and removed with everything in it when the guard is dropped. It dereferences to its path;
/// keep the guard alive for as long as the directory is used (`tmpdir("x").join("f")` would remove the
/// directory at the end of the statement).
pub fn tmpdir(tag: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("cs-test-{tag}-"))
        .tempdir()
        .expect("create a temporary directory");
    set_mode(dir.path(), 0o755);
    TempDir(dir)
}

/// See [`tmpdir`].
#[derive(Debug)]
pub struct TempDir(tempfile::TempDir);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.path().as_os_str()
    }
}

/// chmod.
pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, p.display()));
}

/// Whether the test runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// As root: re-runs the `#[ignore]`d test `name` of this test binary as uid/gid 65534 through setpriv — the
/// rootless path, user namespaces instead of root, with an unprivileged supervisor — and fails unless it
/// passed. Every directory up to the test binary must be world-accessible.
pub fn rerun_as_nobody(name: &str) {
    assert!(is_root(), "only root can re-run a test as uid 65534");
    let me = std::env::current_exe().expect("own path");
    for dir in me.ancestors().skip(1) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).map(|m| m.permissions().mode());
        assert!(
            mode.is_ok_and(|m| m & 0o005 == 0o005),
            "{} is not world-accessible: the rootless rerun as uid 65534 cannot reach the test binary \
             (build in a world-readable checkout)",
            dir.display()
        );
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

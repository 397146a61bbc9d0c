//! Shared helpers for the integration tests: locating external artefacts.

#![allow(dead_code)]

use std::path::PathBuf;

/// The workspace root (two levels above this crate).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether we run under CI (`CI` set to anything but empty/"false"/"0").
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `path` if it exists; otherwise panic under CI, or print a skip note and return `None`.
pub fn require(path: PathBuf, what: &str, how: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let msg = format!("{what} not found at {} ({how})", path.display());
    if in_ci() {
        panic!("{msg}; under CI this is an error");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// The open_nsfw model directory (`$CAFFE_SANDBOX_MODELS/open_nsfw` or `<workspace>/.cache/models/open_nsfw`).
pub fn open_nsfw_dir() -> Option<PathBuf> {
    let base = std::env::var_os("CAFFE_SANDBOX_MODELS")
        .map_or_else(|| workspace().join(".cache/models"), PathBuf::from);
    require(
        base.join("open_nsfw"),
        "open_nsfw model",
        "run scripts/setup or set CAFFE_SANDBOX_MODELS",
    )
}

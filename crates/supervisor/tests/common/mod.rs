//! Helpers shared by the supervisor's integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::path::PathBuf;

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

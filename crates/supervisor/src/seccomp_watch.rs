//! The supervisor's side of the seccomp layer: compile the policy for the worker, and watch the
//! user-notification listener the worker hands back.
use crate::error::{Error, Result};
use crate::launch::LaunchConfig;
use std::os::fd::OwnedFd;

/// Compiles the worker's seccomp policy into a sealed memfd (handed to the worker at fd 4), or `None` when the
/// user explicitly allowed running without seccomp.
pub fn compiled_worker_filter(cfg: &LaunchConfig) -> Result<Option<OwnedFd>> {
    if !cfg.require_seccomp() {
        return Ok(None);
    }
    Err(Error::Sandbox(
        "seccomp layer unavailable in this build (refusing to run; allow it explicitly with --allow-weaker seccomp)"
            .into(),
    ))
}

/// Watches a worker's seccomp listener.
pub struct SeccompWatch;

impl SeccompWatch {
    /// Starts watching `listener`; violations kill the process behind `pidfd`.
    pub fn start(_listener: OwnedFd, _pidfd: OwnedFd) -> std::io::Result<SeccompWatch> {
        Err(std::io::Error::other(
            "seccomp monitor unavailable in this build",
        ))
    }

    /// Tells the monitor which phase the worker is in (the supervisor's own state).
    pub fn set_phase(&self, _phase: &str) {}

    /// The first violation seen: (syscall, arch, phase).
    pub fn first_violation(&self) -> Option<(String, String, String)> {
        None
    }
}

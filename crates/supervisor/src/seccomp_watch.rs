//! The supervisor's side of the seccomp layer: compile the reviewed policy (policies/seccomp/worker.json) for
//! one worker, hand the programs over as a sealed memfd, and watch the user-notification listener the worker
//! returns. Violations are learned from the kernel (the notification carries the syscall number and arch),
//! never from the worker's word.
use crate::error::{Error, Result};
use crate::launch::LaunchConfig;
use caffe_sandbox_seccomp::{
    compile_bundle, sealed_memfd, Monitor, MonitorOptions, Phase, Policy, ResolvedPolicy, Vars,
};
use std::os::fd::OwnedFd;
use std::time::Duration;

/// The worker's pid inside its pid namespace: it is always pid 1 (see crates/jail).
const WORKER_TGID_IN_NS: u32 = 1;

/// Compiles the worker's seccomp policy into a sealed memfd (handed to the worker at fd 4), or `None` when the
/// user explicitly allowed running without seccomp.
pub fn compiled_worker_filter(cfg: &LaunchConfig) -> Result<Option<(OwnedFd, ResolvedPolicy)>> {
    if !cfg.require_seccomp() {
        return Ok(None);
    }
    let policy = match &cfg.seccomp_policy {
        Some(path) => Policy::load(path)
            .map_err(|e| Error::Sandbox(format!("seccomp policy {}: {e}", path.display())))?,
        None => Policy::worker(),
    };
    let resolved = policy
        .resolve(&Vars {
            worker_tgid: Some(WORKER_TGID_IN_NS),
        })
        .map_err(|e| Error::Sandbox(format!("seccomp policy: {e}")))?;
    let bundle = compile_bundle(&resolved).map_err(|e| {
        Error::Sandbox(format!(
            "seccomp layer unavailable: cannot compile the policy ({e}); refusing to run (allow it explicitly with \
             --allow-weaker seccomp)"
        ))
    })?;
    let fd = sealed_memfd(&bundle.to_bytes())
        .map_err(|e| Error::Sandbox(format!("seccomp program memfd: {e}")))?;
    Ok(Some((fd, resolved)))
}

/// Watches a worker's seccomp listener.
pub struct SeccompWatch {
    monitor: Monitor,
}

impl SeccompWatch {
    /// Starts watching `listener`; a violation kills the process behind `pidfd` at once.
    pub fn start(
        listener: OwnedFd,
        pidfd: OwnedFd,
        policy: ResolvedPolicy,
    ) -> std::io::Result<SeccompWatch> {
        let opts = MonitorOptions {
            pidfd: Some(pidfd),
            ..MonitorOptions::default()
        };
        Ok(SeccompWatch {
            monitor: Monitor::start(listener, policy, opts)?,
        })
    }

    /// Tells the monitor which phase the worker is in (the supervisor's own state).
    pub fn set_phase(&self, phase: &str) {
        self.monitor.set_phase(if phase == "inference" {
            Phase::Inference
        } else {
            Phase::Load
        });
    }

    /// The first violation seen: (syscall, arch, phase, detail). Waits briefly, because the worker's death (which the
    /// caller saw) can race with the monitor thread recording the notification that caused it.
    pub fn first_violation(&self) -> Option<(String, String, String, String)> {
        self.monitor
            .wait_violation(Duration::from_millis(100))
            .map(|v| {
                let detail = format!("{}; args {:#x?}", v.reason, v.args);
                (
                    v.syscall.clone(),
                    v.arch.clone(),
                    v.phase.to_string(),
                    detail,
                )
            })
    }
}

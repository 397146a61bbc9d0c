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

/// The worker's pid inside its pid namespace: it is always pid 1 (see crates/jail), except for workers forked
/// by a fork server (see [`compiled_worker_filter_for`]).
const WORKER_TGID_IN_NS: u32 = 1;

/// Compiles the worker's seccomp policy into a sealed memfd (handed to the worker at fd 4), or `None` when the
/// user explicitly allowed running without seccomp.
pub fn compiled_worker_filter(cfg: &LaunchConfig) -> Result<Option<(OwnedFd, ResolvedPolicy)>> {
    if !cfg.require_seccomp() {
        return Ok(None);
    }
    compiled_worker_filter_for(cfg, WORKER_TGID_IN_NS).map(Some)
}

/// Compiles the worker's seccomp policy with its own-process pins (kill/tgkill) set to `tgid_in_ns`, the
/// worker's pid inside its pid namespace.
pub fn compiled_worker_filter_for(
    cfg: &LaunchConfig,
    tgid_in_ns: u32,
) -> Result<(OwnedFd, ResolvedPolicy)> {
    let policy = match &cfg.seccomp_policy {
        Some(path) => Policy::load(path)
            .map_err(|e| Error::Sandbox(format!("seccomp policy {}: {e}", path.display())))?,
        None => Policy::worker(),
    };
    let resolved = policy
        .resolve(&Vars {
            worker_tgid: Some(tgid_in_ns),
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
    Ok((fd, resolved))
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

/// The kernel's view of a worker's seccomp state over **every** thread (`/proc/<pid>/task/<tid>/status`), read
/// from the supervisor side. The main thread alone is not enough: a worker that installed its listener filter
/// without `SECCOMP_FILTER_FLAG_TSYNC`, or on one thread only, still hands over a genuine listener while its
/// other threads (OpenBLAS's) run unfiltered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSeccomp {
    /// Threads read.
    pub threads: usize,
    /// The smallest `Seccomp_filters:` count over the threads in filter mode.
    pub min_filters: u32,
    /// Host tids of threads not in filter mode (`Seccomp:` other than 2), with their mode.
    pub unfiltered: Vec<(i32, u32)>,
}

/// Reads [`KernelSeccomp`] for `pid` (threads that exit while being read are skipped).
pub fn kernel_seccomp(pid: i32) -> std::io::Result<KernelSeccomp> {
    let mut state = KernelSeccomp {
        threads: 0,
        min_filters: u32::MAX,
        unfiltered: Vec::new(),
    };
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let status = match std::fs::read_to_string(entry.path().join("status")) {
            Ok(s) => s,
            Err(e)
                if e.raw_os_error() == Some(libc::ENOENT)
                    || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        let (Some(mode), Some(filters)) = (field("Seccomp:"), field("Seccomp_filters:")) else {
            return Err(std::io::Error::other(format!(
                "/proc/{pid}/task/{tid}/status has no Seccomp fields"
            )));
        };
        state.threads += 1;
        if mode == 2 {
            state.min_filters = state.min_filters.min(filters);
        } else {
            state.unfiltered.push((tid, mode));
        }
    }
    if state.threads == 0 {
        return Err(std::io::Error::other(format!(
            "/proc/{pid}/task lists no thread"
        )));
    }
    if state.min_filters == u32::MAX {
        state.min_filters = 0;
    }
    Ok(state)
}

/// Confirms the seccomp layer from the kernel's side: every thread of the worker `pid` (host pid) in filter mode
/// with at least `min_filters` filters — 1 after `Hello` (the listener filter), 2 after `Loaded` (plus the stacked
/// inference filter). Returns the layer state to report: `Enforced` with what the kernel said, else `Weakened`
/// with the reason (the caller fails closed unless the user allowed a weaker seccomp layer).
pub fn confirm_from_kernel(
    pid: i32,
    min_filters: u32,
    policy_name: &str,
) -> caffe_sandbox_jail::LayerState {
    use caffe_sandbox_jail::LayerState;
    match kernel_seccomp(pid) {
        Ok(k) if k.unfiltered.is_empty() && k.min_filters >= min_filters => LayerState::enforced(format!(
            "{policy_name}; kernel: filter mode on all {} thread(s), >= {} filter(s) each; violations reported \
             through the user-notification listener",
            k.threads, k.min_filters
        )),
        Ok(k) if !k.unfiltered.is_empty() => LayerState::weakened(format!(
            "kernel: {} of {} thread(s) not in seccomp filter mode (tid, mode): {:?}",
            k.unfiltered.len(),
            k.threads,
            k.unfiltered
        )),
        Ok(k) => LayerState::weakened(format!(
            "kernel: only {} filter(s) on some thread, expected >= {min_filters}",
            k.min_filters
        )),
        Err(e) => LayerState::weakened(format!("cannot read the worker's seccomp state: {e}")),
    }
}

//! seccomp-bpf for caffe-sandbox: the worker's system-call allowlist as a
//! reviewed data file, its compilation to BPF, the supervisor's
//! user-notification monitor and the worker-side installation.
//!
//! # Flow
//! 1. Supervisor: [`prepare`]`(&`[`Policy::worker`]`(), &`[`Vars`]`{ worker_tgid })`
//!    = [`Policy::resolve`] (per-worker variables such as the worker's tgid
//!    as it sees itself) → [`compile::listener_filter`] and
//!    [`compile::inference_filter`] → [`FilterBundle`] → [`sealed_memfd`],
//!    passed to the worker as fd 4.
//! 2. Worker (this crate with `default-features = false`): [`read_bundle`],
//!    then after library/Caffe initialisation
//!    [`install_filter_with_listener`]; sends the listener fd in `Hello` and
//!    closes its copy. After the model is loaded: [`install_filter`] with the
//!    inference program.
//! 3. Supervisor: [`Monitor::start`] with the received listener; after
//!    `Loaded`, [`Monitor::set_phase`]`(`[`Phase::Inference`]`)` before the
//!    first request. Violations: [`Monitor::violations`] /
//!    [`Monitor::wait_violation`]; a worker killed by `SIGSYS` died in the
//!    kernel (inference filter or foreign ABI): [`SIGSYS_CAUSE`].
//!
//! # Features
//! * `compile` (default): policy parsing, libseccomp compilation, monitor,
//!   strace profiler. Needs libseccomp (Debian `libseccomp-dev`).
//! * without it: only [`install`] and [`memfd`] (libc only), for the worker.

#[cfg(feature = "compile")]
pub mod compile;
#[cfg(feature = "compile")]
pub mod consts;
pub mod install;
pub mod memfd;
#[cfg(feature = "compile")]
pub mod monitor;
#[cfg(feature = "compile")]
pub mod phased;
#[cfg(feature = "compile")]
pub mod policy;
#[cfg(feature = "compile")]
pub mod profile;

pub use install::{
    ensure_no_new_privs, install_filter, install_filter_with_listener, seccomp_status,
};
pub use memfd::{read_bundle, read_sealed, sealed_memfd, FilterBundle};

#[cfg(feature = "compile")]
pub use compile::{inference_filter, listener_filter, CompileError};
#[cfg(feature = "compile")]
pub use monitor::{
    GateEvent, Monitor, MonitorOptions, MonitorReport, Phase, Violation, SIGSYS_CAUSE,
};
#[cfg(feature = "compile")]
pub use phased::{PhasedDiff, PhasedProfile};
#[cfg(feature = "compile")]
pub use policy::{Action, Policy, PolicyError, ResolvedPolicy, Vars, Verdict};
#[cfg(feature = "compile")]
pub use profile::{
    profile_from_strace, split_strace_at, strace_timestamp, ProfileDiff, ProfiledSyscalls,
};

/// Everything the supervisor needs for one worker: the resolved policy (for
/// the [`Monitor`]), the compiled programs, and the sealed memfd holding them
/// (close-on-exec: dup it onto the worker's `--seccomp-fd`).
#[cfg(feature = "compile")]
#[derive(Debug)]
pub struct PreparedFilters {
    /// Give this to [`Monitor::start`].
    pub policy: ResolvedPolicy,
    /// The compiled programs.
    pub bundle: FilterBundle,
    /// [`FilterBundle::to_bytes`] in a sealed memfd.
    pub memfd: std::os::fd::OwnedFd,
}

/// Why [`prepare`] failed.
#[cfg(feature = "compile")]
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The policy file is invalid or a variable is missing.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// libseccomp refused the policy (or seccomp is unavailable).
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Creating the memfd failed.
    #[error("seccomp memfd: {0}")]
    Io(#[from] std::io::Error),
}

/// Resolves, compiles and seals `policy` for one worker (`run` uses only
/// `bundle.listener`, which the jail's stage 2 installs before `execve`).
#[cfg(feature = "compile")]
pub fn prepare(policy: &Policy, vars: &Vars) -> Result<PreparedFilters, PrepareError> {
    let resolved = policy.resolve(vars)?;
    let bundle = compile_bundle(&resolved)?;
    let memfd = sealed_memfd(&bundle.to_bytes())?;
    Ok(PreparedFilters {
        policy: resolved,
        bundle,
        memfd,
    })
}

/// Compiles `policy` for one worker into the bundle the worker installs.
#[cfg(feature = "compile")]
pub fn compile_bundle(policy: &ResolvedPolicy) -> Result<FilterBundle, CompileError> {
    Ok(FilterBundle {
        listener: listener_filter(policy)?,
        inference: inference_filter(policy)?,
    })
}

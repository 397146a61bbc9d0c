//! seccomp-bpf for caffe-sandbox: the worker's system-call allowlist as a
//! reviewed data file, its compilation to BPF, the supervisor's
//! user-notification monitor and the worker-side installation.
//!
//! # Flow
//! 1. Supervisor: [`Policy::worker`] → [`Policy::resolve`] (per-worker
//!    variables such as the worker's tgid) → [`compile::listener_filter`] and
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
pub use policy::{Action, Policy, PolicyError, ResolvedPolicy, Vars, Verdict};
#[cfg(feature = "compile")]
pub use profile::{profile_from_strace, ProfileDiff, ProfiledSyscalls};

/// Compiles `policy` for one worker into the bundle the worker installs.
#[cfg(feature = "compile")]
pub fn compile_bundle(policy: &ResolvedPolicy) -> Result<FilterBundle, CompileError> {
    Ok(FilterBundle {
        listener: listener_filter(policy)?,
        inference: inference_filter(policy)?,
    })
}

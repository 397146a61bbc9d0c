//! Installing the seccomp programs the supervisor compiled (a sealed memfd at `--seccomp-fd`): the listener
//! filter right after initialisation, before any model byte; the tighter listener-less inference filter after
//! the model is loaded.
use caffe_sandbox_seccomp::{
    install_filter, install_filter_with_listener, read_bundle, FilterBundle,
};
use std::os::fd::{FromRawFd, OwnedFd};

/// The inference-phase program, kept until the model is loaded.
pub struct PendingInferenceFilter(Vec<u8>);

impl PendingInferenceFilter {
    /// Stacks the inference-phase filter (violations kill the process with SIGSYS).
    pub fn install(self) -> Result<(), String> {
        install_filter(&self.0).map_err(|e| format!("inference-phase seccomp filter: {e}"))
    }
}

/// Reads the bundle from `fd` (closing it), installs the listener filter on every thread and returns the
/// listener (to be sent to the supervisor, then closed) and the inference program for later.
pub fn install_from_fd(fd: i32) -> Result<(OwnedFd, PendingInferenceFilter), String> {
    // SAFETY: the supervisor hands the bundle over at this fd number; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let FilterBundle {
        listener,
        inference,
    } = read_bundle(&fd).map_err(|e| format!("reading the programs: {e}"))?;
    drop(fd);
    let l = install_filter_with_listener(&listener).map_err(|e| format!("listener filter: {e}"))?;
    Ok((l, PendingInferenceFilter(inference)))
}

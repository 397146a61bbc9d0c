//! Exit codes (documented in the README): stable, one per class of outcome.
use caffe_sandbox_supervisor::Error;

/// Everything worked.
pub const OK: i32 = 0;
// 2: command-line usage error (clap's own exit code).
/// The model was refused: unreadable files, bad model.toml, firewall findings, Caffe could not build it.
pub const BAD_MODEL: i32 = 3;
/// An input was refused (unreadable, not an image, wrong shape); other inputs were still processed.
pub const BAD_INPUT: i32 = 4;
/// The sandbox could not be set up as required (a layer unavailable: fail closed).
pub const SANDBOX: i32 = 5;
/// The worker failed: crash signal, CHECK failure, seccomp violation, memory/CPU limit, timeout, protocol.
pub const WORKER: i32 = 6;
/// The installation is incomplete (worker binary or Caffe prefix missing: run scripts/setup).
pub const SETUP: i32 = 7;

/// The exit code for an error.
pub fn code_for(e: &Error) -> i32 {
    match e {
        Error::File { .. }
        | Error::FileTooLarge { .. }
        | Error::ModelConfig(_)
        | Error::Firewall(_) => BAD_MODEL,
        Error::BadModel { .. } => BAD_MODEL,
        Error::BadInput { .. } => BAD_INPUT,
        Error::Sandbox(_) => SANDBOX,
        Error::Worker { .. } => WORKER,
        Error::Setup(_) => SETUP,
    }
}

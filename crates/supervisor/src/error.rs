//! The typed errors every caller (CLI, server, library users) gets. Each names the file, the layer or the limit
//! involved; text that came from the worker is sanitized before it is stored here.
use std::path::PathBuf;

/// Why a worker stopped, as learned by the supervisor without the worker's cooperation (wait status, its own
/// timers, the seccomp monitor) and, where available, from the worker's own report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum WorkerFailure {
    /// The seccomp filter stopped a system call (reported by the kernel through the user-notification listener,
    /// or by a SIGSYS death under the listener-less inference-phase filter).
    SeccompViolation {
        syscall: String,
        arch: String,
        phase: String,
        detail: String,
    },
    /// The worker exceeded its address-space limit (allocation failed) or was killed for memory.
    MemoryLimit {
        limit_bytes: Option<u64>,
        detail: String,
    },
    /// RLIMIT_CPU (SIGXCPU / SIGKILL after the soft limit).
    CpuLimit { limit_seconds: u64 },
    /// The supervisor's wall-clock deadline expired; the worker was killed.
    Timeout { phase: String, limit_ms: u64 },
    /// A Caffe CHECK failed (glog FATAL).
    CaffeCheckFailed { message: String },
    /// Killed by a signal (SIGSEGV, SIGFPE, SIGBUS, SIGILL, SIGABRT, …).
    Crashed { signal: i32, signal_name: String },
    /// Exited without answering the pending request.
    ExitedWithoutAnswer { code: i32 },
    /// Broke the protocol (malformed frame, wrong id, unexpected fds, bad tensor…): treated as hostile.
    ProtocolViolation { detail: String },
}

impl std::fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerFailure::SeccompViolation {
                syscall,
                arch,
                phase,
                detail,
            } => write!(
                f,
                "seccomp violation: system call {syscall} ({arch}) blocked in the {phase} phase ({detail})"
            ),
            WorkerFailure::MemoryLimit {
                limit_bytes: Some(l),
                detail,
            } => {
                write!(f, "memory limit of {} MiB exceeded ({detail})", l >> 20)
            }
            WorkerFailure::MemoryLimit {
                limit_bytes: None,
                detail,
            } => write!(f, "memory limit exceeded ({detail})"),
            WorkerFailure::CpuLimit { limit_seconds } => {
                write!(f, "CPU time limit of {limit_seconds} s exceeded")
            }
            WorkerFailure::Timeout { phase, limit_ms } => {
                write!(
                    f,
                    "wall-clock deadline of {limit_ms} ms exceeded during {phase}; worker killed"
                )
            }
            WorkerFailure::CaffeCheckFailed { message } => {
                write!(f, "Caffe CHECK failed: {message}")
            }
            WorkerFailure::Crashed {
                signal,
                signal_name,
            } => {
                write!(f, "worker crashed with signal {signal} ({signal_name})")
            }
            WorkerFailure::ExitedWithoutAnswer { code } => {
                write!(f, "worker exited with code {code} without answering")
            }
            WorkerFailure::ProtocolViolation { detail } => {
                write!(f, "worker broke the protocol: {detail}")
            }
        }
    }
}

impl WorkerFailure {
    /// A short stable label for metrics and the audit log.
    pub fn label(&self) -> &'static str {
        match self {
            WorkerFailure::SeccompViolation { .. } => "seccomp_violation",
            WorkerFailure::MemoryLimit { .. } => "memory_limit",
            WorkerFailure::CpuLimit { .. } => "cpu_limit",
            WorkerFailure::Timeout { .. } => "timeout",
            WorkerFailure::CaffeCheckFailed { .. } => "caffe_check_failed",
            WorkerFailure::Crashed { .. } => "crashed",
            WorkerFailure::ExitedWithoutAnswer { .. } => "exited_without_answer",
            WorkerFailure::ProtocolViolation { .. } => "protocol_violation",
        }
    }
}

/// Every error the supervisor returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model or input file could not be read.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A model or input file is larger than its cap.
    #[error("{}: {size} bytes is larger than the limit of {limit} bytes", path.display())]
    FileTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// model.toml, labels or another model-side file is invalid.
    #[error("{0}")]
    ModelConfig(#[from] caffe_sandbox_preprocess::Error),
    /// The model firewall refused the model.
    #[error("model refused by the firewall: {0}")]
    Firewall(String),
    /// The worker rejected the model (Caffe could not build it); `layer` when known.
    #[error("bad model{}: {message}", layer.as_ref().map(|l| format!(" (layer '{l}')")).unwrap_or_default())]
    BadModel {
        message: String,
        layer: Option<String>,
    },
    /// The worker rejected an input.
    #[error("bad input{}: {message}", input.as_ref().map(|i| format!(" '{i}'")).unwrap_or_default())]
    BadInput {
        message: String,
        input: Option<String>,
    },
    /// The worker failed; the cause is known to the supervisor.
    #[error("{failure}")]
    Worker {
        failure: WorkerFailure,
        stderr_tail: String,
    },
    /// A sandbox layer could not be applied (fail closed), or the sandbox could not be set up.
    #[error("sandbox: {0}")]
    Sandbox(String),
    /// The worker binary or the Caffe prefix could not be found.
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// A short stable label for metrics, the audit log and exit codes.
    pub fn label(&self) -> &'static str {
        match self {
            Error::File { .. } | Error::FileTooLarge { .. } => "file",
            Error::ModelConfig(_) => "model_config",
            Error::Firewall(_) => "firewall",
            Error::BadModel { .. } => "bad_model",
            Error::BadInput { .. } => "bad_input",
            Error::Worker { failure, .. } => failure.label(),
            Error::Sandbox(_) => "sandbox",
            Error::Setup(_) => "setup",
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! A running worker process as the supervisor sees it: a pidfd (race-free wait and kill, even if the pid is
//! reused), a bounded stderr collector, and the classification of how it ended.
use crate::error::WorkerFailure;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use caffe_sandbox_protocol::exit_code;

/// Keeps the last `cap` bytes a worker wrote to stderr, counting the rest, on its own thread.
pub struct StderrCollector {
    tail: Arc<Mutex<(Vec<u8>, u64)>>,
    thread: Option<JoinHandle<()>>,
}

impl StderrCollector {
    /// Default bytes kept.
    pub const DEFAULT_CAP: usize = 16 * 1024;

    /// Starts reading `pipe` until EOF.
    pub fn start(pipe: OwnedFd, cap: usize) -> StderrCollector {
        let tail = Arc::new(Mutex::new((Vec::new(), 0u64)));
        let t = tail.clone();
        let thread = std::thread::Builder::new()
            .name("worker-stderr".into())
            .spawn(move || {
                let mut f = std::fs::File::from(pipe);
                let mut buf = [0u8; 8192];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut g = t.lock().unwrap_or_else(|e| e.into_inner());
                            g.1 += n as u64;
                            g.0.extend_from_slice(&buf[..n]);
                            if g.0.len() > cap {
                                let cut = g.0.len() - cap;
                                g.0.drain(..cut);
                            }
                        }
                    }
                }
            })
            .ok();
        StderrCollector { tail, thread }
    }

    /// The kept tail, sanitized (control characters and terminal escapes removed), and the total byte count.
    pub fn snapshot(&self) -> (String, u64) {
        let g = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&g.0);
        (caffe_sandbox_protocol::sanitize_text(&text), g.1)
    }

    /// Waits for EOF (all writers gone) and returns the tail.
    pub fn finish(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.snapshot().0
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

/// Accessors in the style of `std::os::unix::process::ExitStatusExt`.
pub trait ExitStatusExt {
    /// The exit code, if the process exited.
    fn code(&self) -> Option<i32>;
    /// The signal, if a signal killed the process.
    fn signal(&self) -> Option<i32>;
}

impl ExitStatusExt for ExitStatus {
    fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(*c),
            ExitStatus::Signaled(_) => None,
        }
    }
    fn signal(&self) -> Option<i32> {
        match self {
            ExitStatus::Signaled(s) => Some(*s),
            ExitStatus::Exited(_) => None,
        }
    }
}

impl From<caffe_sandbox_jail::ExitStatus> for ExitStatus {
    fn from(s: caffe_sandbox_jail::ExitStatus) -> Self {
        match s {
            caffe_sandbox_jail::ExitStatus::Code(c) => ExitStatus::Exited(c),
            caffe_sandbox_jail::ExitStatus::Signal(s) => ExitStatus::Signaled(s),
        }
    }
}

/// The conventional name of a signal number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGFPE => "SIGFPE",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGSYS => "SIGSYS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// What the supervisor knows when it classifies an ended worker.
pub struct EndFacts<'a> {
    pub status: ExitStatus,
    /// Set when the supervisor itself killed the worker (deadline), with the phase and limit.
    pub killed_for_timeout: Option<(&'a str, u64)>,
    /// The first seccomp violation the monitor recorded: (syscall, arch, phase, detail).
    pub seccomp: Option<(String, String, String, String)>,
    /// The CHECK-failure message the worker sent before exiting, if any.
    pub check_message: Option<String>,
    pub stderr_tail: &'a str,
    pub cpu_limit_seconds: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
}

/// Decides why a worker ended. Facts the supervisor established itself (its own kill, the kernel's seccomp
/// notification, the wait status) take precedence over anything the worker said.
pub fn classify(f: &EndFacts<'_>) -> WorkerFailure {
    if let Some((phase, limit_ms)) = f.killed_for_timeout {
        return WorkerFailure::Timeout {
            phase: phase.to_string(),
            limit_ms,
        };
    }
    if let Some((syscall, arch, phase, detail)) = &f.seccomp {
        return WorkerFailure::SeccompViolation {
            syscall: syscall.clone(),
            arch: arch.clone(),
            phase: phase.clone(),
            detail: detail.clone(),
        };
    }
    let memory = |detail: &str| WorkerFailure::MemoryLimit {
        limit_bytes: f.memory_limit_bytes,
        detail: detail.into(),
    };
    // How an allocation failure under RLIMIT_AS shows: libstdc++ (bad_alloc), Caffe's CaffeMallocHost CHECK
    // ("host allocation of size N failed"), Rust's alloc error handler ("memory allocation of N bytes failed").
    let oom_marker = |s: &str| {
        s.contains("std::bad_alloc")
            || s.contains("Cannot allocate memory")
            || (s.contains("host allocation of size") && s.contains("failed"))
            || s.contains("memory allocation of")
    };
    let oom_text = f
        .check_message
        .as_deref()
        .filter(|m| oom_marker(m))
        .or_else(|| f.stderr_tail.lines().rev().find(|l| oom_marker(l)))
        .map(|l| l.chars().take(300).collect::<String>());
    match f.status {
        ExitStatus::Signaled(libc::SIGSYS) => WorkerFailure::SeccompViolation {
            syscall: "unknown (SIGSYS from a listener-less filter: the inference-phase filter, or an OCI runtime's static profile)".into(),
            arch: "x86_64".into(),
            phase: "inference".into(),
            detail: caffe_sandbox_seccomp::SIGSYS_CAUSE.into(),
        },
        ExitStatus::Signaled(libc::SIGXCPU) => WorkerFailure::CpuLimit {
            limit_seconds: f.cpu_limit_seconds.unwrap_or(0),
        },
        ExitStatus::Signaled(libc::SIGKILL)
            if f.cpu_limit_seconds.is_some() && f.stderr_tail.is_empty() =>
        {
            // RLIMIT_CPU's hard limit ends in SIGKILL; an OOM kill would be the other cause (no cgroup here).
            WorkerFailure::CpuLimit {
                limit_seconds: f.cpu_limit_seconds.unwrap_or(0),
            }
        }
        ExitStatus::Signaled(libc::SIGABRT) if oom_text.is_some() => {
            memory(oom_text.as_deref().unwrap_or_default())
        }
        ExitStatus::Signaled(libc::SIGABRT)
            if f.check_message.is_some() || f.stderr_tail.contains("Check failed") =>
        {
            WorkerFailure::CaffeCheckFailed {
                message: f
                    .check_message
                    .clone()
                    .unwrap_or_else(|| last_check_line(f.stderr_tail)),
            }
        }
        ExitStatus::Signaled(sig) => WorkerFailure::Crashed {
            signal: sig,
            signal_name: signal_name(sig),
        },
        ExitStatus::Exited(exit_code::CAFFE_CHECK_FAILED) => {
            if let Some(text) = &oom_text {
                memory(text)
            } else {
                WorkerFailure::CaffeCheckFailed {
                    message: f
                        .check_message
                        .clone()
                        .unwrap_or_else(|| last_check_line(f.stderr_tail)),
                }
            }
        }
        ExitStatus::Exited(code) => WorkerFailure::ExitedWithoutAnswer { code },
    }
}

fn last_check_line(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| l.contains("Check failed") || l.starts_with('F'))
        .map(|l| l.chars().take(1024).collect())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: ExitStatus) -> EndFacts<'static> {
        EndFacts {
            status,
            killed_for_timeout: None,
            seccomp: None,
            check_message: None,
            stderr_tail: "",
            cpu_limit_seconds: Some(60),
            memory_limit_bytes: Some(1 << 30),
        }
    }

    #[test]
    fn supervisor_facts_win_over_worker_words() {
        let mut f = facts(ExitStatus::Signaled(libc::SIGKILL));
        f.killed_for_timeout = Some(("inference", 500));
        f.check_message = Some("forged".into());
        assert_eq!(classify(&f).label(), "timeout");
        let mut f = facts(ExitStatus::Signaled(libc::SIGKILL));
        f.seccomp = Some((
            "execve".into(),
            "x86_64".into(),
            "load".into(),
            "not allowed".into(),
        ));
        assert_eq!(
            classify(&f).to_string(),
            "seccomp violation: system call execve (x86_64) blocked in the load phase (not allowed)"
        );
    }

    #[test]
    fn signals_map_to_causes() {
        assert_eq!(
            classify(&facts(ExitStatus::Signaled(libc::SIGSEGV))).to_string(),
            "worker crashed with signal 11 (SIGSEGV)"
        );
        assert_eq!(
            classify(&facts(ExitStatus::Signaled(libc::SIGFPE))).label(),
            "crashed"
        );
        assert_eq!(
            classify(&facts(ExitStatus::Signaled(libc::SIGXCPU))).label(),
            "cpu_limit"
        );
        assert_eq!(
            classify(&facts(ExitStatus::Signaled(libc::SIGSYS))).label(),
            "seccomp_violation"
        );
        let mut f = facts(ExitStatus::Exited(exit_code::CAFFE_CHECK_FAILED));
        f.check_message = Some("net.cpp:1: Check failed: x".into());
        assert_eq!(classify(&f).label(), "caffe_check_failed");
        f.check_message = Some("std::bad_alloc".into());
        assert_eq!(classify(&f).label(), "memory_limit");
        assert_eq!(
            classify(&facts(ExitStatus::Exited(0))).to_string(),
            "worker exited with code 0 without answering"
        );
    }
}

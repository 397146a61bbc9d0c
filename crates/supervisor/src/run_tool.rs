//! `caffe-sandbox run -- CMD ARGS…`: the native sandbox for existing Caffe programs (e.g. `caffe time` from the
//! prefix) that cannot speak the worker protocol.
//!
//! The program cannot install a seccomp filter itself, so the jail's stage 2 does it as its very last step
//! ([`caffe_sandbox_jail::ExecFilter`]): it installs the run-tool policy (policies/seccomp/run-tool.json) with
//! a user-notification listener, hands the listener to the supervisor, and `execve`s CMD — the one exec the
//! policy lets through (the supervisor's monitor allows it exactly once). The dynamic loader, library
//! initialisation and the tool all run under the filter.
use crate::error::{Error, Result};
use crate::launch::{prefix_lib_dirs, shared_libraries, spawner, LaunchConfig};
use crate::process::{signal_name, ExitStatus, StderrCollector};
use caffe_sandbox_jail::{
    BpfSource, CompileOnce, ExecFilter, Layer, LayerReport, LayerState, ProcMode, SandboxSpec,
    ScratchSpec, StdoutMode,
};
use caffe_sandbox_seccomp::{
    listener_filter, Monitor, MonitorOptions, Phase, Policy, ResolvedPolicy, Vars,
};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The program (absolute, or a name looked up in the Caffe prefix's bin directory, then /usr/bin, /bin).
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Extra host paths the program may read (model files, data), bound read-only and noexec.
    pub read_only: Vec<PathBuf>,
    /// Wall-clock limit for the whole run.
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    pub status: ExitStatus,
    pub layers: LayerReport,
    /// Seccomp violations the kernel reported (the first one killed the program).
    pub violations: Vec<String>,
    pub timed_out: bool,
    /// Output of the program (stdout and stderr interleaved), sanitized and capped.
    pub output_tail: String,
}

fn find_program(cfg: &LaunchConfig, program: &Path) -> Result<PathBuf> {
    if program.is_absolute() {
        if !program.is_file() {
            return Err(Error::Setup(format!(
                "program {} not found (or not a file)",
                program.display()
            )));
        }
        return Ok(program.to_path_buf());
    }
    let dirs = [
        cfg.caffe_prefix.join("usr/bin"),
        PathBuf::from("/usr/bin"),
        PathBuf::from("/bin"),
    ];
    dirs.iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Setup(format!(
                "program {} not found in {dirs:?}",
                program.display()
            ))
        })
}

/// The whole environment of a `run` program (nothing is inherited; the jail adds `TMPDIR=/scratch`).
pub fn environment(cfg: &LaunchConfig) -> Vec<(OsString, OsString)> {
    let libdirs = std::env::join_paths(prefix_lib_dirs(&cfg.caffe_prefix)).unwrap_or_default();
    vec![
        ("LD_LIBRARY_PATH".into(), libdirs),
        ("PATH".into(), "/nonexistent".into()),
        ("LANG".into(), "C".into()),
        ("GLOG_logtostderr".into(), "1".into()),
        ("HOME".into(), "/scratch".into()),
    ]
}

/// The run-tool policy, resolved for a program that is pid 1 of its sandbox, and its listener filter.
fn run_tool_filter() -> Result<(ResolvedPolicy, Vec<u8>)> {
    let policy = Policy::run_tool()
        .resolve(&Vars {
            worker_tgid: Some(1),
        })
        .map_err(|e| Error::Sandbox(format!("run-tool seccomp policy: {e}")))?;
    let bpf = listener_filter(&policy)
        .map_err(|e| Error::Sandbox(format!("seccomp layer unavailable: {e}")))?;
    Ok((policy, bpf))
}

/// The run-tool filter, compiled by the jail on its own thread right after the clone (stage 2 needs it only
/// as its last step, so compilation overlaps building the sandbox); the resolved policy comes back on the
/// channel for the monitor.
fn compile_in_background() -> (BpfSource, mpsc::Receiver<Result<ResolvedPolicy>>) {
    let (tx, rx) = mpsc::channel();
    let source = BpfSource::Compile(CompileOnce::new(move || {
        let compiled = run_tool_filter();
        let bpf = match &compiled {
            Ok((_, bpf)) => Ok(bpf.clone()),
            Err(e) => Err(e.to_string()),
        };
        let _ = tx.send(compiled.map(|(policy, _)| policy));
        bpf
    }));
    (source, rx)
}

/// Runs `spec` in the sandbox and waits for it.
pub fn run(cfg: &LaunchConfig, spec: &RunSpec) -> Result<RunOutcome> {
    let program = find_program(cfg, &spec.program)?;
    let mut sandbox = SandboxSpec::new(&program);
    sandbox.args = spec.args.clone();
    let compiling = cfg.require_seccomp().then(|| {
        let (bpf, handle) = compile_in_background();
        sandbox.exec_filter = Some(ExecFilter {
            bpf,
            name: "run-tool policy".into(),
        });
        handle
    });
    sandbox.env = environment(cfg);
    let mut ro = shared_libraries(&program, &cfg.caffe_prefix)?;
    ro.retain(|p| p != &program);
    sandbox.ro_paths = ro;
    sandbox.ro_noexec_paths = spec
        .read_only
        .iter()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect();
    sandbox.proc = ProcMode::None;
    sandbox.scratch = Some(ScratchSpec {
        path: PathBuf::from("/scratch"),
        size_bytes: cfg.limits.scratch_bytes,
    });
    sandbox.stdout = StdoutMode::Stderr;
    sandbox.limits = cfg.limits.jail_limits();
    sandbox.cgroup = Some(cfg.limits.cgroup_limits());
    sandbox.allow_weaker = cfg
        .allow_weaker
        .iter()
        .copied()
        .chain([Layer::CgroupV2])
        .collect();
    sandbox.stage2_exe = cfg.stage2_exe.clone();
    // A single-threaded caller (the CLI) spawns from its own thread: the jail then runs stage 2 in the clone
    // child without an exec, and the parent-death signal follows the process.
    let spawned = if caffe_sandbox_jail::single_threaded() {
        let spawned = caffe_sandbox_jail::spawn(&sandbox);
        drop(sandbox); // its passed fds, as the spawner thread does
        spawned.map_err(|e| Error::Sandbox(e.to_string()))
    } else {
        spawner().and_then(|s| s.spawn(sandbox).map_err(|e| Error::Sandbox(e.to_string())))
    };
    // The compiler has finished by now (the jail waited for its program), or did not run.
    let policy: Result<Option<ResolvedPolicy>> = compiling
        .map(|rx| {
            rx.recv()
                .unwrap_or_else(|_| Err(Error::Sandbox("the seccomp compiler did not run".into())))
        })
        .transpose();
    let mut child = spawned?;
    let policy = match policy {
        Ok(p) => p,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    // Answer the filter's notifications (the one allowed execve first), then let the exec go ahead.
    let monitor = match (policy, child.seccomp_listener.take()) {
        (Some(policy), Some(listener)) => {
            let started = child
                .pidfd
                .try_clone()
                .map_err(|e| Error::Sandbox(format!("pidfd: {e}")))
                .and_then(|pidfd| {
                    Monitor::start(
                        listener,
                        policy,
                        MonitorOptions {
                            pidfd: Some(pidfd),
                            ..Default::default()
                        },
                    )
                    .map_err(|e| Error::Sandbox(format!("seccomp monitor: {e}")))
                });
            match started {
                Ok(m) => {
                    // No load/inference split for foreign programs: everything is one phase.
                    m.set_phase(Phase::Load);
                    Some(m)
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            }
        }
        // Stage 2 could not install it and --allow-weaker seccomp said that is fine: the report says so.
        (Some(_), None) => None,
        (None, _) => {
            child.layers.set(
                Layer::Seccomp,
                LayerState::weakened(
                    "not installed: allowed explicitly with --allow-weaker seccomp",
                ),
            );
            None
        }
    };
    let output = StderrCollector::start(
        child
            .stderr
            .try_clone()
            .map_err(|e| Error::Sandbox(format!("stderr pipe: {e}")))?,
        64 * 1024,
    );
    child
        .confirm_exec()
        .map_err(|e| Error::Sandbox(e.to_string()))?;
    let layers = child.layers.clone();

    // Wall-clock deadline.
    let mut pfd = [rustix::event::PollFd::new(
        &child.pidfd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec::try_from(spec.timeout).unwrap_or(rustix::event::Timespec {
        tv_sec: 86400,
        tv_nsec: 0,
    });
    let ended = rustix::event::poll(&mut pfd, Some(&ts)).unwrap_or(0) > 0;
    if !ended {
        let _ = child.kill();
    }
    let status: ExitStatus = child
        .wait()
        .map_err(|e| Error::Sandbox(format!("wait: {e}")))?
        .into();
    let violations = monitor
        .map(|m| {
            let first = m.wait_violation(Duration::from_millis(100));
            let mut all: Vec<String> = m.violations().iter().map(|v| v.to_string()).collect();
            if all.is_empty() {
                all.extend(first.map(|v| v.to_string()));
            }
            all
        })
        .unwrap_or_default();
    Ok(RunOutcome {
        status,
        layers,
        violations,
        timed_out: !ended,
        output_tail: output.finish(),
    })
}

/// A one-line description of how a run ended.
pub fn describe(o: &RunOutcome) -> String {
    if o.timed_out {
        return "killed: wall-clock deadline exceeded".into();
    }
    if let Some(v) = o.violations.first() {
        return format!("killed: {v}");
    }
    match o.status {
        ExitStatus::Exited(c) => format!("exited with code {c}"),
        ExitStatus::Signaled(s) => format!("killed by signal {s} ({})", signal_name(s)),
    }
}

//! `caffe-sandbox run -- CMD ARGS…`: the native sandbox for existing Caffe programs (e.g. `caffe time` from the
//! prefix) that cannot speak the worker protocol.
//!
//! The program cannot install a seccomp filter itself, so a launcher does it: the jail starts this binary's
//! hidden `__seccomp-launch` mode as pid 1 of the sandbox; the launcher installs the run-tool policy
//! (policies/seccomp/run-tool.json) with a user-notification listener, hands the listener to the supervisor
//! over a socket, and `execve`s CMD — the one exec the policy lets through (the supervisor's monitor allows it
//! exactly once). The dynamic loader, library initialisation and the tool all run under the filter.
use crate::error::{Error, Result};
use crate::launch::{prefix_lib_dirs, shared_libraries, spawner, LaunchConfig};
use crate::process::{signal_name, ExitStatus, StderrCollector};
use caffe_sandbox_jail::{
    Layer, LayerReport, LayerState, ProcMode, SandboxSpec, ScratchSpec, StdoutMode,
};
use caffe_sandbox_seccomp::{
    compile_bundle, install_filter_with_listener, read_bundle, sealed_memfd, Monitor,
    MonitorOptions, Phase, Policy, Vars,
};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// argv[1] of the launcher mode.
pub const LAUNCH_ARG: &str = "__seccomp-launch";

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

/// Runs `spec` in the sandbox and waits for it.
pub fn run(cfg: &LaunchConfig, spec: &RunSpec) -> Result<RunOutcome> {
    let program = find_program(cfg, &spec.program)?;
    let me =
        std::env::current_exe().map_err(|e| Error::Setup(format!("current executable: {e}")))?;
    let (sup_end, launcher_end) = caffe_sandbox_protocol::socketpair()
        .map_err(|e| Error::Sandbox(format!("socketpair: {e}")))?;
    let require_seccomp = cfg.require_seccomp();
    let mut args: Vec<OsString> = vec![LAUNCH_ARG.into(), "--notify-fd".into(), "3".into()];
    let mut pass_fds = vec![(launcher_end, 3)];
    let mut resolved = None;
    if require_seccomp {
        let policy = Policy::run_tool()
            .resolve(&Vars {
                worker_tgid: Some(1),
            })
            .map_err(|e| Error::Sandbox(format!("run-tool seccomp policy: {e}")))?;
        let bundle = compile_bundle(&policy)
            .map_err(|e| Error::Sandbox(format!("seccomp layer unavailable: {e}")))?;
        pass_fds.push((
            sealed_memfd(&bundle.to_bytes()).map_err(|e| Error::Sandbox(format!("memfd: {e}")))?,
            4,
        ));
        args.extend(["--bundle-fd".into(), "4".into()]);
        resolved = Some(policy);
    }
    args.push("--".into());
    args.push(program.clone().into());
    args.extend(spec.args.iter().cloned());

    let mut sandbox = SandboxSpec::new(&me);
    sandbox.args = args;
    let libdirs = std::env::join_paths(prefix_lib_dirs(&cfg.caffe_prefix)).unwrap_or_default();
    sandbox.env = vec![
        ("LD_LIBRARY_PATH".into(), libdirs),
        ("PATH".into(), "/nonexistent".into()),
        ("LANG".into(), "C".into()),
        ("GLOG_logtostderr".into(), "1".into()),
        ("HOME".into(), "/scratch".into()),
    ];
    let mut ro = shared_libraries(&me, &cfg.caffe_prefix)?;
    ro.extend(shared_libraries(&program, &cfg.caffe_prefix)?);
    ro.push(program.clone());
    ro.sort();
    ro.dedup();
    ro.retain(|p| p != &me);
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
    sandbox.pass_fds = pass_fds;
    sandbox.stdout = StdoutMode::Stderr;
    sandbox.limits = cfg.limits.jail_limits();
    sandbox.cgroup = Some(cfg.limits.cgroup_limits());
    sandbox.allow_weaker = cfg
        .allow_weaker
        .iter()
        .copied()
        .chain([Layer::CgroupV2, Layer::Seccomp])
        .collect();
    sandbox.stage2_exe = cfg.stage2_exe.clone();
    let child = spawner()?
        .spawn(sandbox)
        .map_err(|e| Error::Sandbox(e.to_string()))?;
    let output = StderrCollector::start(
        child
            .stderr
            .try_clone()
            .map_err(|e| Error::Sandbox(format!("stderr pipe: {e}")))?,
        64 * 1024,
    );
    let mut layers = child.layers.clone();

    let mut monitor = None;
    if let Some(policy) = resolved {
        match receive_listener(&sup_end, Duration::from_secs(10)) {
            Ok(listener) => {
                let pidfd = child
                    .pidfd
                    .try_clone()
                    .map_err(|e| Error::Sandbox(format!("pidfd: {e}")))?;
                let m = Monitor::start(
                    listener,
                    policy,
                    MonitorOptions {
                        pidfd: Some(pidfd),
                        ..Default::default()
                    },
                )
                .map_err(|e| Error::Sandbox(format!("seccomp monitor: {e}")))?;
                // No load/inference split for foreign programs: everything is one phase.
                m.set_phase(Phase::Load);
                monitor = Some(m);
                layers.set(
                    Layer::Seccomp,
                    LayerState::enforced("run-tool policy (installed by the launcher before execve; violations reported by the kernel)"),
                );
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Sandbox(format!(
                    "the launcher did not hand over a seccomp listener: {e}"
                )));
            }
        }
    } else {
        layers.set(
            Layer::Seccomp,
            LayerState::weakened("not installed: allowed explicitly with --allow-weaker seccomp"),
        );
    }
    drop(sup_end);

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

fn receive_listener(sock: &OwnedFd, timeout: Duration) -> std::io::Result<OwnedFd> {
    let mut pfd = [rustix::event::PollFd::new(
        sock,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec::try_from(timeout).unwrap_or(rustix::event::Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    });
    if rustix::event::poll(&mut pfd, Some(&ts))? == 0 {
        return Err(std::io::Error::other("timed out"));
    }
    let mut buf = [0u8; 16];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if msg.bytes == 0 {
        return Err(std::io::Error::other(
            "the launcher exited before sending the listener",
        ));
    }
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(r) = m {
            fds.extend(r);
        }
    }
    if fds.len() != 1 || &buf[..msg.bytes] != b"listener" {
        return Err(std::io::Error::other(
            "unexpected message from the launcher",
        ));
    }
    Ok(fds.pop().expect("one fd"))
}

/// The launcher (inside the sandbox, pid 1): install the filter, hand the listener over, exec the program.
/// Returns only when not asked to run as the launcher.
pub fn launcher_main_if_requested() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).map(|a| a.as_os_str()) != Some(std::ffi::OsStr::new(LAUNCH_ARG)) {
        return;
    }
    let fail = |m: String| -> ! {
        eprintln!("caffe-sandbox launcher: {m}");
        std::process::exit(125);
    };
    let mut notify_fd = None;
    let mut bundle_fd = None;
    let mut i = 2;
    while i < args.len() && args[i] != "--" {
        let val = args
            .get(i + 1)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<i32>().ok());
        match args[i].to_str() {
            Some("--notify-fd") => notify_fd = val,
            Some("--bundle-fd") => bundle_fd = val,
            _ => fail(format!("unknown argument {:?}", args[i])),
        }
        i += 2;
    }
    let cmd = &args.get(i + 1..).unwrap_or_default();
    if cmd.is_empty() {
        fail("no program given".into());
    }
    // SAFETY: the supervisor passes these fds at these numbers; nothing else in this process owns them.
    let notify = notify_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    if let Some(fd) = bundle_fd {
        // SAFETY: as above.
        let bundle_fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let bundle =
            read_bundle(bundle_fd.as_fd()).unwrap_or_else(|e| fail(format!("seccomp bundle: {e}")));
        drop(bundle_fd);
        let listener = install_filter_with_listener(&bundle.listener)
            .unwrap_or_else(|e| fail(format!("seccomp: {e}")));
        let notify = notify
            .as_ref()
            .unwrap_or_else(|| fail("no notify fd".into()));
        let fds = [listener.as_fd()];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        sendmsg(
            notify,
            &[IoSlice::new(b"listener")],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap_or_else(|e| fail(format!("sending the listener: {e}")));
        drop(listener);
    }
    drop(notify);
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
    fail(format!("exec {:?}: {err}", cmd[0]));
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

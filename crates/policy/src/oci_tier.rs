//! The OCI-runtime tier: the worker started by crun or runc from the bundle `caffe-sandbox export oci` writes.
//!
//! ## How it works
//! * The bundle is generated per worker from the policy (see [`crate::export::oci`]): read-only binds of exactly
//!   the worker's files, the static seccomp envelope, rlimits, cgroup resources, no capabilities.
//! * The channel socket and the compiled seccomp program reach the worker as fds 3 and 4 through the runtime's
//!   `--preserve-fds 2`. The worker installs its own two-phase filter exactly as in the native tier and hands
//!   the user-notification listener back over the channel, so the supervisor's monitor, the phases and the
//!   by-name violation reports keep working for every syscall the static envelope lets through. A syscall
//!   outside the envelope is killed by the runtime's filter first (kill beats notify): reported as SIGSYS,
//!   without a name. OCI `listenerPath` is not used: the worker's own listener already gives the supervisor
//!   everything, without a second monitor protocol.
//! * Process lifetime: `crun run` / `runc run` do not take their container down when they are SIGKILLed (the
//!   container is re-parented and keeps running — checked on this machine). So the runtime runs as pid 1 of a
//!   fresh pid namespace (`unshare --pid --fork --kill-child`): killing the process the supervisor holds kills
//!   the runtime (parent-death signal), which tears down that namespace and the container nested in it.
//! * Runtimes report a container killed by signal N as exit code 128+N.
//!
//! ## Rootless
//! The wrapper is `unshare --user --map-root-user --pid --fork --kill-child --mount --mount-proc`: the caller
//! becomes uid 0 of a user namespace that owns the pid and mount namespaces, the runtime runs in its rootless
//! mode inside it, and the bundle maps the container's uid 0 to that namespace's uid 0 (= the caller).
//!
//! ## The hybrid-cgroup quirk (cgroup v1 controllers, a v2 hierarchy holding only `hugetlb`)
//! * crun refuses such hosts outright ("cgroups in hybrid mode not supported, drop all controllers from
//!   cgroupv2"), even with `--cgroup-manager=disabled`. As root, the runtime's private mount namespace gets
//!   `/sys/fs/cgroup/unified` unmounted, so crun sees a pure v1 host and applies memory/cpu/pids through
//!   cgroupfs (`--cgroup-manager=cgroupfs`). Rootless, that mount is locked (inherited from a more privileged
//!   namespace) and is covered with an empty read-only tmpfs instead; crun runs with
//!   `--cgroup-manager=disabled` and the bundle carries no `linux.resources`.
//! * runc handles hybrid hosts with its cgroupfs driver as root. Rootless runc on cgroup v1 cannot apply
//!   limits; the bundle then carries no resources. runc also refuses to start without a `/proc` in the
//!   container, so runc bundles get a private read-only proc (masked and read-only paths as usual).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use caffe_sandbox_jail::{Layer, LayerReport, LayerState, Sandboxed};
use caffe_sandbox_supervisor::launch::Launched;
use caffe_sandbox_supervisor::{Error, LaunchConfig};

use crate::export::oci::{config, OciOptions};
use crate::export::seccomp::envelope;
use crate::export::Workload;
use crate::SandboxPolicy;

/// Which OCI runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// crun (Debian package `crun`).
    Crun,
    /// runc (Debian package `runc`).
    Runc,
}

impl Runtime {
    /// The executable name.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Crun => "crun",
            Runtime::Runc => "runc",
        }
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "crun" => Ok(Runtime::Crun),
            "runc" => Ok(Runtime::Runc),
            "runsc" => Err(
                "runsc (gVisor) is not packaged in Debian and not supported yet; use crun or runc"
                    .into(),
            ),
            o => Err(format!("unknown OCI runtime {o:?} (crun, runc)")),
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether this host has the hybrid layout crun refuses: a v2 hierarchy at /sys/fs/cgroup/unified with
/// controllers while v1 controllers are mounted.
pub fn hybrid_with_v2_controllers() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false)
}

fn euid() -> u32 {
    // SAFETY: trivial getter.
    unsafe { libc::geteuid() }
}

/// A located runtime and where its state and bundles live.
#[derive(Debug, Clone)]
pub struct OciRunner {
    /// crun or runc.
    pub runtime: Runtime,
    /// The runtime executable.
    pub binary: PathBuf,
    /// `unshare` from util-linux (pid namespace around the runtime).
    pub unshare: PathBuf,
    /// `setpriv` from util-linux (parent-death signal for `unshare`).
    pub setpriv: PathBuf,
    /// `--root` state directory of the runtime.
    pub state_root: PathBuf,
    /// Where bundles are written.
    pub bundles: PathBuf,
}

impl OciRunner {
    /// Finds the runtime on PATH; the error says how to install it.
    pub fn find(runtime: Runtime) -> Result<OciRunner, String> {
        let binary = which(runtime.name()).ok_or_else(|| {
            format!(
                "{} not found on PATH (Debian: apt-get install -y {})",
                runtime.name(),
                runtime.name()
            )
        })?;
        let unshare = which("unshare").ok_or("unshare (util-linux) not found on PATH")?;
        let setpriv = which("setpriv").ok_or("setpriv (util-linux) not found on PATH")?;
        let base = if euid() == 0 {
            PathBuf::from("/run/caffe-sandbox")
        } else {
            match std::env::var_os("XDG_RUNTIME_DIR") {
                Some(d) => PathBuf::from(d).join("caffe-sandbox"),
                None => std::env::temp_dir().join(format!("caffe-sandbox-oci-{}", euid())),
            }
        };
        Ok(OciRunner {
            runtime,
            binary,
            unshare,
            setpriv,
            state_root: base.join(runtime.name()),
            bundles: base.join("bundles"),
        })
    }

    /// The bundle options for this runtime on this host. Rootless, the runtime runs as uid 0 of a user
    /// namespace that maps it to the caller, so the container's uid 0 maps to that namespace's uid 0.
    pub fn options(&self) -> OciOptions {
        let mut o = OciOptions::for_caller();
        o.runc = self.runtime == Runtime::Runc;
        if euid() != 0 {
            o.host_uid = 0;
            o.host_gid = 0;
            o.cgroup_resources = false;
        }
        o
    }

    /// The command that runs `bundle` as container `id`, passing fds 3..3+preserve_fds. The runtime runs as
    /// pid 1 of a new pid namespace (see the module docs); for crun on a hybrid host as root,
    /// `/sys/fs/cgroup/unified` is unmounted in its private mount namespace first.
    pub fn command(&self, bundle: &Path, id: &str, preserve_fds: u32) -> Command {
        let root = euid() == 0;
        let mut rt: Vec<String> = vec![self.binary.display().to_string()];
        match self.runtime {
            Runtime::Crun => {
                rt.push(
                    if root {
                        "--cgroup-manager=cgroupfs"
                    } else {
                        "--cgroup-manager=disabled"
                    }
                    .to_string(),
                );
            }
            Runtime::Runc => {}
        }
        rt.push(format!("--root={}", self.state_root.display()));
        rt.push("run".into());
        if preserve_fds > 0 {
            rt.push(format!("--preserve-fds={preserve_fds}"));
        }
        rt.push(format!("--bundle={}", bundle.display()));
        rt.push(id.to_string());
        let mut cmd = Command::new("/bin/sh");
        // Outer shell (our child): turns the runtime's "killed by signal N" exit code 128+N back into a death by
        // signal N, so the supervisor classifies it exactly as in the native tier (SIGSYS: seccomp). Its own
        // core dumps are off; `setpriv --pdeathsig KILL` makes `unshare` die with it.
        cmd.args(["-c", OUTER_SH, "sh"]);
        cmd.arg(&self.setpriv)
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&self.unshare);
        if !root {
            // Rootless: a user namespace mapping the caller to uid 0 gives the wrapper the right to create the
            // pid and mount namespaces; the runtime then runs in its rootless mode inside it.
            cmd.args(["--user", "--map-root-user"]);
        }
        // A procfs of the new pid namespace (the runtime writes /proc/PID/{uid,gid}_map by its own pids),
        // in a private mount namespace.
        cmd.args([
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--propagation=private",
            "--mount-proc",
        ]);
        if self.runtime == Runtime::Crun && hybrid_with_v2_controllers() {
            cmd.args(["--", "/bin/sh", "-c"]);
            // Root: unmount the v2 hierarchy so crun sees (and uses) the v1 controllers. Rootless the mount is
            // locked (it was inherited from a more privileged namespace) and cannot be unmounted, but it can be
            // covered with an empty tmpfs; crun then runs without cgroups.
            cmd.arg(if root {
                "umount /sys/fs/cgroup/unified && exec \"$@\""
            } else {
                "mount -t tmpfs -o ro,nosuid,nodev,noexec none /sys/fs/cgroup/unified && exec \"$@\""
            });
            cmd.arg("sh");
        } else {
            cmd.arg("--");
        }
        cmd.args(&rt);
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        cmd
    }

    /// Creates the base directory (0755 as root, 0700 rootless) and refuses one that another user could tamper with (a bundle
    /// is the container's whole configuration; rootless, the base may be in a shared /tmp).
    fn secure_base(&self) -> Result<(), String> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let base = self
            .bundles
            .parent()
            .ok_or("bundle directory has no parent")?;
        // As root the container's root (uid 65534) must traverse it to reach the rootfs; rootless it is the caller.
        let mode = if euid() == 0 { 0o755 } else { 0o700 };
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(base);
        let m = std::fs::symlink_metadata(base).map_err(|e| format!("{}: {e}", base.display()))?;
        if !m.is_dir() || m.uid() != euid() || m.mode() & 0o022 != 0 {
            return Err(format!(
                "{} must be a directory owned by uid {} and writable by nobody else (found uid {}, mode {:o})",
                base.display(),
                euid(),
                m.uid(),
                m.mode() & 0o7777
            ));
        }
        Ok(())
    }

    /// Removes what containers of dead supervisors left behind: bundles, runtime state and (v1) cgroups of
    /// ids `caffe-sandbox-PID-N` whose PID is gone. A supervisor's containers die with it (parent-death
    /// signal on the runtime), but a SIGKILLed runtime cannot clean up after itself.
    pub fn clean_stale(&self) {
        let dead = |name: &str| -> bool {
            name.strip_prefix("caffe-sandbox-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| {
                    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
                })
        };
        for dir in [&self.bundles, &self.state_root] {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if dead(&e.file_name().to_string_lossy()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        if euid() == 0 {
            for ctrl in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                for e in std::fs::read_dir(ctrl.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if dead(&e.file_name().to_string_lossy()) {
                        // Only succeeds for empty cgroups.
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
        }
    }

    /// Writes a bundle for `config_json` and returns its directory (rootfs owned by the container's root).
    pub fn write_bundle(
        &self,
        id: &str,
        config_json: &serde_json::Value,
        host_uid: u32,
        host_gid: u32,
    ) -> Result<PathBuf, String> {
        self.secure_base()?;
        self.clean_stale();
        let dir = self.bundles.join(id);
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
        std::fs::create_dir_all(&self.state_root)
            .map_err(|e| format!("{}: {e}", self.state_root.display()))?;
        let text = serde_json::to_string_pretty(config_json).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("config.json"), text)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if euid() == 0 {
            // runc creates mount targets as the container's root (the mapped host uid).
            std::os::unix::fs::chown(&rootfs, Some(host_uid), Some(host_gid))
                .map_err(|e| format!("chown {}: {e}", rootfs.display()))?;
        }
        Ok(dir)
    }
}

/// The outer shell of [`OciRunner::command`].
const OUTER_SH: &str =
    "ulimit -c 0; \"$@\"; rc=$?; if [ \"$rc\" -gt 128 ] && [ \"$rc\" -le 192 ]; then \
                        kill -$((rc - 128)) $$; fi; exit \"$rc\"";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh container id.
pub fn new_id() -> String {
    format!(
        "caffe-sandbox-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: valid 2-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh fds owned by nobody else.
    Ok(unsafe {
        (
            std::os::fd::FromRawFd::from_raw_fd(fds[0]),
            std::os::fd::FromRawFd::from_raw_fd(fds[1]),
        )
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` on one long-lived thread: `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
/// so every runtime is spawned from the same thread, which lives as long as the process (like the native
/// jail's `Spawner`).
fn on_spawner_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};
    static TX: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("oci-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("spawn the OCI spawner thread");
        Mutex::new(tx)
    });
    let (rtx, rrx) = std::sync::mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = rtx.send(f());
    });
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| std::io::Error::other("the OCI spawner thread is gone"))?;
    rrx.recv()
        .map_err(|_| std::io::Error::other("the OCI spawner thread dropped a job"))
}

/// Spawns `cmd` with `pass` placed at fds 3, 4, … (stdin /dev/null, stdout and stderr into one pipe) and
/// returns the child's pid, a pidfd and the read end of the output pipe.
pub fn spawn_with_fds(
    mut cmd: Command,
    pass: Vec<OwnedFd>,
) -> std::io::Result<(libc::pid_t, OwnedFd, OwnedFd)> {
    let (r, w) = pipe()?;
    cmd.stdin(Stdio::null()).stdout(w.try_clone()?).stderr(w);
    // Everything the child needs is prepared here: the closure below must not allocate (it runs between fork
    // and exec in a multi-threaded process).
    const MAX_PASS: usize = 8;
    if pass.len() > MAX_PASS {
        return Err(std::io::Error::other(format!(
            "at most {MAX_PASS} fds can be passed"
        )));
    }
    let mut raw = [-1i32; MAX_PASS];
    for (slot, f) in raw.iter_mut().zip(&pass) {
        *slot = f.as_raw_fd();
    }
    let n = pass.len();
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe functions
    // (fcntl, dup2, close, prctl) on fds that stay open in the parent until spawn returns; it does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            // First move every source above the target range, then place them (no clobbering).
            let mut high = [-1i32; MAX_PASS];
            for i in 0..n {
                let h = libc::fcntl(raw[i], libc::F_DUPFD_CLOEXEC, 64);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high[i] = h;
            }
            for (i, &h) in high.iter().enumerate().take(n) {
                if libc::dup2(h, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(h);
            }
            // The runtime dies with the thread that spawned it (like the native jail's child).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(pass);
    let pid = child.id() as libc::pid_t;
    // SAFETY: pidfd_open on our own un-reaped child; returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // `Child` is dropped without waiting: the pidfd (waitid P_PIDFD) reaps it.
    drop(child);
    // SAFETY: fresh fd from pidfd_open.
    let pidfd = unsafe { std::os::fd::FromRawFd::from_raw_fd(pidfd) };
    Ok((pid, pidfd, r))
}

/// The layers the OCI tier puts in force, for the report.
pub fn layer_report(runner: &OciRunner, policy: &SandboxPolicy, o: &OciOptions) -> LayerReport {
    let rt = runner.runtime.name();
    let mut l = LayerReport::default();
    let by = |what: &str| LayerState::enforced(format!("{rt} (OCI): {what}"));
    l.set(
        Layer::UserNs,
        by(&if euid() == 0 {
            format!("container uid 0 = host {}", o.host_uid)
        } else {
            format!(
                "container uid 0 = the caller (uid {}) through the wrapper's user namespace",
                euid()
            )
        }),
    );
    for (layer, what) in [
        (
            Layer::PidNs,
            "new pid namespace; the worker is pid 1; the runtime itself is pid 1 of an outer one",
        ),
        (
            Layer::NetNs,
            "new network namespace, no interfaces configured",
        ),
        (
            Layer::MountNs,
            "read-only empty root; read-only binds of exactly the worker's files",
        ),
        (Layer::IpcNs, "new ipc namespace"),
        (Layer::UtsNs, "new uts namespace"),
        (Layer::CgroupNs, "new cgroup namespace"),
        (Layer::NoNewPrivs, "process.noNewPrivileges"),
        (Layer::Capabilities, "all capability sets empty"),
        (Layer::Rlimits, "process.rlimits (core 0)"),
        (
            Layer::ScratchTmpfs,
            "tmpfs nosuid,nodev,noexec with size cap",
        ),
        (Layer::EnvScrubbed, "process.env only"),
        (
            Layer::FdsClosed,
            "runtime passes only stdio and --preserve-fds 2 (channel, seccomp program)",
        ),
        (
            Layer::Setsid,
            "runtime starts the container process in a new session",
        ),
    ] {
        l.set(layer, by(what));
    }
    l.set(
        Layer::ParentDeathSignal,
        LayerState::enforced("the runtime gets SIGKILL when the spawning thread exits; it is pid 1 of the pid namespace holding the container"),
    );
    l.set(
        Layer::Landlock,
        if policy.allow_weaker.contains(&Layer::Landlock) {
            LayerState::weakened(
                "the OCI runtime-spec has no Landlock field (allowed weaker by the policy)",
            )
        } else {
            LayerState::not_available("the OCI runtime-spec has no Landlock field")
        },
    );
    l.set(
        Layer::CgroupV2,
        if o.cgroup_resources {
            LayerState::enforced(format!(
                "{rt} linux.resources through cgroupfs on the v1 controllers of this host: memory {} B (no swap), \
                 cpu {}, pids {}",
                policy.cgroup.memory_max.map_or("unlimited".into(), |m| m.to_string()),
                policy.cgroup.cpu_max.map_or("unlimited".into(), |(q, p)| format!("{q}/{p} us")),
                policy.cgroup.pids_max.map_or("unlimited".into(), |n| n.to_string()),
            ))
        } else {
            LayerState::not_available("rootless on a cgroup v1 host: the runtime runs with cgroups disabled")
        },
    );
    l.set(
        Layer::Seccomp,
        LayerState::enforced(
            "static envelope installed by the runtime before execve (violations: SIGSYS, no name) + the worker's own \
             two-phase filter with the supervisor's listener (violations reported by name)",
        ),
    );
    l
}

/// Starts the worker through the OCI runtime. Same contract as the native `launch`: the returned process is
/// the one to kill and wait for, the channel is connected, the seccomp policy is the one compiled for fd 4.
pub fn launch_worker(
    cfg: &LaunchConfig,
    policy: &SandboxPolicy,
    runner: &OciRunner,
) -> Result<Launched, Error> {
    let t0 = Instant::now();
    let sandbox_err =
        |m: String| Error::Sandbox(format!("OCI tier ({}): {m}", runner.runtime.name()));
    if policy.allow_weaker.contains(&Layer::Seccomp) || !cfg.require_seccomp() {
        return Err(sandbox_err(
            "the OCI tier always applies seccomp (the exported envelope); do not allow it weaker"
                .into(),
        ));
    }
    if !policy.allow_weaker.contains(&Layer::Landlock)
        && !cfg.allow_weaker.contains(&Layer::Landlock)
    {
        return Err(Error::Sandbox(format!(
            "sandbox layer landlock unavailable under the OCI tier ({}): the runtime-spec has no Landlock field \
             (refusing to run; allow it explicitly with --allow-weaker landlock)",
            runner.runtime.name()
        )));
    }
    let mut o = runner.options();
    let w = Workload::worker(policy, &cfg.worker_exe, &cfg.caffe_prefix, cfg.log_level)
        .map_err(&sandbox_err)?;
    if runner.runtime == Runtime::Crun {
        o.nofile_floor = Some(w.binds().len() as u64 + 64);
    }
    let env = envelope(policy).map_err(&sandbox_err)?;
    let mut doc = config(policy, &w, &env, &o);
    // The launch configuration's own limits win (CLI flags are applied to it after the policy).
    let id = new_id();
    if let Some(rl) = doc["process"]["rlimits"].as_array_mut() {
        for r in rl.iter_mut() {
            let v = match r["type"].as_str() {
                Some("RLIMIT_AS") => cfg.limits.address_space_bytes,
                Some("RLIMIT_CPU") => cfg.limits.cpu_seconds,
                Some("RLIMIT_NOFILE") => cfg
                    .limits
                    .open_files
                    .map(|n| n.max(o.nofile_floor.unwrap_or(0))),
                _ => None,
            };
            if let Some(v) = v {
                r["hard"] = v.into();
                r["soft"] = v.into();
            }
        }
    }
    let bundle = runner
        .write_bundle(&id, &doc, o.host_uid, o.host_gid)
        .map_err(&sandbox_err)?;
    let (sup_end, worker_end) = caffe_sandbox_protocol::socketpair()
        .map_err(|e| sandbox_err(format!("socketpair: {e}")))?;
    let channel = caffe_sandbox_protocol::SupervisorChannel::new(sup_end)
        .map_err(|e| sandbox_err(format!("channel: {e}")))?;
    let (prog, seccomp_policy) =
        caffe_sandbox_supervisor::seccomp_watch::compiled_worker_filter(cfg)?
            .ok_or_else(|| sandbox_err("no seccomp program".into()))?;
    let cmd = runner.command(&bundle, &id, 2);
    let (pid, pidfd, out) = on_spawner_thread(move || spawn_with_fds(cmd, vec![worker_end, prog]))
        .and_then(|r| r)
        .map_err(|e| sandbox_err(format!("spawn: {e}")))?;
    let mut layers = layer_report(runner, policy, &o);
    if let Some(floor) = o
        .nofile_floor
        .filter(|f| cfg.limits.open_files.is_some_and(|n| n < *f))
    {
        layers.set(
            Layer::Rlimits,
            LayerState::weakened(format!(
                "process.rlimits (core 0); RLIMIT_NOFILE raised from {} to {floor}: crun applies rlimits before its \
                 ~1 fd per bind mount setup",
                cfg.limits.open_files.unwrap_or(0)
            )),
        );
    }
    Ok(Launched {
        sandbox: Sandboxed {
            pid,
            pidfd,
            stderr: out,
            stdout: None,
            layers: layers.clone(),
            spawn_time: t0.elapsed(),
            cgroup: None,
            seccomp_listener: None,
            exec_pending: None,
            stage2_in_child: false,
        },
        channel: Some(channel),
        layers,
        seccomp_policy: Some(seccomp_policy),
    })
}

//! Starting `caffe-sandbox-worker` inside the native sandbox (crates/jail): what it may see, its limits, and
//! the fds it gets (the channel at 3, the compiled seccomp program at 4). With [`LaunchConfig::fork_server`],
//! the same sandbox holds a pre-initialised fork server instead ([`zygote`]), which forks the workers.
pub mod zygote;

use crate::error::{Error, Result};
use caffe_sandbox_jail::{
    Layer, LayerReport, ProcMode, SandboxSpec, Sandboxed, ScratchSpec, Spawner, StdoutMode,
};
use caffe_sandbox_protocol::{socketpair, SupervisorChannel};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Resource limits of one worker.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceLimits {
    /// RLIMIT_AS. OpenBLAS threads reserve address space: open_nsfw needs ~700 MB.
    pub address_space_bytes: Option<u64>,
    /// RLIMIT_CPU (seconds of CPU over the worker's life).
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// RLIMIT_NPROC (processes and threads).
    pub processes: Option<u64>,
    /// RLIMIT_FSIZE (largest file the worker may write in its scratch).
    pub file_size_bytes: Option<u64>,
    /// Size cap of the private scratch tmpfs.
    pub scratch_bytes: u64,
}

impl ResourceLimits {
    /// The rlimits the jail sets.
    pub fn jail_limits(&self) -> caffe_sandbox_jail::Limits {
        caffe_sandbox_jail::Limits {
            address_space: self.address_space_bytes,
            data: None,
            cpu_seconds: self.cpu_seconds,
            file_size: self.file_size_bytes,
            nofile: self.open_files,
            nproc: self.processes,
        }
    }

    /// The cgroup v2 limits requested (applied only in a delegated v2 hierarchy).
    pub fn cgroup_limits(&self) -> caffe_sandbox_jail::CgroupLimits {
        caffe_sandbox_jail::CgroupLimits {
            memory_max: self.address_space_bytes,
            cpu_max: None,
            pids_max: self.processes,
        }
    }
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            address_space_bytes: Some(2 << 30),
            cpu_seconds: Some(600),
            open_files: Some(64),
            processes: Some(256),
            file_size_bytes: Some(16 << 20),
            scratch_bytes: 16 << 20,
        }
    }
}

/// How to start workers.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// The `caffe-sandbox-worker` binary.
    pub worker_exe: PathBuf,
    /// The Caffe prefix made by scripts/setup (bound read-only).
    pub caffe_prefix: PathBuf,
    /// Layers that may be weaker than requested (explicit user choice; reported).
    pub allow_weaker: BTreeSet<Layer>,
    pub limits: ResourceLimits,
    /// glog minimum level in the worker (0 INFO, 1 WARNING, 2 ERROR).
    pub log_level: i32,
    /// The seccomp policy file (None: the built-in worker policy, policies/seccomp/worker.json).
    pub seccomp_policy: Option<PathBuf>,
    /// The binary re-executed as the jail's stage 2. `discover` picks `caffe-sandbox-jail-stage2` next to the
    /// running executable (an 8 MB program that starts faster than the whole supervisor); None:
    /// /proc/self/exe, i.e. the running binary, which must call `stage2_main_if_requested` first in `main`.
    pub stage2_exe: Option<PathBuf>,
    /// Extra host paths bound read-only and noexec at the same path (explicit, reported; e.g. a Python standard
    /// library for a test that lets a Python layer really run). Empty by default: the worker needs none.
    pub extra_ro_paths: Vec<PathBuf>,
    /// Extra environment variables for the worker (explicit; empty by default).
    pub extra_env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    /// Fork workers from a pre-initialised fork server (one per configuration, started on first use) instead
    /// of a fresh exec per worker: no dynamic loading or Caffe initialisation per worker, at a security cost
    /// (sibling workers share the server's sandbox and address-space layout): see docs/fork-server.md.
    pub fork_server: bool,
}

impl LaunchConfig {
    /// Defaults: worker next to the running executable, prefix from `CAFFE_PREFIX` or the repository's
    /// `.cache/caffe/prefix`.
    pub fn discover() -> Result<LaunchConfig> {
        Ok(LaunchConfig {
            worker_exe: discover_worker()?,
            caffe_prefix: discover_prefix()?,
            allow_weaker: BTreeSet::new(),
            limits: ResourceLimits::default(),
            log_level: 1,
            seccomp_policy: None,
            stage2_exe: beside_current_exe("caffe-sandbox-jail-stage2"),
            extra_ro_paths: Vec::new(),
            extra_env: Vec::new(),
            fork_server: false,
        })
    }

    /// Whether a missing seccomp listener must fail the start.
    pub fn require_seccomp(&self) -> bool {
        !self.allow_weaker.contains(&Layer::Seccomp)
    }

    /// Name of the seccomp policy for reports.
    pub fn seccomp_policy_name(&self) -> String {
        self.seccomp_policy
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in worker policy".into())
    }
}

/// `name` in the running executable's directory (or its parent: test binaries live in target/<profile>/deps).
fn beside_current_exe(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let found = [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found
}

fn discover_worker() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CAFFE_SANDBOX_WORKER") {
        return Ok(PathBuf::from(p));
    }
    beside_current_exe("caffe-sandbox-worker").ok_or_else(|| {
        Error::Setup(format!(
            "caffe-sandbox-worker not found next to {} (build it with cargo build --workspace, or set \
             CAFFE_SANDBOX_WORKER)",
            std::env::current_exe().unwrap_or_default().display()
        ))
    })
}

fn discover_prefix() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("CAFFE_PREFIX") {
        Some(p) => vec![PathBuf::from(p)],
        None => {
            let mut c = Vec::new();
            if let Ok(exe) = std::env::current_exe() {
                // target/<profile>/caffe-sandbox or target/<profile>/deps/<test> → repository root.
                for up in exe.ancestors().skip(1).take(4) {
                    c.push(up.join(".cache/caffe/prefix"));
                }
            }
            c.push(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../.cache/caffe/prefix"
            )));
            c
        }
    };
    candidates
        .iter()
        .find(|p| p.join("usr/lib/x86_64-linux-gnu/libcaffe.so.1.0.0").is_file())
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .ok_or_else(|| {
            Error::Setup(format!(
                "the Caffe prefix was not found (looked in {}); run scripts/setup or set CAFFE_PREFIX",
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ))
        })
}

/// The library directories of the prefix, in search order.
pub fn prefix_lib_dirs(prefix: &Path) -> Vec<PathBuf> {
    vec![
        prefix.join("usr/lib/x86_64-linux-gnu"),
        prefix.join("usr/lib"),
    ]
}

/// The x86_64 dynamic loader.
const DYNAMIC_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

/// Files a dynamically linked program loads, resolved with the prefix on the library path: read from the ELF
/// files in-process ([`crate::elf_deps`]), or by the loader's `--list` for what that does not model. Cached
/// per program.
pub fn shared_libraries(program: &Path, prefix: &Path) -> Result<Vec<PathBuf>> {
    static CACHE: OnceLock<Mutex<BTreeMap<PathBuf, Vec<PathBuf>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(program) {
        return Ok(v.clone());
    }
    let libs = match crate::elf_deps::resolve(program, &prefix_lib_dirs(prefix)) {
        Ok(libs) => libs,
        // Outside the modelled subset (the reason is not an error): the loader knows.
        Err(crate::elf_deps::Unsupported(_)) => loader_list(program, prefix)?,
    };
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(program.to_path_buf(), libs.clone());
    Ok(libs)
}

/// The dynamic loader's own `--list` (what the `ldd` shell script runs, without the 5 ms of bash), for
/// programs outside what [`crate::elf_deps`] models.
pub fn loader_list(program: &Path, prefix: &Path) -> Result<Vec<PathBuf>> {
    let libpath = std::env::join_paths(prefix_lib_dirs(prefix)).unwrap_or_default();
    let loader = Path::new(DYNAMIC_LOADER);
    let mut cmd = if loader.is_file() {
        let mut c = std::process::Command::new(loader);
        c.arg("--list");
        c
    } else {
        std::process::Command::new("ldd")
    };
    let out = cmd
        .arg(program)
        .env_clear()
        .env("LD_LIBRARY_PATH", &libpath)
        .output()
        .map_err(|e| {
            Error::Setup(format!(
                "listing the libraries of {}: {e}",
                program.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not found") {
        return Err(Error::Setup(format!(
            "{} has unresolved libraries (run scripts/setup):\n{}",
            program.display(),
            text.lines()
                .filter(|l| l.contains("not found"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        // "libfoo.so.1 => /path/libfoo.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.insert(PathBuf::from(p));
        }
    }
    Ok(libs.into_iter().collect())
}

/// A started worker: the sandboxed process and the supervisor's end of the channel.
pub struct Launched {
    pub sandbox: Sandboxed,
    pub channel: Option<SupervisorChannel>,
    pub layers: LayerReport,
    /// The resolved seccomp policy the worker's filter was compiled from (the monitor needs the same one).
    pub seccomp_policy: Option<caffe_sandbox_seccomp::ResolvedPolicy>,
}

/// The process-wide spawner thread (PR_SET_PDEATHSIG follows the creating *thread*, so all spawns happen on
/// one long-lived thread).
pub fn spawner() -> Result<&'static Spawner> {
    static SPAWNER: OnceLock<Spawner> = OnceLock::new();
    if let Some(s) = SPAWNER.get() {
        return Ok(s);
    }
    let s = Spawner::new()
        .map_err(|e| Error::Sandbox(format!("cannot start the spawner thread: {e}")))?;
    Ok(SPAWNER.get_or_init(|| s))
}

/// Starts a worker in the sandbox.
pub fn launch(cfg: &LaunchConfig) -> Result<Launched> {
    let (sup_end, worker_end) =
        socketpair().map_err(|e| Error::Sandbox(format!("socketpair: {e}")))?;
    let channel =
        SupervisorChannel::new(sup_end).map_err(|e| Error::Sandbox(format!("channel: {e}")))?;
    let mut args: Vec<OsString> = vec![
        "--channel-fd".into(),
        "3".into(),
        "--log-level".into(),
        cfg.log_level.to_string().into(),
    ];
    let mut pass_fds = vec![(worker_end, 3)];
    let mut seccomp_policy = None;
    if let Some((prog, policy)) = crate::seccomp_watch::compiled_worker_filter(cfg)? {
        pass_fds.push((prog, 4));
        args.extend(["--seccomp-fd".into(), "4".into()]);
        seccomp_policy = Some(policy);
    }
    let sandbox = spawner()?
        .spawn(worker_spec(cfg, args, pass_fds)?)
        .map_err(|e| Error::Sandbox(e.to_string()))?;
    let layers = sandbox.layers.clone();
    Ok(Launched {
        channel: Some(channel),
        layers,
        seccomp_policy,
        sandbox,
    })
}

/// The sandbox of a worker (or of the fork server, which is started with the same spec).
fn worker_spec(
    cfg: &LaunchConfig,
    args: Vec<OsString>,
    pass_fds: Vec<(OwnedFd, i32)>,
) -> Result<SandboxSpec> {
    let mut spec = SandboxSpec::new(&cfg.worker_exe);
    spec.args = args;
    let libdirs = std::env::join_paths(prefix_lib_dirs(&cfg.caffe_prefix)).unwrap_or_default();
    spec.env = vec![
        ("LD_LIBRARY_PATH".into(), libdirs),
        ("PATH".into(), "/nonexistent".into()),
        ("LANG".into(), "C".into()),
        // glog: stderr only (also set in code), no log files.
        ("GLOG_logtostderr".into(), "1".into()),
    ];
    spec.env.extend(cfg.extra_env.iter().cloned());
    // Exactly the shared libraries the worker loads (bound file by file), not whole system directories.
    spec.ro_paths = shared_libraries(&cfg.worker_exe, &cfg.caffe_prefix)?;
    spec.ro_noexec_paths = cfg.extra_ro_paths.clone();
    spec.proc = ProcMode::None;
    spec.scratch = Some(ScratchSpec {
        path: PathBuf::from("/scratch"),
        size_bytes: cfg.limits.scratch_bytes,
    });
    spec.pass_fds = pass_fds;
    spec.stdout = StdoutMode::Stderr;
    spec.limits = cfg.limits.jail_limits();
    // Requested so the report states honestly whether a delegated cgroup v2 could enforce them; the layer is
    // optional (see README): without it the rlimits above bound the worker.
    spec.cgroup = Some(cfg.limits.cgroup_limits());
    spec.allow_weaker = cfg
        .allow_weaker
        .iter()
        .copied()
        .chain([Layer::CgroupV2])
        .collect();
    if cfg.allow_weaker.contains(&Layer::Seccomp) {
        spec.allow_weaker.insert(Layer::Seccomp);
    }
    spec.stage2_exe = cfg.stage2_exe.clone();
    spec.setup_timeout = Duration::from_secs(10);
    Ok(spec)
}

/// Starts the fork server for `cfg` in the worker's sandbox (everything but seccomp, which each forked worker
/// installs for itself): `caffe-sandbox-worker --zygote` with its control channel at fd 3.
pub(crate) fn launch_zygote(
    cfg: &LaunchConfig,
) -> Result<(Sandboxed, caffe_sandbox_protocol::ZygoteControl)> {
    let (sup_end, zygote_end) =
        socketpair().map_err(|e| Error::Sandbox(format!("socketpair: {e}")))?;
    let ctl = caffe_sandbox_protocol::ZygoteControl::new(sup_end)
        .map_err(|e| Error::Sandbox(format!("channel: {e}")))?;
    let args: Vec<OsString> = vec![
        "--zygote".into(),
        "--channel-fd".into(),
        "3".into(),
        "--log-level".into(),
        cfg.log_level.to_string().into(),
    ];
    let sandbox = spawner()?
        .spawn(worker_spec(cfg, args, vec![(zygote_end, 3)])?)
        .map_err(|e| Error::Sandbox(e.to_string()))?;
    Ok((sandbox, ctl))
}

//! `caffe-sandbox profile --model DIR [INPUT…] [--runs N] [--out FILE]`: the real workload under `strace`, in the
//! production sandbox, turned into a minimal seccomp policy and a diff against the reviewed one.
//!
//! How: the worker is started by the supervisor's own launch code with the production configuration (same
//! namespaces, same read-only root, Landlock, rlimits, scratch; the worker is still pid 1 of its pid namespace, so
//! `${worker_tgid}` means what it means in production). Only the seccomp layer is weakened, explicitly and for this
//! run, so that a syscall the policy lacks is recorded instead of killing the worker. Right after `Hello` (the
//! moment the worker would have installed its filter; everything before is library loading, which `worker.json`
//! does not govern) the supervisor attaches `strace -f -qq -ttt -p PID` from the host side (no tracer inside the
//! sandbox, nothing added to its filesystem) and waits until the kernel lists strace as the tracer of every
//! thread. The load/inference boundary is the supervisor's own fact: the wall-clock time at which `Loaded` arrived
//! (when production flips the seccomp monitor to the inference phase), compared with strace's `-ttt` stamps.
use crate::exit;
use crate::options::{FirewallArgs, SandboxArgs};
use crate::workload::{input_name, inputs_or_sample, progress, read_input};
use caffe_sandbox_seccomp::{PhasedProfile, Policy};
use caffe_sandbox_supervisor::{Error, LaunchConfig, Layer, ModelBundle, Worker};
use clap::Args;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Arguments of `profile`.
#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// Model directory: deploy.prototxt, weights (*.caffemodel), optional model.toml and labels.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Images or .npy tensors to run (default: the bundled sample photo).
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Independent runs (fresh worker each), merged into one profile.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// Write the minimal seccomp policy (JSON, schema caffe-sandbox-seccomp-policy/1) here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The seccomp policy to diff against and to derive the minimal policy from (default: the shipped
    /// policies/seccomp/worker.json).
    #[arg(long, value_name = "FILE")]
    pub against: Option<PathBuf>,
    /// Keep the raw strace output of each run in this directory.
    #[arg(long, value_name = "DIR")]
    pub keep_traces: Option<PathBuf>,
    /// The strace binary.
    #[arg(long, value_name = "PATH", default_value = "strace")]
    pub strace: PathBuf,
    /// Print the diff as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    #[command(flatten)]
    pub firewall: FirewallArgs,
}

/// Exit code when the profile shows something the reference policy would not let run.
pub const NOT_COVERED: i32 = 1;

pub fn run(args: ProfileArgs) -> i32 {
    match profile(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("caffe-sandbox profile: error [{}]: {e}", e.label());
            exit::code_for(&e)
        }
    }
}

fn profile(args: &ProfileArgs) -> Result<i32, Error> {
    let mut cfg = args.sandbox.launch_config()?;
    // The only difference from production, explicit and reported: no seccomp filter, so that unknown syscalls are
    // recorded rather than fatal.
    cfg.allow_weaker.insert(Layer::Seccomp);
    let (reference_name, reference_json) = match &args.against {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p)
                .map_err(|e| Error::Setup(format!("seccomp policy {}: {e}", p.display())))?,
        ),
        None => (
            "policies/seccomp/worker.json".to_string(),
            caffe_sandbox_seccomp::policy::WORKER_POLICY_JSON.to_string(),
        ),
    };
    let reference = Policy::from_json(&reference_json)
        .map_err(|e| Error::Setup(format!("seccomp policy {reference_name}: {e}")))?;
    let inputs = inputs_or_sample(&args.inputs, &cfg)?;
    let model = ModelBundle::from_dir_with(
        &args.model,
        &Default::default(),
        &args.firewall.mode(),
        &args.firewall.integrity(),
    )?;
    if let Some(d) = &args.keep_traces {
        std::fs::create_dir_all(d).map_err(|e| Error::Setup(format!("{}: {e}", d.display())))?;
    }
    let steps_per_run = 3 + inputs.len() as u64;
    let pb = progress(u64::from(args.runs) * steps_per_run, "profile");
    let mut merged = PhasedProfile::default();
    for run in 1..=args.runs {
        let r = one_run(args, &cfg, &model, &inputs, run, &pb)?;
        merged.merge(&r);
    }
    pb.finish_and_clear();
    let diff = merged
        .diff(&reference)
        .map_err(|e| Error::Setup(format!("seccomp policy {reference_name}: {e}")))?;
    if let Some(out) = &args.out {
        let name = format!(
            "minimal-{}",
            args.model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        );
        let json = merged
            .minimal_policy_json(&name, &reference_json)
            .map_err(|e| Error::Setup(format!("minimal policy: {e}")))?;
        std::fs::write(out, json).map_err(|e| Error::Setup(format!("{}: {e}", out.display())))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "model": args.model, "inputs": inputs, "against": reference_name,
                                 "minimal_policy": args.out, "diff": diff, "covered": diff.clean() })
        );
    } else {
        print!("{}", diff.render());
        if let Some(out) = &args.out {
            println!("minimal policy written to {}", out.display());
        }
        println!(
            "verdict: {}",
            if diff.clean() {
                format!("the workload runs under {reference_name}")
            } else {
                format!("the workload needs more than {reference_name} allows (see above)")
            }
        );
    }
    Ok(if diff.clean() { exit::OK } else { NOT_COVERED })
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One traced run: start, attach, load, one request per input, shutdown.
fn one_run(
    args: &ProfileArgs,
    cfg: &LaunchConfig,
    model: &ModelBundle,
    inputs: &[PathBuf],
    run: u32,
    pb: &indicatif::ProgressBar,
) -> Result<PhasedProfile, Error> {
    pb.set_message(format!("run {run}: starting the worker"));
    let mut worker = Worker::start(cfg, args.sandbox.deadlines())?;
    let pid = worker
        .pid()
        .ok_or_else(|| Error::Sandbox("the worker has no pid".into()))?;
    pb.inc(1);
    pb.set_message(format!("run {run}: attaching strace to pid {pid}"));
    let trace_dir = args.keep_traces.clone().unwrap_or_else(std::env::temp_dir);
    let trace = trace_dir.join(format!(
        "caffe-sandbox-profile-{}-{pid}-run{run}.strace",
        std::process::id()
    ));
    let mut tracer = Tracer::attach(&args.strace, pid, &trace)?;
    pb.inc(1);
    pb.set_message(format!("run {run}: loading the model (traced)"));
    worker.load(model)?;
    let boundary = now_epoch();
    pb.inc(1);
    let name = input_name(&worker, model);
    for (i, path) in inputs.iter().enumerate() {
        pb.set_message(format!("run {run}: request {}/{}", i + 1, inputs.len()));
        let input = read_input(path, &name)?;
        worker.infer(&[input])?;
        pb.inc(1);
    }
    worker.shutdown();
    let text = tracer.finish(&trace)?;
    if args.keep_traces.is_none() {
        let _ = std::fs::remove_file(&trace);
    }
    let p = PhasedProfile::from_strace(&text, boundary);
    if p.load.counts.is_empty() || p.inference.counts.is_empty() {
        return Err(Error::Sandbox(format!(
            "strace recorded no {} syscalls of pid {pid}: tracing did not work",
            if p.load.counts.is_empty() {
                "load-phase"
            } else {
                "inference-phase"
            }
        )));
    }
    Ok(p)
}

/// `strace -f -qq -ttt -p PID`, run by the supervisor outside the sandbox.
struct Tracer {
    child: Child,
}

impl Tracer {
    fn attach(strace: &Path, pid: i32, out: &Path) -> Result<Tracer, Error> {
        let mut child = Command::new(strace)
            .args(["-f", "-qq", "-ttt", "-e", "trace=all", "-o"])
            .arg(out)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Setup(format!(
                    "cannot run {} ({e}): install strace (scripts/setup does)",
                    strace.display()
                ))
            })?;
        let tracer_pid = child.id();
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                return Err(Error::Sandbox(format!(
                    "strace could not attach to the worker (pid {pid}, {st}): {} — profiling needs ptrace access to \
                     the worker (root, or the same uid without a Yama ptrace_scope above 0)",
                    err.trim()
                )));
            }
            if all_threads_traced_by(pid, tracer_pid) {
                return Ok(Tracer { child });
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Sandbox(format!(
                    "strace did not attach to every thread of pid {pid} within 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for strace to end (the worker is gone) and returns what it wrote.
    fn finish(&mut self, out: &Path) -> Result<String, Error> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        std::fs::read_to_string(out)
            .map_err(|e| Error::Sandbox(format!("strace output {}: {e}", out.display())))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether the kernel lists `tracer` as the tracer of every thread of `pid`.
fn all_threads_traced_by(pid: i32, tracer: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let traced = status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if traced != Some(tracer) {
            return false;
        }
        any = true;
    }
    any
}

//! `caffe-sandbox calibrate --model DIR [INPUT…] [--margin 1.5] [--out FILE]`: measure the model in the
//! production sandbox and write its limits, with the stated margin, into the model's policy (TOML, docs/policy.md).
//!
//! Measured from the supervisor side, never from the worker's word: `/proc/<pid>/status` (VmPeak: the peak
//! address space RLIMIT_AS bounds; VmHWM: peak resident memory, what a cgroup memory.max bounds; Threads),
//! `/proc/<pid>/stat` (utime + stime deltas around the load and each request), `/proc/<pid>/fd` (highest fd) and
//! the worker's scratch tmpfs through `/proc/<pid>/root`. VmPeak/VmHWM are kernel high-water marks, so no peak is
//! missed between samples; threads, fds and scratch are sampled after start, load and every request.
use crate::exit;
use crate::options::{FirewallArgs, SandboxArgs};
use crate::workload::{
    clock_ticks, fd_high_water, input_name, inputs_or_sample, progress, read_input, sample,
    scratch_used, ProcSample,
};
use caffe_sandbox_policy::SandboxPolicy;
use caffe_sandbox_supervisor::{Error, ModelBundle, Worker};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `calibrate`.
#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// Model directory: deploy.prototxt, weights (*.caffemodel), optional model.toml and labels.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Images or .npy tensors to run (default: the bundled sample photo).
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Limits = measured peak × MARGIN (rounded up; at least 1.0).
    #[arg(long, default_value_t = 1.5)]
    pub margin: f64,
    /// Requests the CPU-time limit (RLIMIT_CPU, over the worker's whole life) must cover, at the worst measured
    /// per-request CPU time, on top of start and load.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub requests: u64,
    /// Fresh workers to measure (the maxima are kept).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// The policy to write (default: DIR/policy.toml). An existing file is updated in place (comments kept);
    /// otherwise the built-in `inference` policy is the base.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Base policy instead of the existing output file or `builtin:inference`.
    #[arg(long, value_name = "POLICY")]
    pub base: Option<String>,
    /// Print the measurements and limits as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    #[command(flatten)]
    pub firewall: FirewallArgs,
}

/// What was measured (maxima over runs and requests).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measured {
    pub runs: u32,
    pub requests: u64,
    /// VmPeak right after `Hello` (libraries, OpenBLAS threads), bytes.
    pub vm_peak_start: u64,
    /// VmPeak after the model was loaded, bytes.
    pub vm_peak_loaded: u64,
    /// VmPeak over the whole run, bytes.
    pub vm_peak: u64,
    /// VmHWM over the whole run, bytes.
    pub vm_hwm: u64,
    pub threads: u64,
    /// Highest fd number + 1.
    pub fds: u64,
    /// Scratch tmpfs bytes in use (sampled).
    pub scratch_bytes: u64,
    /// CPU seconds for start + load.
    pub cpu_start_load_s: f64,
    /// Worst CPU seconds of one request.
    pub cpu_per_request_s: f64,
    /// Mean CPU seconds of one request.
    pub cpu_per_request_mean_s: f64,
    /// Worst wall-clock seconds of a load and of a request.
    pub wall_load_s: f64,
    pub wall_request_s: f64,
}

/// The limits written.
#[derive(Debug, Clone, Serialize)]
pub struct Calibrated {
    pub address_space_bytes: u64,
    pub memory_max_bytes: u64,
    pub cpu_seconds: u64,
    pub processes: u64,
    pub scratch_bytes: u64,
    pub load_deadline_s: u64,
    pub request_deadline_s: u64,
}

const MIB: u64 = 1 << 20;

fn round_up_mib(x: f64) -> u64 {
    ((x / MIB as f64).ceil() as u64).max(1) * MIB
}

impl Measured {
    /// Limits with `margin` (floors keep wall-clock deadlines robust against a busy host, and a tmpfs size > 0:
    /// size 0 would mean unlimited).
    pub fn limits(&self, margin: f64, requests: u64) -> Calibrated {
        let m = margin.max(1.0);
        let processes = ((self.threads as f64 * m).ceil() as u64).max(self.threads + 2);
        Calibrated {
            address_space_bytes: round_up_mib(self.vm_peak as f64 * m),
            memory_max_bytes: round_up_mib(self.vm_hwm as f64 * m),
            cpu_seconds: ((self.cpu_start_load_s + requests as f64 * self.cpu_per_request_s) * m)
                .ceil()
                .max(1.0) as u64,
            processes,
            scratch_bytes: round_up_mib(self.scratch_bytes as f64 * m).max(MIB),
            load_deadline_s: ((self.wall_load_s * m).ceil() as u64).max(10),
            request_deadline_s: ((self.wall_request_s * m).ceil() as u64).max(5),
        }
    }
}

pub fn run(args: CalibrateArgs) -> i32 {
    match calibrate(&args) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("caffe-sandbox calibrate: error [{}]: {e}", e.label());
            exit::code_for(&e)
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

fn calibrate(args: &CalibrateArgs) -> Result<(), Error> {
    if !(args.margin.is_finite() && args.margin >= 1.0) {
        return Err(Error::Setup(format!(
            "--margin must be a number >= 1.0, got {}",
            args.margin
        )));
    }
    let cfg = args.sandbox.launch_config()?;
    let inputs = inputs_or_sample(&args.inputs, &cfg)?;
    let model = ModelBundle::from_dir_with(
        &args.model,
        &Default::default(),
        &args.firewall.mode(),
        &args.firewall.integrity(),
    )?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.model.join("policy.toml"));
    // Read the base first: a bad base fails before minutes of measuring.
    let base_text = match (&args.base, out.is_file()) {
        (Some(spec), _) => {
            SandboxPolicy::load_spec(spec)
                .map_err(|e| Error::Setup(e.to_string()))?
                .text
        }
        (None, true) => {
            SandboxPolicy::load(&out)
                .map_err(|e| Error::Setup(e.to_string()))?
                .text
        }
        (None, false) => SandboxPolicy::inference().text,
    };
    let tck = clock_ticks();
    let pb = progress(
        u64::from(args.runs) * (2 + inputs.len() as u64),
        "calibrate",
    );
    let mut m = Measured::default();
    let mut cpu_sum = 0.0;
    for run in 1..=args.runs {
        pb.set_message(format!("run {run}: starting the worker"));
        let mut w = Worker::start(&cfg, args.sandbox.deadlines())?;
        let pid = w
            .pid()
            .ok_or_else(|| Error::Sandbox("the worker has no pid".into()))?;
        let read = |what: &str| -> Result<ProcSample, Error> {
            sample(pid).map_err(|e| Error::Sandbox(format!("/proc/{pid} ({what}): {e}")))
        };
        let observe = |m: &mut Measured, s: &ProcSample| {
            m.vm_peak = m.vm_peak.max(s.vm_peak);
            m.vm_hwm = m.vm_hwm.max(s.vm_hwm);
            m.threads = m.threads.max(s.threads);
            m.fds = m.fds.max(fd_high_water(pid).unwrap_or(0));
            m.scratch_bytes = m
                .scratch_bytes
                .max(scratch_used(pid, "/scratch").unwrap_or(0));
        };
        let started = read("after start")?;
        m.vm_peak_start = m.vm_peak_start.max(started.vm_peak);
        observe(&mut m, &started);
        pb.inc(1);
        pb.set_message(format!("run {run}: loading"));
        let t = Instant::now();
        w.load(&model)?;
        m.wall_load_s = m.wall_load_s.max(t.elapsed().as_secs_f64());
        let loaded = read("after load")?;
        m.vm_peak_loaded = m.vm_peak_loaded.max(loaded.vm_peak);
        m.cpu_start_load_s = m.cpu_start_load_s.max(loaded.cpu_ticks as f64 / tck);
        observe(&mut m, &loaded);
        pb.inc(1);
        let name = input_name(&w, &model);
        let mut before = loaded;
        for (i, path) in inputs.iter().enumerate() {
            pb.set_message(format!("run {run}: request {}/{}", i + 1, inputs.len()));
            let input = read_input(path, &name)?;
            let t = Instant::now();
            w.infer(&[input])?;
            m.wall_request_s = m.wall_request_s.max(t.elapsed().as_secs_f64());
            let after = read("after a request")?;
            let cpu = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / tck;
            m.cpu_per_request_s = m.cpu_per_request_s.max(cpu);
            cpu_sum += cpu;
            m.requests += 1;
            observe(&mut m, &after);
            before = after;
            pb.inc(1);
        }
        w.shutdown();
        m.runs += 1;
    }
    pb.finish_and_clear();
    m.cpu_per_request_mean_s = cpu_sum / m.requests.max(1) as f64;
    let lim = m.limits(args.margin, args.requests);
    let text = write_limits(&base_text, &args.model, &m, &lim, args.margin)?;
    // The file must load as a policy before it replaces anything.
    SandboxPolicy::parse(&text, &out.display().to_string(), out.parent())
        .map_err(|e| Error::Setup(format!("calibrated policy does not validate: {e}")))?;
    std::fs::write(&out, &text).map_err(|e| Error::Setup(format!("{}: {e}", out.display())))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "model": args.model, "inputs": inputs, "margin": args.margin,
                                 "measured": m, "limits": lim, "policy": out })
        );
        return Ok(());
    }
    let rows: Vec<(&str, String, String, &str)> = vec![
        (
            "address space (VmPeak)",
            mib(m.vm_peak),
            mib(lim.address_space_bytes),
            "rlimits.address_space",
        ),
        ("  after start", mib(m.vm_peak_start), String::new(), ""),
        ("  after load", mib(m.vm_peak_loaded), String::new(), ""),
        (
            "resident (VmHWM)",
            mib(m.vm_hwm),
            mib(lim.memory_max_bytes),
            "cgroup.memory_max",
        ),
        (
            "CPU start+load",
            format!("{:.2} s", m.cpu_start_load_s),
            format!("{} s", lim.cpu_seconds),
            "rlimits.cpu_seconds",
        ),
        (
            "CPU per request",
            format!(
                "{:.3} s max, {:.3} s mean",
                m.cpu_per_request_s, m.cpu_per_request_mean_s
            ),
            format!("(x {} requests)", args.requests),
            "",
        ),
        (
            "threads",
            m.threads.to_string(),
            lim.processes.to_string(),
            "rlimits.processes, cgroup.pids_max",
        ),
        (
            "fds (highest + 1)",
            m.fds.to_string(),
            "(unchanged)".into(),
            "rlimits.open_files",
        ),
        (
            "scratch",
            mib(m.scratch_bytes),
            mib(lim.scratch_bytes),
            "scratch.size, rlimits.file_size",
        ),
        (
            "wall load",
            format!("{:.2} s", m.wall_load_s),
            format!("{} s", lim.load_deadline_s),
            "deadlines.load",
        ),
        (
            "wall request",
            format!("{:.3} s", m.wall_request_s),
            format!("{} s", lim.request_deadline_s),
            "deadlines.request",
        ),
    ];
    println!(
        "calibrated {} ({} run(s), {} request(s), margin {}):\n",
        args.model.display(),
        m.runs,
        m.requests,
        args.margin
    );
    println!(
        "  {:<24} {:<30} {:<18} field",
        "measure", "measured", "limit"
    );
    for (a, b, c, d) in rows {
        println!("  {a:<24} {b:<30} {c:<18} {d}");
    }
    println!("\nwritten to {}", out.display());
    Ok(())
}

/// The base policy text with the calibrated limits set (comments and everything else kept).
fn write_limits(
    base: &str,
    model: &std::path::Path,
    m: &Measured,
    l: &Calibrated,
    margin: f64,
) -> Result<String, Error> {
    use toml_edit::{value, DocumentMut};
    const H: &str = "# [calibrated]";
    let mut doc: DocumentMut = base
        .parse()
        .map_err(|e| Error::Setup(format!("base policy: {e}")))?;
    let size = |b: u64| format!("{}MiB", b / MIB);
    let secs = |s: u64| format!("{s}s");
    let model_name = model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    if !doc
        .get("name")
        .and_then(|n| n.as_str())
        .is_some_and(|n| n.ends_with("-calibrated"))
    {
        doc["name"] = value(format!("{model_name}-calibrated"));
    }
    doc["rlimits"]["address_space"] = value(size(l.address_space_bytes));
    doc["rlimits"]["cpu_seconds"] = value(l.cpu_seconds as i64);
    doc["rlimits"]["processes"] = value(l.processes as i64);
    doc["rlimits"]["file_size"] = value(size(l.scratch_bytes));
    doc["scratch"]["size"] = value(size(l.scratch_bytes));
    doc["cgroup"]["memory_max"] = value(size(l.memory_max_bytes));
    doc["cgroup"]["pids_max"] = value(l.processes as i64);
    doc["deadlines"]["load"] = value(secs(l.load_deadline_s));
    doc["deadlines"]["request"] = value(secs(l.request_deadline_s));
    let header = format!(
        "{H} by `caffe-sandbox calibrate` for {model_name}: {} run(s), {} request(s), margin {margin}\n\
         {H} measured VmPeak {} (after start {}, after load {}), VmHWM {}, threads {}, scratch {}\n\
         {H} CPU start+load {:.2} s, per request {:.3} s max; wall load {:.2} s, request {:.3} s\n",
        m.runs,
        m.requests,
        mib(m.vm_peak),
        mib(m.vm_peak_start),
        mib(m.vm_peak_loaded),
        mib(m.vm_hwm),
        m.threads,
        mib(m.scratch_bytes),
        m.cpu_start_load_s,
        m.cpu_per_request_s,
        m.wall_load_s,
        m.wall_request_s
    );
    // An earlier calibration header is replaced, not stacked.
    let body: String = doc
        .to_string()
        .lines()
        .skip_while(|l| l.starts_with(H))
        .map(|l| format!("{l}\n"))
        .collect();
    Ok(header + &body)
}

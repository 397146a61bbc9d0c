//! `caffe-sandbox bench`: the project's own benchmark. Everything is measured in the same run on the same
//! machine, and printed as ratios against the baselines:
//! - the in-process baseline (`caffe-inprocess`: the same libcaffe, shim and preprocessing, no sandbox, no
//!   protocol): model load, first forward, steady forward;
//! - the sandboxed worker (fresh exec) and a worker forked from the fork server: start → ready, load, first
//!   forward, steady forward, through the real protocol;
//! - spawn cost of `/bin/true` under `caffe-sandbox run`, `bwrap` (equivalent namespaces, binds and environment
//!   plus a seccomp filter), `crun run` and `runc run`, and the worker from spawn to ready under caffe-sandbox
//!   vs under bwrap with the same binds (p50/p95 over K runs).
//!
//! Interleaving: every round measures each variant once, in turn, in a fresh process (cold start, then a
//! batch of steady forwards, then exit), with a pause between variants so that one process's spinning
//! OpenBLAS threads do not run into the next measurement; the variants take turns at going first. Times are
//! medians over all rounds; ratios are the median of the per-round ratios (a paired comparison). Fresh processes per
//! round sample the differences between instances of one program (where its buffers land, how its threads
//! are placed: ±1% on open_nsfw here) equally for every variant, and a change of the machine's pace during
//! the run hits every variant alike. The spawn tools likewise alternate run by run.
//!
//! bwrap, crun and runc come from Debian; the bench installs them with apt-get when missing (root) and says so.
use crate::options::SandboxArgs;
use caffe_sandbox_supervisor::launch::{prefix_lib_dirs, shared_libraries};
use caffe_sandbox_supervisor::{Input, ModelBundle, Worker};
use clap::Args;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model directory (default: the open_nsfw model made by scripts/setup).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Image used for the forward passes (default: the chelsea.png sample).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Steady-state forward passes measured per variant, spread over the rounds (median reported).
    #[arg(long, default_value_t = 120)]
    pub iters: usize,
    /// Spawn measurements per tool (p50/p95 reported).
    #[arg(long, default_value_t = 20)]
    pub spawn_runs: usize,
    /// Rounds: each measures every variant once, in turn, in a fresh process (cold start, then iters/rounds
    /// steady forwards), so that instance-to-instance differences and changes of the machine's pace hit every
    /// variant alike. Cold-start and steady medians are over all rounds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub rounds: u64,
    /// Skip the bwrap/crun comparison (e.g. when they cannot be installed).
    #[arg(long)]
    pub no_external: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 || n == 0 {
        return percentile(v, 50.0);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    (v[n / 2 - 1] + v[n / 2]) / 2.0
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

fn repo_default(rel: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .skip(1)
        .take(4)
        .map(|d| d.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(rel))
}

pub fn run(args: BenchArgs) -> i32 {
    match bench(&args) {
        Ok(v) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print_table(&v);
            }
            0
        }
        Err(e) => {
            eprintln!("caffe-sandbox bench: {e}");
            1
        }
    }
}

fn bench(args: &BenchArgs) -> Result<Value, String> {
    let model_dir = args
        .model
        .clone()
        .unwrap_or_else(|| repo_default(".cache/models/open_nsfw"));
    let image = args
        .image
        .clone()
        .unwrap_or_else(|| repo_default(".cache/samples/chelsea.png"));
    let cfg = args.sandbox.launch_config().map_err(|e| e.to_string())?;
    let inprocess = cfg.worker_exe.with_file_name("caffe-inprocess");
    let rounds = (args.rounds as usize).clamp(1, args.iters.max(1));
    let per_round = args.iters.div_ceil(rounds).max(1);
    let model = ModelBundle::from_dir_checked(&model_dir, &Default::default(), &Default::default())
        .map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&image).map_err(|e| format!("{}: {e}", image.display()))?;
    let deadlines = args.sandbox.deadlines();
    let mut fork_cfg = cfg.clone();
    fork_cfg.fork_server = true;

    // Every round measures each variant once, in turn, each in a fresh process: cold start (spawn, load, first
    // forward), then `per_round` steady forwards, then it exits. Fresh processes per round sample what differs
    // between instances of one program (where its buffers land in memory, how its threads are placed) equally
    // for every variant; alternating the variants within a round spreads any change of the machine's pace
    // over all of them alike.
    eprintln!(
        "[bench] {rounds} rounds, each variant in a fresh process per round: cold start, then {per_round} \
         steady forwards (in-process ({}), sandboxed worker, forked worker, in-process plain and under run)",
        inprocess.display()
    );
    let mut base_cold = Cold::default();
    let mut sandboxed_cold = Cold::default();
    let mut forked_cold = Cold::default();
    let mut base_outputs = Value::Null;
    let mut first_out = Vec::new();
    let mut server_start = None;
    let mut fork_ms = Vec::new();
    let mut base_steady = Rounds::default();
    let mut steady = Rounds::default();
    let mut forked_steady = Rounds::default();
    let mut layers = Value::Null;
    let mut reference: Result<(Rounds, Rounds), String> = Ok(Default::default());
    // The fork server's one-time start (its first fork included), then fork → ready of further workers.
    let t = Instant::now();
    match Worker::start(&fork_cfg, deadlines.clone()) {
        Ok(w) => {
            w.shutdown();
            server_start = Some(t.elapsed());
            for _ in 0..args.spawn_runs {
                let t = Instant::now();
                match Worker::start(&fork_cfg, deadlines.clone()) {
                    Ok(w) => {
                        fork_ms.push(ms(t.elapsed()));
                        w.shutdown();
                    }
                    Err(e) => {
                        forked_cold.error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        Err(e) => forked_cold.error = Some(e.to_string()),
    }
    quiesce();
    for round in 0..rounds {
        // The variants take turns at going first, so that no variant always runs in the same place of a round.
        for slot in 0..4 {
            match (round + slot) % 4 {
                0 => {
                    let base = inprocess_run(&inprocess, &model_dir, &image, per_round)?;
                    base_cold.push(
                        0.0,
                        base["load_ms"].as_f64().unwrap_or(f64::NAN),
                        base["first_forward_ms"].as_f64().unwrap_or(f64::NAN),
                    );
                    base_steady.push(steady_of(&base));
                    if base_outputs.is_null() {
                        base_outputs = base["outputs"].clone();
                    }
                    quiesce();
                }
                1 => {
                    let (mut w, out) =
                        cold_worker(&cfg, &deadlines, &model, &bytes, &mut sandboxed_cold)?;
                    if first_out.is_empty() {
                        first_out = out;
                    }
                    let measured = steady_forwards(&mut w, &bytes, per_round);
                    layers = serde_json::to_value(w.layers()).unwrap_or(Value::Null);
                    w.shutdown();
                    steady.push(measured?);
                }
                2 if forked_cold.error.is_none() => {
                    let forked =
                        cold_worker(&fork_cfg, &deadlines, &model, &bytes, &mut forked_cold)
                            .and_then(|(mut f, _)| {
                                let measured = steady_forwards(&mut f, &bytes, per_round);
                                f.shutdown();
                                measured
                            });
                    match forked {
                        Ok(m) => forked_steady.push(m),
                        Err(e) => forked_cold.error = Some(e),
                    }
                }
                3 => {
                    if let Ok((plain, jailed)) = &mut reference {
                        let under_run_first = round % 2 == 1;
                        match inprocess_plain_and_under_run(
                            &inprocess,
                            &model_dir,
                            &image,
                            per_round,
                            under_run_first,
                        ) {
                            Ok((p, j)) => {
                                plain.push(p);
                                jailed.push(j);
                            }
                            Err(e) => reference = Err(e),
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let base_steady_med = base_steady.median();
    let steady_med = steady.median();
    let same = first_out
        .iter()
        .find(|o| o.name == "prob")
        .zip(base_outputs["prob"]["data"].as_array())
        .map(|(o, b)| {
            o.data
                .iter()
                .zip(b)
                .all(|(x, y)| (f64::from(*x) - y.as_f64().unwrap_or(f64::NAN)).abs() <= 1e-6)
        })
        .unwrap_or(false);

    let (base_load, base_first) = (base_cold.load(), base_cold.first());
    let mut result = json!({
        "model": model_dir, "image": image, "iters": rounds * per_round, "rounds": rounds,
        "outputs_match_in_process_1e-6": same,
        "in_process": { "load_ms": base_load, "first_forward_ms": base_first, "steady_forward_median_ms": base_steady_med },
        "sandboxed": { "spawn_to_ready_ms": sandboxed_cold.start(), "load_ms": sandboxed_cold.load(),
                       "first_forward_ms": sandboxed_cold.first(), "steady_forward_median_ms": steady_med },
        "ratios": {
            "steady_forward_sandboxed_over_in_process": steady.ratio_to(&base_steady),
            "load_sandboxed_over_in_process": sandboxed_cold.load() / base_load,
            "cold_sandboxed_over_in_process": sandboxed_cold.total.ratio_to(&base_cold.total),
        },
        "targets": { "steady_forward_ratio_max": 1.02, "cold_ratio_max": 1.10 },
        "layers": layers,
    });
    result["in_process_under_run"] = match reference {
        Ok((plain, jailed)) => json!({
            "plain_steady_forward_median_ms": plain.median(),
            "under_run_steady_forward_median_ms": jailed.median(),
            "ratio": jailed.ratio_to(&plain),
        }),
        Err(e) => json!({ "error": e }),
    };
    result["fork_server"] = match forked_cold.error.take() {
        None => {
            let steady_med = forked_steady.median();
            json!({
                "server_start_and_first_fork_ms": server_start.map(ms),
                "fork_to_ready": { "p50_ms": percentile(&mut fork_ms, 50.0),
                                   "p95_ms": percentile(&mut fork_ms, 95.0), "runs": args.spawn_runs },
                "fork_to_ready_ms": forked_cold.start(), "load_ms": forked_cold.load(),
                "first_forward_ms": forked_cold.first(),
                "steady_forward_median_ms": steady_med,
                "cold_forked_over_in_process": forked_cold.total.ratio_to(&base_cold.total),
                "steady_forward_forked_over_in_process": forked_steady.ratio_to(&base_steady),
            })
        }
        Some(e) => json!({ "error": e }),
    };
    if !args.no_external {
        result["spawn"] = spawn_comparison(args, &cfg)?;
    }
    Ok(result)
}

/// Cold-start samples of one variant (ms): start → ready (0 in-process), load, first forward.
#[derive(Default)]
struct Cold {
    start: Vec<f64>,
    load: Vec<f64>,
    first: Vec<f64>,
    /// start + load + first, one sample per round.
    total: Rounds,
    error: Option<String>,
}

impl Cold {
    fn push(&mut self, start: f64, load: f64, first: f64) {
        self.start.push(start);
        self.load.push(load);
        self.first.push(first);
        self.total.push(vec![start + load + first]);
    }
    fn start(&self) -> f64 {
        median(&mut self.start.clone())
    }
    fn load(&self) -> f64 {
        median(&mut self.load.clone())
    }
    fn first(&self) -> f64 {
        median(&mut self.first.clone())
    }
}

/// One variant's samples, kept round by round.
#[derive(Default)]
struct Rounds(Vec<Vec<f64>>);

impl Rounds {
    fn push(&mut self, round: Vec<f64>) {
        self.0.push(round);
    }

    /// The median of every sample of every round.
    fn median(&self) -> f64 {
        median(&mut self.0.concat())
    }

    /// A paired comparison with `base`: the median over rounds of (this variant's median in round i ÷ `base`'s
    /// median in round i). The variants of one round run within seconds of each other, so a change of the
    /// machine's pace between rounds (this VM's forward pass moves between ~39 and ~52 ms) cancels out of each
    /// round's ratio, where a ratio of pooled medians would compare samples taken at different paces.
    fn ratio_to(&self, base: &Rounds) -> f64 {
        let mut ratios: Vec<f64> = self
            .0
            .iter()
            .zip(&base.0)
            .map(|(a, b)| median(&mut a.clone()) / median(&mut b.clone()))
            .collect();
        median(&mut ratios)
    }
}

/// Starts a worker, loads the model and runs the first forward, timing each step into `cold`.
fn cold_worker(
    cfg: &caffe_sandbox_supervisor::LaunchConfig,
    deadlines: &caffe_sandbox_supervisor::Deadlines,
    model: &ModelBundle,
    bytes: &[u8],
    cold: &mut Cold,
) -> Result<(Worker, Vec<caffe_sandbox_supervisor::Output>), String> {
    let t = Instant::now();
    let mut w = Worker::start(cfg, deadlines.clone()).map_err(|e| e.to_string())?;
    let ready = t.elapsed();
    let t = Instant::now();
    let info = w.load(model).map_err(|e| e.to_string())?;
    let load = t.elapsed();
    let input = Input::Image {
        name: info.inputs[0].name.clone(),
        bytes: bytes.to_vec(),
    };
    let t = Instant::now();
    let out = w
        .infer(std::slice::from_ref(&input))
        .map_err(|e| e.to_string())?;
    cold.push(ms(ready), ms(load), ms(t.elapsed()));
    Ok((w, out))
}

/// `n` steady forwards of `bytes` on a warm worker, timed end to end (the request, the protocol, the reply),
/// then a pause (see [`quiesce`]).
fn steady_forwards(w: &mut Worker, bytes: &[u8], n: usize) -> Result<Vec<f64>, String> {
    let input = Input::Image {
        name: w
            .model_info()
            .map(|i| i.inputs[0].name.clone())
            .unwrap_or_else(|| "data".into()),
        bytes: bytes.to_vec(),
    };
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        w.infer(std::slice::from_ref(&input))
            .map_err(|e| e.to_string())?;
        times.push(ms(t.elapsed()));
    }
    quiesce();
    Ok(times)
}

/// Lets the previous measurement's OpenBLAS threads finish spinning (they busy-wait a while after each call
/// before sleeping) so that they do not compete with the next one for the CPUs.
fn quiesce() {
    std::thread::sleep(Duration::from_millis(250));
}

/// `caffe-inprocess --model M --image I --iters N`: its whole command line.
fn inprocess_argv(inprocess: &Path, model: &Path, image: &Path, iters: usize) -> Vec<OsString> {
    vec![
        inprocess.into(),
        "--model".into(),
        model.into(),
        "--image".into(),
        image.into(),
        "--iters".into(),
        iters.to_string().into(),
    ]
}

/// The same one-shot `caffe-inprocess`, plainly and under `caffe-sandbox run` (every layer: namespaces, minimal
/// root, Landlock, rlimits, the run-tool seccomp filter), back to back (in the order given): the steady forwards
/// of each, (plain, under run). This prices what the sandbox layers themselves cost a forward pass, without the
/// worker or the protocol.
fn inprocess_plain_and_under_run(
    inprocess: &Path,
    model: &Path,
    image: &Path,
    iters: usize,
    under_run_first: bool,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let (plain, jailed) = if under_run_first {
        let jailed = inprocess_under_run(inprocess, model, image, iters)?;
        quiesce();
        (inprocess_run(inprocess, model, image, iters)?, jailed)
    } else {
        let plain = inprocess_run(inprocess, model, image, iters)?;
        quiesce();
        (plain, inprocess_under_run(inprocess, model, image, iters)?)
    };
    quiesce();
    Ok((steady_of(&plain), steady_of(&jailed)))
}

/// One `caffe-inprocess` run under `caffe-sandbox run` (read-only access to the model and the image).
fn inprocess_under_run(
    inprocess: &Path,
    model: &Path,
    image: &Path,
    iters: usize,
) -> Result<Value, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(&me)
        .args(["run", "--audit-log", "/dev/null", "--ro"])
        .arg(model)
        .arg("--ro")
        .arg(image)
        .arg("--")
        .args(inprocess_argv(inprocess, model, image, iters))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("caffe-sandbox run caffe-inprocess: {e}"))?;
    // `run` hands the program's stdout over on its own stderr (sanitized); the JSON line survives that.
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find(|l| l.starts_with("{\"first_forward_ms\""))
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            format!(
                "caffe-inprocess under caffe-sandbox run gave no result: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        })
}

/// One in-process run: a fresh `caffe-inprocess` (load, first forward, `iters` steady forwards).
fn inprocess_run(
    inprocess: &Path,
    model: &Path,
    image: &Path,
    iters: usize,
) -> Result<Value, String> {
    let argv = inprocess_argv(inprocess, model, image, iters);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{}: {e}", inprocess.display()))?;
    if !out.status.success() {
        return Err(format!(
            "in-process baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn steady_of(v: &Value) -> Vec<f64> {
    v["steady_forward_ms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}

fn ensure_tool(name: &str, package: &str) -> Result<PathBuf, String> {
    let find = || {
        ["/usr/bin", "/bin", "/usr/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!("[bench] installing {package} from Debian (apt-get) for the comparison");
    let st = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("apt-get: {e}"))?;
    if !st.success() {
        return Err(format!(
            "could not install {package} (run as root, or pass --no-external)"
        ));
    }
    find().ok_or_else(|| format!("{name} still missing after installing {package}"))
}

fn time_runs(n: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<Value, String> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        v.push(ms(t.elapsed()));
    }
    let p50 = percentile(&mut v, 50.0);
    let p95 = percentile(&mut v, 95.0);
    Ok(json!({ "p50_ms": p50, "p95_ms": p95, "runs": n }))
}

/// A measured command for [`time_interleaved`].
type Timed<'a> = Box<dyn FnMut() -> Result<(), String> + 'a>;

/// Like [`time_runs`] for several tools at once, run in rounds (one run of each tool per round) so that a
/// slow phase of the machine, or the kernel still tearing down an earlier tool's namespaces, hits every
/// tool alike. A tool that fails is dropped from later rounds and reported as its error.
fn time_interleaved(n: usize, tools: Vec<Timed<'_>>) -> Vec<Result<Value, String>> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(n); tools.len()];
    let mut failed: Vec<Option<String>> = vec![None; tools.len()];
    let mut tools = tools;
    for _ in 0..n {
        for (i, f) in tools.iter_mut().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            let t = Instant::now();
            match f() {
                Ok(()) => samples[i].push(ms(t.elapsed())),
                Err(e) => failed[i] = Some(e),
            }
        }
    }
    samples
        .into_iter()
        .zip(failed)
        .map(|(mut v, err)| match err {
            Some(e) => Err(e),
            None => Ok(json!({ "p50_ms": percentile(&mut v, 50.0),
                               "p95_ms": percentile(&mut v, 95.0), "runs": n })),
        })
        .collect()
}

fn check(out: std::io::Result<std::process::Output>, what: &str) -> Result<(), String> {
    let out = out.map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(600)
                .collect::<String>()
        ))
    }
}

fn spawn_comparison(
    args: &BenchArgs,
    cfg: &caffe_sandbox_supervisor::LaunchConfig,
) -> Result<Value, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bwrap = ensure_tool("bwrap", "bubblewrap")?;
    let crun = ensure_tool("crun", "crun")?;
    let runc = ensure_tool("runc", "runc")?;
    let runc_root = std::env::temp_dir().join(format!("cs-bench-runc-{}", std::process::id()));
    let n = args.spawn_runs;
    eprintln!(
        "[bench] /bin/true under caffe-sandbox run, bwrap+seccomp, crun ({n} rounds, one run of each per round)"
    );
    // bwrap with the same namespaces, a read-only view of /bin/true's files, a tmpfs scratch and a seccomp
    // filter (the run-tool policy compiled by the same code, as a plain BPF program: bwrap's --seccomp FD).
    let bpf = static_run_tool_filter()?;
    let bpf_path = std::env::temp_dir().join(format!("cs-bench-{}.bpf", std::process::id()));
    std::fs::write(&bpf_path, &bpf).map_err(|e| e.to_string())?;
    let true_libs =
        shared_libraries(Path::new("/bin/true"), &cfg.caffe_prefix).map_err(|e| e.to_string())?;
    let env: Vec<(String, String)> = caffe_sandbox_supervisor::run_tool::environment(cfg)
        .into_iter()
        .chain([("TMPDIR".into(), "/scratch".into())])
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let mut true_args = bwrap_args(
        true_libs
            .iter()
            .map(PathBuf::as_path)
            .chain([Path::new("/bin/true")]),
    );
    // The same environment `caffe-sandbox run` gives its program (the Caffe prefix on LD_LIBRARY_PATH, …):
    // the same payload under each tool.
    for (k, v) in &env {
        true_args.extend(["--setenv".into(), k.clone(), v.clone()]);
    }
    let bundle = make_crun_bundle(&true_libs, &env)?;
    let mut id = 0u64;
    let mut runc_id = 0u64;
    let mut results = time_interleaved(
        n,
        vec![
            Box::new(|| {
                check(
                    Command::new(&me)
                        .args(["run", "--audit-log", "/dev/null", "--", "/bin/true"])
                        .stdin(Stdio::null())
                        .output(),
                    "caffe-sandbox run /bin/true",
                )
            }),
            Box::new(|| {
                let f = std::fs::File::open(&bpf_path).map_err(|e| e.to_string())?;
                let mut c = Command::new(&bwrap);
                c.args(&true_args)
                    .args(["--seccomp", "9", "/bin/true"])
                    .stdin(Stdio::null());
                fd_at(&mut c, f, 9);
                check(c.output(), "bwrap /bin/true")
            }),
            Box::new(|| {
                id += 1;
                let name = format!("cs-bench-{}-{id}", std::process::id());
                check(
                    Command::new(&crun)
                        .args(["--cgroup-manager=disabled", "run", "--no-pivot", "--bundle"])
                        .arg(&bundle)
                        .arg(&name)
                        .stdin(Stdio::null())
                        .output(),
                    "crun run /bin/true",
                )
            }),
            // runc as well: crun refuses hosts whose cgroup v1 controllers sit next to a v2 hierarchy.
            Box::new(|| {
                runc_id += 1;
                let name = format!("cs-bench-runc-{}-{runc_id}", std::process::id());
                check(
                    Command::new(&runc)
                        .arg("--root")
                        .arg(&runc_root)
                        .args(["run", "--bundle"])
                        .arg(&bundle)
                        .arg(&name)
                        .stdin(Stdio::null())
                        .output(),
                    "runc run /bin/true",
                )
            }),
        ],
    )
    .into_iter();
    let ours = results.next().expect("four results")?;
    let bwrap_true = results.next().expect("four results")?;
    let or_error = |r: Option<Result<Value, String>>| {
        r.expect("four results")
            .unwrap_or_else(|e| json!({ "error": e }))
    };
    let crun_true = or_error(results.next());
    let runc_true = or_error(results.next());
    let _ = std::fs::remove_dir_all(&runc_root);

    eprintln!("[bench] worker spawn → ready under caffe-sandbox and bwrap ({n} runs each)");
    let ours_worker = time_runs(n, || {
        let w = Worker::start(cfg, args.sandbox.deadlines()).map_err(|e| e.to_string())?;
        w.shutdown();
        Ok(())
    })?;
    let worker_libs =
        shared_libraries(&cfg.worker_exe, &cfg.caffe_prefix).map_err(|e| e.to_string())?;
    let mut wargs = bwrap_args(
        worker_libs
            .iter()
            .map(PathBuf::as_path)
            .chain([cfg.worker_exe.as_path()]),
    );
    let libdirs = std::env::join_paths(prefix_lib_dirs(&cfg.caffe_prefix)).unwrap_or_default();
    wargs.extend([
        "--setenv".into(),
        "LD_LIBRARY_PATH".into(),
        libdirs.to_string_lossy().into_owned(),
    ]);
    let bwrap_worker = time_runs(n, || {
        let (sup, work) = caffe_sandbox_protocol::channel_pair().map_err(|e| e.to_string())?;
        let mut c = Command::new(&bwrap);
        c.args(&wargs)
            .arg(&cfg.worker_exe)
            .args(["--channel-fd", "3"])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        fd_at(&mut c, work.into_inner(), 3);
        let mut child = c.spawn().map_err(|e| e.to_string())?;
        let hello = sup.recv(Some(Duration::from_secs(20)));
        let _ = child.kill();
        let _ = child.wait();
        hello
            .map(|_| ())
            .map_err(|e| format!("worker under bwrap: {e}"))
    })?;
    let _ = std::fs::remove_file(&bpf_path);
    let _ = std::fs::remove_dir_all(&bundle);
    Ok(json!({
        "true": { "caffe_sandbox_run": ours, "bwrap_with_seccomp": bwrap_true, "crun": crun_true, "runc": runc_true },
        "worker_to_ready": { "caffe_sandbox": ours_worker, "bwrap_same_binds_no_seccomp": bwrap_worker },
        "tools": { "bwrap": bwrap, "crun": crun, "runc": runc },
    }))
}

/// The run-tool policy as one static BPF program for bwrap's `--seccomp FD` (bwrap has no user-notification
/// listener): every rule that may run is allowed (including the launch execve), everything else kills.
fn static_run_tool_filter() -> Result<Vec<u8>, String> {
    use caffe_sandbox_seccomp::Action;
    use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
    let policy = caffe_sandbox_seccomp::Policy::run_tool()
        .resolve(&caffe_sandbox_seccomp::Vars {
            worker_tgid: Some(1),
        })
        .map_err(|e| e.to_string())?;
    let mut ctx = ScmpFilterContext::new(ScmpAction::KillProcess).map_err(|e| e.to_string())?;
    for r in &policy.rules {
        let action = match r.action {
            Action::Errno => ScmpAction::Errno(r.errno.unwrap_or(libc::ENOSYS)),
            _ => ScmpAction::Allow,
        };
        let conds: Vec<ScmpArgCompare> = r
            .conds
            .iter()
            .map(|c| match c.mask {
                Some(m) => {
                    ScmpArgCompare::new(u32::from(c.arg), ScmpCompareOp::MaskedEqual(m), c.value)
                }
                None => ScmpArgCompare::new(u32::from(c.arg), ScmpCompareOp::Equal, c.value),
            })
            .collect();
        ctx.add_rule_conditional_exact(action, ScmpSyscall::from_raw_syscall(r.nr), &conds)
            .map_err(|e| e.to_string())?;
    }
    // bwrap applies the filter to its own pid-1 reaper too, which waits for the program.
    ctx.add_rule(
        ScmpAction::Allow,
        ScmpSyscall::from_name("wait4").map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let tmp = std::env::temp_dir().join(format!("cs-bench-{}-static.bpf", std::process::id()));
    let f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
    ctx.export_bpf(&f).map_err(|e| e.to_string())?;
    drop(f);
    let out = std::fs::read(&tmp).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&tmp);
    out
}

/// bwrap options equivalent to caffe-sandbox's view: every namespace, no capabilities, a new session, an empty
/// environment, a tmpfs root with a minimal /dev and a tmpfs scratch, and read-only binds of exactly `files`.
fn bwrap_args<'a>(files: impl Iterator<Item = &'a Path>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--cap-drop",
        "ALL",
        "--tmpfs",
        "/",
        "--dev",
        "/dev",
        "--tmpfs",
        "/scratch",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for f in files {
        let s = f.display().to_string();
        args.extend(["--ro-bind".into(), s.clone(), s]);
    }
    args
}

/// Makes `fd` available as `target` in the child (and not close-on-exec).
fn fd_at(c: &mut Command, fd: impl Into<std::os::fd::OwnedFd>, target: i32) {
    use std::os::fd::IntoRawFd;
    use std::os::unix::process::CommandExt;
    let raw = fd.into().into_raw_fd();
    // SAFETY: dup2 is async-signal-safe; `raw` stays open in the parent until the Command is dropped (we leak it
    // deliberately for the short-lived bench process).
    unsafe {
        c.pre_exec(move || {
            // dup2 onto itself keeps FD_CLOEXEC: clear it explicitly in that case.
            let rc = if raw == target {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, target)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn make_crun_bundle(libs: &[PathBuf], env: &[(String, String)]) -> Result<PathBuf, String> {
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let dir = std::env::temp_dir().join(format!("cs-bench-crun-{}", std::process::id()));
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| e.to_string())?;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "noexec", "size=16m"]}),
    ];
    // Mount points exist in the (read-only) rootfs beforehand: runc creates missing ones as the container's
    // root, which (uid 65534 on the host) may not write into this directory.
    for d in ["proc", "dev", "scratch"] {
        std::fs::create_dir_all(rootfs.join(d)).map_err(|e| e.to_string())?;
    }
    for p in libs
        .iter()
        .map(|p| p.as_path())
        .chain(std::iter::once(Path::new("/bin/true")))
    {
        let target = rootfs.join(p.strip_prefix("/").unwrap_or(p));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&target, b"").map_err(|e| e.to_string())?;
        mounts.push(
            json!({"destination": p, "type": "bind", "source": p, "options": ["rbind", "ro"]}),
        );
    }
    let config = json!({
        "ociVersion": "1.0.2",
        "process": { "terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "env": env, "cwd": "/",
                     "noNewPrivileges": true, "capabilities": {"bounding": [], "effective": [], "permitted": []} },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "bench",
        "mounts": mounts,
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": 65534, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": 65534, "size": 1}],
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                           {"type": "user"}, {"type": "cgroup"}],
        }
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    Ok(dir)
}

/// One table row: label, in-process value, sandboxed value, ratio and target (empty strings for none).
fn row(label: &str, inproc: &str, sandboxed: &str, ratio: &str, target: &str) {
    println!("{label:<38} {inproc:>12} {sandboxed:>12} {ratio:>8}   {target}");
}

/// The comparison rows shared by the default path and the fork server: load, first and steady forward, cold.
fn comparison_rows(
    f: &dyn Fn(&Value) -> String,
    i: &Value,
    s: &Value,
    steady_ratio: &Value,
    cold: (&str, &Value),
) {
    row(
        "model load (ms)",
        &f(&i["load_ms"]),
        &f(&s["load_ms"]),
        "",
        "",
    );
    row(
        "first forward (ms)",
        &f(&i["first_forward_ms"]),
        &f(&s["first_forward_ms"]),
        "",
        "",
    );
    row(
        "steady forward, median (ms)",
        &f(&i["steady_forward_median_ms"]),
        &f(&s["steady_forward_median_ms"]),
        &ratio(steady_ratio),
        "(target ≤ 1.02)",
    );
    row(cold.0, "", "", &ratio(cold.1), "(target ≤ 1.10)");
}

/// A ratio as printed: three decimals, since the targets sit two hundredths above 1.
fn ratio(x: &Value) -> String {
    x.as_f64()
        .map(|x| format!("{x:.3}"))
        .unwrap_or_else(|| "-".into())
}

fn print_table(v: &Value) {
    let f = |x: &Value| {
        x.as_f64()
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "model: {}   image: {}   steady iterations: {}",
        v["model"], v["image"], v["iters"]
    );
    println!(
        "outputs identical to in-process (1e-6): {}",
        v["outputs_match_in_process_1e-6"]
    );
    println!(
        "times: medians over {} rounds (a fresh process per variant per round); ratios: median of the \
         per-round ratios",
        v["rounds"]
    );
    println!();
    let (i, s, r) = (&v["in_process"], &v["sandboxed"], &v["ratios"]);
    row("", "in-process", "sandboxed", "ratio", "");
    row(
        "spawn → ready (ms)",
        "-",
        &f(&s["spawn_to_ready_ms"]),
        "",
        "",
    );
    comparison_rows(
        &f,
        i,
        s,
        &r["steady_forward_sandboxed_over_in_process"],
        (
            "cold: spawn+load+first ÷ load+first",
            &r["cold_sandboxed_over_in_process"],
        ),
    );
    let fs = &v["fork_server"];
    match fs.get("error") {
        Some(e) => println!("fork server: error: {e}"),
        None => {
            println!();
            row(
                "fork server (--fork-server)",
                "in-process",
                "forked",
                "ratio",
                "",
            );
            row(
                "server start + first fork (ms)",
                "-",
                &f(&fs["server_start_and_first_fork_ms"]),
                "",
                "",
            );
            let p95 = format!("(p50; p95 {})", f(&fs["fork_to_ready"]["p95_ms"]));
            row(
                "fork → ready (ms)",
                "-",
                &f(&fs["fork_to_ready"]["p50_ms"]),
                "",
                &p95,
            );
            comparison_rows(
                &f,
                i,
                fs,
                &fs["steady_forward_forked_over_in_process"],
                (
                    "cold: fork+load+first ÷ load+first",
                    &fs["cold_forked_over_in_process"],
                ),
            );
        }
    }
    if let Some(r) = v.get("in_process_under_run") {
        println!();
        match r.get("error") {
            Some(e) => println!("in-process under caffe-sandbox run: error: {e}"),
            None => {
                row(
                    "the sandbox layers alone",
                    "plain",
                    "under run",
                    "ratio",
                    "",
                );
                row(
                    "steady forward of caffe-inprocess (ms)",
                    &f(&r["plain_steady_forward_median_ms"]),
                    &f(&r["under_run_steady_forward_median_ms"]),
                    &ratio(&r["ratio"]),
                    "(no worker, no protocol)",
                );
            }
        }
    }
    if let Some(sp) = v.get("spawn") {
        println!();
        println!("{:<44} {:>10} {:>10}", "spawn cost", "p50 ms", "p95 ms");
        for (name, x) in [
            (
                "/bin/true: caffe-sandbox run (all layers)",
                &sp["true"]["caffe_sandbox_run"],
            ),
            (
                "/bin/true: bwrap + seccomp",
                &sp["true"]["bwrap_with_seccomp"],
            ),
            ("/bin/true: crun run", &sp["true"]["crun"]),
            ("/bin/true: runc run", &sp["true"]["runc"]),
            (
                "worker → ready: caffe-sandbox",
                &sp["worker_to_ready"]["caffe_sandbox"],
            ),
            (
                "worker → ready: bwrap, same binds",
                &sp["worker_to_ready"]["bwrap_same_binds_no_seccomp"],
            ),
        ] {
            match x.get("error") {
                Some(e) => println!("{name:<44} error: {e}"),
                None => println!("{name:<44} {:>10} {:>10}", f(&x["p50_ms"]), f(&x["p95_ms"])),
            }
        }
    }
}

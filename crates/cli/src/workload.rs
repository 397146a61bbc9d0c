//! Shared by `profile` and `calibrate`: the real workload (start, load, one request per input) and what the
//! supervisor can read about the worker from its side (`/proc/<pid>/…`: readable by the supervisor, whether the
//! worker runs as uid 65534 under a root supervisor or as the user's own uid rootless).
use caffe_sandbox_preprocess::parse_npy;
use caffe_sandbox_supervisor::{Error, Input, LaunchConfig, ModelBundle, Worker};
use std::path::{Path, PathBuf};

/// Largest input file read.
const MAX_INPUT_BYTES: u64 = 64 << 20;

/// The inputs given, or the bundled sample photo (`.cache/samples/chelsea.png` next to the Caffe prefix made by
/// scripts/setup).
pub fn inputs_or_sample(inputs: &[PathBuf], cfg: &LaunchConfig) -> Result<Vec<PathBuf>, Error> {
    if !inputs.is_empty() {
        return Ok(inputs.to_vec());
    }
    let sample = cfg
        .caffe_prefix
        .parent()
        .and_then(Path::parent)
        .map(|cache| cache.join("samples/chelsea.png"))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            Error::Setup(
                "no INPUT given and the bundled sample (.cache/samples/chelsea.png) is missing: run scripts/setup \
                 or name an input"
                    .into(),
            )
        })?;
    Ok(vec![sample])
}

/// Reads an image (decoded inside the worker) or a `.npy` tensor (parsed here, in memory-safe Rust).
pub fn read_input(path: &Path, input_name: &str) -> Result<Input, Error> {
    let bytes = caffe_sandbox_supervisor::files::read_regular_file(path, MAX_INPUT_BYTES)?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        let arr = parse_npy(&bytes, &path.display().to_string()).map_err(|e| Error::BadInput {
            message: e.to_string(),
            input: Some(path.display().to_string()),
        })?;
        return Ok(Input::Tensor {
            name: input_name.to_string(),
            dims: arr.shape,
            data: arr.data,
        });
    }
    Ok(Input::Image {
        name: input_name.to_string(),
        bytes,
    })
}

/// The name of the model's image input (model.toml, else the net's first input).
pub fn input_name(worker: &Worker, model: &ModelBundle) -> String {
    model
        .input_name()
        .map(str::to_string)
        .or_else(|| {
            worker
                .model_info()
                .and_then(|i| i.inputs.first().map(|b| b.name.clone()))
        })
        .unwrap_or_else(|| "data".into())
}

/// What `/proc/<pid>/status` and `/proc/<pid>/stat` say about a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// Peak virtual size (what RLIMIT_AS bounds), bytes.
    pub vm_peak: u64,
    /// Peak resident set, bytes.
    pub vm_hwm: u64,
    /// Threads now.
    pub threads: u64,
    /// User + system CPU time so far, seconds × clock ticks.
    pub cpu_ticks: u64,
}

/// Reads the process's memory peaks, thread count and CPU time.
pub fn sample(pid: i32) -> std::io::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name's closing parenthesis start at field 3 (state); utime, stime are 14, 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(ProcSample {
        vm_peak: kb("VmPeak:") * 1024,
        vm_hwm: kb("VmHWM:") * 1024,
        threads: kb("Threads:"),
        cpu_ticks: tick(11) + tick(12),
    })
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value; no pointers are involved.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Bytes allocated in the worker's scratch tmpfs, seen through `/proc/<pid>/root` (the worker's own root after
/// pivot_root).
pub fn scratch_used(pid: i32, scratch: &str) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path, depth: u32) -> std::io::Result<u64> {
        let mut total = 0;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let md = e.metadata()?;
            total += md.blocks() * 512;
            if md.is_dir() && depth < 32 {
                total += walk(&e.path(), depth + 1)?;
            }
        }
        Ok(total)
    }
    walk(
        &PathBuf::from(format!("/proc/{pid}/root")).join(scratch.trim_start_matches('/')),
        0,
    )
}

/// Highest open fd number + 1 (what RLIMIT_NOFILE bounds).
pub fn fd_high_water(pid: i32) -> std::io::Result<u64> {
    let mut max = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        if let Some(n) = e?.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
            max = max.max(n + 1);
        }
    }
    Ok(max)
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

//! Throughput and latency of `caffe-sandbox serve` on a real model against the in-process loop baseline, in the
//! same run. Usage (after `cargo build --workspace [--release]`, same profile for both):
//!
//! ```text
//! cargo run -p caffe-sandbox-server --example bench_serve [--release] -- \
//!     [--model DIR] [--image FILE] [--requests N] [--rounds R] [--workers 1,2] [--serve-args "ARGS"]
//! ```
//!
//! Baseline: `caffe-inprocess --model DIR --image FILE --iters N` (decode + preprocess + forward in one process,
//! no sandbox, no IPC); its mean `steady_forward_ms` gives the baseline throughput. Server: `caffe-sandbox serve`
//! with W workers on 127.0.0.1, W closed-loop clients (the sustainable rate: every worker busy, no queue), each
//! POSTing the encoded image as a BYTES input (binary extension; decoded in the worker). Latency is measured
//! by the client, per request, end to end. All configurations run interleaved in R rounds of N/R requests each
//! (servers started and warmed first), so drifting machine load hits baseline and server alike.
//! Output: a Markdown table on stdout.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    model: PathBuf,
    image: PathBuf,
    requests: usize,
    workers: Vec<usize>,
    /// Interleaved measurement rounds.
    rounds: usize,
    /// Extra arguments for `caffe-sandbox serve` (e.g. `--allow-weaker seccomp` to measure a layer's cost).
    serve_args: Vec<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        model: repo().join(".cache/models/open_nsfw"),
        image: repo().join(".cache/samples/chelsea.png"),
        requests: 60,
        workers: vec![1, 2],
        rounds: 3,
        serve_args: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--model" => a.model = v()?.into(),
            "--image" => a.image = v()?.into(),
            "--requests" => a.requests = v()?.parse().map_err(|e| format!("--requests: {e}"))?,
            "--workers" => {
                a.workers = v()?
                    .split(',')
                    .map(|w| w.parse().map_err(|e| format!("--workers: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--rounds" => a.rounds = v()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--serve-args" => a.serve_args = v()?.split_whitespace().map(str::to_string).collect(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(1..=100).contains(&a.rounds) {
        return Err("--rounds must be 1..=100".into());
    }
    if !(1..=10_000).contains(&a.requests) {
        return Err("--requests must be 1..=10000".into());
    }
    Ok(a)
}

/// target/<profile>/ of this example.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

fn binary(name: &str) -> Result<PathBuf, String> {
    let p = bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} missing: cargo build --workspace (same profile as this example)",
            p.display()
        ))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn post(port: u16, body: &[u8], header_len: usize) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST /v2/models/bench/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Inference-Header-Content-Length: {header_len}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned();
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("bad response: {line}"))
}

struct Served {
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(a: &Args, workers: usize, dir: &Path) -> Result<(Served, u16), String> {
    // The model is served under the name "bench": a one-model repository with the model's files.
    let repo_dir = dir.join(format!("repo{workers}"));
    let v = repo_dir.join("bench/1");
    std::fs::create_dir_all(&v).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(&a.model).map_err(|e| e.to_string())? {
        let e = entry.map_err(|e| e.to_string())?;
        let target = e.path().canonicalize().map_err(|e| e.to_string())?;
        // Hard links or copies: the supervisor refuses model files resolving outside the model directory.
        let dst = v.join(e.file_name());
        if !dst.exists() && std::fs::hard_link(&target, &dst).is_err() {
            std::fs::copy(&target, &dst).map_err(|e| format!("{}: {e}", target.display()))?;
        }
    }
    std::fs::write(
        repo_dir.join("bench/config.toml"),
        format!("workers = {workers}\n"),
    )
    .map_err(|e| e.to_string())?;
    let port_file = dir.join(format!("port{workers}"));
    let _ = std::fs::remove_file(&port_file);
    let child = Command::new(binary("caffe-sandbox")?)
        .arg("serve")
        .arg("--model-repository")
        .arg(&repo_dir)
        .args([
            "--http-address",
            "127.0.0.1",
            "--http-port",
            "0",
            "--max-queue",
            "256",
        ])
        .arg("--port-file")
        .arg(&port_file)
        .arg("--audit-log")
        .arg(dir.join("audit.jsonl"))
        .args(&a.serve_args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let served = Served { child };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(120) {
        if let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
        {
            let ready = TcpStream::connect(("127.0.0.1", port))
                .ok()
                .and_then(|mut s| {
                    s.write_all(
                        b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    )
                    .ok()?;
                    let mut r = String::new();
                    s.read_to_string(&mut r).ok()?;
                    Some(r.starts_with("HTTP/1.1 200"))
                });
            if ready == Some(true) {
                return Ok((served, port));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("the server did not become ready within 120 s".into())
}

fn run_load(
    port: u16,
    body: &[u8],
    header_len: usize,
    clients: usize,
    total: usize,
) -> Result<(f64, Vec<f64>), String> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (next, body) = (next.clone(), body.to_vec());
            std::thread::spawn(move || -> Result<Vec<f64>, String> {
                let mut lat = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < total {
                    let t = Instant::now();
                    let code = post(port, &body, header_len)?;
                    if code != 200 {
                        return Err(format!("HTTP {code}"));
                    }
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for th in threads {
        lat.extend(th.join().map_err(|_| "client thread panicked")??);
    }
    Ok((t.elapsed().as_secs_f64(), lat))
}

/// `n` steady iterations of the in-process loop, in ms.
fn baseline(a: &Args, n: usize) -> Result<Vec<f64>, String> {
    let out = Command::new(binary("caffe-inprocess")?)
        .arg("--model")
        .arg(&a.model)
        .arg("--image")
        .arg(&a.image)
        .args(["--iters", &n.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "caffe-inprocess failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v["steady_forward_ms"]
        .as_array()
        .ok_or("no steady_forward_ms")?
        .iter()
        .filter_map(|x| x.as_f64())
        .collect())
}

/// Mean worker compute time (ms) from the server's own histogram.
fn mean_compute_ms(port: u16) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let value = |prefix: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
    };
    let sum = value("caffe_sandbox_compute_duration_seconds_sum{model=\"bench\"}")?;
    let count = value("caffe_sandbox_compute_duration_seconds_count{model=\"bench\"}")?;
    (count > 0.0).then(|| 1e3 * sum / count)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_serve: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    let image = std::fs::read(&a.image).map_err(|e| format!("{}: {e}", a.image.display()))?;
    let dir = std::env::temp_dir().join(format!("cs-bench-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    let mut bin = (image.len() as u32).to_le_bytes().to_vec();
    bin.extend_from_slice(&image);
    let header = serde_json::json!({
        "inputs": [{ "name": "data", "shape": [1], "datatype": "BYTES", "parameters": { "binary_data_size": bin.len() } }],
        "outputs": [{ "name": "prob", "parameters": { "binary_data": true } }],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&bin);

    let load_before = loadavg();
    // Every configuration is measured in the same rounds, interleaved, so that drifting machine load affects
    // the baseline and the server alike.
    let mut servers = Vec::new();
    for &w in &a.workers {
        let (server, port) = start_server(&a, w, &dir)?;
        run_load(port, &body, header.len(), w, 2 * w)?; // warm the HTTP path and every worker
        servers.push((w, server, port, 0.0f64, Vec::new()));
    }
    let mut base: Vec<f64> = Vec::new();
    let chunk = a.requests.div_ceil(a.rounds);
    for _ in 0..a.rounds {
        base.extend(baseline(&a, chunk)?);
        for (w, _, port, wall, lat) in servers.iter_mut() {
            let (t, l) = run_load(*port, &body, header.len(), *w, chunk)?;
            *wall += t;
            lat.extend(l);
        }
    }
    base.sort_by(f64::total_cmp);
    let base_tput = 1000.0 * base.len() as f64 / base.iter().sum::<f64>();
    println!("| configuration | requests | throughput (req/s) | vs baseline | p50 (ms) | p99 (ms) | p99/p50 | mean worker compute (ms) |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| in-process loop (caffe-inprocess) | {} | {:.2} | 1.00 | {:.1} | {:.1} | {:.2} | — |",
        base.len(),
        base_tput,
        percentile(&base, 0.5),
        percentile(&base, 0.99),
        percentile(&base, 0.99) / percentile(&base, 0.5)
    );
    for (w, server, port, wall, mut lat) in servers {
        lat.sort_by(f64::total_cmp);
        let tput = lat.len() as f64 / wall;
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        println!(
            "| serve, {w} worker{}, {w} client{} | {} | {tput:.2} | {:.2} | {p50:.1} | {p99:.1} | {:.2} | {} |",
            if w == 1 { "" } else { "s" },
            if w == 1 { "" } else { "s" },
            lat.len(),
            tput / base_tput,
            p99 / p50,
            mean_compute_ms(port).map(|m| format!("{m:.1}")).unwrap_or_else(|| "?".into())
        );
        drop(server);
    }
    println!();
    println!(
        "1-minute load average: {load_before} before, {} after ({} CPUs)",
        loadavg(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! Helpers of the server's integration tests: they start the real `caffe-sandbox serve` (real sandboxed workers
//! running the real libcaffe) on a free loopback port and talk HTTP/1.1 to it over 127.0.0.1 only.
//! Missing preconditions (workspace not built, scripts/setup not run) fail loudly; nothing is skipped.
#![allow(dead_code)]

#[allow(unused_imports)] // each test binary uses a subset
pub use caffe_sandbox_testkit::{
    built as sibling, open_nsfw_dir as open_nsfw, repo, sample, set_mode as chmod, target_dir,
    tmpdir, TempDir,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Writes `<dir>/deploy.prototxt` and an empty `<dir>/weights.caffemodel` (untrained layers keep their fillers).
pub fn write_model(dir: &Path, prototxt: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("deploy.prototxt"), prototxt).unwrap();
    std::fs::write(dir.join("weights.caffemodel"), b"").unwrap();
    for p in [
        dir.to_path_buf(),
        dir.join("deploy.prototxt"),
        dir.join("weights.caffemodel"),
    ] {
        chmod(&p, if p.is_dir() { 0o755 } else { 0o644 });
    }
}

/// A repository entry `<repo>/<name>/1/` holding open_nsfw's files (hard links or copies).
pub fn link_open_nsfw(repo_dir: &Path, name: &str) {
    let v = repo_dir.join(name).join("1");
    std::fs::create_dir_all(&v).unwrap();
    chmod(&repo_dir.join(name), 0o755);
    chmod(&v, 0o755);
    for f in [
        "deploy.prototxt",
        "resnet_50_1by2_nsfw.caffemodel",
        "model.toml",
        "labels.txt",
    ] {
        // Copies, not symlinks: the supervisor refuses model files that resolve outside the model directory.
        let dst = v.join(f);
        if std::fs::hard_link(open_nsfw().join(f), &dst).is_err() {
            std::fs::copy(open_nsfw().join(f), &dst).unwrap();
        }
    }
}

/// An Embed model: an FP32 index out of range makes real Caffe read out of bounds (SIGSEGV).
pub const EMBED: &str = r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "em" type: "Embed" bottom: "data" top: "e" embed_param { num_output: 2 input_dim: 2 } }
"#;

/// `group: 0` makes real Caffe divide by zero while setting up the layer (SIGFPE at load).
pub const FPE: &str = r#"layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 3 group: 0 } }
"#;

/// `cargo test -p caffe-sandbox-server` does not rebuild the CLI binary (another package): refuse to test a
/// binary older than the server's sources.
fn assert_fresh(exe: &Path) {
    let built = std::fs::metadata(exe).and_then(|m| m.modified()).unwrap();
    let src = repo().join("crates/server/src");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let changed = std::fs::metadata(&p).and_then(|m| m.modified()).unwrap();
        assert!(
            changed <= built,
            "{} is older than {}: rebuild the workspace first (cargo build --workspace)",
            exe.display(),
            p.display()
        );
    }
}

/// A running `caffe-sandbox serve`; killed (by its own pid) when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub audit: PathBuf,
    pub log: PathBuf,
    /// Holds the audit log, the server's log and its port file; removed after the server is gone.
    dir: TempDir,
}

impl Server {
    /// Starts `caffe-sandbox serve ARGS --http-port 0` and waits until it listens.
    pub fn start(args: &[&str]) -> Server {
        let dir = tmpdir("serve");
        let port_file = dir.join("port");
        let audit = dir.join("audit.jsonl");
        let log = dir.join("server.log");
        let exe = sibling("caffe-sandbox");
        assert_fresh(&exe);
        let child = Command::new(exe)
            .arg("serve")
            .args(args)
            .args(["--http-address", "127.0.0.1", "--http-port", "0"])
            .arg("--port-file")
            .arg(&port_file)
            .arg("--audit-log")
            .arg(&audit)
            .env("CAFFE_PREFIX", repo().join(".cache/caffe/prefix"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start caffe-sandbox serve");
        let mut s = Server {
            child,
            port: 0,
            audit,
            log,
            dir,
        };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                s.port = p;
                return s;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("serve exited early ({st}):\n{}", s.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve did not listen within 30 s:\n{}", s.logs());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for /v2/health/ready.
    pub fn wait_ready(&self, limit: Duration) {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.get("/v2/health/ready").status == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server not ready within {limit:?}:\n{}", self.logs());
    }

    pub fn get(&self, path: &str) -> Resp {
        http(self.port, "GET", path, &[], b"")
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Resp {
        http(
            self.port,
            "POST",
            path,
            &[("Content-Type", "application/json".into())],
            body.to_string().as_bytes(),
        )
    }

    /// POSTs a Triton binary-extension body: JSON header + binary part.
    pub fn post_binary(&self, path: &str, header: &serde_json::Value, binary: &[u8]) -> Resp {
        let h = header.to_string();
        let mut body = h.clone().into_bytes();
        body.extend_from_slice(binary);
        http(
            self.port,
            "POST",
            path,
            &[
                ("Content-Type", "application/octet-stream".into()),
                ("Inference-Header-Content-Length", h.len().to_string()),
            ],
            &body,
        )
    }

    /// Sends SIGTERM to the server (our own child, by pid).
    pub fn terminate(&self) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
    }

    /// Waits (bounded) for the server to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not exit within {limit:?}:\n{}", self.logs());
    }

    /// Waits (bounded) until a metric sample has `value`.
    pub fn wait_metric(&self, sample: &str, value: f64) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if self.metric(sample) == value {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{sample} is {}, not {value}", self.metric(sample));
    }

    /// The metric sample `name{labels}` (exact label text), or 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = self.get("/metrics").text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The JSON part (the whole body, or the header part of a binary response).
    pub fn json(&self) -> serde_json::Value {
        let n = self
            .header("inference-header-content-length")
            .map(|v| v.parse().unwrap())
            .unwrap_or(self.body.len());
        serde_json::from_slice(&self.body[..n])
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The binary part of a binary-extension response.
    pub fn binary(&self) -> &[u8] {
        let n: usize = self
            .header("inference-header-content-length")
            .expect("binary response")
            .parse()
            .unwrap();
        &self.body[n..]
    }

    /// The error kind of an error response.
    pub fn kind(&self) -> String {
        let v = self.json();
        assert!(v["error"].is_string(), "not an error body: {v}");
        v["kind"].as_str().unwrap_or_default().to_string()
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (Connection: close), bounded by timeouts.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server on loopback");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut all = req.into_bytes();
    all.extend_from_slice(body);
    // A server that refuses an oversized body may close early: a failed write still leaves its response to read.
    let _ = s.write_all(&all);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no HTTP response header in {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            )
        });
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}

/// A binary-extension infer header for one encoded image.
pub fn image_request(
    input: &str,
    image: &[u8],
    classification: Option<usize>,
) -> (serde_json::Value, Vec<u8>) {
    let mut bin = (image.len() as u32).to_le_bytes().to_vec();
    bin.extend_from_slice(image);
    let mut out = serde_json::json!({ "name": "prob", "parameters": { "binary_data": false } });
    if let Some(k) = classification {
        out["parameters"]["classification"] = k.into();
    }
    let h = serde_json::json!({
        "inputs": [{ "name": input, "shape": [1], "datatype": "BYTES", "parameters": { "binary_data_size": bin.len() } }],
        "outputs": [out],
    });
    (h, bin)
}

/// `caffe-sandbox infer --json` on one image: the reference probabilities.
pub fn cli_probs(image: &Path) -> Vec<f64> {
    let audit_dir = tmpdir("cli");
    let audit = audit_dir.join("audit.jsonl");
    let out = Command::new(sibling("caffe-sandbox"))
        .args(["infer", "--json", "--model"])
        .arg(open_nsfw())
        .arg(image)
        .arg("--audit-log")
        .arg(&audit)
        .env("CAFFE_PREFIX", repo().join(".cache/caffe/prefix"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "CLI output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let outs = v["results"][0]["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("CLI failed: {v:#}"));
    let prob = outs.iter().find(|o| o["name"] == "prob").unwrap();
    prob["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

//! Shared helpers of the CLI's integration tests: they run the real `caffe-sandbox` binary, which starts the
//! real worker (real libcaffe) in the real sandbox. Preconditions (setup done, user namespaces, seccomp) are
//! asserted loudly: a missing precondition is a test failure, never a skip.
#![allow(dead_code)]

#[allow(unused_imports)] // each test binary uses a subset
pub use caffe_sandbox_testkit::{
    built as sibling, is_root, open_nsfw_dir as open_nsfw, repo, sample, set_mode, tmpdir, TempDir,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_caffe-sandbox"))
}

/// Writes a model directory with `prototxt` and `weights` bytes (world-readable).
pub fn model_dir(tag: &str, prototxt: &str, weights: &[u8]) -> TempDir {
    let d = tmpdir(tag);
    std::fs::write(d.join("deploy.prototxt"), prototxt).unwrap();
    std::fs::write(d.join("weights.caffemodel"), weights).unwrap();
    for f in ["deploy.prototxt", "weights.caffemodel"] {
        set_mode(&d.join(f), 0o644);
    }
    d
}

/// Writes a float32 little-endian C-order .npy file.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    let shape_s = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
    set_mode(path, 0o644);
}

/// Who runs the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum As {
    /// The test's own user (root in CI).
    Invoker,
    /// uid/gid 65534 with no supplementary groups: the rootless path through user namespaces.
    Unprivileged,
}

pub fn both() -> [As; 2] {
    if is_root() {
        [As::Invoker, As::Unprivileged]
    } else {
        // Already unprivileged: both runs are rootless.
        [As::Invoker, As::Invoker]
    }
}

/// Runs `caffe-sandbox ARGS` as `who`, with an audit log in a temporary directory.
pub fn run(who: As, args: &[&std::ffi::OsStr]) -> Output {
    run_with_audit(who, args).0
}

/// `caffe-sandbox infer --json --model MODEL INPUTS…` as `who`.
pub fn infer_json(who: As, model: &Path, inputs: &[&Path]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["infer".as_ref(), "--json".as_ref(), "--model".as_ref()];
    args.push(model.as_os_str());
    args.extend(inputs.iter().map(|p| p.as_os_str()));
    run(who, &args)
}

/// Like `run`, and also returns the audit log's text (empty for commands that keep none).
pub fn run_with_audit(who: As, args: &[&std::ffi::OsStr]) -> (Output, String) {
    let audit_dir = tmpdir("audit");
    let audit = audit_dir.join("audit.jsonl");
    // Tests need a writable audit dir for both users.
    set_mode(audit.parent().unwrap(), 0o777);
    let mut cmd = match who {
        As::Invoker => Command::new(bin()),
        As::Unprivileged => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(bin());
            c
        }
    };
    // The audit log option goes right after the subcommand (anything after `--` belongs to the program).
    // Only the commands that start sandboxes keep an audit log.
    let audited = ["infer", "run", "bench", "serve", "audit"]
        .iter()
        .any(|c| args[0] == *c);
    if audited {
        cmd.arg(args[0])
            .arg("--audit-log")
            .arg(&audit)
            .args(&args[1..]);
    } else {
        cmd.args(args);
    }
    cmd.env("CAFFE_PREFIX", repo().join(".cache/caffe/prefix"));
    let out = cmd.output().expect("run caffe-sandbox");
    let log = std::fs::read_to_string(&audit).unwrap_or_default();
    (out, log)
}

/// Convenience: `run` with string arguments.
pub fn run_s(who: As, args: &[&str]) -> Output {
    let v: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    run(who, &v)
}

pub fn text(o: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Parses `--json` output.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(o)))
}

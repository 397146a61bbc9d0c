//! # caffe-sandbox-policy: the sandbox policy as a TOML data file
//!
//! One file describes every layer of the native sandbox (namespaces, filesystem view, scratch, Landlock,
//! rlimits, cgroup limits, the seccomp policy and its phases, deadlines, `allow_weaker`). The schema is
//! documented in `docs/policy.md`; the built-in profiles are `policies/inference.toml` (the default) and
//! `policies/run-tool.toml`. Parsing is strict (`deny_unknown_fields`) and every error names the file, the
//! line and column and the field path, e.g. `my.toml:41:17: rlimits.address_space: bad size "2GB" …`.
//!
//! The same validated [`SandboxPolicy`] is converted into the supervisor's [`LaunchConfig`] (native tier) and
//! exported to Docker/Podman, OCI runtime bundles and Kubernetes ([`export`]).

mod locate;
pub mod schema;

pub mod export;
pub mod oci_tier;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use caffe_sandbox_jail::{CgroupLimits, Layer};
use caffe_sandbox_seccomp::Policy as SeccompPolicy;
use caffe_sandbox_supervisor::{Deadlines, LaunchConfig, ResourceLimits};

pub use schema::{Kind, PolicyFile};

/// The only accepted `schema` value.
pub const SCHEMA: &str = "caffe-sandbox-policy/1";
/// `policies/inference.toml`.
pub const INFERENCE_TOML: &str = include_str!("../../../policies/inference.toml");
/// `policies/run-tool.toml`.
pub const RUN_TOOL_TOML: &str = include_str!("../../../policies/run-tool.toml");
/// Names of the built-in profiles.
pub const BUILTINS: [&str; 2] = ["inference", "run-tool"];

/// Layers the policy file configures through their own section (`[landlock] required`, …) rather than
/// through `allow_weaker`.
const SECTION_LAYERS: [(Layer, &str); 3] = [
    (Layer::Landlock, "landlock.required"),
    (Layer::Seccomp, "seccomp.required"),
    (Layer::CgroupV2, "cgroup.required"),
];

/// A policy error pointing at a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// File name (or `builtin:NAME`).
    pub origin: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub col: usize,
    /// Dotted field path, e.g. `rlimits.address_space` (empty for whole-file errors).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Where the seccomp rules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompSource {
    /// `policies/seccomp/worker.json`.
    BuiltinWorker,
    /// `policies/seccomp/run-tool.json`.
    BuiltinRunTool,
    /// A JSON policy file (absolute after resolution against the TOML file's directory).
    File(PathBuf),
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct SandboxPolicy {
    /// Where it came from (`builtin:inference` or a path).
    pub origin: String,
    /// The file as parsed (for `policy show`).
    pub file: PolicyFile,
    /// The TOML text it was parsed from.
    pub text: String,
    /// `allow_weaker` plus the layers of sections with `required = false`.
    pub allow_weaker: BTreeSet<Layer>,
    /// `filesystem.caffe_prefix`: `None` for `auto`.
    pub caffe_prefix: Option<PathBuf>,
    /// Scratch size in bytes.
    pub scratch_bytes: u64,
    /// rlimits in bytes / counts.
    pub limits: ResourceLimits,
    /// cgroup v2 limits.
    pub cgroup: CgroupLimits,
    /// The seccomp rules.
    pub seccomp_source: SeccompSource,
    /// The seccomp policy, loaded and validated.
    pub seccomp: SeccompPolicy,
    /// Deadlines.
    pub deadlines: PolicyDeadlines,
}

/// Wall-clock deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDeadlines {
    /// Spawn to ready.
    pub start: Duration,
    /// Model load (workers).
    pub load: Option<Duration>,
    /// One request (workers).
    pub request: Option<Duration>,
    /// Whole tool run (run-tool).
    pub run: Option<Duration>,
}

/// Parses a size: an integer number of bytes or a string with a binary unit (`B`, `KiB`, `MiB`, `GiB`, `TiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("bad size {s:?}: expected a number followed by B, KiB, MiB, GiB or TiB")
    })?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        u @ ("K" | "KB" | "M" | "MB" | "G" | "GB" | "T" | "TB" | "k" | "kB" | "m" | "g") => {
            return Err(format!(
                "bad size {s:?}: unit {u:?} is ambiguous; use binary units (KiB, MiB, GiB, TiB)"
            ))
        }
        u => {
            return Err(format!(
                "bad size {s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("size {s:?} overflows 64 bits"))
}

/// Parses a duration: a number with a unit `ms`, `s`, `m` or `h` (e.g. `"500ms"`, `"30s"`, `"1h"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("bad duration {s:?}: expected e.g. \"500ms\", \"30s\", \"5m\", \"1h\"")
    })?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "" => {
            return Err(format!(
                "bad duration {s:?}: a unit is required (ms, s, m, h)"
            ))
        }
        u => {
            return Err(format!(
                "bad duration {s:?}: unknown unit {u:?} (ms, s, m, h)"
            ))
        }
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 7.0 * 86400.0) {
        return Err(format!("duration {s:?} must be > 0 and at most 7 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

struct Checker<'a> {
    origin: &'a str,
    text: &'a str,
    spans: locate::Spans<'a>,
}

impl Checker<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> PolicyError {
        let path = locate::parse_path(field);
        let (line, col) = self
            .spans
            .span_of(&path)
            .map(|s| locate::line_col(self.text, s.start))
            .unwrap_or((0, 0));
        PolicyError {
            origin: self.origin.to_string(),
            line,
            col,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

fn is_abs_clean(p: &str) -> bool {
    let p = Path::new(p);
    p.is_absolute()
        && !p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

impl SandboxPolicy {
    /// A built-in profile by name (`inference`, `run-tool`).
    pub fn builtin(name: &str) -> Result<SandboxPolicy, PolicyError> {
        let text = match name {
            "inference" => INFERENCE_TOML,
            "run-tool" => RUN_TOOL_TOML,
            _ => {
                return Err(PolicyError {
                    origin: format!("builtin:{name}"),
                    line: 0,
                    col: 0,
                    field: String::new(),
                    message: format!(
                        "no built-in policy {name:?} (built-ins: {})",
                        BUILTINS.join(", ")
                    ),
                })
            }
        };
        Self::parse(text, &format!("builtin:{name}"), None)
    }

    /// The default strict profile (`policies/inference.toml`).
    pub fn inference() -> SandboxPolicy {
        Self::builtin("inference").expect("policies/inference.toml is pinned by tests")
    }

    /// `builtin:NAME` or a path.
    pub fn load_spec(spec: &str) -> Result<SandboxPolicy, PolicyError> {
        match spec.strip_prefix("builtin:") {
            Some(name) => Self::builtin(name),
            None if BUILTINS.contains(&spec) && !Path::new(spec).exists() => Self::builtin(spec),
            None => Self::load(Path::new(spec)),
        }
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<SandboxPolicy, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            origin: origin.clone(),
            line: 0,
            col: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &origin, path.parent())
    }

    /// Parses and validates TOML text. `base` resolves a relative `seccomp.policy` path.
    pub fn parse(
        text: &str,
        origin: &str,
        base: Option<&Path>,
    ) -> Result<SandboxPolicy, PolicyError> {
        let c = Checker {
            origin,
            text,
            spans: locate::Spans::new(text),
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let (line, col, field) = match e.span() {
                Some(s) => {
                    let (l, c2) = locate::line_col(text, s.start);
                    let path = if e.message().starts_with("missing field") {
                        c.spans.path_of_span(&s)
                    } else {
                        c.spans.path_at(s.start)
                    };
                    (l, c2, locate::render(&path))
                }
                None => (0, 0, String::new()),
            };
            PolicyError {
                origin: origin.to_string(),
                line,
                col,
                field,
                message: e.message().trim().to_string(),
            }
        })?;
        validate(&c, file, base)
    }

    /// Applies the policy to a launch configuration (native tier): limits, allow_weaker, the seccomp policy
    /// file and the Caffe prefix. Only for `kind = "worker"`.
    pub fn apply_to(&self, cfg: &mut LaunchConfig) -> Result<(), PolicyError> {
        if self.file.kind != Kind::Worker {
            return Err(PolicyError {
                origin: self.origin.clone(),
                line: 0,
                col: 0,
                field: "kind".into(),
                message:
                    "a run-tool policy cannot start a worker (use it with `caffe-sandbox run`)"
                        .into(),
            });
        }
        cfg.limits = self.limits.clone();
        cfg.allow_weaker = self.allow_weaker.clone();
        cfg.seccomp_policy = match &self.seccomp_source {
            SeccompSource::BuiltinWorker => None,
            SeccompSource::File(p) => Some(p.clone()),
            SeccompSource::BuiltinRunTool => unreachable!("rejected by validation for workers"),
        };
        if let Some(p) = &self.caffe_prefix {
            cfg.caffe_prefix = p.clone();
        }
        cfg.extra_ro_paths = self
            .file
            .filesystem
            .ro_noexec_paths
            .iter()
            .map(PathBuf::from)
            .collect();
        Ok(())
    }

    /// The supervisor's deadlines (workers).
    pub fn supervisor_deadlines(&self) -> Deadlines {
        let d = Deadlines::default();
        Deadlines {
            start: self.deadlines.start,
            load: self.deadlines.load.unwrap_or(d.load),
            request: self.deadlines.request.unwrap_or(d.request),
        }
    }

    /// The jail's rlimits.
    pub fn jail_limits(&self) -> caffe_sandbox_jail::Limits {
        caffe_sandbox_jail::Limits {
            address_space: self.limits.address_space_bytes,
            data: None,
            cpu_seconds: self.limits.cpu_seconds,
            file_size: self.limits.file_size_bytes,
            nofile: self.limits.open_files,
            nproc: self.limits.processes,
        }
    }

    /// Layers the user accepts weaker, as names.
    pub fn allow_weaker_names(&self) -> Vec<&'static str> {
        self.allow_weaker.iter().map(|l| l.name()).collect()
    }
}

fn validate(
    c: &Checker<'_>,
    file: PolicyFile,
    base: Option<&Path>,
) -> Result<SandboxPolicy, PolicyError> {
    if file.schema != SCHEMA {
        return Err(c.err(
            "schema",
            format!("must be {SCHEMA:?}, got {:?}", file.schema),
        ));
    }
    if file.name.trim().is_empty()
        || !file
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        return Err(c.err(
            "name",
            "must be non-empty and use only [A-Za-z0-9_-] (it names exported files)",
        ));
    }
    if file.description.trim().len() < 8 {
        return Err(c.err("description", "must say what the policy is for"));
    }
    // allow_weaker
    let mut allow = BTreeSet::new();
    for (i, name) in file.allow_weaker.iter().enumerate() {
        let field = format!("allow_weaker[{i}]");
        let layer: Layer = name.parse().map_err(|_| {
            c.err(
                &field,
                format!(
                    "unknown layer {name:?} (layers: {})",
                    Layer::ALL
                        .iter()
                        .map(|l| l.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if let Some((_, section)) = SECTION_LAYERS.iter().find(|(l, _)| *l == layer) {
            let required = match layer {
                Layer::Landlock => file.landlock.required,
                Layer::Seccomp => file.seccomp.required,
                _ => file.cgroup.required,
            };
            if required {
                return Err(c.err(
                    &field,
                    format!(
                        "{name:?} contradicts {section} = true (set {section} = false instead)"
                    ),
                ));
            }
        }
        if !allow.insert(layer) {
            return Err(c.err(&field, format!("duplicate layer {name:?}")));
        }
    }
    if !file.landlock.required {
        allow.insert(Layer::Landlock);
    }
    if !file.seccomp.required {
        allow.insert(Layer::Seccomp);
    }
    if !file.cgroup.required {
        allow.insert(Layer::CgroupV2);
    }
    // namespaces
    let ns = &file.namespaces;
    for (flag, key, layer) in [
        (ns.user, "user", "user-ns"),
        (ns.pid, "pid", "pid-ns"),
        (ns.net, "net", "net-ns"),
        (ns.mount, "mount", "mount-ns"),
        (ns.ipc, "ipc", "ipc-ns"),
        (ns.uts, "uts", "uts-ns"),
        (ns.cgroup, "cgroup", "cgroup-ns"),
    ] {
        if !flag {
            return Err(c.err(
                &format!("namespaces.{key}"),
                format!(
                    "must be true: the sandbox always creates this namespace; to run where it cannot be created, \
                     list {layer:?} in allow_weaker"
                ),
            ));
        }
    }
    if ns.hostname.is_empty()
        || ns.hostname.len() > 64
        || !ns
            .hostname
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
    {
        return Err(c.err(
            "namespaces.hostname",
            "must be 1-64 characters of [A-Za-z0-9-]",
        ));
    }
    // filesystem
    let fs = &file.filesystem;
    if fs.libraries != "ldd" {
        return Err(c.err(
            "filesystem.libraries",
            format!("only \"ldd\" is supported (the program's own shared libraries, file by file), got {:?}", fs.libraries),
        ));
    }
    let caffe_prefix = match fs.caffe_prefix.as_str() {
        "auto" => None,
        p if is_abs_clean(p) => Some(PathBuf::from(p)),
        p => {
            return Err(c.err(
                "filesystem.caffe_prefix",
                format!("must be \"auto\" or an absolute path without '..', got {p:?}"),
            ))
        }
    };
    for (list, key) in [
        (&fs.ro_paths, "ro_paths"),
        (&fs.ro_noexec_paths, "ro_noexec_paths"),
        (&fs.dev_nodes, "dev_nodes"),
    ] {
        let mut seen = BTreeSet::new();
        for (i, p) in list.iter().enumerate() {
            let field = format!("filesystem.{key}[{i}]");
            if !is_abs_clean(p) {
                return Err(c.err(
                    &field,
                    format!("must be an absolute path without '..', got {p:?}"),
                ));
            }
            if !seen.insert(p) {
                return Err(c.err(&field, format!("duplicate path {p:?}")));
            }
            if key == "dev_nodes" {
                if !p.starts_with("/dev/") {
                    return Err(c.err(&field, format!("device nodes live under /dev/, got {p:?}")));
                }
                if p == "/dev/zero" {
                    return Err(c.err(
                        &field,
                        "/dev/zero is refused: an endless data-layer source (see issue 3)",
                    ));
                }
            } else {
                for deny in [
                    "/", "/home", "/root", "/tmp", "/etc", "/proc", "/sys", "/dev", "/var", "/run",
                ] {
                    if p.trim_end_matches('/') == deny || (p == "/" && deny == "/") {
                        return Err(c.err(
                            &field,
                            format!("{p:?} would expose a host directory wholesale"),
                        ));
                    }
                }
            }
        }
    }
    match (file.kind, fs.proc.as_str()) {
        (_, "none") => {}
        (Kind::RunTool, "private") => {}
        (Kind::Worker, "private") => {
            return Err(c.err(
                "filesystem.proc",
                "the worker runs without /proc (it needs none); \"private\" is only for run-tool policies",
            ))
        }
        (_, other) => return Err(c.err("filesystem.proc", format!("must be \"none\" or \"private\", got {other:?}"))),
    }
    if file.kind == Kind::Worker {
        // What the worker launcher (crates/supervisor/src/launch.rs) builds; other values would be ignored,
        // and a policy must never claim more than is applied.
        if !fs.ro_paths.is_empty() {
            return Err(c.err(
                "filesystem.ro_paths",
                "the worker gets no extra executable paths (its model arrives as file descriptors); read-only data \
                 paths go in ro_noexec_paths, executable binds are for run-tool policies",
            ));
        }
        if fs.dev_nodes != ["/dev/null", "/dev/urandom"] {
            return Err(c.err(
                "filesystem.dev_nodes",
                "the worker launcher binds exactly [\"/dev/null\", \"/dev/urandom\"] (Caffe seeds its RNG from /dev/urandom)",
            ));
        }
        if ns.hostname != "caffe-sandbox" {
            return Err(c.err(
                "namespaces.hostname",
                "the worker launcher uses \"caffe-sandbox\"",
            ));
        }
        if file.scratch.path != "/scratch" {
            return Err(c.err(
                "scratch.path",
                "the worker launcher mounts its scratch at \"/scratch\"",
            ));
        }
    }
    // scratch
    if !is_abs_clean(&file.scratch.path) || file.scratch.path == "/" {
        return Err(c.err(
            "scratch.path",
            "must be an absolute path below /, without '..'",
        ));
    }
    let scratch_bytes = parse_size(&file.scratch.size).map_err(|m| c.err("scratch.size", m))?;
    if !(64 << 10..=(8u64 << 30)).contains(&scratch_bytes) {
        return Err(c.err("scratch.size", "must be between 64KiB and 8GiB"));
    }
    // rlimits
    let r = &file.rlimits;
    let size_opt =
        |v: &Option<String>, field: &str, min: u64| -> Result<Option<u64>, PolicyError> {
            match v {
                None => Ok(None),
                Some(s) => {
                    let n = parse_size(s).map_err(|m| c.err(field, m))?;
                    if n < min {
                        return Err(c.err(field, format!("{s:?} is below the minimum {min} bytes")));
                    }
                    Ok(Some(n))
                }
            }
        };
    let address_space = size_opt(&r.address_space, "rlimits.address_space", 64 << 20)?;
    let file_size = size_opt(&r.file_size, "rlimits.file_size", 0)?;
    if r.cpu_seconds == Some(0) {
        return Err(c.err("rlimits.cpu_seconds", "must be at least 1"));
    }
    if let Some(n) = r.open_files {
        if !(8..=65536).contains(&n) {
            return Err(c.err("rlimits.open_files", "must be between 8 and 65536"));
        }
    }
    if let Some(n) = r.processes {
        if !(2..=65536).contains(&n) {
            return Err(c.err("rlimits.processes", "must be between 2 and 65536"));
        }
    }
    if file.kind == Kind::Worker {
        for (v, f) in [
            (address_space.is_none(), "rlimits.address_space"),
            (r.cpu_seconds.is_none(), "rlimits.cpu_seconds"),
            (r.processes.is_none(), "rlimits.processes"),
        ] {
            if v {
                return Err(c.err(f, "a worker policy must set this limit (it is the resource bound without cgroup v2)"));
            }
        }
    }
    let limits = ResourceLimits {
        address_space_bytes: address_space,
        cpu_seconds: r.cpu_seconds,
        open_files: r.open_files,
        processes: r.processes,
        file_size_bytes: file_size,
        scratch_bytes,
    };
    // cgroup
    let g = &file.cgroup;
    let memory_max = size_opt(&g.memory_max, "cgroup.memory_max", 16 << 20)?;
    let cpu_max = match g.cpus {
        None => None,
        Some(x) if x.is_finite() && (0.01..=1024.0).contains(&x) => {
            Some(((x * 100_000.0).round() as u64, 100_000))
        }
        Some(x) => {
            return Err(c.err(
                "cgroup.cpus",
                format!("must be between 0.01 and 1024, got {x}"),
            ))
        }
    };
    if g.pids_max == Some(0) {
        return Err(c.err("cgroup.pids_max", "must be at least 1"));
    }
    if g.required {
        return Err(c.err(
            "cgroup.required",
            "the worker launcher does not request cgroup v2 limits yet (rlimits are the native bound; the limits \
             are used by `export`); set required = false",
        ));
    }
    let cgroup = CgroupLimits {
        memory_max,
        cpu_max,
        pids_max: g.pids_max,
    };
    // seccomp
    let s = &file.seccomp;
    let (seccomp_source, seccomp) = match s.policy.as_str() {
        "builtin:worker" => (SeccompSource::BuiltinWorker, SeccompPolicy::worker()),
        "builtin:run-tool" => (SeccompSource::BuiltinRunTool, SeccompPolicy::run_tool()),
        p if p.starts_with("builtin:") => {
            return Err(c.err(
                "seccomp.policy",
                format!("unknown built-in {p:?} (builtin:worker, builtin:run-tool)"),
            ))
        }
        p => {
            let path = match base {
                Some(b) if Path::new(p).is_relative() => b.join(p),
                _ => PathBuf::from(p),
            };
            let path = path
                .canonicalize()
                .map_err(|e| c.err("seccomp.policy", format!("{}: {e}", path.display())))?;
            let pol =
                SeccompPolicy::load(&path).map_err(|e| c.err("seccomp.policy", e.to_string()))?;
            (SeccompSource::File(path), pol)
        }
    };
    let want_phases: &[&str] = match file.kind {
        Kind::Worker => &["load", "inference"],
        Kind::RunTool => &["run"],
    };
    if s.phases != want_phases {
        return Err(c.err(
            "seccomp.phases",
            format!(
                "a {} policy has the phases {want_phases:?} (got {:?})",
                if file.kind == Kind::Worker {
                    "worker"
                } else {
                    "run-tool"
                },
                s.phases
            ),
        ));
    }
    match (file.kind, &seccomp_source) {
        (Kind::Worker, SeccompSource::BuiltinRunTool) => {
            return Err(c.err(
                "seccomp.policy",
                "builtin:run-tool lets execve through; a worker policy cannot use it",
            ))
        }
        (Kind::RunTool, SeccompSource::BuiltinWorker) => {
            return Err(c.err(
                "seccomp.policy",
                "builtin:worker cannot start a tool (it denies execve)",
            ))
        }
        _ => {}
    }
    if file.kind == Kind::Worker
        && seccomp
            .syscalls_with(caffe_sandbox_seccomp::Action::NotifyOnce)
            .contains("execve")
    {
        return Err(c.err("seccomp.policy", "a worker policy must not let execve run"));
    }
    // deadlines
    let d = &file.deadlines;
    let start = parse_duration(&d.start).map_err(|m| c.err("deadlines.start", m))?;
    let opt = |v: &Option<String>, f: &str| {
        v.as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|m| c.err(f, m))
    };
    let deadlines = PolicyDeadlines {
        start,
        load: opt(&d.load, "deadlines.load")?,
        request: opt(&d.request, "deadlines.request")?,
        run: opt(&d.run, "deadlines.run")?,
    };
    match file.kind {
        Kind::Worker => {
            if deadlines.load.is_none() {
                return Err(c.err("deadlines.load", "a worker policy needs a load deadline"));
            }
            if deadlines.request.is_none() {
                return Err(c.err(
                    "deadlines.request",
                    "a worker policy needs a request deadline",
                ));
            }
            if d.run.is_some() {
                return Err(c.err(
                    "deadlines.run",
                    "only run-tool policies have a run deadline",
                ));
            }
        }
        Kind::RunTool => {
            if deadlines.run.is_none() {
                return Err(c.err("deadlines.run", "a run-tool policy needs a run deadline"));
            }
            if d.load.is_some() || d.request.is_some() {
                return Err(c.err(
                    if d.load.is_some() {
                        "deadlines.load"
                    } else {
                        "deadlines.request"
                    },
                    "only worker policies have load/request deadlines",
                ));
            }
        }
    }
    Ok(SandboxPolicy {
        origin: c.origin.to_string(),
        text: c.text.to_string(),
        file,
        allow_weaker: allow,
        caffe_prefix,
        scratch_bytes,
        limits,
        cgroup,
        seccomp_source,
        seccomp,
        deadlines,
    })
}

//! The TOML file as written (serde, `deny_unknown_fields` everywhere). Validation is in `lib.rs`.

use serde::{Deserialize, Serialize};

/// Top level.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Must be [`crate::SCHEMA`].
    pub schema: String,
    /// Short name.
    pub name: String,
    /// What the policy is for.
    pub description: String,
    /// `worker` or `run-tool`.
    pub kind: Kind,
    /// Layer names (kebab-case, as `--allow-weaker`).
    #[serde(default)]
    pub allow_weaker: Vec<String>,
    /// Namespaces.
    pub namespaces: Namespaces,
    /// Read-only view.
    pub filesystem: Filesystem,
    /// Writable tmpfs.
    pub scratch: Scratch,
    /// Landlock.
    pub landlock: Landlock,
    /// setrlimit.
    pub rlimits: Rlimits,
    /// cgroup v2 limits.
    pub cgroup: Cgroup,
    /// seccomp.
    pub seccomp: Seccomp,
    /// Wall-clock deadlines.
    pub deadlines: Deadlines,
}

/// What the policy confines.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `caffe-sandbox-worker` (infer, serve).
    Worker,
    /// `caffe-sandbox run -- CMD`.
    RunTool,
}

/// `[namespaces]`: every flag must be `true` (the native sandbox always creates all of them).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    pub user: bool,
    pub pid: bool,
    pub net: bool,
    pub mount: bool,
    pub ipc: bool,
    pub uts: bool,
    pub cgroup: bool,
    /// Hostname inside the UTS namespace.
    pub hostname: String,
}

/// `[filesystem]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    /// Only `"ldd"`: the program and exactly the shared libraries it loads, file by file.
    pub libraries: String,
    /// `"auto"` (CAFFE_PREFIX or the repository's .cache/caffe/prefix) or an absolute path.
    pub caffe_prefix: String,
    /// Extra read-only, executable binds (absolute).
    #[serde(default)]
    pub ro_paths: Vec<String>,
    /// Extra read-only, noexec binds (absolute).
    #[serde(default)]
    pub ro_noexec_paths: Vec<String>,
    /// Device nodes bound into the private /dev.
    pub dev_nodes: Vec<String>,
    /// `"none"` or `"private"` (proc of the sandbox's own pid namespace, subset=pid).
    pub proc: String,
}

/// `[scratch]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scratch {
    /// Absolute path inside.
    pub path: String,
    /// Size cap, e.g. `"16MiB"`.
    pub size: String,
}

/// `[landlock]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Landlock {
    /// Fail closed when the kernel cannot enforce it.
    pub required: bool,
}

/// `[rlimits]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rlimits {
    pub address_space: Option<String>,
    pub cpu_seconds: Option<u64>,
    pub file_size: Option<String>,
    pub open_files: Option<u64>,
    pub processes: Option<u64>,
}

/// `[cgroup]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cgroup {
    /// Fail closed without a delegated cgroup v2.
    pub required: bool,
    pub memory_max: Option<String>,
    pub cpus: Option<f64>,
    pub pids_max: Option<u64>,
}

/// `[seccomp]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Seccomp {
    pub required: bool,
    /// `builtin:worker`, `builtin:run-tool` or a JSON policy path (relative to the TOML file).
    pub policy: String,
    /// `["load", "inference"]` for workers, `["run"]` for tools.
    pub phases: Vec<String>,
}

/// `[deadlines]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Deadlines {
    pub start: String,
    pub load: Option<String>,
    pub request: Option<String>,
    pub run: Option<String>,
}

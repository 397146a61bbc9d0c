//! Options shared by the commands that start sandboxed workers.
use caffe_sandbox_supervisor::{AuditLog, Deadlines, FirewallMode, LaunchConfig, Layer};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Sandbox and limits.
#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Run even if this isolation layer cannot be applied or is not wanted (repeatable; e.g. seccomp,
    /// landlock, user-ns). The result always lists the layers in force.
    #[arg(long = "allow-weaker", value_name = "LAYER")]
    pub allow_weaker: Vec<Layer>,
    /// Address-space limit of the worker in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub memory_limit: u64,
    /// CPU-time limit of the worker in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub cpu_limit: u64,
    /// Wall-clock deadline for loading the model, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub load_timeout: f64,
    /// Wall-clock deadline for each request, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub timeout: f64,
    /// Append-only JSON-lines audit log (default: $XDG_STATE_HOME/caffe-sandbox/audit.jsonl).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Worker log verbosity: glog minimum level (0 INFO, 1 WARNING, 2 ERROR).
    #[arg(long, default_value_t = 1)]
    pub log_level: i32,
    /// Fork workers from a pre-initialised fork server (libraries and Caffe loaded once) instead of a fresh
    /// exec per worker: faster starts, weaker isolation between workers (see docs/fork-server.md).
    #[arg(long)]
    pub fork_server: bool,
}

impl SandboxArgs {
    /// The launch configuration these options describe.
    pub fn launch_config(&self) -> Result<LaunchConfig, caffe_sandbox_supervisor::Error> {
        let mut cfg = LaunchConfig::discover()?;
        cfg.allow_weaker = self.allow_weaker.iter().copied().collect();
        cfg.limits.address_space_bytes = Some(self.memory_limit << 20);
        cfg.limits.cpu_seconds = Some(self.cpu_limit);
        cfg.log_level = self.log_level;
        cfg.fork_server = self.fork_server;
        Ok(cfg)
    }

    /// The deadlines these options describe.
    pub fn deadlines(&self) -> Deadlines {
        Deadlines {
            load: Duration::from_secs_f64(self.load_timeout.max(0.001)),
            request: Duration::from_secs_f64(self.timeout.max(0.001)),
            ..Deadlines::default()
        }
    }

    /// Opens the audit log.
    pub fn audit(&self) -> AuditLog {
        let path = self.audit_log.clone().unwrap_or_else(|| {
            let base = std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                        .join(".local/state")
                });
            base.join("caffe-sandbox/audit.jsonl")
        });
        match AuditLog::open(&path) {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "caffe-sandbox: warning: audit log {} unavailable: {e}",
                    path.display()
                );
                AuditLog::disabled()
            }
        }
    }
}

/// The model firewall.
#[derive(Args, Debug, Clone)]
pub struct FirewallArgs {
    /// `enforce` (default): check the model in memory-safe Rust and refuse it on any error finding; Caffe then
    /// receives the canonical re-encoding of what was checked. `off`: let Caffe parse the original files
    /// (still inside the sandbox) — for testing the sandbox itself or for models the firewall cannot model.
    #[arg(long, value_name = "MODE", default_value = "enforce", value_parser = ["enforce", "off"])]
    pub firewall: String,
    /// Opt in to a layer type outside the inference allowlist (repeatable), e.g. PReLU.
    #[arg(long = "allow-layer-type", value_name = "TYPE")]
    pub allow_layer_types: Vec<String>,
    /// Accept HDF5-format weights (parsed by libhdf5 inside the worker; not recommended).
    #[arg(long)]
    pub allow_hdf5_weights: bool,
    /// Require the model directory's manifest.toml to pin the sha256 of the prototxt and the weights.
    #[arg(long)]
    pub manifest: bool,
    /// Require manifest.toml and a valid minisign signature of it (manifest.toml.minisig) by this public key
    /// (a minisign.pub file or the base64 key itself).
    #[arg(long, value_name = "KEY")]
    pub trusted_key: Option<String>,
    /// Follow symlinks in the model directory that lead outside it (by default they are refused, so a hostile
    /// model cannot make the supervisor read e.g. labels.txt -> /etc/passwd).
    #[arg(long)]
    pub allow_links_outside_model: bool,
}

impl FirewallArgs {
    /// Caps and link policy for reading the model directory.
    pub fn file_limits(&self) -> caffe_sandbox_supervisor::ModelFileLimits {
        caffe_sandbox_supervisor::ModelFileLimits {
            allow_links_outside: self.allow_links_outside_model,
            ..Default::default()
        }
    }

    /// The integrity requirement these options describe.
    pub fn integrity(&self) -> caffe_sandbox_supervisor::Integrity {
        use caffe_sandbox_supervisor::Integrity;
        match &self.trusted_key {
            Some(k) => Integrity::Signed {
                trusted_key: std::fs::read_to_string(k).unwrap_or_else(|_| k.clone()),
            },
            None if self.manifest => Integrity::Manifest,
            None => Integrity::None,
        }
    }

    /// The firewall mode these options describe.
    pub fn mode(&self) -> FirewallMode {
        if self.firewall == "off" {
            return FirewallMode::Off;
        }
        let mut policy = caffe_sandbox_firewall::FirewallPolicy::default();
        policy
            .allow_layer_types
            .extend(self.allow_layer_types.iter().cloned());
        policy.allow_hdf5_weights = self.allow_hdf5_weights;
        FirewallMode::Enforce(policy)
    }
}

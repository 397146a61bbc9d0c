//! `caffe-sandbox policy check FILE…` and `caffe-sandbox policy show [--policy P] [--json]`.
use caffe_sandbox_policy::SandboxPolicy;
use clap::{Args, Subcommand};
use serde_json::json;

/// Arguments of `policy`.
#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

/// `policy` subcommands.
#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Parse and validate policy files; errors point at FILE:LINE:COL and the field.
    Check {
        /// Policy TOML files (or builtin:inference, builtin:run-tool).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
    /// Print a policy (default: the built-in strict inference profile) with every value resolved.
    Show {
        /// Policy TOML file or builtin:NAME.
        #[arg(long, value_name = "P", default_value = "builtin:inference")]
        policy: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Exit code for an invalid policy (same class as a command-line error).
pub const INVALID: i32 = 2;

pub fn run(args: PolicyArgs) -> i32 {
    match args.command {
        PolicyCommand::Check { files } => {
            let mut code = 0;
            for f in &files {
                match SandboxPolicy::load_spec(f) {
                    Ok(p) => println!(
                        "{f}: ok ({} policy {:?}, seccomp {}: {} rules, allow_weaker [{}])",
                        kind_name(&p),
                        p.file.name,
                        p.file.seccomp.policy,
                        p.seccomp.rules.len(),
                        p.allow_weaker_names().join(", ")
                    ),
                    Err(e) => {
                        eprintln!("{e}");
                        code = INVALID;
                    }
                }
            }
            code
        }
        PolicyCommand::Show { policy, json } => match SandboxPolicy::load_spec(&policy) {
            Err(e) => {
                eprintln!("{e}");
                INVALID
            }
            Ok(p) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&show_json(&p)).unwrap_or_default()
                    );
                } else {
                    print!("{}", show_text(&p));
                }
                0
            }
        },
    }
}

fn kind_name(p: &SandboxPolicy) -> &'static str {
    match p.file.kind {
        caffe_sandbox_policy::Kind::Worker => "worker",
        caffe_sandbox_policy::Kind::RunTool => "run-tool",
    }
}

fn secs(d: Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

/// The resolved policy as JSON (the file's fields plus resolved numbers).
pub fn show_json(p: &SandboxPolicy) -> serde_json::Value {
    json!({
        "origin": p.origin,
        "file": p.file,
        "resolved": {
            "allow_weaker": p.allow_weaker_names(),
            "scratch_bytes": p.scratch_bytes,
            "rlimits": p.limits,
            "cgroup": {
                "memory_max": p.cgroup.memory_max,
                "cpu_max": p.cgroup.cpu_max.map(|(q, per)| json!({"quota_us": q, "period_us": per})),
                "pids_max": p.cgroup.pids_max,
            },
            "deadlines_seconds": {
                "start": p.deadlines.start.as_secs_f64(),
                "load": secs(p.deadlines.load),
                "request": secs(p.deadlines.request),
                "run": secs(p.deadlines.run),
            },
            "seccomp": {
                "name": p.seccomp.name,
                "rules": p.seccomp.rules.len(),
                "runnable_syscalls": p.seccomp.runnable_syscalls(),
                "never_allow": p.seccomp.never_allow,
            },
        },
    })
}

fn show_text(p: &SandboxPolicy) -> String {
    let f = &p.file;
    let opt = |v: Option<u64>| v.map_or("unlimited".to_string(), |v| v.to_string());
    let mut s = String::new();
    s.push_str(&format!(
        "policy {} ({}) from {}\n  {}\n",
        f.name,
        kind_name(p),
        p.origin,
        f.description
    ));
    s.push_str(&format!(
        "namespaces   user pid net mount ipc uts cgroup (hostname {})\n",
        f.namespaces.hostname
    ));
    s.push_str(&format!(
        "filesystem   program + its shared libraries ({}), Caffe prefix {}, extra ro [{}], ro+noexec [{}], /dev [{}], /proc {}\n",
        f.filesystem.libraries,
        f.filesystem.caffe_prefix,
        f.filesystem.ro_paths.join(", "),
        f.filesystem.ro_noexec_paths.join(", "),
        f.filesystem.dev_nodes.join(", "),
        f.filesystem.proc
    ));
    s.push_str(&format!(
        "scratch      {} tmpfs {} bytes, nosuid,nodev,noexec\n",
        f.scratch.path, p.scratch_bytes
    ));
    s.push_str(&format!(
        "landlock     {}\n",
        if f.landlock.required {
            "required"
        } else {
            "best effort (allow_weaker)"
        }
    ));
    s.push_str(&format!(
        "rlimits      as={} cpu={}s fsize={} nofile={} nproc={} core=0\n",
        opt(p.limits.address_space_bytes),
        opt(p.limits.cpu_seconds),
        opt(p.limits.file_size_bytes),
        opt(p.limits.open_files),
        opt(p.limits.processes)
    ));
    s.push_str(&format!(
        "cgroup v2    {} memory.max={} cpu.max={} pids.max={}\n",
        if f.cgroup.required {
            "required"
        } else {
            "when delegated"
        },
        opt(p.cgroup.memory_max),
        p.cgroup
            .cpu_max
            .map_or("max".into(), |(q, per)| format!("{q} {per}")),
        opt(p.cgroup.pids_max)
    ));
    s.push_str(&format!(
        "seccomp      {} ({} rules, {} syscalls may run), phases [{}], {}\n",
        f.seccomp.policy,
        p.seccomp.rules.len(),
        p.seccomp.runnable_syscalls().len(),
        f.seccomp.phases.join(", "),
        if f.seccomp.required {
            "required"
        } else {
            "best effort (allow_weaker)"
        }
    ));
    let d = &p.deadlines;
    s.push_str(&format!("deadlines    start {:?}", d.start));
    for (n, v) in [("load", d.load), ("request", d.request), ("run", d.run)] {
        if let Some(v) = v {
            s.push_str(&format!(", {n} {v:?}"));
        }
    }
    s.push('\n');
    s.push_str(&format!(
        "allow_weaker [{}]\n",
        p.allow_weaker_names().join(", ")
    ));
    s
}

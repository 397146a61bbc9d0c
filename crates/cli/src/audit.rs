//! `caffe-sandbox audit`: runs a battery of attack probes inside the configured sandbox and prints, per layer
//! group (namespaces, filesystem, network, seccomp, Landlock, limits), what was tried, whether it was blocked
//! and by which layer. Exit 0 only if every probe was blocked; 1 if anything got through or could not be
//! established. Also prints the host facts that matter.
//!
//! The probes are shipped code (crates/supervisor/src/probe.rs): this binary, started as the sandbox's worker
//! with the probe's name in its environment, installs the worker's seccomp policy exactly as
//! `caffe-sandbox-worker` does and then attacks. The host side watches: a TCP listener on 127.0.0.1 and an
//! abstract unix socket must accept nothing, a host process must receive no signal, a host path must stay
//! absent.
use crate::options::SandboxArgs;
use caffe_sandbox_supervisor::probe::{self, ProbeSpec, ProbeTargets, ProbeVerdict, PROBES};
use clap::Args;
use serde_json::json;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::PathBuf;

/// Arguments of `audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only run probes whose name contains this text (repeatable).
    #[arg(long = "only", value_name = "TEXT")]
    pub only: Vec<String>,
    /// A sandbox policy (`builtin:NAME` or a TOML file, see docs/policy.md) to audit instead of the defaults;
    /// `--allow-weaker` and `--seccomp-policy` given here apply on top of it.
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<String>,
    /// A seccomp policy file to audit instead of the built-in worker policy.
    #[arg(long, value_name = "FILE")]
    pub seccomp_policy: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Host-side watchers for the probes' targets.
struct Watch {
    tcp: TcpListener,
    abstract_sock: Option<std::os::unix::net::UnixListener>,
    abstract_name: String,
    sleeper: Option<std::process::Child>,
    dir: PathBuf,
    path: PathBuf,
}

impl Watch {
    fn new() -> std::io::Result<Watch> {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        tcp.set_nonblocking(true)?;
        let abstract_name = format!("caffe-sandbox-audit-{}", std::process::id());
        let abstract_sock = {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
                .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a))
                .ok()
        };
        if let Some(s) = &abstract_sock {
            s.set_nonblocking(true)?;
        }
        let sleeper = std::process::Command::new("sleep")
            .arg("600")
            .stdin(std::process::Stdio::null())
            .spawn()
            .ok();
        let dir = std::env::temp_dir().join(format!("caffe-sandbox-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // World-writable, so that only the sandbox (not permissions) can stop the probe from writing here.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))?;
        }
        let path = dir.join("written-from-the-sandbox");
        // A world-readable host file: only the sandbox can keep the read probe from it.
        let secret = dir.join("readable-secret");
        std::fs::write(&secret, "caffe-sandbox audit: host file content\n")?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(Watch {
            tcp,
            abstract_sock,
            abstract_name,
            sleeper,
            dir,
            path,
        })
    }

    fn targets(&self) -> ProbeTargets {
        ProbeTargets {
            pid: self.sleeper.as_ref().map(|c| c.id() as i32),
            tcp_port: self.tcp.local_addr().ok().map(|a| a.port()),
            abstract_name: Some(self.abstract_name.clone()),
            path: Some(self.path.clone()),
            read_path: Some(self.dir.join("readable-secret")),
        }
    }

    /// What the host saw after `probe` ran: a breach overrides whatever the probe said.
    fn breach(&mut self, probe: &str) -> Option<String> {
        match self.tcp.accept() {
            Ok(_) => {
                return Some("the host TCP listener on 127.0.0.1 accepted a connection".into())
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {}
        }
        if let Some(s) = &self.abstract_sock {
            if s.accept().is_ok() {
                return Some(format!(
                    "the host abstract socket @{} accepted a connection",
                    self.abstract_name
                ));
            }
        }
        if let Some(c) = &mut self.sleeper {
            if let Ok(Some(st)) = c.try_wait() {
                self.sleeper = None;
                return Some(format!(
                    "the host process was signalled ({st}) during {probe}"
                ));
            }
        }
        if self.path.symlink_metadata().is_ok() {
            let _ = std::fs::remove_file(&self.path);
            return Some(format!("{} was created on the host", self.path.display()));
        }
        None
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(c) = &mut self.sleeper {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One row of the table.
#[derive(serde::Serialize)]
struct Row {
    #[serde(flatten)]
    spec: ProbeSpec,
    #[serde(flatten)]
    verdict: ProbeVerdict,
}

pub fn run(args: AuditArgs) -> i32 {
    let audit_log = args.sandbox.audit();
    // The probes run in this very binary, started as the sandbox's worker: the Caffe worker need not exist.
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("caffe-sandbox: error: current executable: {e}");
            return crate::exit::SETUP;
        }
    };
    if std::env::var_os("CAFFE_SANDBOX_WORKER").is_none() {
        // Single-threaded here: no other thread reads the environment yet.
        std::env::set_var("CAFFE_SANDBOX_WORKER", &me);
    }
    let mut cfg = match args.sandbox.launch_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("caffe-sandbox: error [{}]: {e}", e.label());
            return crate::exit::code_for(&e);
        }
    };
    if let Some(spec) = &args.policy {
        let cli_weaker = cfg.allow_weaker.clone();
        let applied =
            caffe_sandbox_policy::SandboxPolicy::load_spec(spec).and_then(|p| p.apply_to(&mut cfg));
        if let Err(e) = applied {
            eprintln!("caffe-sandbox audit: policy {spec}: {e}");
            return crate::exit::SANDBOX;
        }
        cfg.allow_weaker.extend(cli_weaker);
    }
    cfg.worker_exe = me;
    if args.seccomp_policy.is_some() {
        cfg.seccomp_policy = args.seccomp_policy.clone();
    }
    let facts = caffe_sandbox_jail::host_facts();
    let mut watch = match Watch::new() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("caffe-sandbox audit: cannot set up the host-side watchers: {e}");
            return crate::exit::SANDBOX;
        }
    };
    let targets = watch.targets();
    let selected: Vec<&ProbeSpec> = PROBES
        .iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| s.name.contains(o.as_str())))
        .collect();
    let mut rows = Vec::new();
    for spec in selected {
        let mut verdict = probe::run_probe(&cfg, spec, &targets);
        if let Some(b) = watch.breach(spec.name) {
            verdict = ProbeVerdict::GotThrough { how: b };
        }
        if let ProbeVerdict::Inconclusive { how } = &verdict {
            // A sandbox that cannot start is a setup problem, not a probe result: say so once and stop.
            if how.starts_with("sandbox error") || how.starts_with("setup error") {
                eprintln!("caffe-sandbox audit: {how}");
                return crate::exit::SANDBOX;
            }
        }
        rows.push(Row {
            spec: *spec,
            verdict,
        });
    }
    let through = rows.iter().filter(|r| !r.verdict.is_blocked()).count();
    let weakened: Vec<String> = cfg
        .allow_weaker
        .iter()
        .map(|l| l.name().to_string())
        .collect();
    audit_log.record(
        "audit",
        &json!({ "probes": rows.len(), "not_blocked": through, "allow_weaker": weakened }),
    );
    if args.json {
        println!(
            "{}",
            json!({ "host": facts, "allow_weaker": weakened, "probes": rows, "not_blocked": through,
                    "passed": through == 0 })
        );
    } else {
        print_table(&rows, &facts, &weakened);
        if through == 0 {
            println!("audit passed: all {} probes were blocked", rows.len());
        } else {
            println!(
                "AUDIT FAILED: {through} of {} probes were not blocked",
                rows.len()
            );
        }
    }
    if through == 0 {
        0
    } else {
        1
    }
}

fn print_table(rows: &[Row], facts: &caffe_sandbox_jail::HostFacts, weakened: &[String]) {
    println!("host: kernel {}, euid {}", facts.kernel_release, facts.euid);
    println!(
        "  landlock ABI {} (used {}); seccomp {} [{}]; unprivileged user namespaces {}",
        facts.landlock_abi,
        facts.landlock_abi_used,
        if facts.seccomp_available {
            "available"
        } else {
            "UNAVAILABLE"
        },
        facts.seccomp_actions.join(" "),
        if facts.unprivileged_userns {
            "allowed"
        } else {
            "denied"
        }
    );
    println!(
        "  cgroup v2: {}; v1 controllers: {}",
        facts
            .cgroup
            .v2_unavailable
            .clone()
            .unwrap_or_else(|| format!("usable ({})", facts.cgroup.v2_controllers.join(" "))),
        facts.cgroup.v1_controllers.join(" ")
    );
    println!(
        "  runtimes: {}",
        facts
            .tools
            .iter()
            .map(|(t, p)| format!(
                "{t}={}",
                p.as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "-".into())
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !weakened.is_empty() {
        println!("  layers weakened on request: {}", weakened.join(", "));
    }
    for group in [
        "namespaces",
        "filesystem",
        "network",
        "seccomp",
        "landlock",
        "limits",
    ] {
        let in_group: Vec<&Row> = rows.iter().filter(|r| r.spec.group == group).collect();
        if in_group.is_empty() {
            continue;
        }
        println!("\n[{group}]");
        for r in in_group {
            let (state, by, how) = match &r.verdict {
                ProbeVerdict::Blocked { by, how } => ("blocked", by.as_str(), how.as_str()),
                ProbeVerdict::GotThrough { how } => ("NOT BLOCKED", "-", how.as_str()),
                ProbeVerdict::Inconclusive { how } => ("INCONCLUSIVE", "-", how.as_str()),
            };
            let how: String = how.chars().take(110).collect();
            println!(
                "  {:<30} {:<13} {:<26} {}\n  {:<30} tried: {}",
                r.spec.name, state, by, how, "", r.spec.what
            );
        }
    }
    println!();
}

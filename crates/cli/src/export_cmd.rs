//! `caffe-sandbox export docker|oci|k8s [--policy P] [--out DIR]`: the same policy for container runtimes.
use caffe_sandbox_policy::export::docker::{self, Engine};
use caffe_sandbox_policy::export::k8s::{self, K8sOptions};
use caffe_sandbox_policy::export::oci::{self, OciOptions};
use caffe_sandbox_policy::export::seccomp::{docker_profile, envelope, Envelope};
use caffe_sandbox_policy::export::Workload;
use caffe_sandbox_policy::SandboxPolicy;
use caffe_sandbox_supervisor::LaunchConfig;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

/// Export formats.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Docker/Podman seccomp JSON + `docker run` / `podman run` scripts.
    Docker,
    /// OCI runtime bundle (config.json + empty read-only rootfs) for crun/runc.
    Oci,
    /// Kubernetes manifests for the server + its Localhost seccomp profile.
    K8s,
}

/// Arguments of `export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// What to produce.
    pub format: Format,
    /// Policy TOML file or builtin:NAME.
    #[arg(long, value_name = "P", default_value = "builtin:inference")]
    pub policy: String,
    /// Output directory (created).
    #[arg(long, value_name = "DIR", default_value = "caffe-sandbox-export")]
    pub out: PathBuf,
    /// Container image (docker, k8s).
    #[arg(long, default_value = "caffe-sandbox:latest")]
    pub image: String,
    /// Kubernetes namespace.
    #[arg(long, default_value = "caffe-sandbox")]
    pub namespace: String,
    /// Server port (k8s).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
}

pub fn run(args: ExportArgs) -> i32 {
    match export(&args) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            0
        }
        Err(e) => {
            eprintln!("caffe-sandbox: export: {e}");
            1
        }
    }
}

fn write(path: &Path, text: &str, files: &mut Vec<PathBuf>) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    files.push(path.to_path_buf());
    Ok(())
}

fn notes_text(env: &Envelope) -> String {
    let mut s = String::from(
        "What the static seccomp profile cannot express, and how it was degraded (closed):\n",
    );
    for n in &env.notes {
        s.push_str(&format!(
            "- {}: native {} -> exported {} ({})\n",
            n.syscall, n.native, n.exported, n.why
        ));
    }
    s
}

fn workload(policy: &SandboxPolicy) -> Result<Workload, String> {
    let mut cfg = LaunchConfig::discover().map_err(|e| e.to_string())?;
    policy.apply_to(&mut cfg).map_err(|e| e.to_string())?;
    Workload::worker(policy, &cfg.worker_exe, &cfg.caffe_prefix, 1)
}

fn export(a: &ExportArgs) -> Result<Vec<PathBuf>, String> {
    let policy = SandboxPolicy::load_spec(&a.policy).map_err(|e| e.to_string())?;
    let env = envelope(&policy)?;
    let name = &policy.file.name;
    let mut files = Vec::new();
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    match a.format {
        Format::Docker => {
            let w = workload(&policy)?;
            let profile = a.out.join(format!("seccomp-{name}.json"));
            write(&profile, &pretty(&docker_profile(&env)), &mut files)?;
            let abs = std::path::absolute(&profile).unwrap_or(profile.clone());
            for (engine, file) in [
                (Engine::Docker, "docker-run.sh"),
                (Engine::Podman, "podman-run.sh"),
            ] {
                let args =
                    docker::run_args(&policy, &w, &abs.display().to_string(), &a.image, engine);
                let p = a.out.join(file);
                write(&p, &docker::script(engine, &args), &mut files)?;
                set_exec(&p);
            }
            write(&a.out.join("Dockerfile.empty"), "FROM scratch\nLABEL org.caffe-sandbox.note=\"empty image: the worker and its libraries are bound read-only\"\n", &mut files)?;
            write(&a.out.join("NOTES.txt"), &notes_text(&env), &mut files)?;
        }
        Format::Oci => {
            let w = workload(&policy)?;
            let bundle = a.out.join("bundle");
            std::fs::create_dir_all(bundle.join("rootfs"))
                .map_err(|e| format!("{}: {e}", bundle.display()))?;
            let cfg = oci::config(&policy, &w, &env, &OciOptions::for_caller());
            write(&bundle.join("config.json"), &pretty(&cfg), &mut files)?;
            write(&a.out.join("NOTES.txt"), &notes_text(&env), &mut files)?;
        }
        Format::K8s => {
            let toml_text = policy.text.clone();
            let o = K8sOptions {
                image: a.image.clone(),
                namespace: a.namespace.clone(),
                port: a.port,
                ..K8sOptions::default()
            };
            let docs = k8s::manifests(&policy, &toml_text, &o);
            write(
                &a.out.join(format!("caffe-sandbox-{name}.yaml")),
                &k8s::to_yaml(&docs),
                &mut files,
            )?;
            write(
                &a.out.join("seccomp").join(k8s::profile_name(&policy)),
                &pretty(&k8s::server_profile(&env)),
                &mut files,
            )?;
            write(&a.out.join("NOTES.txt"), &notes_text(&env), &mut files)?;
        }
    }
    Ok(files)
}

fn set_exec(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
}

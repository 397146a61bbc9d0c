//! `caffe-sandbox`: run BVLC Caffe 1.0 models and tools inside a layered sandbox.
//!
//! This binary is the supervisor: it never links C/C++ model code. It is also re-executed as the jail's
//! stage 2 (see crates/jail), which is why `main` first hands control to the jail when asked to.
mod audit;
mod bench;
mod calibrate;
mod exit;
mod export_cmd;
mod infer;
mod inspect;
mod isolation;
mod options;
mod policy_cmd;
mod profile;
mod run_cmd;
mod serve;
mod workload;

use clap::{Parser, Subcommand};

/// Run BVLC Caffe 1.0 models inside a layered sandbox.
#[derive(Parser)]
#[command(name = "caffe-sandbox", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images (or run raw .npy tensors) with a model, inside the sandbox.
    Infer(infer::InferArgs),
    /// Run an existing Caffe program (e.g. `caffe time`) in the same sandbox: `run [--ro PATH]… -- CMD ARGS…`.
    Run(run_cmd::RunArgs),
    /// Show what the model firewall sees: layers, shapes, parameters, memory and FLOP estimates, findings.
    Inspect(inspect::InspectArgs),
    /// Measure the sandbox against the in-process baseline and against bwrap/crun, in the same run.
    Bench(bench::BenchArgs),
    /// Check or show sandbox policy files (TOML; see docs/policy.md).
    Policy(policy_cmd::PolicyArgs),
    /// Export a policy for Docker/Podman, an OCI runtime (crun, runc) or Kubernetes.
    Export(export_cmd::ExportArgs),
    /// Serve models over the Open Inference Protocol v2 (KServe v2 / Triton HTTP) with pre-warmed sandboxed workers.
    Serve(serve::ServeArgs),
    /// Run attack probes inside the sandbox and print, per layer, what was tried and what stopped it.
    Audit(audit::AuditArgs),
    /// Trace the real workload in the sandbox: minimal seccomp policy and a diff against the shipped one.
    Profile(profile::ProfileArgs),
    /// Measure a model's memory, CPU, threads and scratch in the sandbox and write limits into its policy.
    Calibrate(calibrate::CalibrateArgs),
}

fn main() {
    // Must come first: when the jail re-executes this binary as its stage 2, this call never returns.
    caffe_sandbox_jail::stage2_main_if_requested();
    // Inside an `audit` sandbox this binary is the probe (pid 1 of its pid namespace only): never returns then.
    caffe_sandbox_supervisor::probe::probe_main_if_requested();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Infer(args) => infer::run(args),
        Command::Run(args) => run_cmd::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Policy(args) => policy_cmd::run(args),
        Command::Export(args) => export_cmd::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Calibrate(args) => calibrate::run(args),
    };
    std::process::exit(code);
}

//! `caffe-sandbox run [--ro PATH]… -- CMD ARGS…`: an existing Caffe program in the same native sandbox.
use crate::options::SandboxArgs;
use caffe_sandbox_supervisor::run_tool::{describe, run as run_tool, RunSpec};
use caffe_sandbox_supervisor::ExitStatusExt;
use clap::Args;
use serde_json::json;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A host path the program may read (bound read-only, noexec, at the same path); repeatable. Use absolute
    /// paths in the program's arguments: inside the sandbox only these paths, the program and its libraries
    /// exist, and the writable scratch is /scratch.
    #[arg(long = "ro", value_name = "PATH")]
    pub read_only: Vec<PathBuf>,
    /// Print a JSON summary on stdout after the program's output.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// The program (a name is looked up in the Caffe prefix's bin directory first) and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

pub fn run(args: RunArgs) -> i32 {
    let audit = args.sandbox.audit();
    let cfg = match args.sandbox.launch_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("caffe-sandbox: error [{}]: {e}", e.label());
            return crate::exit::code_for(&e);
        }
    };
    let spec = RunSpec {
        program: PathBuf::from(&args.command[0]),
        args: args.command[1..].to_vec(),
        read_only: args.read_only.clone(),
        timeout: Duration::from_secs_f64(args.sandbox.timeout.max(0.001)),
    };
    let command: Vec<String> = args
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match run_tool(&cfg, &spec) {
        Ok(outcome) => {
            eprint!("{}", outcome.output_tail);
            let summary = describe(&outcome);
            audit.record(
                "run",
                &json!({ "command": command, "outcome": summary, "violations": outcome.violations,
                          "layers": outcome.layers }),
            );
            if args.json {
                println!(
                    "{}",
                    json!({ "command": command, "outcome": summary, "exit_code": outcome.status.code(),
                            "signal": outcome.status.signal(), "violations": outcome.violations,
                            "timed_out": outcome.timed_out, "layers": outcome.layers })
                );
            } else {
                eprintln!("caffe-sandbox run: {summary}");
                eprintln!("isolation layers:");
                eprint!("{}", outcome.layers);
            }
            if !outcome.violations.is_empty() || outcome.timed_out {
                crate::exit::WORKER
            } else {
                outcome
                    .status
                    .code()
                    .unwrap_or(128 + outcome.status.signal().unwrap_or(0))
            }
        }
        Err(e) => {
            eprintln!("caffe-sandbox: error [{}]: {e}", e.label());
            crate::exit::code_for(&e)
        }
    }
}

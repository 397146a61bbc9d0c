//! `caffe-sandbox inspect MODEL [--json]`: what the model firewall sees — layers, shapes, parameter counts,
//! memory and FLOP estimates, findings — without running Caffe at all (pure Rust, no sandbox needed).
use crate::options::FirewallArgs;
use caffe_sandbox_supervisor::{FirewallMode, ModelBundle};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model directory (deploy.prototxt, *.caffemodel, optional model.toml).
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub firewall: FirewallArgs,
}

pub fn run(args: InspectArgs) -> i32 {
    // Read the files exactly as `infer` would (model.toml-aware, size-capped, regular files only, manifest).
    let bundle = match ModelBundle::from_dir_with(
        &args.model,
        &args.firewall.file_limits(),
        &FirewallMode::Off,
        &args.firewall.integrity(),
    ) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("caffe-sandbox inspect: error [{}]: {e}", e.label());
            return crate::exit::code_for(&e);
        }
    };
    let policy = match args.firewall.mode() {
        FirewallMode::Enforce(p) => p,
        FirewallMode::Off => Default::default(),
    };
    let report = caffe_sandbox_firewall::inspect(&bundle.net, Some(&bundle.weights), &policy);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{report}");
    }
    if report.accepted {
        crate::exit::OK
    } else {
        crate::exit::BAD_MODEL
    }
}

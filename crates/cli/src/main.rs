//! `caffe-sandbox`: run BVLC Caffe 1.0 models and tools inside a layered sandbox.
//!
//! This binary is the supervisor: it never links C/C++ model code. It is also re-executed as the jail's
//! stage 2 (see crates/jail), which is why `main` first hands control to the jail when asked to.
mod exit;
mod infer;
mod options;

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
}

fn main() {
    // Must come first: when the jail re-executes this binary as its stage 2, this call never returns.
    caffe_sandbox_jail::stage2_main_if_requested();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Infer(args) => infer::run(args),
    };
    std::process::exit(code);
}

//! `caffe-sandbox serve`: the Open Inference Protocol v2 (KServe v2 / Triton HTTP) server
//! (crates/server), with pre-warmed sandboxed workers per model.
use crate::options::{FirewallArgs, SandboxArgs};
use caffe_sandbox_server::repository::{self, ServingConfig};
use caffe_sandbox_server::{RunOptions, ServerOptions};
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Arguments of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Serve one model directory (as version 1, named after the directory).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "model_repository",
        conflicts_with = "model_repository"
    )]
    pub model: Option<PathBuf>,
    /// Serve a model repository: <DIR>/<model>/[config.toml]/<version>/ (see crates/server/src/repository.rs).
    #[arg(long, value_name = "DIR")]
    pub model_repository: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub http_address: IpAddr,
    /// Port to listen on (0: any free port; see --port-file).
    #[arg(long, value_name = "PORT", default_value_t = 8000)]
    pub http_port: u16,
    /// Write the bound port to this file once listening.
    #[arg(long, value_name = "FILE")]
    pub port_file: Option<PathBuf>,
    /// Pre-warmed workers per model (a repository's config.toml may override).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub workers: usize,
    /// Requests that may wait per model before new ones get 429.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_queue: usize,
    /// Replace a worker after this many requests.
    #[arg(long, value_name = "N")]
    pub recycle_after: Option<u64>,
    /// Replace a worker whose resident memory exceeds this many MiB.
    #[arg(long, value_name = "MIB")]
    pub recycle_rss_mib: Option<u64>,
    /// BLAS threads per worker (default: the CPUs divided among the workers, at least 1).
    #[arg(long, value_name = "N")]
    pub blas_threads: Option<usize>,
    /// Largest batch (first dimension) accepted in FP32 inputs.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_batch: usize,
    /// Largest request body in MiB (413 beyond).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub max_body_mib: usize,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    #[command(flatten)]
    pub firewall: FirewallArgs,
}

pub fn run(args: ServeArgs) -> i32 {
    caffe_sandbox_server::init_json_logs();
    match start(args) {
        Ok(()) => crate::exit::OK,
        Err(e) => {
            eprintln!("caffe-sandbox serve: {e}");
            crate::exit::SETUP
        }
    }
}

fn start(args: ServeArgs) -> Result<(), String> {
    let launch = args.sandbox.launch_config().map_err(|e| e.to_string())?;
    let deadlines = args.sandbox.deadlines();
    let defaults = ServingConfig {
        workers: args.workers,
        max_queue: args.max_queue,
        request_timeout: deadlines.request,
        load_timeout: deadlines.load,
        recycle_after_requests: args.recycle_after,
        recycle_rss_bytes: args.recycle_rss_mib.map(|m| m << 20),
        max_batch: args.max_batch,
        memory_limit_bytes: None,
        cpu_limit_seconds: None,
        blas_threads: args.blas_threads,
    };
    let models = match (&args.model, &args.model_repository) {
        (Some(dir), _) => vec![repository::single(dir, &defaults)?],
        (None, Some(repo)) => repository::scan(repo, &defaults)?,
        (None, None) => return Err("give --model DIR or --model-repository DIR".into()),
    };
    let max_body = args
        .max_body_mib
        .checked_mul(1 << 20)
        .filter(|&b| b > 0)
        .ok_or("--max-body-mib must be positive")?;
    caffe_sandbox_server::run_blocking(RunOptions {
        server: ServerOptions {
            models,
            launch,
            audit: args.sandbox.audit(),
            max_body_bytes: max_body,
            firewall: args.firewall.mode(),
        },
        addr: SocketAddr::new(args.http_address, args.http_port),
        port_file: args.port_file,
    })
}

//! `caffe-sandbox serve`: an Open Inference Protocol v2 (KServe v2 / Triton HTTP) server whose models run in
//! pre-warmed sandboxed Caffe workers. See `docs` in the modules:
//! [`repository`] (model layout and per-model config), [`pool`] (workers, queue, deadlines, replacement,
//! recycling, draining), [`infer`] and [`binary`] (request checks, binary tensors, classification),
//! [`errors`] (status codes), [`metrics`] (Prometheus).
//!
//! ```no_run
//! use caffe_sandbox_server::{repository, Server, ServerOptions};
//! let spec = repository::single("models/open_nsfw".as_ref(), &Default::default())?;
//! let server = Server::start(ServerOptions {
//!     models: vec![spec],
//!     launch: caffe_sandbox_supervisor::LaunchConfig::discover()?,
//!     audit: caffe_sandbox_supervisor::AuditLog::disabled(),
//!     max_body_bytes: 64 << 20,
//!     firewall: Default::default(),
//! });
//! let app = server.router(); // an axum Router: serve it, or call it in-process
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
pub mod api;
pub mod binary;
pub mod errors;
pub mod infer;
pub mod metrics;
pub mod pool;
pub mod repository;

use api::AppState;
use caffe_sandbox_supervisor::{AuditLog, FirewallMode, LaunchConfig};
use pool::{Pool, State};
use repository::ModelSpec;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to serve and how.
pub struct ServerOptions {
    pub models: Vec<ModelSpec>,
    pub launch: LaunchConfig,
    pub audit: AuditLog,
    /// Largest request body (413 beyond).
    pub max_body_bytes: usize,
    /// The model firewall applied to every model before any worker sees it.
    pub firewall: FirewallMode,
}

/// A running set of model pools and the HTTP state over them.
#[derive(Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Starts every model's workers (warm-up proceeds on their own threads).
    pub fn start(opts: ServerOptions) -> Server {
        let metrics = Arc::new(metrics::Metrics::new());
        let pools = opts
            .models
            .iter()
            .map(|spec| {
                Arc::new(Pool::start(
                    spec,
                    &opts.launch,
                    &opts.firewall,
                    metrics.clone(),
                    opts.audit.clone(),
                ))
            })
            .collect();
        Server {
            state: Arc::new(AppState {
                pools,
                metrics,
                max_body_bytes: opts.max_body_bytes,
                stopping: Default::default(),
            }),
        }
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.state.pools
    }

    /// The metrics text (as served at /metrics).
    pub fn metrics_text(&self) -> String {
        self.state.metrics.encode()
    }

    /// Blocks until no model is still loading (or `timeout`); returns whether the server is ready.
    pub fn wait_settled(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if !self.state.pools.iter().any(|p| p.state() == State::Loading) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.state.ready().is_ok()
    }

    /// Stops accepting inference requests (those queued are still served).
    pub fn begin_shutdown(&self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        for p in &self.state.pools {
            p.begin_shutdown();
        }
    }

    /// Drains every queue and stops every worker. Blocking.
    pub fn shutdown(&self) {
        self.begin_shutdown();
        for p in &self.state.pools {
            p.join();
        }
    }
}

/// Serves `server` on `listener` until `stop` resolves, then drains: no new connections or requests, every
/// in-flight and queued request answered, workers stopped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Server,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let s2 = server.clone();
    axum::serve(listener, server.router())
        .with_graceful_shutdown(async move {
            stop.await;
            tracing::info!("shutting down: draining in-flight requests");
            s2.begin_shutdown();
        })
        .await?;
    let s3 = server.clone();
    tokio::task::spawn_blocking(move || s3.shutdown())
        .await
        .map_err(std::io::Error::other)?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn termination_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Everything `caffe-sandbox serve` needs.
pub struct RunOptions {
    pub server: ServerOptions,
    pub addr: SocketAddr,
    /// Written with the bound port once listening (useful with port 0).
    pub port_file: Option<PathBuf>,
}

/// Installs the JSON log subscriber (stderr; level from `RUST_LOG`, default info).
pub fn init_json_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .try_init();
}

/// Runs the server until SIGINT/SIGTERM (blocking; owns its tokio runtime).
pub fn run_blocking(opts: RunOptions) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", opts.addr))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let server = Server::start(opts.server);
        tracing::info!(address = %local, models = server.pools().len(), "listening");
        if let Some(f) = &opts.port_file {
            std::fs::write(f, local.port().to_string())
                .map_err(|e| format!("{}: {e}", f.display()))?;
        }
        serve(listener, server, termination_signal())
            .await
            .map_err(|e| format!("server: {e}"))
    })
}

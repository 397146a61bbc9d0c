//! The worker pool of one model version: N slots, each a dedicated OS thread owning one sandboxed [`Worker`]
//! (workers are blocking and single-threaded), fed by one bounded queue.
//!
//! - A slot starts its worker, loads the model and runs one warm-up inference before it takes requests; the model
//!   is ready once every slot finished its first attempt and at least one succeeded. A slot whose first attempt
//!   fails gives up (the model's failure reason is reported); later failures are retried with exponential backoff.
//! - A request that waited past its deadline is answered `timeout` without reaching a worker; the compute of one
//!   request is bounded by the supervisor's own deadline (the worker is killed).
//! - A worker that dies on a request (crash, CHECK failure, seccomp violation, memory/CPU limit, timeout,
//!   protocol violation) is replaced; that request, and only that one, gets the typed error.
//! - Workers are recycled after `recycle_after_requests` requests or when their resident memory exceeds
//!   `recycle_rss_bytes`.
//! - Shutdown: no new requests; slots finish the queue, then stop; anything left is answered `shutting_down`.
//!   Every queued request is answered exactly once.
use crate::errors::ApiError;
use crate::metrics::Metrics;
use crate::repository::{ModelSpec, ServingConfig};
use caffe_sandbox_supervisor::{
    AuditLog, Deadlines, Error, FirewallMode, Input, LaunchConfig, ModelBundle, ModelInfo, Output,
    Worker, WorkerFailure,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One queued request.
pub struct Job {
    pub inputs: Vec<Input>,
    pub enqueued: Instant,
    pub deadline: Instant,
    pub reply: oneshot::Sender<JobOutcome>,
}

/// What a slot answers.
pub struct JobOutcome {
    pub result: Result<Vec<Output>, ApiError>,
    pub queue: Duration,
    pub compute: Duration,
}

/// Backoff before restarting a worker after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let ms = 100u64.saturating_mul(1u64 << (failures - 1).min(10));
    Duration::from_millis(ms.min(10_000))
}

/// Consecutive failures after which a slot no longer counts towards readiness.
const UNHEALTHY_AFTER: u32 = 3;

struct Shared {
    name: String,
    version: String,
    serving: ServingConfig,
    info: OnceLock<ModelInfo>,
    /// Slots with a warm worker or recovering from a recent failure.
    healthy: AtomicUsize,
    /// Slots that have not finished their first start attempt.
    warming: AtomicUsize,
    /// Slots waiting for a job with a warm worker (a job handed to one of them is not waiting in the queue).
    idle: AtomicUsize,
    load_error: Mutex<Option<String>>,
    stopping: AtomicBool,
    metrics: Arc<Metrics>,
    audit: AuditLog,
}

/// The pool of one model version.
pub struct Pool {
    shared: Arc<Shared>,
    tx: Sender<Job>,
    rx: Receiver<Job>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pub labels: Option<Vec<String>>,
    pub output_name: Option<String>,
}

/// A model version's serving state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Loading,
    Ready,
    Unavailable(String),
    ShuttingDown,
}

impl State {
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Loading => "LOADING",
            State::Ready => "READY",
            State::Unavailable(_) => "UNAVAILABLE",
            State::ShuttingDown => "UNLOADING",
        }
    }
}

impl Pool {
    /// Reads the model and starts its slots. A model that cannot be read is kept as `Unavailable`.
    pub fn start(
        spec: &ModelSpec,
        base: &LaunchConfig,
        firewall: &FirewallMode,
        metrics: Arc<Metrics>,
        audit: AuditLog,
    ) -> Pool {
        // Room for max_queue waiting requests plus one in hand-over to each idle worker (see submit).
        let (tx, rx) = crossbeam_channel::bounded(spec.serving.max_queue + spec.serving.workers);
        let shared = Arc::new(Shared {
            name: spec.name.clone(),
            version: spec.version.clone(),
            serving: spec.serving.clone(),
            info: OnceLock::new(),
            healthy: AtomicUsize::new(0),
            warming: AtomicUsize::new(spec.serving.workers),
            idle: AtomicUsize::new(0),
            load_error: Mutex::new(None),
            stopping: AtomicBool::new(false),
            metrics,
            audit,
        });
        let mut pool = Pool {
            shared: shared.clone(),
            tx,
            rx: rx.clone(),
            threads: Mutex::new(Vec::new()),
            labels: None,
            output_name: None,
        };
        let bundle = match ModelBundle::from_dir_checked(&spec.dir, &Default::default(), firewall) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                shared.audit.record(
                    "model_refused",
                    &json!({ "model": spec.name, "version": spec.version, "dir": spec.dir,
                             "error": e.to_string(), "label": e.label() }),
                );
                tracing::error!(model = %spec.name, version = %spec.version, error = %e, "model refused");
                *lock(&shared.load_error) = Some(format!("[{}] {e}", e.label()));
                shared.warming.store(0, Ordering::SeqCst);
                return pool;
            }
        };
        pool.labels = bundle.labels.clone();
        pool.output_name = bundle.output_name().map(str::to_string);
        let mut cfg = base.clone();
        if let Some(m) = spec.serving.memory_limit_bytes {
            cfg.limits.address_space_bytes = Some(m);
        }
        if let Some(c) = spec.serving.cpu_limit_seconds {
            cfg.limits.cpu_seconds = Some(c);
        }
        // N workers each starting one BLAS thread per CPU would oversubscribe the cores: share them out.
        let blas = spec.serving.blas_threads.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cpus / spec.serving.workers).max(1)
        });
        cfg.extra_env
            .push(("OPENBLAS_NUM_THREADS".into(), blas.to_string().into()));
        let deadlines = Deadlines {
            load: spec.serving.load_timeout,
            request: spec.serving.request_timeout,
            ..Deadlines::default()
        };
        let mut threads = Vec::new();
        for i in 0..spec.serving.workers {
            let slot = Slot {
                shared: shared.clone(),
                rx: rx.clone(),
                bundle: bundle.clone(),
                cfg: cfg.clone(),
                deadlines: deadlines.clone(),
                index: i,
            };
            let t = std::thread::Builder::new()
                .name(format!(
                    "{}-{i}",
                    spec.name.chars().take(10).collect::<String>()
                ))
                .spawn(move || slot.run());
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    *lock(&shared.load_error) = Some(format!("cannot start a worker thread: {e}"));
                    shared.warming.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        *lock(&pool.threads) = threads;
        pool
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn version(&self) -> &str {
        &self.shared.version
    }

    pub fn serving(&self) -> &ServingConfig {
        &self.shared.serving
    }

    /// Input/output blobs, known after the first warm-up.
    pub fn info(&self) -> Option<&ModelInfo> {
        self.shared.info.get()
    }

    pub fn state(&self) -> State {
        let s = &self.shared;
        if s.stopping.load(Ordering::SeqCst) {
            return State::ShuttingDown;
        }
        if s.healthy.load(Ordering::SeqCst) > 0 && s.info.get().is_some() {
            // Ready as soon as warm-up is over for every slot (readiness means "all N warmed or failed").
            if s.warming.load(Ordering::SeqCst) == 0 {
                return State::Ready;
            }
            return State::Loading;
        }
        if s.warming.load(Ordering::SeqCst) > 0 {
            return State::Loading;
        }
        State::Unavailable(
            lock(&s.load_error)
                .clone()
                .unwrap_or_else(|| "no worker is able to serve".into()),
        )
    }

    /// Whether requests are accepted now, and if not, the error saying why.
    pub fn admission(&self) -> Result<(), ApiError> {
        match self.state() {
            State::Ready => {}
            State::ShuttingDown => return Err(ApiError::shutting_down()),
            State::Loading => {
                return Err(ApiError::not_ready(format!(
                    "model '{}' version {} is still warming up",
                    self.name(),
                    self.version()
                )))
            }
            State::Unavailable(why) => {
                return Err(ApiError::not_ready(format!(
                    "model '{}' version {} is unavailable: {why}",
                    self.name(),
                    self.version()
                )))
            }
        }
        Ok(())
    }

    /// Queues a request. Never blocks: a full queue is a 429.
    pub fn submit(&self, inputs: Vec<Input>) -> Result<oneshot::Receiver<JobOutcome>, ApiError> {
        self.admission()?;
        // Jobs not yet picked up by an idle worker are not waiting: they do not count against max_queue.
        let room = self.shared.serving.max_queue + self.shared.idle.load(Ordering::SeqCst);
        if self.tx.len() >= room {
            return Err(ApiError::queue_full(
                self.name(),
                self.shared.serving.max_queue,
            ));
        }
        let (reply, rx) = oneshot::channel();
        let now = Instant::now();
        let job = Job {
            inputs,
            enqueued: now,
            deadline: now + self.shared.serving.request_timeout,
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => {
                self.gauge_queue(1);
                Ok(rx)
            }
            Err(TrySendError::Full(_)) => Err(ApiError::queue_full(
                self.name(),
                self.shared.serving.max_queue,
            )),
            Err(TrySendError::Disconnected(_)) => Err(ApiError::shutting_down()),
        }
    }

    fn gauge_queue(&self, d: i64) {
        self.shared
            .metrics
            .queue_depth
            .get_or_create(&Metrics::model(&self.shared.name))
            .inc_by(d);
    }

    /// Stops accepting requests (slots keep draining the queue).
    pub fn begin_shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits for the slots to drain the queue and stop, then answers anything left. Blocking.
    pub fn join(&self) {
        self.begin_shutdown();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
        while let Ok(job) = self.rx.try_recv() {
            self.gauge_queue(-1);
            let _ = job.reply.send(JobOutcome {
                result: Err(ApiError::shutting_down()),
                queue: job.enqueued.elapsed(),
                compute: Duration::ZERO,
            });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Slot {
    shared: Arc<Shared>,
    rx: Receiver<Job>,
    bundle: Arc<ModelBundle>,
    cfg: LaunchConfig,
    deadlines: Deadlines,
    index: usize,
}

struct Live {
    worker: Worker,
    served: u64,
}

impl Slot {
    fn run(self) {
        let mut failures: u32 = 0;
        let mut first = true;
        let mut counted = false;
        let mut live: Option<Live> = None;
        let model = Metrics::model(&self.shared.name);
        loop {
            if live.is_none() {
                if self.shared.stopping.load(Ordering::SeqCst) {
                    // Draining without a worker: other slots may still serve; whatever is left when they stop
                    // is answered by Pool::join. Never start workers during shutdown.
                    break;
                }
                self.sleep(backoff(failures));
                match self.warm_worker() {
                    Ok(w) => {
                        if !counted {
                            self.shared.healthy.fetch_add(1, Ordering::SeqCst);
                            counted = true;
                        }
                        self.shared
                            .metrics
                            .ready_workers
                            .get_or_create(&model)
                            .inc();
                        live = Some(Live {
                            worker: w,
                            served: 0,
                        });
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::error!(model = %self.shared.name, slot = self.index, error = %e,
                            kind = e.label(), "worker start failed");
                        self.shared.audit.record(
                            "load_failed",
                            &json!({ "model": self.shared.name, "version": self.shared.version,
                                     "error": e.to_string(), "label": e.label() }),
                        );
                        if let Error::Worker {
                            failure: WorkerFailure::SeccompViolation { syscall, .. },
                            ..
                        } = &e
                        {
                            self.shared.metrics.violation(&self.shared.name, syscall);
                        }
                        if first {
                            *lock(&self.shared.load_error) = Some(format!("[{}] {e}", e.label()));
                            self.shared.warming.fetch_sub(1, Ordering::SeqCst);
                            // A model that cannot be loaded once is not retried by this slot.
                            return;
                        }
                        self.shared
                            .metrics
                            .restart(&self.shared.name, "start_failed");
                        if counted && failures >= UNHEALTHY_AFTER {
                            self.shared.healthy.fetch_sub(1, Ordering::SeqCst);
                            counted = false;
                        }
                        if self.shared.healthy.load(Ordering::SeqCst) == 0 {
                            self.answer_queued(ApiError::not_ready(format!(
                                "no worker of model '{}' can start: {e}",
                                self.shared.name
                            )));
                        }
                        continue;
                    }
                }
                if first {
                    first = false;
                    self.shared.warming.fetch_sub(1, Ordering::SeqCst);
                }
            }
            self.shared.idle.fetch_add(1, Ordering::SeqCst);
            let got = self.rx.recv_timeout(Duration::from_millis(100));
            self.shared.idle.fetch_sub(1, Ordering::SeqCst);
            let job = match got {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    if self.shared.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let Some(l) = live.as_mut() else { continue };
            if self.serve(l, job) {
                failures = 0;
            } else {
                failures += 1;
            }
            let recycle = self.recycle_cause(l);
            if !l.worker.is_alive() || recycle.is_some() {
                if let Some(l) = live.take() {
                    // A dead worker was already taken off the ready gauge by serve().
                    if let Some(cause) = recycle.filter(|_| l.worker.is_alive()) {
                        self.shared
                            .metrics
                            .ready_workers
                            .get_or_create(&model)
                            .dec();
                        self.shared.metrics.restart(&self.shared.name, cause);
                        tracing::info!(model = %self.shared.name, slot = self.index, cause, served = l.served,
                            "recycling worker");
                        l.worker.shutdown();
                    }
                }
            }
        }
        if let Some(l) = live.take() {
            self.shared
                .metrics
                .ready_workers
                .get_or_create(&model)
                .dec();
            l.worker.shutdown();
        }
        if first {
            self.shared.warming.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Sleeps up to `d`, waking early when the server stops.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end && !self.shared.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
        }
    }

    fn answer_queued(&self, e: ApiError) {
        while let Ok(job) = self.rx.try_recv() {
            self.shared
                .metrics
                .queue_depth
                .get_or_create(&Metrics::model(&self.shared.name))
                .dec();
            let _ = job.reply.send(JobOutcome {
                result: Err(e.clone()),
                queue: job.enqueued.elapsed(),
                compute: Duration::ZERO,
            });
        }
    }

    fn warm_worker(&self) -> Result<Worker, Error> {
        let t = Instant::now();
        let mut w = Worker::start(&self.cfg, self.deadlines.clone())?;
        self.shared.audit.record(
            "worker_started",
            &json!({ "model": self.shared.name, "pid": w.pid(), "layers": w.layers() }),
        );
        let info = w.load(&self.bundle)?;
        // Warm-up: one inference on zeros of every input's declared shape.
        let inputs: Vec<Input> = info
            .inputs
            .iter()
            .map(|b| Input::Tensor {
                name: b.name.clone(),
                dims: b.dims.clone(),
                data: vec![0.0; b.dims.iter().product()],
            })
            .collect();
        w.infer(&inputs)?;
        let _ = self.shared.info.set(info.clone());
        self.shared.audit.record(
            "model_loaded",
            &json!({ "model": self.shared.name, "version": self.shared.version, "pid": w.pid(),
                     "info": info, "warm_ms": t.elapsed().as_millis() as u64 }),
        );
        tracing::info!(model = %self.shared.name, version = %self.shared.version, slot = self.index,
            pid = w.pid(), warm_ms = t.elapsed().as_millis() as u64, layers = %layer_summary(&w),
            "worker warm");
        Ok(w)
    }

    /// Serves one job; false when the worker failed on it.
    fn serve(&self, l: &mut Live, job: Job) -> bool {
        let model = Metrics::model(&self.shared.name);
        let queue = job.enqueued.elapsed();
        self.shared.metrics.queue_depth.get_or_create(&model).dec();
        self.shared
            .metrics
            .queue_seconds
            .get_or_create(&model)
            .observe(queue.as_secs_f64());
        if Instant::now() >= job.deadline {
            let _ = job.reply.send(JobOutcome {
                result: Err(ApiError::timeout(format!(
                    "the request waited {} ms for a worker, past its deadline of {} ms",
                    queue.as_millis(),
                    self.shared.serving.request_timeout.as_millis()
                ))),
                queue,
                compute: Duration::ZERO,
            });
            return true;
        }
        let busy = self
            .shared
            .metrics
            .busy_workers
            .get_or_create(&model)
            .clone();
        busy.inc();
        let t = Instant::now();
        let result = l.worker.infer(&job.inputs);
        let compute = t.elapsed();
        busy.dec();
        l.served += 1;
        self.shared
            .metrics
            .compute_seconds
            .get_or_create(&model)
            .observe(compute.as_secs_f64());
        let mut ok = true;
        if let Err(Error::Worker {
            failure,
            stderr_tail,
        }) = &result
        {
            ok = false;
            self.shared
                .metrics
                .restart(&self.shared.name, failure.label());
            if let WorkerFailure::SeccompViolation { syscall, .. } = failure {
                self.shared.metrics.violation(&self.shared.name, syscall);
            }
            let tail: String = stderr_tail
                .chars()
                .rev()
                .take(1000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            tracing::warn!(model = %self.shared.name, slot = self.index, pid = l.worker.pid(), cause = failure.label(),
                error = %failure, stderr_tail = %tail, "worker failed; replacing it");
            self.shared.audit.record(
                "worker_failed",
                &json!({ "model": self.shared.name, "pid": l.worker.pid(), "failure": failure }),
            );
        }
        self.shared.audit.record(
            "request",
            &json!({
                "model": self.shared.name, "version": self.shared.version, "pid": l.worker.pid(),
                "outcome": match &result { Ok(_) => "ok", Err(e) => e.label() },
                "error": result.as_ref().err().map(|e| e.to_string()),
                "queue_ms": queue.as_secs_f64() * 1e3, "compute_ms": compute.as_secs_f64() * 1e3,
            }),
        );
        if !l.worker.is_alive() {
            // Before the reply, so that a client that saw the failure never sees the dead worker counted.
            self.shared
                .metrics
                .ready_workers
                .get_or_create(&model)
                .dec();
        }
        let _ = job.reply.send(JobOutcome {
            result: result.map_err(|e| ApiError::from_supervisor(&e)),
            queue,
            compute,
        });
        ok
    }

    fn recycle_cause(&self, l: &Live) -> Option<&'static str> {
        let s = &self.shared.serving;
        if s.recycle_after_requests.is_some_and(|n| l.served >= n) {
            return Some("recycle_requests");
        }
        if let (Some(limit), Some(pid)) = (s.recycle_rss_bytes, l.worker.pid()) {
            if rss_bytes(pid).is_some_and(|rss| rss > limit) {
                return Some("recycle_memory");
            }
        }
        None
    }
}

/// `layer=state` pairs of a worker's isolation layers, for one log line.
fn layer_summary(w: &Worker) -> String {
    w.layers()
        .to_string()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(format!("{}={}", it.next()?, it.next()?))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resident memory of a process, from /proc/<pid>/statm.
fn rss_bytes(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(50), Duration::from_secs(10));
    }

    #[test]
    fn rss_of_this_process_is_plausible() {
        let rss = rss_bytes(std::process::id() as i32).unwrap();
        assert!(rss > 1 << 20 && rss < 64 << 30, "{rss}");
    }
}

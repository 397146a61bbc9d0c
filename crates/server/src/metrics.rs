//! Prometheus metrics (OpenMetrics text at `GET /metrics`):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `caffe_sandbox_requests_total` | counter | `model`, `outcome` (`ok` or an error kind) |
//! | `caffe_sandbox_queue_duration_seconds` | histogram | `model` |
//! | `caffe_sandbox_compute_duration_seconds` | histogram | `model` |
//! | `caffe_sandbox_worker_restarts_total` | counter | `model`, `cause` (a worker failure label, `recycle_requests`, `recycle_memory`, `start_failed`) |
//! | `caffe_sandbox_sandbox_violations_total` | counter | `model`, `syscall` |
//! | `caffe_sandbox_ready_workers` | gauge | `model` |
//! | `caffe_sandbox_queue_depth` | gauge | `model` |
//! | `caffe_sandbox_busy_workers` | gauge | `model` |
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub model: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub model: String,
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyscallLabels {
    pub model: String,
    pub syscall: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// All metrics of one server.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<OutcomeLabels, Counter>,
    pub queue_seconds: Family<ModelLabel, Histogram, fn() -> Histogram>,
    pub compute_seconds: Family<ModelLabel, Histogram, fn() -> Histogram>,
    pub restarts: Family<CauseLabels, Counter>,
    pub violations: Family<SyscallLabels, Counter>,
    pub ready_workers: Family<ModelLabel, Gauge>,
    pub queue_depth: Family<ModelLabel, Gauge>,
    pub busy_workers: Family<ModelLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("caffe_sandbox");
        let requests = Family::<OutcomeLabels, Counter>::default();
        let queue_seconds =
            Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                seconds_histogram as fn() -> Histogram,
            );
        let compute_seconds =
            Family::<ModelLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                seconds_histogram as fn() -> Histogram,
            );
        let restarts = Family::<CauseLabels, Counter>::default();
        let violations = Family::<SyscallLabels, Counter>::default();
        let ready_workers = Family::<ModelLabel, Gauge>::default();
        let queue_depth = Family::<ModelLabel, Gauge>::default();
        let busy_workers = Family::<ModelLabel, Gauge>::default();
        registry.register(
            "requests",
            "Inference requests by outcome",
            requests.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time requests waited for a worker",
            queue_seconds.clone(),
        );
        registry.register(
            "compute_duration_seconds",
            "Time a worker spent on a request (including in-sandbox image decoding)",
            compute_seconds.clone(),
        );
        registry.register(
            "worker_restarts",
            "Workers replaced, by cause",
            restarts.clone(),
        );
        registry.register(
            "sandbox_violations",
            "Seccomp violations by system call",
            violations.clone(),
        );
        registry.register(
            "ready_workers",
            "Warm workers able to serve",
            ready_workers.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a worker",
            queue_depth.clone(),
        );
        registry.register(
            "busy_workers",
            "Workers computing a request",
            busy_workers.clone(),
        );
        Metrics {
            registry,
            requests,
            queue_seconds,
            compute_seconds,
            restarts,
            violations,
            ready_workers,
            queue_depth,
            busy_workers,
        }
    }

    pub fn request(&self, model: &str, outcome: &str) {
        self.requests
            .get_or_create(&OutcomeLabels {
                model: model.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn restart(&self, model: &str, cause: &str) {
        self.restarts
            .get_or_create(&CauseLabels {
                model: model.into(),
                cause: cause.into(),
            })
            .inc();
    }

    pub fn violation(&self, model: &str, syscall: &str) {
        self.violations
            .get_or_create(&SyscallLabels {
                model: model.into(),
                syscall: syscall.into(),
            })
            .inc();
    }

    pub fn model(model: &str) -> ModelLabel {
        ModelLabel {
            model: model.into(),
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_units_and_labels() {
        let m = Metrics::new();
        m.request("m", "ok");
        m.restart("m", "crashed");
        m.violation("m", "execve");
        m.queue_seconds
            .get_or_create(&Metrics::model("m"))
            .observe(0.002);
        m.compute_seconds
            .get_or_create(&Metrics::model("m"))
            .observe(0.2);
        let t = m.encode();
        for want in [
            "caffe_sandbox_requests_total{model=\"m\",outcome=\"ok\"} 1",
            "caffe_sandbox_worker_restarts_total{model=\"m\",cause=\"crashed\"} 1",
            "caffe_sandbox_sandbox_violations_total{model=\"m\",syscall=\"execve\"} 1",
            "caffe_sandbox_queue_duration_seconds_count{model=\"m\"} 1",
            "caffe_sandbox_compute_duration_seconds_sum{model=\"m\"} 0.2",
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
    }
}

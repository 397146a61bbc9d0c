//! Which models the server serves. A model repository is laid out like Triton's:
//!
//! ```text
//! <repository>/
//!   <model>/
//!     config.toml          optional serving settings (below); unknown keys are refused
//!     <version>/           a positive integer; a caffe-sandbox model directory:
//!       deploy.prototxt, *.caffemodel, model.toml (preprocessing, labels), labels.txt, …
//! ```
//!
//! `config.toml` keys (all optional; defaults come from the command line):
//! `workers`, `max_queue`, `timeout_seconds`, `load_timeout_seconds`, `recycle_after_requests`,
//! `recycle_rss_mib`, `max_batch`, `memory_limit_mib`, `cpu_limit_seconds`, `blas_threads`, and `versions` (list of versions to
//! serve; default: the highest one, like Triton's `latest 1` policy).
//! `--model DIR` serves one model directory as version 1 under the directory's name.
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How one model is served.
#[derive(Debug, Clone)]
pub struct ServingConfig {
    /// Pre-warmed workers (one OS thread each).
    pub workers: usize,
    /// Requests that may wait for a worker; beyond that: 429.
    pub max_queue: usize,
    /// Deadline of one request: the time it may wait in the queue, and (separately) the compute deadline after
    /// which the supervisor kills the worker.
    pub request_timeout: Duration,
    /// Deadline of starting + loading + warming up one worker.
    pub load_timeout: Duration,
    /// Replace a worker after it served this many requests.
    pub recycle_after_requests: Option<u64>,
    /// Replace a worker whose resident memory grew beyond this (bytes).
    pub recycle_rss_bytes: Option<u64>,
    /// Largest batch (first dimension) accepted for FP32 inputs.
    pub max_batch: usize,
    /// Worker address-space limit override (bytes).
    pub memory_limit_bytes: Option<u64>,
    /// Worker CPU-time limit override (seconds).
    pub cpu_limit_seconds: Option<u64>,
    /// BLAS threads per worker (`OPENBLAS_NUM_THREADS`); default: the CPUs divided among the workers, at least 1.
    pub blas_threads: Option<usize>,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            workers: 1,
            max_queue: 64,
            request_timeout: Duration::from_secs(30),
            load_timeout: Duration::from_secs(60),
            recycle_after_requests: None,
            recycle_rss_bytes: None,
            max_batch: 8,
            memory_limit_bytes: None,
            cpu_limit_seconds: None,
            blas_threads: None,
        }
    }
}

/// One served model version.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub version: String,
    /// The caffe-sandbox model directory of this version.
    pub dir: PathBuf,
    pub serving: ServingConfig,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    workers: Option<usize>,
    max_queue: Option<usize>,
    timeout_seconds: Option<f64>,
    load_timeout_seconds: Option<f64>,
    recycle_after_requests: Option<u64>,
    recycle_rss_mib: Option<u64>,
    max_batch: Option<usize>,
    memory_limit_mib: Option<u64>,
    cpu_limit_seconds: Option<u64>,
    blas_threads: Option<usize>,
    versions: Option<Vec<u64>>,
}

/// Largest config.toml read.
const MAX_CONFIG_BYTES: u64 = 64 << 10;

/// Whether `name` is acceptable as a model name in URLs and metric labels.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `--model DIR`: one model, version 1, named after the directory.
pub fn single(dir: &Path, defaults: &ServingConfig) -> Result<ModelSpec, String> {
    let name = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .unwrap_or_else(|| "model".into());
    let name = if valid_model_name(&name) {
        name
    } else {
        "model".into()
    };
    Ok(ModelSpec {
        name,
        version: "1".into(),
        dir: dir.to_path_buf(),
        serving: check(defaults.clone(), dir)?,
    })
}

/// Reads a model repository.
pub fn scan(repo: &Path, defaults: &ServingConfig) -> Result<Vec<ModelSpec>, String> {
    let entries = std::fs::read_dir(repo).map_err(|e| format!("{}: {e}", repo.display()))?;
    let mut specs = Vec::new();
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", repo.display()))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(format!("{}: model names must be UTF-8", path.display()));
        };
        if name.starts_with('.') {
            continue;
        }
        if !valid_model_name(&name) {
            return Err(format!(
                "{}: invalid model name (letters, digits, '_', '-', '.')",
                path.display()
            ));
        }
        names.push((name, path));
    }
    names.sort();
    for (name, path) in names {
        let file = read_config(&path.join("config.toml"))?;
        let serving = apply(defaults, &file);
        let mut versions: Vec<u64> = Vec::new();
        for v in std::fs::read_dir(&path).map_err(|e| format!("{}: {e}", path.display()))? {
            let v = v.map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(n) = v.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
                if n > 0 && v.path().is_dir() {
                    versions.push(n);
                }
            }
        }
        versions.sort_unstable();
        let chosen: Vec<u64> = match &file.versions {
            Some(list) => {
                for v in list {
                    if !versions.contains(v) {
                        return Err(format!(
                            "{}: config.toml lists version {v}, which has no directory",
                            path.display()
                        ));
                    }
                }
                list.clone()
            }
            None => versions.last().copied().into_iter().collect(),
        };
        if chosen.is_empty() {
            return Err(format!(
                "{}: no version directory (expected {}/1/ holding the model files)",
                path.display(),
                path.display()
            ));
        }
        for v in chosen {
            let dir = path.join(v.to_string());
            specs.push(ModelSpec {
                name: name.clone(),
                version: v.to_string(),
                serving: check(serving.clone(), &dir)?,
                dir,
            });
        }
    }
    if specs.is_empty() {
        return Err(format!(
            "{}: the model repository holds no model",
            repo.display()
        ));
    }
    Ok(specs)
}

fn read_config(path: &Path) -> Result<ConfigFile, String> {
    if !path.exists() {
        return Ok(ConfigFile::default());
    }
    let bytes = caffe_sandbox_supervisor::files::read_regular_file(path, MAX_CONFIG_BYTES)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn secs(v: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{what} must be a positive number of seconds"))
}

fn apply(d: &ServingConfig, f: &ConfigFile) -> ServingConfigDraft {
    ServingConfigDraft {
        base: ServingConfig {
            workers: f.workers.unwrap_or(d.workers),
            max_queue: f.max_queue.unwrap_or(d.max_queue),
            recycle_after_requests: f.recycle_after_requests.or(d.recycle_after_requests),
            recycle_rss_bytes: f.recycle_rss_mib.map(|m| m << 20).or(d.recycle_rss_bytes),
            max_batch: f.max_batch.unwrap_or(d.max_batch),
            memory_limit_bytes: f.memory_limit_mib.map(|m| m << 20).or(d.memory_limit_bytes),
            cpu_limit_seconds: f.cpu_limit_seconds.or(d.cpu_limit_seconds),
            blas_threads: f.blas_threads.or(d.blas_threads),
            ..d.clone()
        },
        timeout: f.timeout_seconds,
        load_timeout: f.load_timeout_seconds,
    }
}

/// Settings from config.toml before their durations are checked.
#[derive(Debug, Clone)]
struct ServingConfigDraft {
    base: ServingConfig,
    timeout: Option<f64>,
    load_timeout: Option<f64>,
}

impl From<ServingConfig> for ServingConfigDraft {
    fn from(base: ServingConfig) -> Self {
        ServingConfigDraft {
            base,
            timeout: None,
            load_timeout: None,
        }
    }
}

fn check(draft: impl Into<ServingConfigDraft>, dir: &Path) -> Result<ServingConfig, String> {
    let draft = draft.into();
    let mut s = draft.base;
    let ctx = |m: String| format!("{}: {m}", dir.display());
    if let Some(t) = draft.timeout {
        s.request_timeout = secs(t, "timeout_seconds").map_err(ctx)?;
    }
    if let Some(t) = draft.load_timeout {
        s.load_timeout = secs(t, "load_timeout_seconds").map_err(ctx)?;
    }
    if !(1..=64).contains(&s.workers) {
        return Err(ctx(format!("workers must be 1..=64, not {}", s.workers)));
    }
    if !(1..=100_000).contains(&s.max_queue) {
        return Err(ctx(format!(
            "max_queue must be 1..=100000, not {}",
            s.max_queue
        )));
    }
    if !(1..=4096).contains(&s.max_batch) {
        return Err(ctx(format!(
            "max_batch must be 1..=4096, not {}",
            s.max_batch
        )));
    }
    if s.blas_threads.is_some_and(|n| !(1..=256).contains(&n)) {
        return Err(ctx("blas_threads must be 1..=256".into()));
    }
    if s.recycle_after_requests == Some(0) {
        return Err(ctx("recycle_after_requests must be at least 1".into()));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cs-repo-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn latest_version_by_default_and_config_overrides() {
        let r = tmp("latest");
        for v in ["1", "2", "10"] {
            std::fs::create_dir_all(r.join("m").join(v)).unwrap();
        }
        std::fs::write(
            r.join("m/config.toml"),
            "workers = 3\ntimeout_seconds = 2.5\nblas_threads = 2\n",
        )
        .unwrap();
        std::fs::create_dir_all(r.join("other/1")).unwrap();
        let specs = scan(&r, &ServingConfig::default()).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            (specs[0].name.as_str(), specs[0].version.as_str()),
            ("m", "10")
        );
        assert_eq!(specs[0].serving.workers, 3);
        assert_eq!(specs[0].serving.blas_threads, Some(2));
        assert_eq!(
            specs[0].serving.request_timeout,
            Duration::from_millis(2500)
        );
        assert_eq!(specs[1].serving.workers, 1);
        std::fs::write(r.join("m/config.toml"), "versions = [1, 2]\n").unwrap();
        let specs = scan(&r, &ServingConfig::default()).unwrap();
        let v: Vec<_> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.version.as_str()))
            .collect();
        assert_eq!(v, [("m", "1"), ("m", "2"), ("other", "1")]);
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn bad_configs_are_refused_with_the_file_named() {
        let r = tmp("bad");
        std::fs::create_dir_all(r.join("m/1")).unwrap();
        std::fs::write(r.join("m/config.toml"), "wokers = 3\n").unwrap();
        let e = scan(&r, &ServingConfig::default()).unwrap_err();
        assert!(e.contains("config.toml") && e.contains("wokers"), "{e}");
        std::fs::write(r.join("m/config.toml"), "workers = 0\n").unwrap();
        let e = scan(&r, &ServingConfig::default()).unwrap_err();
        assert!(e.contains("workers must be"), "{e}");
        std::fs::write(r.join("m/config.toml"), "blas_threads = 0\n").unwrap();
        let e = scan(&r, &ServingConfig::default()).unwrap_err();
        assert!(e.contains("blas_threads must be"), "{e}");
        std::fs::write(r.join("m/config.toml"), "versions = [7]\n").unwrap();
        let e = scan(&r, &ServingConfig::default()).unwrap_err();
        assert!(e.contains("version 7"), "{e}");
        std::fs::write(r.join("m/config.toml"), "timeout_seconds = -1\n").unwrap();
        let e = scan(&r, &ServingConfig::default()).unwrap_err();
        assert!(e.contains("timeout_seconds"), "{e}");
        std::fs::remove_dir_all(r.join("m/1")).unwrap();
        std::fs::remove_file(r.join("m/config.toml")).unwrap();
        let e = scan(&r, &ServingConfig::default()).unwrap_err();
        assert!(e.contains("no version directory"), "{e}");
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn model_names_are_restricted() {
        assert!(valid_model_name("open_nsfw-2.v1"));
        for bad in ["", ".hidden", "a/b", "a b", "é"] {
            assert!(!valid_model_name(bad), "{bad}");
        }
    }
}

//! A model as the supervisor hands it to a worker: the files of a model directory read once, size-capped,
//! checked, and later sent as sealed memfds (the worker never gets a path to the model directory).
use crate::error::{Error, Result};
use crate::files::ModelDir;
use caffe_sandbox_preprocess::{parse_labels, parse_mean, ModelConfig};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Caps on model files read by the supervisor.
#[derive(Debug, Clone)]
pub struct ModelFileLimits {
    pub max_prototxt_bytes: u64,
    pub max_weights_bytes: u64,
    pub max_labels_bytes: u64,
    pub max_model_toml_bytes: u64,
    /// Largest mean file (`preprocess.mean_file`).
    pub max_mean_bytes: u64,
    /// Follow symlinks that lead outside the model directory (explicit opt-in). By default every model file is
    /// opened with `openat2(RESOLVE_BENEATH)` so a hostile model cannot point `labels.txt` at a host secret.
    pub allow_links_outside: bool,
}

impl Default for ModelFileLimits {
    fn default() -> Self {
        ModelFileLimits {
            max_prototxt_bytes: 16 << 20,
            max_weights_bytes: 2 << 30,
            max_labels_bytes: 8 << 20,
            max_model_toml_bytes: 64 << 10,
            max_mean_bytes: 64 << 20,
            allow_links_outside: false,
        }
    }
}

/// Whether the model firewall (crates/firewall) checks models before Caffe sees them.
#[derive(Debug, Clone)]
pub enum FirewallMode {
    /// Check; refuse on any error finding; hand Caffe the canonical re-encoding of what was checked.
    Enforce(caffe_sandbox_firewall::FirewallPolicy),
    /// No check (explicit user choice, reported): Caffe parses the original files inside the sandbox.
    Off,
}

impl Default for FirewallMode {
    fn default() -> Self {
        FirewallMode::Enforce(Default::default())
    }
}

/// Whether model files must match a signed or unsigned manifest.
#[derive(Debug, Clone, Default)]
pub enum Integrity {
    /// No manifest required.
    #[default]
    None,
    /// `manifest.toml` in the model directory must pin the sha256 of the prototxt and the weights.
    Manifest,
    /// As `Manifest`, and `manifest.toml.minisig` must be a valid minisign signature of it by this public key
    /// (the base64 key line or the text of a `minisign.pub` file).
    Signed { trusted_key: String },
}

fn verify_integrity(
    mdir: &ModelDir,
    integrity: &Integrity,
    files: &[(&Path, &Vec<u8>)],
) -> Result<()> {
    let dir = mdir.path();
    let key = match integrity {
        Integrity::None => return Ok(()),
        Integrity::Manifest => None,
        Integrity::Signed { trusted_key } => Some(trusted_key.as_str()),
    };
    let refuse = |m: String| Error::Firewall(format!("integrity: {m}"));
    let mpath = dir.join("manifest.toml");
    let text = mdir.read(&mpath, 1 << 20)?;
    if let Some(key) = key {
        let spath = dir.join("manifest.toml.minisig");
        let sig = String::from_utf8(mdir.read(&spath, 1 << 20)?)
            .map_err(|_| refuse(format!("{}: not UTF-8", spath.display())))?;
        caffe_sandbox_firewall::integrity::verify_signature(key, &text, &sig)
            .map_err(|e| refuse(format!("{}: {e}", spath.display())))?;
    }
    let text =
        String::from_utf8(text).map_err(|_| refuse(format!("{}: not UTF-8", mpath.display())))?;
    let manifest = caffe_sandbox_firewall::integrity::Manifest::from_toml(&text)
        .map_err(|e| refuse(format!("{}: {e}", mpath.display())))?;
    for (path, bytes) in files {
        let name = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        manifest
            .verify_bytes(&name, bytes)
            .map_err(|e| refuse(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// The model files, in memory.
#[derive(Debug, Clone)]
pub struct ModelBundle {
    /// The model directory (for messages only).
    pub dir: PathBuf,
    /// Parsed and validated `model.toml` (defaults when absent).
    pub config: ModelConfig,
    /// The raw model.toml text sent to the worker (it re-parses the same text), if present.
    pub model_toml: Option<String>,
    /// Per-channel mean values computed from `preprocess.mean_file` by the supervisor, if one is configured.
    pub mean_values: Option<Vec<f32>>,
    pub prototxt_path: PathBuf,
    pub weights_path: PathBuf,
    /// Net definition bytes as Caffe will receive them.
    pub net: Vec<u8>,
    /// True when `net` is protobuf text format; false for binary (e.g. the firewall's canonical re-encoding).
    pub net_is_text: bool,
    pub weights: Vec<u8>,
    pub labels: Option<Vec<String>>,
    /// The firewall's report when it checked the model (None when the firewall was off).
    pub firewall: Option<caffe_sandbox_firewall::Report>,
    /// The net and weights as sealed memfds, made once per model and shared by every worker that loads it
    /// (sealed: no worker can change them for the next).
    sealed: std::sync::Arc<std::sync::OnceLock<(OwnedFd, OwnedFd)>>,
}

impl ModelBundle {
    /// Reads `dir`: `model.toml` (optional), the prototxt, the weights and the labels it names.
    pub fn from_dir(dir: &Path, limits: &ModelFileLimits) -> Result<ModelBundle> {
        Self::from_dir_checked(dir, limits, &FirewallMode::default())
    }

    /// Reads `dir` and, unless the firewall is off, checks the model in memory-safe Rust before any worker
    /// sees it; the worker then receives the canonical binary re-encoding of exactly what was checked.
    pub fn from_dir_checked(
        dir: &Path,
        limits: &ModelFileLimits,
        firewall: &FirewallMode,
    ) -> Result<ModelBundle> {
        Self::from_dir_with(dir, limits, firewall, &Integrity::None)
    }

    /// Like [`ModelBundle::from_dir_checked`], and first verifies the bytes read against the directory's
    /// `manifest.toml` (sha256 per file; with a trusted minisign key, the manifest's signature too). The digests
    /// are checked on the very bytes that are then checked and sent, so nothing can change in between.
    pub fn from_dir_with(
        dir: &Path,
        limits: &ModelFileLimits,
        firewall: &FirewallMode,
        integrity: &Integrity,
    ) -> Result<ModelBundle> {
        let meta = std::fs::metadata(dir).map_err(|source| Error::File {
            path: dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Error::File {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a model must be a directory",
                ),
            });
        }
        let mdir = ModelDir::open(dir, limits.allow_links_outside)?;
        let toml_path = dir.join("model.toml");
        let model_toml = if mdir.contains(&toml_path) {
            let bytes = mdir.read(&toml_path, limits.max_model_toml_bytes)?;
            Some(String::from_utf8(bytes).map_err(|_| Error::File {
                path: toml_path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
            })?)
        } else {
            None
        };
        let mut config = match &model_toml {
            Some(text) => ModelConfig::from_toml_str(text, &toml_path.display().to_string())?,
            None => ModelConfig::default(),
        };
        if let Some(mean_file) = config.preprocess.mean_file.clone() {
            let path = dir.join(&mean_file);
            let bytes = mdir.read(&path, limits.max_mean_bytes)?;
            config.preprocess.mean_image = Some(parse_mean(&bytes, &path.display().to_string())?);
        }
        let mean_values = config
            .preprocess
            .mean_image
            .as_ref()
            .map(|m| m.per_channel());
        let prototxt_path = config.prototxt_path(dir)?;
        let weights_path = config.weights_path(dir)?;
        let net = mdir.read(&prototxt_path, limits.max_prototxt_bytes)?;
        let weights = mdir.read(&weights_path, limits.max_weights_bytes)?;
        verify_integrity(
            &mdir,
            integrity,
            &[(&prototxt_path, &net), (&weights_path, &weights)],
        )?;
        let labels = match config.labels_path(dir)? {
            Some(p) => Some(parse_labels(
                &mdir.read(&p, limits.max_labels_bytes)?,
                &p.display().to_string(),
            )?),
            None => None,
        };
        let mut bundle = ModelBundle {
            dir: dir.to_path_buf(),
            config,
            model_toml,
            mean_values,
            prototxt_path,
            weights_path,
            net,
            net_is_text: true,
            weights,
            labels,
            firewall: None,
            sealed: Default::default(),
        };
        if let FirewallMode::Enforce(policy) = firewall {
            let checked = caffe_sandbox_firewall::check(&bundle.net, Some(&bundle.weights), policy)
                .map_err(|e| {
                    Error::Firewall(format!(
                        "{} (prototxt {}, weights {})",
                        e,
                        bundle.prototxt_path.display(),
                        bundle.weights_path.display()
                    ))
                })?;
            bundle.net = checked.canonical_net_bytes();
            bundle.net_is_text = false;
            if let Some(w) = checked.canonical_weights_bytes() {
                bundle.weights = w.to_vec();
            }
            bundle.firewall = Some(checked.report().clone());
        }
        // Made now, as part of preparing the model (like reading its files), not on each worker's load path.
        bundle.sealed_files()?;
        Ok(bundle)
    }

    /// A bundle from bytes already in memory, with default configuration (no model.toml, no labels, no
    /// firewall report): for tools and tests that build a net themselves.
    pub fn from_bytes(
        dir: impl Into<PathBuf>,
        net: Vec<u8>,
        net_is_text: bool,
        weights: Vec<u8>,
    ) -> ModelBundle {
        let dir = dir.into();
        ModelBundle {
            prototxt_path: dir.join("deploy.prototxt"),
            weights_path: dir.join("weights.caffemodel"),
            dir,
            config: Default::default(),
            model_toml: None,
            mean_values: None,
            net,
            net_is_text,
            weights,
            labels: None,
            firewall: None,
            sealed: Default::default(),
        }
    }

    /// The net and weights as sealed memfds (created on first use, then shared).
    pub fn sealed_files(&self) -> Result<(BorrowedFd<'_>, BorrowedFd<'_>)> {
        if self.sealed.get().is_none() {
            let make = |what: &str, bytes: &[u8]| {
                caffe_sandbox_protocol::create_sealed_memfd(what, bytes).map_err(|e| {
                    Error::Sandbox(format!("cannot create a sealed memfd for {what}: {e}"))
                })
            };
            let pair = (make("net", &self.net)?, make("weights", &self.weights)?);
            let _ = self.sealed.set(pair);
        }
        let (n, w) = self.sealed.get().expect("set above");
        Ok((n.as_fd(), w.as_fd()))
    }

    /// The JSON load options the worker expects (see crates/worker/src/options.rs).
    pub fn load_options_json(&self) -> Vec<u8> {
        let wire = caffe_sandbox_preprocess::LoadOptionsWire {
            net_is_text: self.net_is_text,
            model_toml: self.model_toml.clone(),
            mean_values: self.mean_values.clone(),
            max_image_side: Some(8192),
        };
        serde_json::to_vec(&wire).expect("plain data serializes")
    }

    /// The input blob images go to (model.toml's `model.input`), if configured.
    pub fn input_name(&self) -> Option<&str> {
        self.config.model.input.as_deref()
    }

    /// The output blob to report (model.toml's `model.output`), if configured.
    pub fn output_name(&self) -> Option<&str> {
        self.config.model.output.as_deref()
    }
}

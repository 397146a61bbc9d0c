//! `model.toml`: the optional per-model configuration file.
//!
//! The schema is documented in the crate's `README.md`. Every field is
//! optional; unknown fields are refused with an error naming them.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::error::{read_capped, Error, Result};
use crate::mean::{load_mean_file, MeanImage};

/// Name of the configuration file inside a model directory.
pub const MODEL_TOML: &str = "model.toml";
/// Default `model.prototxt`.
pub const DEFAULT_PROTOTXT: &str = "deploy.prototxt";
/// The `model.weights` value meaning "the single `.caffemodel` in the directory" (the default).
pub const WEIGHTS_AUTO: &str = "*.caffemodel";
/// Largest `model.toml` accepted.
pub const MAX_MODEL_TOML_BYTES: u64 = 64 * 1024;
/// Largest `preprocess.resize` side accepted.
pub const MAX_RESIZE_SIDE: u32 = 8192;
/// Largest preprocessed tensor for one image (C×H×W×4 bytes, also for the
/// intermediate resized image).
pub const MAX_TENSOR_BYTES: u64 = 256 * 1024 * 1024;

/// The whole `model.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `[model]`: which files make up the model.
    pub model: ModelSection,
    /// `[preprocess]`: how an image becomes the input blob.
    pub preprocess: PreprocessConfig,
}

/// `[model]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Network definition, relative to the model directory. Default `deploy.prototxt`.
    pub prototxt: String,
    /// Weights file, relative to the model directory. `None` or `"*.caffemodel"`
    /// (the default) means the single `.caffemodel` file in the directory.
    pub weights: Option<String>,
    /// Input blob name. `None` (default): the net's first input.
    pub input: Option<String>,
    /// Output blob name. `None` (default): the net's last output.
    pub output: Option<String>,
    /// Labels file (one label per line), relative to the model directory. Optional.
    pub labels: Option<String>,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            prototxt: DEFAULT_PROTOTXT.to_owned(),
            weights: None,
            input: None,
            output: None,
            labels: None,
        }
    }
}

/// `preprocess.crop`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crop {
    /// Center crop to the input blob's H×W with offsets `floor((H - h) / 2)`,
    /// `floor((W - w) / 2)` (open_nsfw / `classify.py` style). The default.
    #[default]
    Center,
    /// No crop: if the (resized) image is not the input blob's H×W it is
    /// resized again to exactly H×W, as `caffe.io.Transformer.preprocess` does.
    None,
}

/// `[preprocess]` section: pycaffe `caffe.io.Transformer` settings plus the
/// resize/crop applied before it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessConfig {
    /// `[height, width]` the decoded image is first resized to (bilinear).
    /// `None` (default): the input blob's H×W.
    pub resize: Option<[u32; 2]>,
    /// Crop after the resize. Default [`Crop::Center`].
    pub crop: Crop,
    /// Multiplier applied to the `[0, 1]` image (pycaffe `raw_scale`). Default `255.0`.
    pub raw_scale: f32,
    /// Per-channel mean, in the channel order after `channel_swap`. Default none.
    pub mean: Option<Vec<f32>>,
    /// Mean image file (`.binaryproto` or `.npy`, C×H×W), relative to the model
    /// directory. Mutually exclusive with `mean`. Default none.
    pub mean_file: Option<String>,
    /// Multiplier applied after mean subtraction (pycaffe `input_scale`). Default `1.0`.
    pub input_scale: f32,
    /// Output channel `i` is input channel `channel_swap[i]`. `None` (default):
    /// `[2, 1, 0]` (RGB to BGR) for colour, `[0]` for grayscale.
    pub channel_swap: Option<Vec<usize>>,
    /// `true` (default): 3 channels. `false`: 1 grayscale channel
    /// (skimage `rgb2gray` weights 0.2125 R + 0.7154 G + 0.0721 B).
    pub color: bool,
    /// The loaded mean file (see [`PreprocessConfig::load_mean_file`]); not part of the TOML.
    #[serde(skip)]
    pub mean_image: Option<MeanImage>,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            resize: None,
            crop: Crop::Center,
            raw_scale: 255.0,
            mean: None,
            mean_file: None,
            input_scale: 1.0,
            channel_swap: None,
            color: true,
            mean_image: None,
        }
    }
}

impl PreprocessConfig {
    /// Number of channels the image has after loading: 3 for colour, 1 for grayscale.
    pub fn channels(&self) -> usize {
        if self.color {
            3
        } else {
            1
        }
    }

    /// The effective channel permutation for `channels` channels.
    pub fn effective_channel_swap(&self, channels: usize) -> Vec<usize> {
        match &self.channel_swap {
            Some(s) => s.clone(),
            None if channels == 3 => vec![2, 1, 0],
            None => (0..channels).collect(),
        }
    }

    /// Load `mean_file` (if set) from `model_dir` into [`PreprocessConfig::mean_image`].
    pub fn load_mean_file(&mut self, model_dir: &Path) -> Result<()> {
        if let Some(name) = &self.mean_file {
            let path = model_relative(model_dir, name, "preprocess.mean_file")?;
            self.mean_image = Some(load_mean_file(&path)?);
        }
        Ok(())
    }

    /// Check values that do not depend on the net. `file` is used in messages.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |field: &str, reason: String| Error::ConfigInvalid {
            file: file.to_owned(),
            field: format!("preprocess.{field}"),
            reason,
        };
        if let Some([h, w]) = self.resize {
            if h == 0 || w == 0 || h > MAX_RESIZE_SIDE || w > MAX_RESIZE_SIDE {
                return Err(bad(
                    "resize",
                    format!("[{h}, {w}]: each side must be in 1..={MAX_RESIZE_SIDE}"),
                ));
            }
            let bytes = u64::from(h) * u64::from(w) * self.channels() as u64 * 4;
            if bytes > MAX_TENSOR_BYTES {
                return Err(bad(
                    "resize",
                    format!("[{h}, {w}] needs {bytes} bytes, over the cap of {MAX_TENSOR_BYTES}"),
                ));
            }
        }
        if !self.raw_scale.is_finite() {
            return Err(bad("raw_scale", "must be finite".into()));
        }
        if !self.input_scale.is_finite() {
            return Err(bad("input_scale", "must be finite".into()));
        }
        if self.mean.is_some() && self.mean_file.is_some() {
            return Err(bad(
                "mean",
                "`mean` and `mean_file` are mutually exclusive".into(),
            ));
        }
        if let Some(m) = &self.mean {
            if m.len() != self.channels() {
                return Err(bad(
                    "mean",
                    format!(
                        "has {} values, the image has {} channel(s) (color = {})",
                        m.len(),
                        self.channels(),
                        self.color
                    ),
                ));
            }
            if m.iter().any(|v| !v.is_finite()) {
                return Err(bad("mean", "values must be finite".into()));
            }
        }
        if let Some(name) = &self.mean_file {
            check_relative(name).map_err(|r| bad("mean_file", r))?;
        }
        if let Some(s) = &self.channel_swap {
            let n = self.channels();
            let mut seen = vec![false; n];
            let ok = s.len() == n
                && s.iter()
                    .all(|&i| i < n && !std::mem::replace(&mut seen[i], true));
            if !ok {
                return Err(bad(
                    "channel_swap",
                    format!(
                        "{s:?} is not a permutation of 0..{n} (color = {})",
                        self.color
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl ModelConfig {
    /// Parse and validate `model.toml` text. `file` is used in messages.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Self> {
        let cfg: ModelConfig = toml::from_str(text).map_err(|e| Error::ConfigParse {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Read `model_dir/model.toml` if it exists (defaults otherwise), validate
    /// it, and load `preprocess.mean_file` if set.
    pub fn load_from_dir(model_dir: &Path) -> Result<Self> {
        let path = model_dir.join(MODEL_TOML);
        let file = path.display().to_string();
        let mut cfg = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ModelConfig::default(),
            Err(source) => return Err(Error::Io { file, source }),
            Ok(_) => {
                let bytes = read_capped(&path, MAX_MODEL_TOML_BYTES)?;
                let text = std::str::from_utf8(&bytes).map_err(|e| Error::ConfigParse {
                    file: file.clone(),
                    message: format!("not UTF-8: {e}"),
                })?;
                ModelConfig::from_toml_str(text, &file)?
            }
        };
        cfg.preprocess.load_mean_file(model_dir)?;
        Ok(cfg)
    }

    /// Check the whole configuration. `file` is used in messages.
    pub fn validate(&self, file: &str) -> Result<()> {
        let m = &self.model;
        let bad = |field: &str, reason: String| Error::ConfigInvalid {
            file: file.to_owned(),
            field: format!("model.{field}"),
            reason,
        };
        check_relative(&m.prototxt).map_err(|r| bad("prototxt", r))?;
        if let Some(w) = &m.weights {
            if w != WEIGHTS_AUTO {
                check_relative(w).map_err(|r| bad("weights", r))?;
            }
        }
        if let Some(l) = &m.labels {
            check_relative(l).map_err(|r| bad("labels", r))?;
        }
        for (field, v) in [("input", &m.input), ("output", &m.output)] {
            if let Some(v) = v {
                if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
                    return Err(bad(
                        field,
                        "must be 1..=256 bytes without control characters".into(),
                    ));
                }
            }
        }
        self.preprocess.validate(file)
    }

    /// Path of the prototxt inside `model_dir`.
    pub fn prototxt_path(&self, model_dir: &Path) -> Result<PathBuf> {
        model_relative(model_dir, &self.model.prototxt, "model.prototxt")
    }

    /// Path of the labels file inside `model_dir`, if configured.
    pub fn labels_path(&self, model_dir: &Path) -> Result<Option<PathBuf>> {
        self.model
            .labels
            .as_deref()
            .map(|l| model_relative(model_dir, l, "model.labels"))
            .transpose()
    }

    /// Path of the weights: `model.weights` if set, else the single `*.caffemodel`
    /// file in `model_dir` (an error if there are none or several).
    pub fn weights_path(&self, model_dir: &Path) -> Result<PathBuf> {
        match self.model.weights.as_deref() {
            Some(w) if w != WEIGHTS_AUTO => model_relative(model_dir, w, "model.weights"),
            _ => find_single_caffemodel(model_dir),
        }
    }
}

fn find_single_caffemodel(dir: &Path) -> Result<PathBuf> {
    let dir_s = dir.display().to_string();
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io {
        file: dir_s.clone(),
        source,
    })?;
    let mut found: Vec<PathBuf> = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| Error::Io {
            file: dir_s.clone(),
            source,
        })?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "caffemodel") {
            found.push(p);
            if found.len() > 1 {
                break;
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Weights {
            dir: dir_s,
            reason: "no *.caffemodel file; set model.weights in model.toml".into(),
        }),
        _ => Err(Error::Weights {
            dir: dir_s,
            reason: "several *.caffemodel files; set model.weights in model.toml".into(),
        }),
    }
}

/// A path from `model.toml` must stay inside the model directory: relative,
/// no `..`, no root, not empty.
fn check_relative(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 1024 {
        return Err("must be a non-empty relative path of at most 1024 bytes".into());
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} contains control characters"));
    }
    let ok = Path::new(name)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !ok {
        return Err(format!(
            "{name:?} must be relative to the model directory, without `..`"
        ));
    }
    Ok(())
}

fn model_relative(dir: &Path, name: &str, field: &str) -> Result<PathBuf> {
    check_relative(name).map_err(|reason| Error::ConfigInvalid {
        file: dir.join(MODEL_TOML).display().to_string(),
        field: field.to_owned(),
        reason,
    })?;
    Ok(dir.join(name))
}

//! Load options the supervisor sends with `LoadModel` (JSON in the message's opaque `preprocess` field):
//! how the net bytes are encoded and how encoded images are turned into the input tensor.
//! The supervisor validated the same model.toml text before sending it.
use caffe_sandbox_preprocess::{DecodeLimits, LoadOptionsWire, ModelConfig, PreprocessConfig};

/// What the worker needs besides the net and weights.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The net bytes are protobuf text format (else binary, e.g. the firewall's canonical encoding).
    pub net_is_text: bool,
    /// Preprocessing for encoded images.
    pub preprocess: PreprocessConfig,
    /// Largest decoded image accepted.
    pub max_image_pixels_side: u32,
}

impl LoadOptions {
    /// Parses the JSON the supervisor sent ([`LoadOptionsWire`]).
    pub fn from_json(bytes: &[u8]) -> Result<LoadOptions, String> {
        let w: LoadOptionsWire =
            serde_json::from_slice(bytes).map_err(|e| format!("load options: {e}"))?;
        let mut preprocess = match &w.model_toml {
            Some(text) => {
                ModelConfig::from_toml_str(text, "model.toml")
                    .map_err(|e| e.to_string())?
                    .preprocess
            }
            None => PreprocessConfig::default(),
        };
        // A mean file was read and reduced by the supervisor (the worker has no path to the model directory).
        if let Some(m) = w.mean_values {
            preprocess.mean = Some(m);
            preprocess.mean_file = None;
        }
        Ok(LoadOptions {
            net_is_text: w.net_is_text,
            preprocess,
            max_image_pixels_side: w.max_image_side.unwrap_or(8192),
        })
    }

    /// Decode limits for encoded images.
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_width: self.max_image_pixels_side,
            max_height: self.max_image_pixels_side,
            ..DecodeLimits::default()
        }
    }
}

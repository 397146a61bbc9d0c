//! The load options the supervisor sends with `LoadModel` (JSON in the message's opaque field) and the worker
//! reads: one definition for both sides of that wire.
use serde::{Deserialize, Serialize};

/// What the worker needs besides the net and weights bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadOptionsWire {
    /// The net bytes are protobuf text format (else binary, e.g. the firewall's canonical encoding).
    pub net_is_text: bool,
    /// The model.toml text the supervisor validated (the worker re-parses the same text), if any.
    pub model_toml: Option<String>,
    /// Per-channel means the supervisor computed from `preprocess.mean_file` (the worker has no path to it).
    pub mean_values: Option<Vec<f32>>,
    /// Largest decoded image side in pixels.
    pub max_image_side: Option<u32>,
}

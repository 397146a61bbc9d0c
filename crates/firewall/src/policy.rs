//! What the firewall accepts: the inference allowlist, opt-ins, caps and budgets.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Layer types the firewall knows how to shape-check and cost, allowed by default.
pub const INFERENCE_LAYER_TYPES: &[&str] = &[
    "AbsVal",
    "BatchNorm",
    "BNLL",
    "Concat",
    "Convolution",
    "Deconvolution",
    "Dropout",
    "ELU",
    "Eltwise",
    "Flatten",
    "InnerProduct",
    "Input",
    "LRN",
    "Pooling",
    "Power",
    "ReLU",
    "Reshape",
    "Scale",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "TanH",
];

/// The firewall's policy. `Default` is the strict inference policy.
///
/// Deserialises from a partial document (missing fields take the defaults; unknown fields are
/// errors), e.g. TOML `allow_layer_types = ["PReLU"]` and `max_flops = 50000000000`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirewallPolicy {
    /// Extra layer types explicitly opted in beyond [`INFERENCE_LAYER_TYPES`] (e.g. `"PReLU"`).
    /// Opted-in types without shape inference still get an `unknown-to-inference` finding
    /// (a warning, since the operator asked for them) and their cost is not estimated.
    pub allow_layer_types: BTreeSet<String>,
    /// Accept consistent legacy `input`/`input_dim`/`input_shape` fields (they are converted
    /// into an `Input` layer in the canonical net, so Caffe's upgrade code never sees them).
    pub allow_legacy_inputs: bool,
    /// Accept HDF5 weights (never recommended: libhdf5 parses them inside the worker).
    pub allow_hdf5_weights: bool,
    /// Maximum prototxt size in bytes.
    pub max_prototxt_bytes: usize,
    /// Maximum caffemodel size in bytes (Caffe's own limit is INT_MAX).
    pub max_weights_bytes: usize,
    /// Maximum `{`/`<` nesting depth in the prototxt (guards the recursive text parser).
    pub max_text_depth: usize,
    /// Maximum number of layers (net or weights).
    pub max_layers: usize,
    /// Maximum number of distinct blobs (activations) in the net.
    pub max_blobs: usize,
    /// Maximum length of any repeated field (dims, bottoms, tops, params, ...).
    pub max_repeated: usize,
    /// Maximum length of any string (names).
    pub max_string_len: usize,
    /// Budget: estimated bytes of activations, parameters and buffers.
    pub max_total_bytes: u64,
    /// Budget: estimated floating-point operations of one forward pass.
    pub max_flops: u64,
    /// Budget: elements of any single blob (Caffe's hard limit is INT_MAX).
    pub max_blob_elements: u64,
}

impl Default for FirewallPolicy {
    fn default() -> Self {
        FirewallPolicy {
            allow_layer_types: BTreeSet::new(),
            allow_legacy_inputs: true,
            allow_hdf5_weights: false,
            max_prototxt_bytes: 1 << 20,
            max_weights_bytes: 1 << 30,
            max_text_depth: 32,
            max_layers: 4096,
            max_blobs: 8192,
            max_repeated: 4096,
            max_string_len: 1024,
            max_total_bytes: 4 << 30,
            max_flops: 200_000_000_000,
            max_blob_elements: 1 << 28,
        }
    }
}

impl FirewallPolicy {
    /// Whether `ty` may appear in a net under this policy.
    pub fn layer_type_allowed(&self, ty: &str) -> bool {
        INFERENCE_LAYER_TYPES.contains(&ty) || self.allow_layer_types.contains(ty)
    }
}

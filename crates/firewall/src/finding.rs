//! Typed findings: what the firewall found wrong (or noteworthy) in a model.

use std::fmt;

use serde::Serialize;

/// How serious a finding is. Any [`Severity::Error`] refuses the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational; the model is still accepted.
    Info,
    /// Suspicious or lossy but accepted.
    Warning,
    /// The model is refused.
    Error,
}

/// A machine-readable class of finding (stable names for tests, scripts and `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingCode {
    /// Input larger than the policy's cap.
    InputTooLarge,
    /// The prototxt could not be parsed (syntax, unknown field, bad UTF-8, nesting).
    ParseError,
    /// The weights could not be parsed as a Caffe binary NetParameter.
    WeightsParseError,
    /// A count cap (layers, blobs, repeated field length, string length) was exceeded.
    LimitExceeded,
    /// Layer type outside the inference allowlist.
    LayerTypeNotAllowed,
    /// A string field that may name a file (source, file_name, mean_file, module, ...).
    PathField,
    /// Parameters embedded in the net definition (`layer { blobs { ... } }`).
    EmbeddedBlobs,
    /// Legacy V0/V1 net format (`layers`).
    LegacyFormat,
    /// Legacy `input`/`input_dim`/`input_shape` fields.
    LegacyInput,
    /// Phase/level/stage rules (`include`/`exclude`/`state`).
    StateRule,
    /// Weights in HDF5 format.
    Hdf5Weights,
    /// A dimension that is negative, zero, too large or overflows.
    BadDimension,
    /// A layer parameter Caffe would CHECK-fail, divide by zero or misuse on.
    BadParameter,
    /// Bottom/top wiring Caffe would refuse (unknown bottom, duplicate top, wrong counts).
    BadTopology,
    /// The layer type has no shape inference here, so its cost is unknown.
    UnknownToInference,
    /// Weight blobs do not match the shapes the net expects.
    WeightMismatch,
    /// A deploy layer with parameters has no weights in the caffemodel.
    MissingWeights,
    /// Estimated memory or compute exceeds the policy's budget.
    BudgetExceeded,
    /// An enum field holds a value the schema does not define.
    BadEnum,
}

/// One finding, located by layer and field where possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Layer name (or `#index` when unnamed), if the finding is about a layer.
    pub layer: Option<String>,
    /// Field path inside the layer or net, e.g. `convolution_param.stride`.
    pub field: Option<String>,
    /// Machine-readable class.
    pub code: FindingCode,
    /// Human-readable reason.
    pub reason: String,
    /// Severity; errors refuse the model.
    pub severity: Severity,
}

impl Finding {
    /// An error finding.
    pub fn error(code: FindingCode, reason: impl Into<String>) -> Self {
        Finding {
            layer: None,
            field: None,
            code,
            reason: reason.into(),
            severity: Severity::Error,
        }
    }

    /// A warning finding.
    pub fn warning(code: FindingCode, reason: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(code, reason)
        }
    }

    /// Attach a layer name.
    #[must_use]
    pub fn at_layer(mut self, layer: impl Into<String>) -> Self {
        self.layer = Some(layer.into());
        self
    }

    /// Attach a field path.
    #[must_use]
    pub fn at_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{sev}")?;
        if let Some(l) = &self.layer {
            write!(f, " [layer {}]", crate::report::sanitize(l))?;
        }
        if let Some(fl) = &self.field {
            write!(f, " [{}]", crate::report::sanitize(fl))?;
        }
        write!(f, ": {}", crate::report::sanitize(&self.reason))
    }
}

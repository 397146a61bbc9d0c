//! The inspection report: serialisable for `--json`, and a human table via `Display`.

use std::fmt;

use serde::Serialize;

use crate::finding::{Finding, Severity};
use crate::shapes::LayerInfo;

/// Summary of the weights file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightsSummary {
    /// File size in bytes.
    pub bytes: u64,
    /// Layers in the file.
    pub layers: usize,
    /// Layers whose blobs were matched to the deploy net (and go into the canonical weights).
    pub matched_layers: usize,
    /// Layers Caffe would ignore (no deploy layer of that name).
    pub ignored_layers: usize,
    /// Whether the file used the legacy V1/V0 layer format.
    pub legacy_format: bool,
}

/// Everything `inspect` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `NetParameter.name`.
    pub net_name: Option<String>,
    /// True when no finding is an error.
    pub accepted: bool,
    /// Per-layer shapes, parameters and estimates (after legacy normalisation and phase filtering).
    pub layers: Vec<LayerInfo>,
    /// Net outputs (blobs no other layer reads) and their shapes.
    pub outputs: Vec<(String, Vec<i64>)>,
    /// Total parameters.
    pub total_params: u64,
    /// Estimated bytes of activations, parameters and internal buffers.
    pub total_bytes: u64,
    /// Estimated FLOPs of one forward pass.
    pub total_flops: u64,
    /// Whether every layer's shape was inferred (otherwise the totals are lower bounds).
    pub inference_complete: bool,
    /// Weights summary, when a caffemodel was given and parsed.
    pub weights: Option<WeightsSummary>,
    /// sha256 of the prototxt bytes. (The weights are not hashed here, to keep `inspect` cheap
    /// next to Caffe's load time; use [`crate::sha256_hex`] or [`crate::integrity`].)
    pub prototxt_sha256: String,
    /// Findings, errors first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Error findings only.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }
}

/// Replace control characters (terminal escapes in hostile names) for display.
pub fn sanitize(s: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

fn shape(s: &[i64]) -> String {
    s.iter().map(i64::to_string).collect::<Vec<_>>().join("x")
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}")
    } else {
        format!("{v:.2}{}", UNITS[u])
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "net: {}",
            sanitize(self.net_name.as_deref().unwrap_or("(unnamed)"))
        )?;
        writeln!(
            f,
            "{:<28} {:<14} {:<22} {:>10} {:>10} {:>10}",
            "layer", "type", "top shape", "params", "FLOPs", "bytes"
        )?;
        for l in &self.layers {
            let tops = if l.inferred {
                l.top_shapes
                    .iter()
                    .map(|s| shape(s))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                "?".into()
            };
            writeln!(
                f,
                "{:<28} {:<14} {:<22} {:>10} {:>10} {:>10}",
                sanitize(&l.name),
                sanitize(&l.ty),
                tops,
                human(l.params),
                human(l.flops),
                human(l.bytes)
            )?;
        }
        for (name, s) in &self.outputs {
            writeln!(f, "output {}: {}", sanitize(name), shape(s))?;
        }
        let lb = if self.inference_complete {
            ""
        } else {
            " (lower bound: inference incomplete)"
        };
        writeln!(
            f,
            "total: {} layers, {} params, {}B memory, {} FLOPs{lb}",
            self.layers.len(),
            human(self.total_params),
            human(self.total_bytes),
            human(self.total_flops)
        )?;
        if let Some(w) = &self.weights {
            writeln!(
                f,
                "weights: {} bytes, {} layers, {} matched, {} ignored{}",
                w.bytes,
                w.layers,
                w.matched_layers,
                w.ignored_layers,
                if w.legacy_format {
                    ", legacy format"
                } else {
                    ""
                }
            )?;
        }
        for x in &self.findings {
            writeln!(f, "{x}")?;
        }
        write!(
            f,
            "verdict: {}",
            if self.accepted { "accepted" } else { "REFUSED" }
        )
    }
}

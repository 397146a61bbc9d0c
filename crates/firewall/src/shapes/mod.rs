//! Shape inference with Caffe 1.0's semantics for the allowlisted layer types: per-blob shapes,
//! expected parameter shapes, memory and FLOP estimates, and the CHECKs Caffe would abort on.

mod layers;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::finding::{Finding, FindingCode, Severity};
use crate::policy::FirewallPolicy;
use crate::proto::caffe::NetParameter;

/// Caffe's hard per-blob element limit (`Blob::Reshape` CHECKs count <= INT_MAX).
pub const INT_MAX: i64 = i32::MAX as i64;
/// Caffe's `kMaxBlobAxes`.
pub const MAX_AXES: usize = 32;

/// What shape inference found for one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerInfo {
    /// Layer name.
    pub name: String,
    /// Layer type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Bottom blob names.
    pub bottoms: Vec<String>,
    /// Top blob names.
    pub tops: Vec<String>,
    /// Inferred top shapes (empty when inference stopped before this layer).
    pub top_shapes: Vec<Vec<i64>>,
    /// Shapes of the parameter blobs Caffe will create (and the caffemodel must match).
    pub param_shapes: Vec<Vec<i64>>,
    /// Number of parameters (sum of the parameter blobs' elements).
    pub params: u64,
    /// Estimated floating-point operations of one forward pass.
    pub flops: u64,
    /// Estimated bytes this layer adds: new top blobs, parameters and internal buffers.
    pub bytes: u64,
    /// Whether shapes were inferred for this layer.
    pub inferred: bool,
}

/// Result of shape inference over a net.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Inference {
    /// Per layer, in net order.
    pub layers: Vec<LayerInfo>,
    /// Final shape of every blob by name.
    pub blobs: BTreeMap<String, Vec<i64>>,
    /// Blobs produced and never consumed (the net outputs).
    pub outputs: Vec<String>,
    /// Total estimated bytes.
    pub total_bytes: u64,
    /// Total estimated FLOPs.
    pub total_flops: u64,
    /// Total parameters.
    pub total_params: u64,
    /// Whether every layer was inferred (budgets are meaningful only then).
    pub complete: bool,
}

/// A problem found while inferring one layer.
pub(crate) struct Problem {
    pub code: FindingCode,
    pub field: Option<&'static str>,
    pub reason: String,
}

pub(crate) type LResult<T> = Result<T, Problem>;

pub(crate) fn problem(
    code: FindingCode,
    field: Option<&'static str>,
    reason: impl Into<String>,
) -> Problem {
    Problem {
        code,
        field,
        reason: reason.into(),
    }
}

/// Element count of a shape, validating each dimension like `Blob::Reshape` would.
pub(crate) fn count(shape: &[i64], field: Option<&'static str>) -> LResult<i64> {
    if shape.len() > MAX_AXES {
        return Err(problem(
            FindingCode::BadDimension,
            field,
            format!("{} axes, Caffe allows {MAX_AXES}", shape.len()),
        ));
    }
    let mut n: i64 = 1;
    for &d in shape {
        if d <= 0 {
            return Err(problem(
                FindingCode::BadDimension,
                field,
                format!("dimension {d} in {shape:?} must be positive"),
            ));
        }
        if d > INT_MAX {
            return Err(problem(
                FindingCode::BadDimension,
                field,
                format!("dimension {d} in {shape:?} exceeds INT_MAX (Caffe truncates it to int)"),
            ));
        }
        n = n.checked_mul(d).filter(|&n| n <= INT_MAX).ok_or_else(|| {
            problem(
                FindingCode::BadDimension,
                field,
                format!("shape {shape:?} has more than INT_MAX elements"),
            )
        })?;
    }
    Ok(n)
}

/// What one layer's inference yields.
#[derive(Default)]
pub(crate) struct Out {
    pub tops: Vec<Vec<i64>>,
    pub params: Vec<Vec<i64>>,
    /// Internal buffers Caffe allocates during forward (elements, each checked like a blob).
    pub buffers: Vec<Vec<i64>>,
    pub flops: u128,
    /// Tops share the bottom's data (Split, Flatten, Reshape, ...), so cost no memory.
    pub shares_data: bool,
}

/// Infer shapes for every layer of `net` (already normalised: no legacy fields, no rules).
pub fn infer(net: &NetParameter, policy: &FirewallPolicy, out: &mut Vec<Finding>) -> Inference {
    let mut inf = Inference {
        complete: true,
        ..Default::default()
    };
    let mut produced: BTreeSet<String> = BTreeSet::new();
    let mut total_bytes: u128 = 0;
    let mut total_flops: u128 = 0;
    let mut total_params: u128 = 0;
    let mut shared_params: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (i, l) in net.layer.iter().enumerate() {
        let name = crate::checks::layer_label(l.name.clone(), i);
        let ty = l.r#type.clone().unwrap_or_default();
        let mut info = LayerInfo {
            name: name.clone(),
            ty: ty.clone(),
            bottoms: l.bottom.clone(),
            tops: l.top.clone(),
            top_shapes: vec![],
            param_shapes: vec![],
            params: 0,
            flops: 0,
            bytes: 0,
            inferred: false,
        };
        let mut err = |p: Problem| {
            let mut f = Finding::error(p.code, p.reason).at_layer(&name);
            f.field = p.field.map(str::to_owned);
            out.push(f);
        };
        // Topology, exactly as Net::AppendBottom / AppendTop would see it.
        let mut topo_ok = true;
        for b in &l.bottom {
            if !produced.contains(b) {
                err(problem(
                    FindingCode::BadTopology,
                    Some("bottom"),
                    format!("unknown bottom blob {b:?} (Caffe aborts)"),
                ));
                topo_ok = false;
            }
        }
        for (t_i, t) in l.top.iter().enumerate() {
            let in_place = l.bottom.get(t_i) == Some(t);
            if !in_place && produced.contains(t) {
                err(problem(
                    FindingCode::BadTopology,
                    Some("top"),
                    format!("top blob {t:?} produced by multiple sources (Caffe aborts)"),
                ));
                topo_ok = false;
            }
            if l.top[..t_i].contains(t) {
                err(problem(
                    FindingCode::BadTopology,
                    Some("top"),
                    format!("top blob {t:?} listed twice"),
                ));
                topo_ok = false;
            }
        }
        produced.extend(l.top.iter().cloned());
        if produced.len() > policy.max_blobs {
            err(problem(
                FindingCode::LimitExceeded,
                Some("top"),
                format!("more than {} blobs", policy.max_blobs),
            ));
            inf.complete = false;
            inf.layers.push(info);
            break;
        }
        let bottom_shapes: Option<Vec<Vec<i64>>> =
            l.bottom.iter().map(|b| inf.blobs.get(b).cloned()).collect();
        let Some(bottom_shapes) = bottom_shapes.filter(|_| topo_ok && inf.complete) else {
            inf.complete = false;
            inf.layers.push(info);
            continue;
        };
        let result = match layers::infer_layer(&ty, l, &bottom_shapes) {
            Some(r) => r,
            None => {
                let sev = if policy.layer_type_allowed(&ty) {
                    Severity::Warning
                } else {
                    Severity::Error
                };
                out.push(Finding {
                    severity: sev,
                    ..Finding::error(FindingCode::UnknownToInference, format!("no shape inference for layer type {ty:?}; its cost and output shapes are unknown and nothing after it is checked"))
                        .at_layer(&name)
                        .at_field("type")
                });
                inf.complete = false;
                inf.layers.push(info);
                continue;
            }
        };
        let o = match result {
            Ok(o) => o,
            Err(p) => {
                err(p);
                inf.complete = false;
                inf.layers.push(info);
                continue;
            }
        };
        if o.tops.len() != l.top.len() {
            err(problem(
                FindingCode::BadTopology,
                Some("top"),
                format!(
                    "{} tops given, layer produces {}",
                    l.top.len(),
                    o.tops.len()
                ),
            ));
            inf.complete = false;
            inf.layers.push(info);
            continue;
        }
        let reshaping_in_place = l.top.iter().enumerate().any(|(t_i, t)| {
            l.bottom.get(t_i) == Some(t) && o.tops.get(t_i) != bottom_shapes.get(t_i)
        });
        if reshaping_in_place {
            err(problem(
                FindingCode::BadTopology,
                Some("top"),
                "in-place computation that changes the blob's shape".to_owned(),
            ));
            inf.complete = false;
            inf.layers.push(info);
            continue;
        }
        if l.param.len() > o.params.len() {
            err(problem(
                FindingCode::BadParameter,
                Some("param"),
                format!(
                    "{} param specs for {} parameter blobs (Caffe aborts)",
                    l.param.len(),
                    o.params.len()
                ),
            ));
        }
        for (spec, shape) in l.param.iter().zip(&o.params) {
            if let Some(pn) = spec.name.as_deref().filter(|n| !n.is_empty()) {
                match shared_params.get(pn) {
                    Some(s) if s != shape => err(problem(
                        FindingCode::BadParameter,
                        Some("param.name"),
                        format!("shared parameter {pn:?} has shape {shape:?} here but {s:?} in its owner"),
                    )),
                    Some(_) => {}
                    None => {
                        shared_params.insert(pn.to_owned(), shape.clone());
                    }
                }
            }
        }
        let mut elems: u128 = 0;
        let mut bad = false;
        let all = o
            .tops
            .iter()
            .map(|s| (s, "top"))
            .chain(o.params.iter().map(|s| (s, "param")))
            .chain(o.buffers.iter().map(|s| (s, "buffer")));
        for (shape, what) in all {
            match count(shape, Some(what)) {
                Err(p) => {
                    err(p);
                    bad = true;
                }
                Ok(n) => {
                    if n as u64 > policy.max_blob_elements {
                        err(problem(
                            FindingCode::BudgetExceeded,
                            Some(what),
                            format!(
                                "{what} blob {shape:?} has {n} elements, policy limit {}",
                                policy.max_blob_elements
                            ),
                        ));
                    }
                    if what != "top" || !o.shares_data {
                        elems += n as u128;
                    }
                }
            }
        }
        // In-place tops reuse the bottom's memory.
        for (t_i, t) in l.top.iter().enumerate() {
            if l.bottom.get(t_i) == Some(t) {
                if let Some(s) = o.tops.get(t_i) {
                    elems = elems.saturating_sub(count(s, None).unwrap_or(0) as u128);
                }
            }
        }
        if bad {
            inf.complete = false;
            inf.layers.push(info);
            continue;
        }
        let params: u128 = o
            .params
            .iter()
            .map(|s| count(s, None).unwrap_or(0) as u128)
            .sum();
        let bytes = elems * 4;
        info.top_shapes = o.tops.clone();
        info.param_shapes = o.params;
        info.params = clamp(params);
        info.flops = clamp(o.flops);
        info.bytes = clamp(bytes);
        info.inferred = true;
        total_bytes += bytes;
        total_flops += o.flops;
        total_params += params;
        for (t, s) in l.top.iter().zip(o.tops) {
            inf.blobs.insert(t.clone(), s);
        }
        inf.layers.push(info);
    }
    // In-place outputs are consumed by their own layer; outputs are tops of the last writer.
    let mut last_writer_outputs = Vec::new();
    for b in &produced {
        let readers = net
            .layer
            .iter()
            .filter(|l| l.bottom.contains(b) && !l.top.contains(b))
            .count();
        if readers == 0 {
            last_writer_outputs.push(b.clone());
        }
    }
    inf.outputs = last_writer_outputs;
    inf.total_bytes = clamp(total_bytes);
    inf.total_flops = clamp(total_flops);
    inf.total_params = clamp(total_params);
    if inf.total_bytes > policy.max_total_bytes {
        out.push(Finding::error(
            FindingCode::BudgetExceeded,
            format!(
                "estimated memory {} bytes exceeds the policy budget of {} bytes",
                inf.total_bytes, policy.max_total_bytes
            ),
        ));
    }
    if inf.total_flops > policy.max_flops {
        out.push(Finding::error(
            FindingCode::BudgetExceeded,
            format!(
                "estimated {} FLOPs per forward pass exceed the policy budget of {}",
                inf.total_flops, policy.max_flops
            ),
        ));
    }
    inf
}

fn clamp(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}
